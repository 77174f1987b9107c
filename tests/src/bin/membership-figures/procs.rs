//! Running `membership`'s `cluster` example as real processes and reading
//! its machine-readable lines (`VIEW <unix_ms> <name> active=<m>@<gen>,..`).
//!
//! Shared by the `membership-figures` binary and the `membership_procs`
//! test (which includes this file with `#[path]`).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use casty_tests::{Process, listen_addr, wait_until};

/// How long a node may take to log its listening address.
pub const START: Duration = Duration::from_secs(20);

/// Wall-clock time in Unix milliseconds (the clock of the `VIEW` lines).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `cluster` example binary: `$MEMBERSHIP_CLUSTER_BIN`, else
/// `examples/cluster` of the profile directory this executable runs from
/// (`target/<profile>/` for a binary, `target/<profile>/deps/` for a
/// test), else built with `cargo build -p membership --example cluster`
/// (debug) and taken from the target directory.
///
/// `cargo test --workspace` builds the example before running any test.
/// A binary older than the example's source is used with a warning
/// (rebuild it with the command above).
///
/// # Errors
/// The build failed or did not finish within 10 minutes (a `cargo test`
/// holding the build lock), or the binary is still missing.
pub fn cluster_bin() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("MEMBERSHIP_CLUSTER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = std::env::current_exe()?;
    let beside = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("examples").join("cluster"))
        .find(|p| p.exists());
    if let Some(p) = beside {
        warn_if_stale(&p, &root);
        return Ok(p);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "membership", "--example", "cluster"])
        .current_dir(&root);
    let mut build = Process::spawn("cargo build", cmd)?;
    let status = build.wait_exit(Instant::now() + Duration::from_secs(600))?;
    if !status.is_some_and(|s| s.success()) {
        return Err(io::Error::other(format!(
            "`cargo build -p membership --example cluster` failed or hung ({status:?}); \
             build it first or set MEMBERSHIP_CLUSTER_BIN"
        )));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let p = target.join("debug").join("examples").join("cluster");
    if p.exists() {
        Ok(p)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} missing after the build", p.display()),
        ))
    }
}

/// Warns when `bin` is older than a source file it is built from.
fn warn_if_stale(bin: &std::path::Path, root: &std::path::Path) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(bin) else { return };
    let sources = [
        root.join("membership/examples/cluster.rs"),
        root.join("membership/src"),
        root.join("transport/src"),
    ];
    let mut newest = None;
    for s in &sources {
        let mut stack = vec![s.clone()];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    stack.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
                }
            } else if let Some(m) = modified(&p) {
                newest = Some(newest.map_or(m, |n: SystemTime| n.max(m)));
            }
        }
    }
    if newest.is_some_and(|n| n > built) {
        eprintln!(
            "warning: {} is older than its sources; run `cargo build -p membership --example cluster`",
            bin.display()
        );
    }
}

/// One `VIEW` line: when, whose view, and the active lives (name ->
/// generation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewLine {
    /// Unix milliseconds when the node printed it.
    pub at_ms: u64,
    /// The node whose view it is.
    pub node: String,
    /// Active (alive or suspect) members: name -> generation.
    pub active: BTreeMap<String, u64>,
}

/// Parses `VIEW <unix_ms> <name> active=<m>@<gen>,..`.
pub fn parse_view(line: &str) -> Option<ViewLine> {
    let mut it = line.split_whitespace();
    if it.next()? != "VIEW" {
        return None;
    }
    let at_ms = it.next()?.parse().ok()?;
    let node = it.next()?.to_owned();
    let list = it.next()?.strip_prefix("active=")?;
    let mut active = BTreeMap::new();
    for m in list.split(',').filter(|m| !m.is_empty()) {
        let (name, generation) = m.rsplit_once('@')?;
        active.insert(name.to_owned(), generation.parse().ok()?);
    }
    Some(ViewLine {
        at_ms,
        node,
        active,
    })
}

/// One running `cluster` process.
#[derive(Debug)]
pub struct Node {
    /// Member name.
    pub name: String,
    /// The generation it was started with.
    pub generation: u64,
    /// Its listening (and advertised) address.
    pub addr: SocketAddr,
    /// The process guard (killed on drop).
    pub process: Process,
}

impl Node {
    /// Starts `name` listening on `listen` (e.g. `127.0.0.1:0`) with
    /// `seeds` (none: it starts a cluster) and `generation`, and waits for
    /// its listening address.
    ///
    /// # Errors
    /// Spawning failed, or no address within [`START`].
    pub fn spawn(
        bin: &std::path::Path,
        name: &str,
        listen: &str,
        seeds: &[SocketAddr],
        generation: u64,
    ) -> io::Result<Node> {
        let mut cmd = Command::new(bin);
        cmd.args(["--name", name, "--listen", listen])
            .args(["--generation", &generation.to_string()])
            .env("RUST_LOG", "warn");
        if !seeds.is_empty() {
            let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
            cmd.args(["--seeds", &seeds.join(",")]);
        }
        let process = Process::spawn(name, cmd)?;
        let addr = listen_addr(&process, Instant::now() + START)?;
        Ok(Node {
            name: name.to_owned(),
            generation,
            addr,
            process,
        })
    }

    /// Every `VIEW` line printed so far.
    pub fn views(&self) -> Vec<ViewLine> {
        self.process
            .stdout()
            .snapshot()
            .iter()
            .filter_map(|l| parse_view(l))
            .collect()
    }

    /// The first `VIEW` line printed at or after `since_ms` whose active
    /// set satisfies `pred`, waiting for it until `deadline`.
    pub fn wait_view(
        &self,
        since_ms: u64,
        deadline: Instant,
        pred: impl Fn(&BTreeMap<String, u64>) -> bool,
    ) -> Option<ViewLine> {
        let mut found = None;
        wait_until(deadline, || {
            found = self
                .views()
                .into_iter()
                .find(|v| v.at_ms >= since_ms && pred(&v.active));
            found.is_some()
        });
        found
    }

    /// The active set of its latest `VIEW` line.
    pub fn latest(&self) -> Option<BTreeMap<String, u64>> {
        self.views().pop().map(|v| v.active)
    }
}

/// The active set `nodes` make up: name -> generation.
pub fn lives(nodes: &[&Node]) -> BTreeMap<String, u64> {
    nodes
        .iter()
        .map(|n| (n.name.clone(), n.generation))
        .collect()
}
