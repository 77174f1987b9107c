//! Prints the simulated figures of `README.md`: formation and convergence
//! at N = 1,000, crash-to-dead at N = 3, 20, 100 and 1,000, and messages
//! and bytes per member per second at N = 10, 100 and 1,000, all with the
//! default configuration.
//!
//! ```text
//! cargo run --release -p membership --no-default-features --example sim
//! ```
//!
//! `SIM_SEED` changes the seed (default 1); `SIM_CRASHES` the number of
//! crashes measured per cluster size (default 20).

use std::time::{Duration, Instant};

use membership::sim::{NetConfig, Sim};
use membership::{Event, MembershipConfig};

fn net(loss: f64, count_bytes: bool) -> NetConfig {
    NetConfig {
        latency_min: Duration::from_millis(1),
        latency_max: Duration::from_millis(10),
        loss,
        duplicate: 0.01,
        count_bytes,
    }
}

/// `n` nodes joining through node 0, started evenly over `spread`.
fn cluster(seed: u64, n: usize, spread: Duration) -> Sim {
    let mut sim = Sim::new(seed, net(0.01, false), MembershipConfig::default());
    let seed_addr = Sim::default_addr(0);
    sim.add_node(vec![seed_addr.clone()]);
    for i in 1..n {
        let at = sim.at(spread.mul_f64(i as f64 / n as f64));
        sim.add_node_at(at, vec![seed_addr.clone()]);
    }
    sim
}

fn converge(sim: &mut Sim, expected: &[usize]) -> Duration {
    sim.run_until_cond(Duration::from_secs(120), Duration::from_millis(100), |s| {
        s.converged(expected)
    })
    .expect("the cluster converges")
}

fn settle(sim: &mut Sim) {
    sim.run_until_cond(Duration::from_secs(120), Duration::from_millis(500), |s| {
        s.nodes()
            .iter()
            .filter_map(|n| n.core())
            .all(|c| c.pending_broadcasts() == 0)
    });
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Crashes `crashes` nodes one after the other (waiting for each to be
/// dead everywhere, then for dissemination to settle) under `loss`, and
/// returns the crash-to-dead-everywhere times in seconds, sorted.
fn crash_times(sim: &mut Sim, crashes: usize, loss: f64, first: usize) -> Vec<f64> {
    let n = sim.len();
    sim.set_net(net(loss, false));
    sim.run_for(Duration::from_secs(10));
    let mut times = Vec::new();
    for k in 0..crashes.min(n.saturating_sub(2)) {
        let victim = 1 + ((first + k) * 7919) % (n - 1);
        if sim.node(victim).core().is_none() {
            continue;
        }
        sim.crash(victim);
        let t0 = sim.elapsed();
        let name = sim.node(victim).name.clone();
        let t = sim
            .run_until_cond(Duration::from_secs(60), Duration::from_millis(10), |s| {
                s.nodes().iter().all(|x| {
                    x.core()
                        .is_none_or(|c| c.member(&name).is_none_or(|m| !m.is_active()))
                })
            })
            .expect("the crash is detected");
        times.push((t - t0).as_secs_f64());
        sim.run_for(Duration::from_secs(3));
    }
    times.sort_by(f64::total_cmp);
    times
}

fn main() {
    let seed: u64 = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let crashes: usize = std::env::var("SIM_CRASHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let period = MembershipConfig::default().probe_interval.as_secs_f64();
    println!("seed {seed}; network: 1-10 ms latency, 1% duplication; protocol period {period} s\n");

    // Formation at N = 1,000.
    let n = 1000;
    let wall = Instant::now();
    let mut big = cluster(seed, n, Duration::from_secs(2));
    let all: Vec<usize> = (0..n).collect();
    let converged = converge(&mut big, &all);
    let last_join = big
        .nodes()
        .iter()
        .flat_map(|x| x.events.iter())
        .filter(|(_, _, e)| matches!(e, Event::Joined))
        .map(|(t, _, _)| *t)
        .max()
        .unwrap_or_default();
    println!("## Formation (N = {n}, joins spread over 2 s through one seed, 1% loss)");
    println!(
        "last join at {:.2} s; every view holds {n} alive members at {:.2} s: {:.2} s = {:.1} periods after the last join (bound 2·log2 N = {:.1}); simulated in {:.1} s",
        last_join.as_secs_f64(),
        converged.as_secs_f64(),
        (converged - last_join).as_secs_f64(),
        (converged - last_join).as_secs_f64() / period,
        2.0 * (n as f64).log2(),
        wall.elapsed().as_secs_f64()
    );
    println!("messages during formation, by kind (count, updates carried):");
    for (kind, (count, entries)) in &big.by_kind {
        println!("  {kind:<13} {count:>8} {entries:>10}");
    }

    // Steady load.
    println!("\n## Steady load per member (settled cluster, no loss, 20 s window)");
    println!("| N | messages/s | bytes/s | messages per period |");
    println!("|---|---|---|---|");
    settle(&mut big);
    let mut loads = Vec::new();
    for size in [10usize, 100] {
        let mut s = cluster(seed + size as u64, size, Duration::from_millis(500));
        let everyone: Vec<usize> = (0..size).collect();
        converge(&mut s, &everyone);
        settle(&mut s);
        loads.push((size, s));
    }
    loads.push((n, big));
    for (size, s) in &mut loads {
        s.set_net(net(0.0, true));
        s.reset_counters();
        let window = Duration::from_secs(20);
        s.run_for(window);
        let msgs: u64 = s.nodes().iter().map(|x| x.sent_messages).sum();
        let bytes: u64 = s.nodes().iter().map(|x| x.sent_bytes).sum();
        let per_s = |v: u64| v as f64 / *size as f64 / window.as_secs_f64();
        println!(
            "| {size} | {:.2} | {:.0} | {:.3} |",
            per_s(msgs),
            per_s(bytes),
            per_s(msgs) * period
        );
    }

    // Crash to dead everywhere.
    println!(
        "\n## Crash to dead in every view (up to {} crashes per size and loss, one after another, at most N/4)",
        crashes / 2
    );
    println!("| N | loss | median | p90 | max |");
    println!("|---|---|---|---|---|");
    let big = loads.pop().map(|(_, s)| s).expect("the 1,000-node cluster");
    let mut sized: Vec<(usize, Sim)> = Vec::new();
    for size in [3usize, 20] {
        let mut s = cluster(seed + 7 * size as u64, size, Duration::from_millis(500));
        let everyone: Vec<usize> = (0..size).collect();
        converge(&mut s, &everyone);
        sized.push((size, s));
    }
    sized.extend(loads.into_iter().filter(|(size, _)| *size == 100));
    sized.push((n, big));
    for (size, mut s) in sized {
        for loss in [0.0, 0.05] {
            if size == 3 && loss > 0.0 {
                continue;
            }
            let count = (crashes / 2).min(size / 4).max(1);
            let first = if loss > 0.0 { count } else { 0 };
            let t = crash_times(&mut s, count, loss, first);
            if t.is_empty() {
                continue;
            }
            println!(
                "| {size} | {:.0}% | {:.2} s | {:.2} s | {:.2} s |",
                loss * 100.0,
                percentile(&t, 0.5),
                percentile(&t, 0.9),
                t[t.len() - 1]
            );
        }
    }
}
