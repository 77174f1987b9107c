//! The `TaskQueue` over real regions: three in-process nodes on loopback
//! with real membership; results from any node; the busy-workers test.

use std::time::{Duration, Instant};

use membership::{Event, MembershipConfig, MembershipHandle};
use sharding::{MemberMap, RegionConfig};
use taskqueue::{NewTask, QueueError, TaskQueue, TaskState, TasksConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, NodeId, Transport, TransportConfig};

pub(crate) struct Node {
    pub(crate) queue: TaskQueue,
    members: MembershipHandle,
    pub(crate) stop: CancellationToken,
}

fn member_map(members: &MembershipHandle) -> watch::Receiver<MemberMap> {
    let mut view = members.watch_view();
    let to_map = |v: &membership::View| -> MemberMap {
        v.active()
            .map(|m| {
                (
                    m.id.name.clone(),
                    NodeId {
                        name: m.id.name.clone(),
                        addr: m.id.addr.clone(),
                        generation: m.id.generation,
                    },
                )
            })
            .collect()
    };
    let (tx, rx) = watch::channel(to_map(&view.borrow_and_update()));
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            tx.send_replace(to_map(&view.borrow_and_update()));
        }
    });
    rx
}

/// A node on loopback with real membership: the first of a cluster
/// without `seed`, hashing on `workers` threads.
pub(crate) async fn node(name: &str, seed: Option<String>, workers: u32) -> Node {
    let stop = CancellationToken::new();
    let transport = Transport::bind(
        LocalNode {
            cluster: "queue-test".into(),
            settings: String::new(),
            name: name.into(),
            generation: 1,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig::default(),
        stop.clone(),
    )
    .await
    .unwrap();
    let seeds = vec![seed.unwrap_or_else(|| transport.identity().addr.clone())];
    let members =
        membership::start(&transport, MembershipConfig::default(), seeds, stop.clone()).unwrap();
    members.wait_joined(Duration::from_secs(10)).await.unwrap();
    let config = TasksConfig {
        workers,
        ..TasksConfig::default()
    };
    let queue = TaskQueue::start(
        &transport,
        RegionConfig::default(),
        config,
        member_map(&members),
        stop.clone(),
    )
    .unwrap();
    Node {
        queue,
        members,
        stop,
    }
}

async fn cluster(workers: u32) -> Vec<Node> {
    let a = node("a", None, workers).await;
    let seed = a.members.local().addr.clone();
    let b = node("b", Some(seed.clone()), workers).await;
    let c = node("c", Some(seed), workers).await;
    let nodes = vec![a, b, c];
    for n in &nodes {
        n.members
            .wait_for(3, Duration::from_secs(10))
            .await
            .unwrap();
    }
    nodes
}

const T: Duration = Duration::from_secs(20);

/// Two 3-node clusters at once would share 2 cores: run them one by one.
static CLUSTER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_anywhere_read_everywhere_never_create_on_get() {
    let _serial = CLUSTER_LOCK.lock().await;
    let nodes = cluster(1).await;
    for i in 0..30 {
        let id = format!("t/{i} ü");
        nodes[i % 3]
            .queue
            .submit(&id, &format!("doc-{id}"), 50)
            .await
            .unwrap();
    }
    for i in 0..30 {
        let id = format!("t/{i} ü");
        let mut results = Vec::new();
        for n in &nodes {
            let s = n.queue.wait_result(&id, T).await.unwrap();
            assert_eq!(s.status, TaskState::Completed);
            results.push((s.result.unwrap(), s.processed_by.unwrap()));
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    }
    // Unknown ids are "not found", at once, and stay unknown.
    for n in &nodes {
        let err = n.queue.get("never-submitted").await.unwrap_err();
        assert!(
            matches!(err, QueueError::Task(taskqueue::Error::NotFound { .. })),
            "{err:?}"
        );
        let err = n.queue.wait_result("never-submitted", T).await.unwrap_err();
        assert!(
            matches!(err, QueueError::Task(taskqueue::Error::NotFound { .. })),
            "{err:?}"
        );
    }
    // A conflicting resubmit is refused, an identical one accepted.
    nodes[0]
        .queue
        .submit("t/0 ü", "doc-t/0 ü", 50)
        .await
        .unwrap();
    let err = nodes[1]
        .queue
        .submit("t/0 ü", "other", 50)
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::Task(taskqueue::Error::Conflict { .. })),
        "{err:?}"
    );
    for n in &nodes {
        n.stop.cancel();
    }
}

/// Issue 5: while every hashing worker of every node is busy, membership
/// keeps every node alive (no suspicion) and completed results are still
/// served within their timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_workers_do_not_stall_probes_or_queries() {
    let _serial = CLUSTER_LOCK.lock().await;
    let nodes = cluster(2).await;
    // One cheap task to query while the workers are busy.
    nodes[0].queue.submit("done", "doc-done", 10).await.unwrap();
    nodes[0].queue.wait_result("done", T).await.unwrap();
    let mut events: Vec<_> = nodes.iter().map(|n| n.members.subscribe()).collect();
    // Saturate: 24 tasks of 10,000,000 iterations (about 0.5 s of CPU each
    // with SHA extensions, 12 s in all, far beyond the 3 s window on 2 cores)
    // spread over the shards of all nodes, 2 workers per node.
    for i in 0..24 {
        let id = format!("heavy-{i}");
        nodes[i % 3]
            .queue
            .submit(&id, "x", 10_000_000)
            .await
            .unwrap();
    }
    // While they run, queries of the completed task answer quickly.
    let busy_until = Instant::now() + Duration::from_secs(3);
    let mut worst = Duration::ZERO;
    let mut queries = 0;
    while Instant::now() < busy_until {
        for n in &nodes {
            let t0 = Instant::now();
            let s = n.queue.get("done").await.unwrap();
            assert_eq!(s.status, TaskState::Completed);
            worst = worst.max(t0.elapsed());
            queries += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(queries > 10);
    assert!(
        worst < Duration::from_millis(500),
        "a query took {worst:?} while the workers were busy"
    );
    // Some heavy task is still pending: the workers really were busy.
    let mut pending = 0;
    for i in 0..24 {
        if nodes[0]
            .queue
            .get(&format!("heavy-{i}"))
            .await
            .unwrap()
            .status
            == TaskState::Pending
        {
            pending += 1;
        }
    }
    assert!(pending > 0, "the workers were not saturated");
    // No member was suspected or declared down meanwhile.
    for rx in &mut events {
        while let Ok(ev) = rx.try_recv() {
            assert!(
                !matches!(ev, Event::MemberSuspect(_) | Event::MemberDown(_)),
                "false alarm while busy: {ev:?}"
            );
        }
    }
    for n in &nodes {
        n.stop.cancel();
    }
}

/// `submit_many` and `wait_results` give, per task, what `submit` and
/// `wait_result` give one by one: the same results read from every node,
/// typed errors for the invalid, conflicting and unknown ones among valid
/// ones in the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_submits_and_waits_answer_per_task() {
    let _serial = CLUSTER_LOCK.lock().await;
    let nodes = cluster(1).await;
    let mut tasks: Vec<NewTask> = (0..60)
        .map(|i| NewTask {
            id: format!("b/{i}"),
            payload: format!("doc-b/{i}"),
            iterations: 50,
        })
        .collect();
    tasks[5].iterations = 0;
    let outcomes = nodes[0].queue.submit_many(tasks.clone()).await;
    assert_eq!(outcomes.len(), 60);
    for (i, o) in outcomes.iter().enumerate() {
        if i == 5 {
            assert!(
                matches!(o, Err(QueueError::Task(taskqueue::Error::Invalid(_)))),
                "{o:?}"
            );
        } else {
            assert!(o.is_ok(), "b/{i}: {o:?}");
        }
    }
    // Resubmitting: same input accepted, other input a conflict.
    let again = vec![
        tasks[0].clone(),
        NewTask {
            payload: "other".into(),
            ..tasks[1].clone()
        },
    ];
    let outcomes = nodes[1].queue.submit_many(again).await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(
            outcomes[1],
            Err(QueueError::Task(taskqueue::Error::Conflict { .. }))
        ),
        "{:?}",
        outcomes[1]
    );
    let mut ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    ids.push("never-submitted".into());
    let batched = nodes[2].queue.wait_results(&ids, T).await;
    assert_eq!(batched.len(), ids.len());
    for (id, got) in ids.iter().zip(&batched) {
        match id.as_str() {
            "b/5" | "never-submitted" => assert!(
                matches!(
                    got,
                    Err(QueueError::Task(taskqueue::Error::NotFound { .. }))
                ),
                "{id}: {got:?}"
            ),
            _ => {
                let got = got.as_ref().unwrap();
                assert_eq!(got.status, TaskState::Completed);
                for n in &nodes {
                    let one = n.queue.wait_result(id, T).await.unwrap();
                    assert_eq!(&one, got, "{id}");
                }
            }
        }
    }
    for n in &nodes {
        n.stop.cancel();
    }
}

/// `submit_and_wait` (one message: submit, then the result): the result
/// equals a submit's followed by a wait, from every node; a second call
/// computes nothing new; another input is a conflict at once; an input past
/// a limit fails alone in a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_answers_the_result_in_one_call() {
    let _serial = CLUSTER_LOCK.lock().await;
    let nodes = cluster(1).await;
    let mut tasks: Vec<NewTask> = (0..40)
        .map(|i| NewTask {
            id: format!("sw/{i}"),
            payload: format!("doc-sw/{i}"),
            iterations: 50,
        })
        .collect();
    tasks[7].iterations = 0;
    let outcomes = nodes[0].queue.submit_many_and_wait(tasks.clone(), T).await;
    assert_eq!(outcomes.len(), 40);
    for (i, (task, o)) in tasks.iter().zip(&outcomes).enumerate() {
        if i == 7 {
            assert!(
                matches!(o, Err(QueueError::Task(taskqueue::Error::Invalid(_)))),
                "{o:?}"
            );
            continue;
        }
        let got = o.as_ref().unwrap();
        assert_eq!(got.id, task.id);
        assert_eq!(got.status, TaskState::Completed);
        let expected = taskqueue::work::compute(
            task.payload.as_bytes(),
            std::num::NonZeroU32::new(task.iterations).unwrap(),
        )
        .to_hex();
        assert_eq!(
            got.result.as_deref(),
            Some(expected.as_str()),
            "{}",
            task.id
        );
        // The same answer from every node, by a wait or a second call.
        for n in &nodes {
            assert_eq!(&n.queue.wait_result(&task.id, T).await.unwrap(), got);
            let again = n
                .queue
                .submit_and_wait(&task.id, &task.payload, task.iterations, T)
                .await
                .unwrap();
            assert_eq!(&again, got);
        }
    }
    // A task first submitted on its own, then submitted and waited for.
    nodes[1]
        .queue
        .submit("sw/solo", "doc-solo", 60)
        .await
        .unwrap();
    let solo = nodes[2]
        .queue
        .submit_and_wait("sw/solo", "doc-solo", 60, T)
        .await
        .unwrap();
    assert_eq!(
        solo,
        nodes[0].queue.wait_result("sw/solo", T).await.unwrap()
    );
    // Another input: a conflict, at once (no wait for a result).
    let started = Instant::now();
    let err = nodes[1]
        .queue
        .submit_and_wait("sw/0", "other", 50, T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::Task(taskqueue::Error::Conflict { .. })),
        "{err:?}"
    );
    assert!(
        started.elapsed() < T / 2,
        "a conflict waited for {:?}",
        started.elapsed()
    );
    for n in &nodes {
        n.stop.cancel();
    }
}
