//! The control lane is not held up by bulk traffic to the same peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use transport::{Channel, Lane, TransportConfig};

use crate::support::{node, node_with, wait_until};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Probe {
    Ping(u64),
    Ack(u64),
}

/// A probe timeout as membership would use it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_lane_stays_fast_while_bulk_is_saturated() {
    let a = node("a", "c").await;
    // b drains bulk slowly and keeps a short inbound queue, so the backlog
    // sits in a's queue and the TCP buffers, as with a busy node.
    let b = node_with(
        "b",
        "c",
        TransportConfig {
            inbound_queue_frames: 64,
            ..TransportConfig::default()
        },
    )
    .await;
    let b_addr = b.identity().addr.clone();

    let (bulk_a, _) = Channel::<String>::register(&a, 1, Lane::Bulk).unwrap();
    let (_, mut bulk_b) = Channel::<String>::register(&b, 1, Lane::Bulk).unwrap();
    let (probe_a, _) = Channel::<Probe>::register(&a, 2, Lane::Control).unwrap();
    let (_, mut probe_b) = Channel::<Probe>::register(&b, 2, Lane::Control).unwrap();

    let received = Arc::new(AtomicU64::new(0));
    tokio::spawn({
        let received = Arc::clone(&received);
        async move {
            while let Some(r) = bulk_b.recv().await {
                assert_eq!(r.msg.len(), 64 * 1024);
                received.fetch_add(1, Ordering::Relaxed);
                // Simulated work per task: ~1 ms.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(r) = probe_b.recv().await {
            if let (Probe::Ping(n), Some(resp)) = (r.msg, r.responder) {
                resp.reply_msg(&Probe::Ack(n)).unwrap();
            }
        }
    });

    // Flood bulk with 64 KiB frames for as long as the probes run.
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn({
        let (sent, stop, b_addr) = (Arc::clone(&sent), Arc::clone(&stop), b_addr.clone());
        async move {
            let frame = "x".repeat(64 * 1024);
            while !stop.load(Ordering::Relaxed) {
                bulk_a.send(&b_addr, &frame).await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let backlog = || {
        sent.load(Ordering::Relaxed)
            .saturating_sub(received.load(Ordering::Relaxed))
    };
    // Saturated: at least 32 MiB queued ahead of b's consumer.
    wait_until(
        "bulk backlog of 512 frames",
        Duration::from_secs(60),
        || backlog() >= 512,
    )
    .await;

    let mut worst = Duration::ZERO;
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    for n in 0..40 {
        ticks.tick().await;
        let t = Instant::now();
        let ack: Probe = probe_a
            .ask(&b_addr, &Probe::Ping(n), Duration::from_secs(10))
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(ack, Probe::Ack(n));
        assert!(
            took < PROBE_TIMEOUT,
            "probe {n} took {took:?} behind a bulk backlog of {} frames",
            backlog()
        );
        worst = worst.max(took);
    }
    let backlog_after = backlog();
    stop.store(true, Ordering::Relaxed);
    assert!(
        backlog_after >= 256,
        "bulk was still saturated during the probes (backlog {backlog_after})"
    );
    println!("worst probe round trip {worst:?} with a bulk backlog of {backlog_after} × 64 KiB");
    a.shutdown().await;
    flood.abort();
}
