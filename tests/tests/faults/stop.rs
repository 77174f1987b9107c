//! SIGSTOP longer than failure detection, then SIGCONT (issue 8, scenario 2).

use std::time::{Duration, Instant};

use casty_tests::{LostWriteChecker, serial, wait_until};
use futures::StreamExt;
use taskqueue::{QueueError, TaskStatus};

use crate::{Probe, assert_exits_0, completed, signal, spawn, spawn_addr};

/// Submits `ids` from the probe and waits for each result, recording both
/// in `checker`; panics on a failed submit or a missing result.
pub(crate) fn submit_and_wait(probe: &Probe, checker: &mut LostWriteChecker, ids: &[String]) {
    let results: Vec<(String, Result<TaskStatus, QueueError>)> = probe.rt.block_on(
        futures::stream::iter(ids.iter().cloned())
            .map(|id| {
                let q = probe.queue.clone();
                async move {
                    // A client retries a submit that timed out (submits
                    // are idempotent), for up to 40 s.
                    let give_up = Instant::now() + Duration::from_secs(40);
                    let mut r = q.submit(&id, &format!("doc-{id}"), 500).await;
                    while matches!(r, Err(QueueError::Region(_))) && Instant::now() < give_up {
                        r = q.submit(&id, &format!("doc-{id}"), 500).await;
                    }
                    let r = match r {
                        Ok(()) => q.wait_result(&id, Duration::from_secs(30)).await,
                        Err(e) => Err(e),
                    };
                    (id, r)
                }
            })
            .buffer_unordered(32)
            .collect(),
    );
    for (id, r) in results {
        let s = r.unwrap_or_else(|e| panic!("{id}: {e}"));
        checker.acknowledged(&id, format!("doc-{id}").as_bytes(), 500);
        checker.observed(&id, completed(&s).unwrap());
    }
}

/// Scenario 2: node `c` is stopped (SIGSTOP) until the others declare it
/// dead, tasks complete meanwhile, then it is resumed (SIGCONT) and comes
/// back. Right after it is back in the probe's view, every task, before
/// and during the stop, is served completed with the right value (a
/// resumed node serving its old shards would answer "not found" or
/// "pending" for tasks completed while it slept: a stale value); every
/// node then finishes its run and exits 0.
#[test]
fn stopped_node_is_declared_dead_and_comes_back_without_stale_answers() {
    let _heavy = serial();
    let args = ["--nodes", "4", "--tasks", "0"];
    let (mut a, seed) = spawn_addr("a", &args);
    let seed_s = seed.to_string();
    let mut others: Vec<_> = ["b", "c"]
        .iter()
        .map(|n| spawn(n, &["--nodes", "4", "--tasks", "0", "--seed", &seed_s]))
        .collect();
    let mut c = others.pop().unwrap();
    let mut b = others.pop().unwrap();
    let probe = Probe::join("probe", seed);
    probe.wait_members(4, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(150);

    let mut checker = LostWriteChecker::new();
    let before: Vec<String> = (0..200).map(|i| format!("before-{i}")).collect();
    submit_and_wait(&probe, &mut checker, &before);
    assert!(
        before
            .iter()
            .any(|id| probe.owner_of(id).as_deref() == Some("c")),
        "c owns some shards"
    );

    signal(&c, "STOP");
    let stopped = Instant::now();
    assert!(
        wait_until(Instant::now() + Duration::from_secs(30), || !probe
            .is_active("c")),
        "the stopped node was never declared dead"
    );
    eprintln!(
        "FIGURE detection: stopped node declared dead after {:.2}s",
        stopped.elapsed().as_secs_f64()
    );
    let during: Vec<String> = (0..200).map(|i| format!("during-{i}")).collect();
    submit_and_wait(&probe, &mut checker, &during);
    crate::kill::three_answers(&probe, "while c is stopped");

    signal(&c, "CONT");
    let resumed = Instant::now();
    assert!(
        wait_until(Instant::now() + Duration::from_secs(30), || probe
            .is_active("c")),
        "the resumed node never came back"
    );
    eprintln!(
        "resumed node active again after {:.2}s",
        resumed.elapsed().as_secs_f64()
    );
    // At once: every query answers completed with the right value.
    let all: Vec<String> = before.iter().chain(&during).cloned().collect();
    let stale: Vec<String> = probe.rt.block_on(
        futures::stream::iter(all.iter().cloned())
            .map(|id| {
                let q = probe.queue.clone();
                async move {
                    let t = Instant::now() + Duration::from_secs(20);
                    loop {
                        match q.get(&id).await {
                            Ok(s) => {
                                return match completed(&s) {
                                    Ok(v) => (id, Ok(v.to_owned())),
                                    Err(e) => (id, Err(format!("served {e}"))),
                                };
                            }
                            Err(QueueError::Region(e)) if Instant::now() < t => {
                                let _ = e;
                            }
                            Err(e) => return (id, Err(e.to_string())),
                        }
                    }
                }
            })
            .buffer_unordered(32)
            .filter_map(|(id, r)| {
                let out = match r {
                    Ok(v) => {
                        checker.observed(&id, &v);
                        None
                    }
                    Err(e) => Some(format!("{id}: {e}")),
                };
                futures::future::ready(out)
            })
            .collect(),
    );
    assert!(
        stale.is_empty(),
        "{} stale or missing answers after the resume: {stale:?}",
        stale.len()
    );
    checker.assert_no_lost_writes();
    crate::kill::three_answers(&probe, "after c came back");

    probe.finish_workload(Duration::from_secs(60));
    for p in [&mut a, &mut b, &mut c] {
        assert_exits_0(p, deadline);
    }
}
