//! The single-core baseline of the cluster benchmark
//! (`scripts/bench-cluster.sh`): how many 500-iteration SHA-256 tasks one
//! core computes per second with nothing else to do.
//!
//! Three loops, alternated over several rounds, each reported as the median
//! round: `raw`, the plain `sha2` `Digest` loop (SHA-256 of the payload,
//! then of each previous 32-byte digest, FIPS 180-4); `compute`,
//! `taskqueue::work::compute` (the same result by calling the compression
//! function on one pre-padded block); and `pair`,
//! `taskqueue::work::compute_pair`, two tasks interleaved on the one core,
//! as the nodes' pool threads run them when they have work queued. The
//! baseline the benchmark compares against is the fastest of the three, so
//! the nodes' own faster kernel never flatters the cluster's figure.
//!
//! ```text
//! cargo run --release -p node-cli --example sha_rate -- [--iterations 500] [--millis 300] [--rounds 7]
//! ```
//!
//! Output (one line, `key=value`, rates in tasks per second):
//! `iterations=500 raw_tasks_per_s=... compute_tasks_per_s=... pair_tasks_per_s=... baseline_tasks_per_s=...`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The plain loop: SHA-256 of the payload, then `iterations - 1` more
/// rounds over the previous digest; the first 8 bytes.
fn raw(payload: &[u8], iterations: u32) -> [u8; 8] {
    let mut digest = Sha256::digest(payload);
    for _ in 1..iterations {
        digest = Sha256::digest(digest);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Runs `task` on fresh payloads (`doc-job-bench-<i>`) for about `budget`;
/// returns tasks per second.
fn rate(budget: Duration, mut task: impl FnMut(&[u8])) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            let payload = format!("doc-job-bench-{n}");
            task(black_box(payload.as_bytes()));
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// [`rate`] for a task that computes two payloads at once.
fn pair_rate(budget: Duration, mut task: impl FnMut(&[u8], &[u8])) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..32 {
            let a = format!("doc-job-bench-{n}");
            let b = format!("doc-job-bench-{}", n + 1);
            task(black_box(a.as_bytes()), black_box(b.as_bytes()));
            n += 2;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(args: &[String], flag: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{flag} takes a positive number, not {v:?}"))
        })
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iterations = u32::try_from(arg(&args, "--iterations", 500)).expect("--iterations fits u32");
    let n = NonZeroU32::new(iterations).expect("--iterations must be at least 1");
    let budget = Duration::from_millis(arg(&args, "--millis", 300));
    let rounds = arg(&args, "--rounds", 7).max(1);
    let (mut raws, mut computes, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        raws.push(rate(budget, |p| {
            black_box(raw(p, iterations));
        }));
        computes.push(rate(budget, |p| {
            black_box(taskqueue::work::compute(p, n));
        }));
        pairs.push(pair_rate(budget, |a, b| {
            black_box(taskqueue::work::compute_pair((a, n), (b, n)));
        }));
    }
    let (r, c, p) = (median(raws), median(computes), median(pairs));
    println!(
        "iterations={iterations} raw_tasks_per_s={r:.0} compute_tasks_per_s={c:.0} pair_tasks_per_s={p:.0} baseline_tasks_per_s={:.0}",
        r.max(c).max(p)
    );
}
