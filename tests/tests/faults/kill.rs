//! `kill -9` of a node (issue 8, scenarios 1, 5 and 6; the recovery time).

use std::time::{Duration, Instant};

use casty_tests::{LostWriteChecker, expected_result, serial, wait_until};
use futures::StreamExt;
use taskqueue::{Error, QueueError, TaskState};

use crate::{
    Probe, assert_exits_0, completed, logged, observe_log, spawn, spawn_addr, tracing_free_note,
};

/// Tasks per submitting node (`FAULTS_TASKS` overrides, e.g. 1000 for the
/// issue's full size).
fn tasks() -> u32 {
    std::env::var("FAULTS_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

/// Scenario 1: three nodes each submit `tasks()` tasks; one is killed with
/// SIGKILL while tasks are in flight (as soon as the first node has all its
/// submissions acknowledged). The two survivors complete every one of their
/// tasks, log each result (checked against the independent SHA-256), agree
/// on the final report of the live members and exit 0.
#[test]
fn kill_one_of_three_while_all_submit() {
    let _heavy = serial();
    let n = tasks();
    let n_s = n.to_string();
    let args = [
        "--nodes",
        "3",
        "--tasks",
        n_s.as_str(),
        "--iterations",
        "500",
    ];
    let (mut a, seed) = spawn_addr("a", &args);
    let seed = seed.to_string();
    let with_seed = |name: &str| {
        let mut all = vec!["--seed", seed.as_str()];
        all.extend_from_slice(&args);
        spawn(name, &all)
    };
    let mut b = with_seed("b");
    let mut c = with_seed("c");
    let deadline = Instant::now() + Duration::from_secs(120);
    // In flight: the first node logging a result has had every submission
    // acknowledged; the others are still submitting or waiting.
    assert!(
        wait_until(deadline, || [&a, &b, &c].iter().any(|p| p
            .stderr()
            .snapshot()
            .iter()
            .any(|l| casty_tests::seed_log::task_result(l).is_some()))),
        "no node got a result"
    );
    c.kill().unwrap();
    let killed = Instant::now();
    assert_exits_0(&mut a, deadline);
    assert_exits_0(&mut b, deadline);
    eprintln!(
        "survivors exited {:.1}s after the kill",
        killed.elapsed().as_secs_f64()
    );

    let mut checker = LostWriteChecker::new();
    for (p, node) in [(&a, "a"), (&b, "b")] {
        // Exit 0 means every submission was acknowledged (a failed one is
        // logged and makes the run fail).
        for i in 0..n {
            let id = format!("job-{node}-{i}");
            checker.acknowledged(&id, format!("doc-{id}").as_bytes(), 500);
        }
        let seen = observe_log(&mut checker, p);
        assert_eq!(seen, n as usize, "{node} logged {seen} results of {n}");
        let done: Vec<_> = p
            .stderr()
            .snapshot()
            .iter()
            .filter_map(|l| casty_tests::seed_log::completed(l))
            .collect();
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].done, done[0].total), (u64::from(n), u64::from(n)));
    }
    // What the dead node logged before dying must be right too.
    for i in 0..n {
        let id = format!("job-c-{i}");
        checker.attempted(&id, format!("doc-{id}").as_bytes(), 500);
    }
    observe_log(&mut checker, &c);
    checker.assert_no_lost_writes();
    let reports: Vec<_> = [&a, &b]
        .iter()
        .map(|p| {
            p.stderr()
                .snapshot()
                .iter()
                .find_map(|l| casty_tests::seed_log::final_report(l))
                .unwrap_or_else(|| panic!("{}: no Final Report", p.label()))
        })
        .collect();
    assert_eq!(reports[0], reports[1], "the survivors' final reports");
    assert!(
        reports[0].total >= 2 * u64::from(n),
        "the report counts both survivors' tasks: {:?}",
        reports[0]
    );
}

/// Scenarios 5 and 6 and the recovery time: `c` submits `tasks()` tasks and
/// is killed as soon as all were acknowledged (before most results exist).
/// The probe, another member, then gets every one of them completed with
/// the right result, and no query outlives its timeout. Before and after
/// the kill, a never-submitted id, a completed id and a pending id give
/// three distinct answers. The recovery time is from the kill to the first
/// successful query of a task whose shard `c` owned.
#[test]
fn submitter_dies_after_submitting() {
    let _heavy = serial();
    let n = tasks();
    let n_s = n.to_string();
    let (mut a, seed) = spawn_addr("a", &["--nodes", "4", "--tasks", "0"]);
    let seed_s = seed.to_string();
    let mut b = spawn("b", &["--nodes", "4", "--tasks", "0", "--seed", &seed_s]);
    let mut c = spawn("c", &["--nodes", "4", "--tasks", &n_s, "--seed", &seed_s]);
    let probe = Probe::join("probe", seed);
    probe.wait_members(4, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(150);

    three_answers(&probe, "before the kill");

    // c logs its first result only after every submission returned.
    assert!(
        wait_until(deadline, || c
            .stderr()
            .snapshot()
            .iter()
            .any(|l| casty_tests::seed_log::task_result(l).is_some())),
        "c never finished submitting"
    );
    assert!(
        !logged(&c, "submit failed"),
        "every submission of c acknowledged"
    );
    let owned_by_c: Vec<String> = (0..n)
        .map(|i| format!("job-c-{i}"))
        .filter(|id| probe.owner_of(id).as_deref() == Some("c"))
        .collect();
    c.kill().unwrap();
    let killed = Instant::now();

    // Recovery: the first query of a task c owned that succeeds.
    let first = owned_by_c
        .first()
        .expect("c owns some of its tasks' shards");
    let recovered = probe.rt.block_on(async {
        loop {
            match probe.queue.get(first).await {
                Ok(s) => return (killed.elapsed(), s),
                Err(e) => {
                    tracing_free_note(&format!("{first}: {e}"));
                    assert!(killed.elapsed() < Duration::from_secs(30), "no recovery");
                }
            }
        }
    });
    eprintln!(
        "FIGURE recovery: first successful query of a task owned by the killed node {:.3}s after kill -9 ({:?})",
        recovered.0.as_secs_f64(),
        recovered.1.status
    );
    three_answers(&probe, "during recovery");

    let mut checker = LostWriteChecker::new();
    let timeout = Duration::from_secs(30);
    let results: Vec<(String, Duration, Result<taskqueue::TaskStatus, QueueError>)> =
        probe.rt.block_on(
            futures::stream::iter((0..n).map(|i| format!("job-c-{i}")))
                .map(|id| {
                    let q = probe.queue.clone();
                    async move {
                        let t = Instant::now();
                        let r = q.wait_result(&id, timeout).await;
                        (id, t.elapsed(), r)
                    }
                })
                .buffer_unordered(64)
                .collect(),
        );
    let mut slowest = Duration::ZERO;
    let mut failures = Vec::new();
    for (id, took, r) in results {
        checker.acknowledged(&id, format!("doc-{id}").as_bytes(), 500);
        slowest = slowest.max(took);
        match r.as_ref().map_err(ToString::to_string).and_then(completed) {
            Ok(v) => checker.observed(&id, v),
            Err(e) => failures.push(format!("{id}: {e}")),
        }
    }
    eprintln!(
        "all {n} tasks of the dead submitter answered {:.2}s after the kill; slowest query {:.2}s",
        killed.elapsed().as_secs_f64(),
        slowest.as_secs_f64()
    );
    assert!(
        slowest <= timeout + Duration::from_secs(2),
        "a query hung past its timeout: {slowest:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    checker.assert_no_lost_writes();
    three_answers(&probe, "after recovery");

    probe.finish_workload(Duration::from_secs(60));
    assert_exits_0(&mut a, deadline);
    assert_exits_0(&mut b, deadline);
}

/// Scenario 6: a never-submitted id is `NotFound`, a completed id is
/// `Completed` with the right result, a pending id is `Pending`: three
/// distinct answers. The pending task is a long one whose shard the probe
/// owns (so it is hashed by the optimized test build, about a second).
pub(crate) fn three_answers(probe: &Probe, when: &str) {
    static K: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let iterations = 2_000_000;
    let id = (0..)
        .map(|_| {
            format!(
                "pending-{}",
                K.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        })
        .find(|id| probe.owner_of(id).as_deref() == Some(probe.name.as_str()))
        .unwrap();
    let payload = format!("doc-{id}");
    probe.rt.block_on(async {
        let q = &probe.queue;
        match q.get("never-submitted-task").await {
            Err(QueueError::Task(Error::NotFound { .. })) => {}
            other => panic!("{when}: never-submitted id answered {other:?}"),
        }
        q.submit(&id, &payload, iterations).await.unwrap();
        let pending = q.get(&id).await.unwrap();
        assert_eq!(pending.status, TaskState::Pending, "{when}: {pending:?}");
        assert_eq!(pending.result, None);
        q.wait_result(&id, Duration::from_secs(60)).await.unwrap();
        let done = q.get(&id).await.unwrap();
        assert_eq!(
            completed(&done),
            Ok(expected_result(payload.as_bytes(), iterations).as_str()),
            "{when}"
        );
    });
}
