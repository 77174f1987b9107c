//! Shared helpers: seeds that print themselves on failure, and cluster
//! builders over `membership::sim`.

use std::time::Duration;

use membership::sim::{NetConfig, Sim};
use membership::{Event, MembershipConfig};

/// Prints the seed if the test panics while this is alive.
pub struct SeedGuard {
    pub seed: u64,
    name: &'static str,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "simulation `{}` failed with seed {}; replay with SWIM_SIM_SEED={} cargo test -p membership --test it {}",
                self.name, self.seed, self.seed, self.name
            );
        }
    }
}

/// The seed for a simulation: `SWIM_SIM_SEED` if set, else `default`.
pub fn seed(name: &'static str, default: u64) -> SeedGuard {
    let seed = std::env::var("SWIM_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    SeedGuard { seed, name }
}

/// A network with a little of everything: 1-10 ms latency, 1% loss, 1%
/// duplication.
pub fn lossy_net(loss: f64) -> NetConfig {
    NetConfig {
        latency_min: Duration::from_millis(1),
        latency_max: Duration::from_millis(10),
        loss,
        duplicate: 0.01,
        count_bytes: false,
    }
}

/// `n` nodes: node 0 lists only itself as seed (so it forms the cluster),
/// the others join through it, started evenly over `spread`.
pub fn cluster(seed: u64, n: usize, net: NetConfig, spread: Duration) -> Sim {
    let mut sim = Sim::new(seed, net, MembershipConfig::default());
    let seed_addr = Sim::default_addr(0);
    sim.add_node(vec![seed_addr.clone()]);
    for i in 1..n {
        let at = sim.at(spread.mul_f64(i as f64 / n as f64));
        sim.add_node_at(at, vec![seed_addr.clone()]);
    }
    sim
}

/// `cluster(..)`, run until every view is complete (panics after 60 s).
pub fn formed(seed: u64, n: usize, net: NetConfig) -> Sim {
    let mut sim = cluster(seed, n, net, Duration::from_millis(500));
    let all: Vec<usize> = (0..n).collect();
    sim.run_until_cond(Duration::from_secs(60), Duration::from_millis(100), |s| {
        s.converged(&all)
    })
    .expect("the cluster forms");
    sim
}

/// Time of the last `Joined` event of any node.
pub fn last_join(sim: &Sim) -> Duration {
    sim.nodes()
        .iter()
        .flat_map(|n| n.events.iter())
        .filter(|(_, _, e)| matches!(e, Event::Joined))
        .map(|(t, _, _)| *t)
        .max()
        .unwrap_or_default()
}

/// True when every running node other than `subject` holds `subject`'s
/// current life as dead (or no longer holds it at all).
pub fn all_see_gone(sim: &Sim, subject: usize) -> bool {
    let name = &sim.node(subject).name;
    sim.nodes().iter().enumerate().all(|(i, n)| {
        i == subject
            || n.core()
                .is_none_or(|c| c.member(name).is_none_or(|m| !m.is_active()))
    })
}

/// What keeps `sim.converged(expected)` false, for failure messages: per
/// node, the members it holds wrongly (at most 20 lines).
pub fn divergence(sim: &Sim, expected: &[usize]) -> String {
    let mut out = Vec::new();
    for &i in expected {
        let node = sim.node(i);
        let Some(c) = node.core() else {
            out.push(format!("{} is down", node.name));
            continue;
        };
        for &j in expected {
            let other = sim.node(j);
            if i == j {
                continue;
            }
            match c.member(&other.name) {
                Some(m)
                    if m.state == membership::MemberState::Alive
                        && m.id.generation == other.generation => {}
                m => out.push(format!(
                    "{} ({:?}) holds {}: {:?} (current generation {})",
                    node.name,
                    c.status(),
                    other.name,
                    m.map(|m| (m.id.generation, m.incarnation, m.state)),
                    other.generation
                )),
            }
        }
    }
    out.truncate(20);
    out.join("\n")
}
