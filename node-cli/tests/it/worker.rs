//! node-cli nodes beside a custom worker: a member built on the crates
//! (transport, membership, sharding, taskqueue) that owns shards and
//! processes tasks but does not run node-cli's workload.

use std::time::{Duration, Instant};

use casty_tests::{Member, serial};

use crate::{assert_all_succeeded, busy, check_run_among};

/// The nodes' barrier timeout in the test, in ms: short, so that a node
/// held at a barrier by the worker fails the test in seconds (exit 1 at
/// the timeout) rather than after the default 5 minutes.
const BARRIER_TIMEOUT_MS: u64 = 15_000;

/// A custom worker: an in-process member wired as node-cli wires one,
/// with node-cli's built-in defaults ([`Member`]), but publishing no
/// metadata (so no workload marker) and never meeting node-cli's barriers
/// or reporting. It starts a cluster of its own; node-cli nodes join
/// through it.
fn start_worker(name: &str) -> Member {
    Member::start(name, "127.0.0.1", Vec::new(), Vec::new(), 1)
}

/// Two node-cli nodes (`--nodes 2`) join a cluster started by a custom
/// worker that never arrives at their barriers nor reports. They count
/// only each other: both start together (`cluster ready` with 2
/// members), complete their tasks (some processed on the worker, which
/// owns shards like any member), agree on a Final Report of their own 40
/// tasks and exit 0, well before the barrier timeout. Before the workload
/// marker, `--nodes 2` counted the worker, and the start barrier waited
/// for it by name until the timeout (exit 1).
#[test]
fn a_custom_worker_does_not_hold_the_nodes_at_their_barriers() {
    let _heavy = serial();
    let started = Instant::now();
    let worker = start_worker("worker");
    let timeout = BARRIER_TIMEOUT_MS.to_string();
    let args = ["--nodes", "2", "--tasks", "20"];
    let spawn = |name: &str| {
        let mut all = vec!["--port", "0", "--seed"];
        let seed = worker.addr.to_string();
        all.push(&seed);
        all.extend_from_slice(&args);
        let mut cmd = crate::node_cmd(name, &all);
        cmd.env("CASTY_TASKS__BARRIER_TIMEOUT_MS", &timeout);
        casty_tests::Process::spawn(name, cmd).unwrap()
    };
    let mut nodes = [spawn("n1"), spawn("n2")];
    // A node that gives up at a barrier exits 1 at BARRIER_TIMEOUT_MS; the
    // margin is for start-up on a loaded machine.
    assert_all_succeeded(
        &mut nodes,
        started + Duration::from_millis(BARRIER_TIMEOUT_MS) + Duration::from_secs(20),
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(BARRIER_TIMEOUT_MS),
        "the run took {took:?}, not below the barrier timeout"
    );
    for node in &nodes {
        let lines = node.stderr().snapshot();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("cluster ready") && l.contains("members=2")),
            "{}: the start counts the two nodes, not the worker: {lines:#?}",
            node.label()
        );
    }
    let report = check_run_among(&[(&nodes[0], 20), (&nodes[1], 20)], 500, &["worker"]);
    assert_eq!(report.total, 40);
    assert!(
        busy(&report).contains_key("worker"),
        "the worker processed its shards' tasks: {report:?}"
    );
    drop(worker);
}
