//! scratch
use membership::sim::{NetConfig, Sim};
use membership::{Event, MembershipConfig};
use std::time::{Duration, Instant};

fn form(
    n: usize,
    seed: u64,
    net: NetConfig,
    spread: Duration,
) -> (Sim, Option<Duration>, Duration) {
    let mut sim = Sim::new(seed, net, MembershipConfig::default());
    let s = sim.add_node(Vec::new());
    let addr = sim.node(s).addr.clone();
    for i in 1..n {
        let at = sim.at(spread.mul_f64(i as f64 / n as f64));
        sim.add_node_at(at, vec![addr.clone()]);
    }
    let all: Vec<usize> = (0..n).collect();
    let t = sim.run_until_cond(Duration::from_secs(120), Duration::from_millis(100), |s| {
        s.converged(&all)
    });
    // last join time
    let mut last = Duration::ZERO;
    for node in sim.nodes() {
        for (t, _, e) in &node.events {
            if matches!(e, Event::Joined) {
                last = last.max(*t);
            }
        }
    }
    (sim, t, last)
}

fn crash_exp(n: usize, loss: f64, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let (mut sim, _, _) = form(n, seed, NetConfig::default(), Duration::from_millis(500));
        sim.set_net(NetConfig {
            loss,
            duplicate: 0.01,
            latency_max: Duration::from_millis(10),
            ..NetConfig::default()
        });
        sim.run_for(Duration::from_secs(20));
        let lhm: Vec<u32> = sim
            .nodes()
            .iter()
            .filter_map(|n| n.core())
            .map(|c| c.local_health())
            .collect();
        let avg = lhm.iter().sum::<u32>() as f64 / lhm.len() as f64;
        let victim = n / 3;
        sim.crash(victim);
        let t0 = sim.elapsed();
        let name = sim.node(victim).name.clone();
        let others: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
        let t = sim.run_until_cond(Duration::from_secs(60), Duration::from_millis(10), |s| {
            others.iter().all(|&i| {
                s.node(i)
                    .core()
                    .is_some_and(|c| c.member(&name).is_some_and(|m| !m.is_active()))
            })
        });
        let downs = sim.downs();
        let first_suspect = sim
            .nodes()
            .iter()
            .flat_map(|n| n.events.iter())
            .filter(|(t, _, e)| {
                *t >= t0 && matches!(e, Event::MemberSuspect(m) if m.id.name == name)
            })
            .map(|x| x.0)
            .min();
        let first = downs.iter().filter(|d| d.2.name == name).map(|d| d.0).min();
        println!(
            "seed {seed}: avg lhm {avg:.2} max {:?} suspect +{:?} first down +{:?} all +{:?}",
            lhm.iter().max(),
            first_suspect.map(|f| f - t0),
            first.map(|f| f - t0),
            t.map(|t| t - t0)
        );
    }
}

fn main() {
    if let Ok(v) = std::env::var("CRASH_EXP") {
        let loss: f64 = v.parse().unwrap_or(0.05);
        let n: usize = std::env::args()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(100);
        let k: u64 = std::env::var("SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12);
        crash_exp(n, loss, 0..k);
        return;
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let wall = Instant::now();
    let (mut sim, t, last) = form(n, 1, NetConfig::default(), Duration::from_secs(2));
    for (k, v) in &sim.by_kind {
        println!("  {k}: {v:?}");
    }
    if std::env::var("FORM_ONLY").is_ok() {
        println!("converged {t:?}");
        return;
    }
    println!(
        "N={n} converged at {:?} last join {:?} wall {:?}",
        t,
        last,
        wall.elapsed()
    );
    let q: usize = sim
        .nodes()
        .iter()
        .filter_map(|n| n.core())
        .map(|c| c.pending_broadcasts())
        .max()
        .unwrap_or(0);
    println!("max pending broadcasts {q}");
    sim.run_for(Duration::from_secs(5));
    let all: Vec<usize> = (0..n).collect();
    println!(
        "still converged {} downs {}",
        sim.converged(&all),
        sim.downs().len()
    );
    let wall = Instant::now();
    sim.reset_counters();
    sim.run_for(Duration::from_secs(10));
    let msgs: u64 = sim.nodes().iter().map(|n| n.sent_messages).sum();
    println!(
        "steady msgs/member/s {:.2} wall {:?}",
        msgs as f64 / n as f64 / 10.0,
        wall.elapsed()
    );
    let victim = n / 2;
    sim.crash(victim);
    let t0 = sim.elapsed();
    let name = sim.node(victim).name.clone();
    let wall = Instant::now();
    let others: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
    let t = sim.run_until_cond(Duration::from_secs(60), Duration::from_millis(50), |s| {
        others.iter().all(|&i| {
            s.node(i)
                .core()
                .is_some_and(|c| c.member(&name).is_some_and(|m| !m.is_active()))
        })
    });
    println!(
        "crash to dead everywhere: {:?} wall {:?}",
        t.map(|t| t - t0),
        wall.elapsed()
    );
    let downs = sim.downs();
    let first = downs.iter().filter(|d| d.2.name == name).map(|d| d.0).min();
    println!(
        "first down {:?}; false downs {}",
        first.map(|f| f - t0),
        downs.iter().filter(|d| d.2.name != name).count()
    );
}
