//! Fault scenarios of issue 8 on real `node-cli` processes on loopback:
//! `kill -9`, SIGSTOP/SIGCONT, rolling restarts and hostile input, each
//! checked with the lost-write checker.
//!
//! The binary is located explicitly (Cargo gives `CARGO_BIN_EXE_node-cli`
//! only to node-cli's own tests): `$NODE_CLI_BIN`, else `node-cli` next to
//! this test's `deps/` directory (`target/<profile>/node-cli`), else
//! `target/debug/node-cli`, built once with `cargo build -p node-cli` when
//! missing. `cargo test --workspace` builds it anyway.
//!
//! Most scenarios add a **probe**: an in-process member built from the
//! library crates (transport, membership, taskqueue), the way node-cli wires
//! them. It joins the cluster of processes, submits and queries tasks with
//! exact timing, and reports and meets the shutdown barrier at the end.
//! It publishes node-cli's workload marker, so the processes count it as
//! one of theirs (in `--nodes`, at the start barrier, for the final report
//! and the shutdown barrier): they linger while the probe works and exit 0
//! afterwards. A member without the marker would not hold them: they would
//! finish their own tasks and leave while the probe still queried them.
//!
//! Every test holds [`casty_tests::serial`]: one cluster at a time.

#![allow(clippy::unwrap_used)]

mod hostile;
mod kill;
mod partition;
mod rolling;
mod stop;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use casty_tests::{LostWriteChecker, Member, Process, listen_addr, seed_log};
use taskqueue::{TaskState, TaskStatus};

/// Time a node may take to log `listening on`.
const START: Duration = Duration::from_secs(20);

/// The report entity and barrier node-cli's workload uses.
const REPORT: &str = "final-report";
const SHUTDOWN_BARRIER: &str = "shutdown";
/// node-cli's start barrier: every live workload member arrives before any
/// submits.
const START_BARRIER: &str = "start";
/// node-cli's workload marker (`node_cli::workload::WORKLOAD_MARKER`, a
/// binary crate's item, hence the copy): the membership metadata of a
/// member node-cli waits for.
const WORKLOAD_MARKER: &[u8] = b"node-cli-workload/1";

/// Whether `m` carries node-cli's workload marker.
fn runs_workload(m: &membership::Member) -> bool {
    m.metadata == WORKLOAD_MARKER
}

/// The node-cli binary (see the module doc).
fn node_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("NODE_CLI_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/faults-<hash> -> target/<profile>/node-cli
        let beside = exe
            .parent()
            .and_then(|deps| deps.parent())
            .map(|profile| profile.join("node-cli"));
        if let Some(p) = beside.filter(|p| p.exists()) {
            return p;
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "node-cli"])
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p node-cli: {status}");
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        target.join("debug").join("node-cli")
    })
    .clone()
}

/// A fresh empty directory for one node.
fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "casty-faults-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts node `name` (`--name name --port 0` and `args`) in an empty
/// directory without inherited `CASTY_*` variables, `RUST_LOG=info`.
fn spawn(name: &str, args: &[&str]) -> Process {
    let mut cmd = Command::new(node_bin());
    cmd.arg("--name").arg(name).args(["--port", "0"]).args(args);
    cmd.current_dir(scratch());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CASTY_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info");
    Process::spawn(name, cmd).unwrap()
}

/// Starts `name` and waits for its listening address.
fn spawn_addr(name: &str, args: &[&str]) -> (Process, SocketAddr) {
    let p = spawn(name, args);
    let addr = listen_addr(&p, Instant::now() + START).unwrap();
    (p, addr)
}

/// Sends `signal` (e.g. `STOP`, `CONT`) to `p` with the `kill` utility.
fn signal(p: &Process, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(p.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {}", p.label());
}

/// Asserts `p` exits with status 0 by `deadline`.
fn assert_exits_0(p: &mut Process, deadline: Instant) {
    let status = p.wait_exit(deadline).unwrap();
    let status = status.unwrap_or_else(|| panic!("{} still running at the deadline", p.label()));
    assert_eq!(status.code(), Some(0), "{} exited with {status}", p.label());
}

/// Records in `checker` every result line `p` logged.
fn observe_log(checker: &mut LostWriteChecker, p: &Process) -> usize {
    let mut n = 0;
    for r in p
        .stderr()
        .snapshot()
        .iter()
        .filter_map(|l| seed_log::task_result(l))
    {
        checker.observed(&r.task, &r.result);
        n += 1;
    }
    n
}

/// Whether `p` logged a line containing `needle`.
fn logged(p: &Process, needle: &str) -> bool {
    p.stderr().snapshot().iter().any(|l| l.contains(needle))
}

/// An in-process member of the cluster (see the module doc,
/// [`casty_tests::Member`]); its methods block.
struct Probe(Member);

impl std::ops::Deref for Probe {
    type Target = Member;
    fn deref(&self) -> &Member {
        &self.0
    }
}

impl Probe {
    /// Joins the cluster through `seed` as member `name`, with node-cli's
    /// built-in defaults (the nodes run without a `casty.toml`), and waits
    /// until it has joined.
    fn join(name: &str, seed: SocketAddr) -> Probe {
        Probe::join_on(name, "127.0.0.1", seed)
    }

    /// [`Probe::join`] with the probe listening on (and advertising) `host`.
    fn join_on(name: &str, host: &str, seed: SocketAddr) -> Probe {
        // The probe's own logs, when asked for (`PROBE_LOG=info`).
        if let Ok(filter) = std::env::var("PROBE_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        // With node-cli's marker from the join on: the nodes wait for the
        // probe as for one of theirs.
        let member = Member::start(
            name,
            host,
            vec![seed.to_string()],
            WORKLOAD_MARKER.to_vec(),
            2,
        );
        // The probe is a workload member (it carries the marker): the
        // nodes' start barrier waits for it, so it arrives (in the
        // background, retried until the barrier's shard answers).
        let (q, me, until) = (member.queue.clone(), name.to_owned(), member.stop.clone());
        member.rt.spawn(async move {
            while !until.is_cancelled() {
                let step = Duration::from_secs(2);
                match q
                    .barrier_among(START_BARRIER, &me, vec![me.clone()], step)
                    .await
                {
                    Ok(_) => return,
                    Err(e) => tracing_free_note(&format!("start barrier: {e}")),
                }
            }
        });
        Probe(member)
    }

    /// Waits until `n` members are active in the probe's view.
    fn wait_members(&self, n: usize, timeout: Duration) {
        self.rt
            .block_on(self.members.wait_for(n, timeout))
            .unwrap_or_else(|e| panic!("{n} members: {e}"));
    }

    /// Whether `name` is active (alive or suspect) in the probe's view.
    fn is_active(&self, name: &str) -> bool {
        self.members.view().active().any(|m| m.id.name == name)
    }

    /// The owner of `task`'s shard in the probe's view.
    fn owner_of(&self, task: &str) -> Option<String> {
        self.queue
            .task_region()
            .routing()
            .owner_of(task)
            .map(|n| n.name.clone())
    }

    /// Reports nothing processed and meets node-cli's shutdown barrier, so
    /// the node-cli processes may finish; returns when the barrier released.
    fn finish_workload(&self, timeout: Duration) {
        self.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            self.queue
                .report(REPORT, &self.name, Default::default(), 0)
                .await
                .unwrap();
            // The same live count node-cli uses: the workload members
            // active now (every member of these tests carries the marker).
            loop {
                let n = self
                    .members
                    .view()
                    .active()
                    .filter(|m| runs_workload(m))
                    .count() as u32;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let step = left.min(Duration::from_secs(2));
                match self
                    .queue
                    .barrier(SHUTDOWN_BARRIER, &self.name, n, step)
                    .await
                {
                    Ok(_) => return,
                    Err(e) if left > step => tracing_free_note(&format!("barrier: {e}")),
                    Err(e) => panic!("shutdown barrier: {e}"),
                }
            }
        });
    }
}

/// A note on stderr (the tests have no tracing subscriber).
fn tracing_free_note(msg: &str) {
    eprintln!("[probe] {msg}");
}

/// A completed status's result, or a description of what was served.
fn completed(s: &TaskStatus) -> Result<&str, String> {
    match (&s.status, &s.result) {
        (TaskState::Completed, Some(r)) => Ok(r),
        other => Err(format!("{other:?}")),
    }
}
