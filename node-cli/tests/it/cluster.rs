//! Whole runs of the seed's workload on local clusters (issue 6).

use std::time::{Duration, Instant};

use casty_tests::{reserve_port, serial};

use crate::{assert_all_succeeded, busy, check_run, spawn, spawn_joiner, spawn_seed};

/// Time a whole small run may take, start to exit.
const RUN: Duration = Duration::from_secs(45);

/// The README's three terminals: the first node without `--seed`, two
/// joining through it, default settle period and 5 tasks each.
#[test]
fn three_nodes_like_the_readme() {
    let _heavy = serial();
    let deadline = Instant::now() + RUN;
    let (n1, seed) = spawn_seed("n1", &[]);
    let n2 = spawn_joiner("n2", seed, &[]);
    let n3 = spawn_joiner("n3", seed, &[]);
    let mut nodes = [n1, n2, n3];
    assert_all_succeeded(&mut nodes, deadline);
    let report = check_run(&[(&nodes[0], 5), (&nodes[1], 5), (&nodes[2], 5)], 500);
    assert_eq!(report.total, 15);
    assert!(
        busy(&report).len() >= 2,
        "tasks spread over at least two nodes: {report:?}"
    );
    // The main job runs clean: a seed not listening yet at start-up and
    // peers leaving at the end are routine, not warnings.
    for node in &nodes {
        let alarming: Vec<String> = node
            .stderr()
            .snapshot()
            .into_iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(
            alarming.is_empty(),
            "{} logged warnings or errors in a normal run: {alarming:#?}",
            node.label()
        );
    }
}

/// One node alone starts the cluster, processes its 5 tasks and exits 0.
#[test]
fn one_node_alone() {
    let _heavy = serial();
    let deadline = Instant::now() + RUN;
    let (solo, _) = spawn_seed("solo", &["--settle-ms", "300"]);
    let mut nodes = [solo];
    assert_all_succeeded(&mut nodes, deadline);
    let report = check_run(&[(&nodes[0], 5)], 500);
    assert_eq!(report.total, 5);
    assert_eq!(busy(&report).into_iter().collect::<Vec<_>>(), [("solo", 5)]);
}

/// Long tasks whose whole run takes longer than `[tasks]
/// result_timeout_ms` still complete: the node keeps fewer of them in
/// flight (smaller batches), so each batch's wait fits the timeout. One
/// node with one hashing thread, 256 tasks of 200,000 iterations (about
/// 1-2 s of hashing on this machine, a few ms each), a 300 ms result
/// timeout: before, all 256 went in one batch, answered when the last
/// completed, and every task timed out (exit 1); now one task a batch,
/// four in flight.
#[test]
fn long_tasks_past_the_result_timeout_in_all_complete() {
    let _heavy = serial();
    let deadline = Instant::now() + RUN;
    let mut cmd = crate::node_cmd(
        "long",
        &[
            "--port",
            "0",
            "--settle-ms",
            "300",
            "--tasks",
            "256",
            "--iterations",
            "200000",
        ],
    );
    cmd.env("CASTY_TASKS__RESULT_TIMEOUT_MS", "300");
    cmd.env("CASTY_TASKS__WORKERS", "1");
    let mut nodes = [casty_tests::Process::spawn("long", cmd).unwrap()];
    assert_all_succeeded(&mut nodes, deadline);
    let report = check_run(&[(&nodes[0], 256)], 200_000);
    assert_eq!(report.total, 256);
}

/// One node alone with `--tasks 0`: its Final Report says no node processed
/// a task (`none`) instead of ending at its colon, and it exits 0.
#[test]
fn one_node_with_no_tasks() {
    let _heavy = serial();
    let deadline = Instant::now() + RUN;
    let (idle, _) = spawn_seed("idle", &["--settle-ms", "300", "--tasks", "0"]);
    let mut nodes = [idle];
    assert_all_succeeded(&mut nodes, deadline);
    let lines = nodes[0].stderr().snapshot();
    let reports: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("Final Report ("))
        .collect();
    assert_eq!(reports.len(), 1, "one Final Report line: {lines:#?}");
    assert!(
        reports[0].ends_with("Final Report (0 tasks): none"),
        "{}",
        reports[0]
    );
    assert_eq!(check_run(&[(&nodes[0], 0)], 500).total, 0);
}

/// Five nodes with 200 tasks each: every node's Final Report counts 1,000.
#[test]
fn five_nodes_two_hundred_tasks_each() {
    let _heavy = serial();
    let deadline = Instant::now() + RUN;
    let args = ["--tasks", "200", "--nodes", "5"];
    let (n1, seed) = spawn_seed("n1", &args);
    let mut nodes = vec![n1];
    for name in ["n2", "n3", "n4", "n5"] {
        nodes.push(spawn_joiner(name, seed, &args));
    }
    assert_all_succeeded(&mut nodes, deadline);
    let runs: Vec<_> = nodes.iter().map(|p| (p, 200)).collect();
    let report = check_run(&runs, 500);
    assert_eq!(report.total, 1000);
    assert!(busy(&report).len() >= 3, "1,000 tasks spread: {report:?}");
}

/// Workers started before their seed keep retrying the join; once the seed
/// is up on the port they were given, the run completes.
#[test]
fn workers_started_before_the_seed_still_join() {
    let _heavy = serial();
    let deadline = Instant::now() + RUN;
    let port = reserve_port().unwrap();
    let seed_addr = format!("127.0.0.1:{port}");
    let w1 = spawn("w1", &["--port", "0", "--seed", &seed_addr, "--nodes", "3"]);
    let w2 = spawn("w2", &["--port", "0", "--seed", &seed_addr, "--nodes", "3"]);
    // Both are up (bound, membership started and dialling the absent seed)
    // before the seed exists.
    for w in [&w1, &w2] {
        casty_tests::listen_addr(w, deadline).unwrap();
    }
    let seed = spawn("seed", &["--port", &port.to_string(), "--nodes", "3"]);
    let mut nodes = [seed, w1, w2];
    assert_all_succeeded(&mut nodes, deadline);
    let report = check_run(&[(&nodes[0], 5), (&nodes[1], 5), (&nodes[2], 5)], 500);
    assert_eq!(report.total, 15);
}

/// A node with `--tasks 0` submits nothing, still processes its shards of
/// the others' tasks, reports, and exits 0 with the others.
#[test]
fn a_node_with_no_tasks_still_processes_and_reports() {
    let _heavy = serial();
    let deadline = Instant::now() + RUN;
    let (n1, seed) = spawn_seed("n1", &["--nodes", "3", "--tasks", "20"]);
    let idle = spawn_joiner("idle", seed, &["--nodes", "3", "--tasks", "0"]);
    let n3 = spawn_joiner("n3", seed, &["--nodes", "3", "--tasks", "20"]);
    let mut nodes = [n1, idle, n3];
    assert_all_succeeded(&mut nodes, deadline);
    let report = check_run(&[(&nodes[0], 20), (&nodes[1], 0), (&nodes[2], 20)], 500);
    assert_eq!(report.total, 40);
    assert!(
        busy(&report).contains_key("idle"),
        "the idle node processed its shards: {report:?}"
    );
}

/// A second node with a name already running in the cluster is refused
/// with a clear error and exits non-zero; the first keeps running.
#[test]
fn a_duplicate_name_is_refused() {
    let _heavy = serial();
    let deadline = Instant::now() + RUN;
    // `--nodes 2` keeps the first node waiting for a second member.
    let (mut first, seed) = spawn_seed("dup", &["--nodes", "2"]);
    // A short join deadline, so that a join that is never answered (rather
    // than refused) fails this test in seconds.
    let mut cmd = crate::node_cmd(
        "dup",
        &["--port", "0", "--seed", &seed.to_string(), "--nodes", "2"],
    );
    cmd.env("CASTY_CLUSTER__MEMBERSHIP__JOIN_DEADLINE_MS", "5000");
    let mut second = casty_tests::Process::spawn("dup", cmd).unwrap();
    let status = second
        .wait_exit(deadline)
        .unwrap()
        .expect("the duplicate exits");
    assert!(!status.success(), "the duplicate exited with {status}");
    let errors: Vec<String> = second
        .stderr()
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains("refused") && l.contains("dup")),
        "a clear refusal naming the node: {errors:?}"
    );
    assert!(
        first.try_status().unwrap().is_none(),
        "the first node keeps running"
    );
}

/// A node stopped by SIGTERM mid-run says how far it got and exits 0 after
/// leaving; the others finish, and their Final Report says which member
/// sent no report.
#[test]
fn a_member_stopped_mid_run_is_named_in_the_others_reports() {
    let _heavy = serial();
    let deadline = Instant::now() + RUN;
    // Long enough tasks that the stopped node has not finished when the
    // signal comes (200 x 50,000 rounds, about 0.5 s of hashing per node).
    let args = ["--nodes", "3", "--tasks", "200", "--iterations", "50000"];
    let (n1, seed) = spawn_seed("n1", &args);
    let n2 = spawn_joiner("n2", seed, &args);
    let mut stopped = spawn_joiner("stopped", seed, &args);
    stopped
        .stderr()
        .wait_for(deadline, |l| l.contains("cluster ready"))
        .expect("the run starts");
    stopped.terminate().unwrap();
    let status = stopped
        .wait_exit(deadline)
        .unwrap()
        .expect("the stopped node exits");
    assert!(status.success(), "a graceful leave exits 0: {status}");
    let summary = stopped
        .stderr()
        .snapshot()
        .into_iter()
        .find(|l| l.contains("signal received: leaving the cluster;"))
        .expect("the stopped node logs how far it got");
    assert!(summary.contains("/200 results received"), "{summary}");
    let mut others = [n1, n2];
    assert_all_succeeded(&mut others, deadline);
    for node in &others {
        let missing = node
            .stderr()
            .snapshot()
            .into_iter()
            .find(|l| l.contains("sent no report"))
            .unwrap_or_else(|| panic!("{} names the member without a report", node.label()));
        assert!(missing.contains("\"stopped\""), "{missing}");
    }
}
