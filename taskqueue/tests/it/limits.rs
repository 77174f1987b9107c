//! `[tasks]` limits against the transport's frames: the largest task
//! `TasksConfig::check_frame_limit` lets through travels to a remote owner
//! and to the replicas; a configuration past it is refused at start.

use std::time::Duration;

use sharding::{MemberMap, RegionConfig};
use taskqueue::{NewTask, QueueError, TaskQueue, TaskState, TasksConfig, config::ENVELOPE_BYTES};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

/// Frames of 64 KiB, so the largest task is small enough to test quickly.
const FRAME_BYTES: usize = 64 * 1024;
const ID_BYTES: u64 = 256;

async fn bind(name: &str, stop: &CancellationToken) -> Transport {
    Transport::bind(
        LocalNode {
            cluster: "limits-test".into(),
            settings: String::new(),
            name: name.into(),
            generation: 1,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig {
            max_frame_bytes: FRAME_BYTES,
            ..TransportConfig::default()
        },
        stop.clone(),
    )
    .await
    .unwrap()
}

/// The largest `[tasks]` a 64 KiB frame allows.
fn largest() -> TasksConfig {
    TasksConfig {
        max_task_id_bytes: ID_BYTES,
        max_payload_bytes: FRAME_BYTES as u64 - ID_BYTES - ENVELOPE_BYTES,
        ..TasksConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_task_a_frame_allows_reaches_a_remote_owner_and_its_replica() {
    let stop = CancellationToken::new();
    let transports = [bind("a", &stop).await, bind("b", &stop).await];
    let members: MemberMap = transports
        .iter()
        .map(|t| (t.identity().name.clone(), t.identity().clone()))
        .collect();
    let mut views = Vec::new();
    let mut queues = Vec::new();
    for t in &transports {
        let (tx, view) = watch::channel(members.clone());
        // Two members, two copies of every shard: each task goes to its
        // owner and to the other node as its replica.
        let queue =
            TaskQueue::start(t, RegionConfig::default(), largest(), view, stop.clone()).unwrap();
        views.push(tx);
        queues.push(queue);
    }
    let config = largest();
    let payload = "p".repeat(config.max_payload_bytes as usize);
    // Ids of the longest length allowed, differing in their last bytes.
    let id = |i: usize| format!("{i:0>width$}", width = ID_BYTES as usize);
    let a = &queues[0];
    // Wait until the regions route by the view (their first shard fetches).
    for q in &queues {
        while q.task_region().routing().members.len() != 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..8 {
        let id = id(i);
        if let Some(owner) = a.task_region().routing().owner_of(&id) {
            owners.insert(owner.name.clone());
        }
        let status = a
            .submit_and_wait(&id, &payload, 3, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("task {i}: {e}"));
        assert_eq!(status.status, TaskState::Completed);
    }
    // Some of them went to the other node: the frames crossed the wire.
    assert!(owners.contains("b"), "owners: {owners:?}");
    // In batches too: a frame holds one such task at most.
    let batch: Vec<NewTask> = (8..16)
        .map(|i| NewTask {
            id: id(i),
            payload: payload.clone(),
            iterations: 3,
        })
        .collect();
    for r in a.submit_many_and_wait(batch, Duration::from_secs(30)).await {
        assert_eq!(r.unwrap().status, TaskState::Completed);
    }
    // Read back from the other node, whichever owns each.
    for i in 0..16 {
        let status = queues[1].get(&id(i)).await.unwrap();
        assert_eq!(status.status, TaskState::Completed);
    }
    stop.cancel();
}

#[tokio::test]
async fn a_payload_limit_past_the_frame_is_refused_at_start() {
    let stop = CancellationToken::new();
    let transport = bind("solo", &stop).await;
    let (_tx, view) = watch::channel(MemberMap::new());
    let config = TasksConfig {
        max_payload_bytes: largest().max_payload_bytes + 1,
        ..largest()
    };
    let err = TaskQueue::start(
        &transport,
        RegionConfig::default(),
        config,
        view,
        stop.clone(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, QueueError::Config(_)), "{err:?}");
    assert!(
        text.contains("tasks.max_payload_bytes")
            && text.contains("transport.max_frame_bytes = 65536")
            && text.contains(&format!("lower it to {}", largest().max_payload_bytes)),
        "{text}"
    );
    stop.cancel();
}
