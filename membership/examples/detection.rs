//! Where crash-detection time goes: many independent simulated clusters,
//! one crash each, default configuration. Prints, from the crash, the
//! first suspicion, the first death verdict and dead in every view
//! (median, p90, p99, max), how many runs took over 3 s, and any false
//! `MemberDown`.
//!
//! ```text
//! N=20 RUNS=300 cargo run --release -p membership --no-default-features --example detection
//! ```
//!
//! `N` (default 20), `RUNS` (200), `LOSS` (message loss, 0.0); for tuning,
//! `SUSP_MIN_MS` and `SUSP_MULT` override `suspicion_min` and
//! `suspicion_max_multiplier`. Network: 1-10 ms latency, 1% duplication;
//! run `s` uses seed `s`.

use std::time::Duration;

use membership::sim::{NetConfig, Sim};
use membership::{Event, MembershipConfig};

fn net(loss: f64) -> NetConfig {
    NetConfig {
        latency_min: Duration::from_millis(1),
        latency_max: Duration::from_millis(10),
        loss,
        duplicate: 0.01,
        count_bytes: false,
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let runs: u64 = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let loss: f64 = std::env::var("LOSS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let mut susp = Vec::new();
    let mut first_dead = Vec::new();
    let mut all = Vec::new();
    let mut false_downs = 0;
    for seed in 0..runs {
        let mut config = MembershipConfig::default();
        if let Some(ms) = std::env::var("SUSP_MIN_MS")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            config.suspicion_min = Duration::from_millis(ms);
        }
        if let Some(m) = std::env::var("SUSP_MULT").ok().and_then(|s| s.parse().ok()) {
            config.suspicion_max_multiplier = m;
        }
        let mut sim = Sim::new(seed, net(loss), config);
        let seed_addr = Sim::default_addr(0);
        sim.add_node(vec![seed_addr.clone()]);
        for i in 1..n {
            let at = sim.at(Duration::from_millis(500).mul_f64(i as f64 / n as f64));
            sim.add_node_at(at, vec![seed_addr.clone()]);
        }
        let everyone: Vec<usize> = (0..n).collect();
        sim.run_until_cond(Duration::from_secs(60), Duration::from_millis(100), |s| {
            s.converged(&everyone)
        })
        .expect("forms");
        sim.run_for(Duration::from_secs(5) + Duration::from_millis(seed * 37 % 500));
        let victim = 1 + (seed as usize * 7) % (n - 1);
        sim.crash(victim);
        let t0 = sim.elapsed();
        let name = sim.node(victim).name.clone();
        let t = sim
            .run_until_cond(Duration::from_secs(60), Duration::from_millis(5), |s| {
                s.nodes().iter().all(|x| {
                    x.core()
                        .is_none_or(|c| c.member(&name).is_none_or(|m| !m.is_active()))
                })
            })
            .expect("detected");
        let first = |pred: &dyn Fn(&Event) -> bool| {
            sim.nodes()
                .iter()
                .flat_map(|x| x.events.iter())
                .filter(|(t, _, e)| *t >= t0 && pred(e))
                .map(|(t, _, _)| (*t - t0).as_secs_f64())
                .fold(f64::MAX, f64::min)
        };
        susp.push(first(
            &|e| matches!(e, Event::MemberSuspect(m) if m.id.name == name),
        ));
        first_dead.push(first(
            &|e| matches!(e, Event::MemberDown(m) if m.id.name == name),
        ));
        all.push((t - t0).as_secs_f64());
        false_downs += sim.downs().iter().filter(|d| d.2.name != name).count();
    }
    for (label, v) in [
        ("first suspect", &mut susp),
        ("first dead", &mut first_dead),
        ("dead everywhere", &mut all),
    ] {
        println!(
            "{label:>16}: median {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    let over = all.iter().filter(|t| **t > 3.0).count();
    println!(
        "false downs: {false_downs}; over 3 s: {over} of {}",
        all.len()
    );
}
