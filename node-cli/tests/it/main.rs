//! `node-cli` end to end: real node processes on loopback, free ports only.
//!
//! Every node is the built binary (`CARGO_BIN_EXE_node-cli`) with an
//! explicit `--name`, started in an empty scratch directory (no stray
//! `casty.toml`) with every inherited `CASTY_*` variable removed. The first
//! node of a cluster binds `--port 0` and the others find it through its
//! `listening on <addr>` log line. Tests that start a cluster hold
//! [`casty_tests::serial`] so two clusters never share the two cores; every
//! wait has a deadline. `worker` adds an in-process member built on the
//! crates beside the processes.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod cluster;
mod env_as_file;
mod open_files;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use casty_tests::seed_log::{self, FinalReport};
use casty_tests::{LostWriteChecker, Process, listen_addr};

/// Time a node may take to log `listening on`.
const START: Duration = Duration::from_secs(20);

/// A fresh empty directory for one node or test.
fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "node-cli-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One empty directory the nodes of this test binary run in (no
/// `casty.toml` to pick up).
fn empty_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(scratch)
}

/// The node binary named `name` with `args`, in an empty directory, with
/// no inherited `CASTY_*` variables and `RUST_LOG=info`.
fn node_cmd(name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_node-cli"));
    cmd.arg("--name").arg(name).args(args);
    cmd.current_dir(empty_dir());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CASTY_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Starts node `name`.
fn spawn(name: &str, args: &[&str]) -> Process {
    Process::spawn(name, node_cmd(name, args)).unwrap()
}

/// Starts the first node of a cluster on a free port (no `--seed`) and
/// returns it with its address.
fn spawn_seed(name: &str, args: &[&str]) -> (Process, SocketAddr) {
    let mut all = vec!["--port", "0"];
    all.extend_from_slice(args);
    let p = spawn(name, &all);
    let addr = listen_addr(&p, Instant::now() + START).unwrap();
    (p, addr)
}

/// Starts a node on a free port joining through `seed`.
fn spawn_joiner(name: &str, seed: SocketAddr, args: &[&str]) -> Process {
    let seed = seed.to_string();
    let mut all = vec!["--port", "0", "--seed", seed.as_str()];
    all.extend_from_slice(args);
    spawn(name, &all)
}

/// Waits until every node exited, or one exited with a failure, by
/// `deadline`, and returns the exit statuses in order; a node still running
/// then fails the test (after a failure, the others are not waited for:
/// they would only hang at the report or the barrier).
fn wait_all(nodes: &mut [Process], deadline: Instant) -> Vec<ExitStatus> {
    casty_tests::wait_until(deadline, || {
        let statuses: Vec<_> = nodes.iter_mut().map(|p| p.try_status().unwrap()).collect();
        statuses.iter().all(Option::is_some) || statuses.iter().flatten().any(|s| !s.success())
    });
    let failed: Vec<String> = nodes
        .iter_mut()
        .filter_map(|p| match p.try_status().unwrap() {
            Some(s) if !s.success() => Some(format!("{} exited with {s}", p.label())),
            _ => None,
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("; "));
    nodes
        .iter_mut()
        .map(|p| {
            // Exited: this only waits for the rest of its output.
            let status = p
                .wait_exit(Instant::now() + Duration::from_secs(5))
                .unwrap();
            status.unwrap_or_else(|| panic!("{} still running at the deadline", p.label()))
        })
        .collect()
}

/// Asserts every node exited with status 0.
fn assert_all_succeeded(nodes: &mut [Process], deadline: Instant) {
    let statuses = wait_all(nodes, deadline);
    for (p, s) in nodes.iter().zip(statuses) {
        assert_eq!(s.code(), Some(0), "{} exited with {s}", p.label());
    }
}

/// The one `Final Report` line a node logged, parsed.
fn final_report(p: &Process) -> FinalReport {
    let reports: Vec<FinalReport> = p
        .stderr()
        .snapshot()
        .iter()
        .filter_map(|l| seed_log::final_report(l))
        .collect();
    assert_eq!(reports.len(), 1, "{}: one Final Report line", p.label());
    reports.into_iter().next().unwrap()
}

/// Checks the logs of a finished run: each node `(process, tasks it
/// submitted)` logged a result for each of its tasks, equal to the
/// independently computed value (lost-write checker; a node that exited 0
/// had every submission acknowledged), its `<done>/<total> completed` line,
/// and the same Final Report of every node's tasks, whose counts add up and
/// name only members. Returns that report.
fn check_run(nodes: &[(&Process, u32)], iterations: u32) -> FinalReport {
    check_run_among(nodes, iterations, &[])
}

/// [`check_run`] in a cluster that also holds the members `others` (not
/// node-cli processes: they submit nothing, but may process tasks).
fn check_run_among(nodes: &[(&Process, u32)], iterations: u32, others: &[&str]) -> FinalReport {
    let mut checker = LostWriteChecker::new();
    let mut names: Vec<&str> = nodes.iter().map(|(p, _)| p.label()).collect();
    names.extend_from_slice(others);
    let mut total = 0u64;
    for (p, tasks) in nodes {
        total += u64::from(*tasks);
        for i in 0..*tasks {
            let id = format!("job-{}-{i}", p.label());
            checker.acknowledged(&id, format!("doc-{id}").as_bytes(), iterations);
        }
        let lines = p.stderr().snapshot();
        for r in lines.iter().filter_map(|l| seed_log::task_result(l)) {
            assert!(
                r.task.starts_with(&format!("job-{}-", p.label())),
                "{} logged another node's task {}",
                p.label(),
                r.task
            );
            assert!(
                names.contains(&r.on.as_str()),
                "{}: processed on {}?",
                r.task,
                r.on
            );
            checker.observed(&r.task, &r.result);
        }
        let done: Vec<_> = lines
            .iter()
            .filter_map(|l| seed_log::completed(l))
            .collect();
        assert_eq!(done.len(), 1, "{}: one `completed in` line", p.label());
        assert_eq!(
            (done[0].done, done[0].total),
            (u64::from(*tasks), u64::from(*tasks)),
            "{}",
            p.label()
        );
    }
    checker.assert_no_lost_writes();
    let first = final_report(nodes[0].0);
    for (p, _) in nodes {
        assert_eq!(
            final_report(p),
            first,
            "{} and {} disagree",
            p.label(),
            names[0]
        );
    }
    assert_eq!(first.total, total, "Final Report total");
    assert_eq!(first.counts.values().sum::<u64>(), total, "counts add up");
    for node in first.counts.keys() {
        assert!(names.contains(&node.as_str()), "report names {node}");
    }
    first
}

/// Nodes that processed at least one task in `report`.
fn busy(report: &FinalReport) -> BTreeMap<&str, u64> {
    report
        .counts
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(n, c)| (n.as_str(), *c))
        .collect()
}
