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

fn main() {
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
