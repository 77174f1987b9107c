//! Tasks of mixed lengths on one node's pool of two threads: every result
//! is the hash chain's, and long tasks queued together spread over the
//! threads. The timings are printed with `--ignored --nocapture`.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use taskqueue::{NewTask, TaskQueue, TaskState, work};
use tokio_util::sync::CancellationToken;

/// One node alone, hashing on `workers` threads.
async fn alone(name: &str, workers: u32) -> (TaskQueue, CancellationToken) {
    let node = crate::queue::node(name, None, workers).await;
    (node.queue, node.stop)
}

/// Submits `iterations` (one task each, in this order, in one batch) and
/// waits for every result; checks each against [`work::compute`] and
/// returns the time from the submit to the last result.
async fn run(queue: &TaskQueue, tag: &str, iterations: &[u32]) -> Duration {
    let tasks: Vec<NewTask> = iterations
        .iter()
        .enumerate()
        .map(|(i, &n)| NewTask {
            id: format!("{tag}-{i}"),
            payload: format!("doc-{tag}-{i}"),
            iterations: n,
        })
        .collect();
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let started = Instant::now();
    for r in queue.submit_many(tasks).await {
        r.unwrap();
    }
    let results = queue.wait_results(&ids, Duration::from_secs(120)).await;
    let took = started.elapsed();
    for ((id, r), &n) in ids.iter().zip(results).zip(iterations) {
        let s = r.unwrap();
        assert_eq!(s.status, TaskState::Completed, "{id}");
        let want = work::compute(format!("doc-{id}").as_bytes(), NonZeroU32::new(n).unwrap());
        assert_eq!(s.result.as_deref(), Some(want.to_hex().as_str()), "{id}");
    }
    took
}

/// Long tasks of this many iterations (about 0.1 s here).
const LONG: u32 = 4_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn mixed_lengths_timings() {
    let rounds: usize = std::env::var("MIX_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (queue, stop) = alone("mix", 2).await;
    let mut shapes: Vec<(&str, Vec<u32>)> = Vec::new();
    // Four long tasks ahead of 60 short ones, and the reverse.
    shapes.push((
        "long-first",
        std::iter::repeat_n(LONG, 4)
            .chain(std::iter::repeat_n(1, 60))
            .collect(),
    ));
    shapes.push((
        "short-first",
        std::iter::repeat_n(1, 60)
            .chain(std::iter::repeat_n(LONG, 4))
            .collect(),
    ));
    // Eight long ahead of 120 short.
    shapes.push((
        "8long-first",
        std::iter::repeat_n(LONG, 8)
            .chain(std::iter::repeat_n(1, 120))
            .collect(),
    ));
    // 64 long alone.
    shapes.push(("64long", std::iter::repeat_n(LONG / 8, 64).collect()));
    // Every eighth long.
    shapes.push((
        "interleaved",
        (0..128)
            .map(|i| if i % 8 == 0 { LONG / 2 } else { 100 })
            .collect(),
    ));
    for round in 0..rounds {
        for (name, shape) in &shapes {
            let took = run(&queue, &format!("{name}-{round}"), shape).await;
            println!(
                "MIX {name} round {round}: {:.1} ms",
                took.as_secs_f64() * 1e3
            );
        }
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_mixed_lengths_are_the_chains() {
    let (queue, stop) = alone("mix-check", 2).await;
    // 1 and 100,000 iterations mixed in runs of several, and single ones.
    let shape: Vec<u32> = (0..600u32)
        .map(|i| match i % 37 {
            0..=4 => 100_000,
            9 | 20 => 100_000,
            _ => 1 + (i % 3),
        })
        .collect();
    run(&queue, "check", &shape).await;
    // Submitted again: the same results, nothing computed twice wrongly.
    run(&queue, "check", &shape).await;
    stop.cancel();
}
