//! The task queue on one node, using only `transport`, `membership`,
//! `sharding` and `taskqueue`: submit tasks, wait for their results (one by
//! one, then a hundred in one batch), and see an unknown id answered as not
//! found.
//!
//! Run with `cargo run -p taskqueue --example queue`.

use std::time::Duration;

use sharding::{MemberMap, RegionConfig};
use taskqueue::{NewTask, TaskQueue, TasksConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    // What every node of a cluster must share (shard count, replication
    // factor) goes into the handshake, so a node configured otherwise is
    // refused at once (as node-cli does).
    let region = RegionConfig::default();
    let transport = Transport::bind(
        LocalNode {
            cluster: "queue-example".into(),
            settings: region.cluster_settings(),
            name: "solo".into(),
            generation: 1,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig::default(),
        stop.clone(),
    )
    .await?;
    // A one-node cluster: the region's view is just this node. A real
    // deployment follows `membership` (see node-cli).
    let me = transport.identity().clone();
    let (_view_tx, view) = watch::channel(MemberMap::from([(me.name.clone(), me)]));
    let queue = TaskQueue::start(
        &transport,
        region,
        TasksConfig::default(),
        view,
        stop.clone(),
    )?;
    for i in 0..3 {
        let id = format!("job-solo-{i}");
        queue.submit(&id, &format!("doc-{id}"), 500).await?;
    }
    for i in 0..3 {
        let id = format!("job-solo-{i}");
        let s = queue.wait_result(&id, Duration::from_secs(10)).await?;
        println!(
            "{id}: {} (on {})",
            s.result.unwrap_or_default(),
            s.processed_by.unwrap_or_default()
        );
    }
    // Many at once: one outcome per task, in order, for a fraction of the
    // CPU per task of the calls above.
    let batch: Vec<NewTask> = (0..100)
        .map(|i| NewTask {
            id: format!("batch-solo-{i}"),
            payload: format!("doc-batch-solo-{i}"),
            iterations: 500,
        })
        .collect();
    let ids: Vec<String> = batch.iter().map(|t| t.id.clone()).collect();
    for r in queue.submit_many(batch).await {
        r?;
    }
    let results = queue.wait_results(&ids, Duration::from_secs(10)).await;
    let done = results.iter().filter(|r| r.is_ok()).count();
    if let (Some(id), Some(Ok(s))) = (ids.last(), results.last()) {
        println!(
            "{done}/{} batched; {id}: {}",
            ids.len(),
            s.result.as_deref().unwrap_or("")
        );
    }
    // Submit and wait in one message per owner: the results come back as
    // the answers.
    let batch: Vec<NewTask> = (0..100)
        .map(|i| NewTask {
            id: format!("both-solo-{i}"),
            payload: format!("doc-both-solo-{i}"),
            iterations: 500,
        })
        .collect();
    let results = queue
        .submit_many_and_wait(batch, Duration::from_secs(10))
        .await;
    let done = results.iter().filter(|r| r.is_ok()).count();
    if let Some(Ok(s)) = results.last() {
        println!(
            "{done}/100 submitted and awaited together; {}: {}",
            s.id,
            s.result.as_deref().unwrap_or("")
        );
    }
    match queue.get("no-such-task").await {
        Err(e) => println!("no-such-task: {e}"),
        Ok(s) => println!("unexpected: {s:?}"),
    }
    stop.cancel();
    Ok(())
}
