//! Prints the real-process figures of `membership/README.md`, measured on
//! loopback with `membership`'s `cluster` example (default configuration):
//!
//! - **formation**: 3 processes, a seed and two joining through it; from
//!   the start of the last process to the first `VIEW` line holding all 3
//!   in every process;
//! - **detection**: in a formed cluster of 3 and of 20 processes, one (not
//!   the seed) is killed with SIGKILL; from the kill to the first `VIEW`
//!   line without it in every surviving process. Between runs the victim
//!   is restarted (a newer generation) and the cluster settles.
//!
//! ```text
//! cargo build --release -p membership --example cluster
//! cargo run --release -p casty-tests --bin membership-figures
//! ```
//!
//! `FIGURES_RUNS` sets the runs per figure (default 10). Times come from
//! the processes' own wall-clock stamps (one machine, one clock).

mod procs;

use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use casty_tests::wait_until;
use procs::{Node, cluster_bin, lives, unix_ms};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Longest wait for any one step.
const STEP: Duration = Duration::from_secs(30);

/// How long a cluster runs undisturbed before a kill (probe rounds and
/// dissemination settle).
const SETTLE: Duration = Duration::from_secs(3);

/// Waits until the latest view of every node is `expected`.
fn wait_all(nodes: &[&Node], expected: &BTreeMap<String, u64>) -> Result<()> {
    let deadline = Instant::now() + STEP;
    for n in nodes {
        if !wait_until(deadline, || n.latest().as_ref() == Some(expected)) {
            return Err(format!("{} holds {:?}, expected {expected:?}", n.name, n.latest()).into());
        }
    }
    Ok(())
}

/// The first time at or after `since_ms` at which every node printed a
/// view equal to `expected` (the latest of those first lines).
fn all_reached(nodes: &[&Node], since_ms: u64, expected: &BTreeMap<String, u64>) -> Result<u64> {
    wait_all(nodes, expected)?;
    let mut last = since_ms;
    for n in nodes {
        let v = n
            .wait_view(since_ms, Instant::now(), |v| v == expected)
            .ok_or_else(|| format!("{}: no view line since {since_ms}", n.name))?;
        last = last.max(v.at_ms);
    }
    Ok(last)
}

/// A seed and `n - 1` members joining through it.
fn cluster(bin: &Path, n: usize, generation: u64) -> Result<(Vec<Node>, u64)> {
    let seed = Node::spawn(bin, "n00", "127.0.0.1:0", &[], generation)?;
    let seeds: Vec<SocketAddr> = vec![seed.addr];
    let mut nodes = vec![seed];
    let mut last_start = unix_ms();
    for i in 1..n {
        last_start = unix_ms();
        nodes.push(Node::spawn(
            bin,
            &format!("n{i:02}"),
            "127.0.0.1:0",
            &seeds,
            generation,
        )?);
    }
    Ok((nodes, last_start))
}

fn stats(label: &str, ms: &mut [u64]) {
    ms.sort_unstable();
    let median = if ms.len() % 2 == 1 {
        ms[ms.len() / 2] as f64
    } else {
        (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) as f64 / 2.0
    };
    println!(
        "{label}: median {:.2} s, min {:.2} s, max {:.2} s over {} runs ({})",
        median / 1000.0,
        ms[0] as f64 / 1000.0,
        ms[ms.len() - 1] as f64 / 1000.0,
        ms.len(),
        ms.iter()
            .map(|m| format!("{:.2}", *m as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn formation(bin: &Path, runs: usize) -> Result<()> {
    let mut times = Vec::new();
    for run in 0..runs {
        let (nodes, last_start) = cluster(bin, 3, 1)?;
        let refs: Vec<&Node> = nodes.iter().collect();
        let full = all_reached(&refs, last_start, &lives(&refs))?;
        times.push(full.saturating_sub(last_start));
        eprintln!(
            "formation run {run}: {} ms",
            full.saturating_sub(last_start)
        );
    }
    stats(
        "formation, 3 processes, last start to full view everywhere",
        &mut times,
    );
    Ok(())
}

fn detection(bin: &Path, n: usize, runs: usize) -> Result<()> {
    let (mut nodes, _) = cluster(bin, n, 1)?;
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_all(&refs, &lives(&refs))?;
    }
    let mut times = Vec::new();
    for run in 0..runs {
        std::thread::sleep(SETTLE);
        let victim = 1 + (run * 7) % (n - 1);
        let killed_ms = unix_ms();
        nodes[victim].process.kill()?;
        let survivors: Vec<&Node> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, x)| x)
            .collect();
        let dead_everywhere = all_reached(&survivors, killed_ms, &lives(&survivors))?;
        let took = dead_everywhere.saturating_sub(killed_ms);
        eprintln!(
            "N={n} run {run}: {} killed, dead in every view after {took} ms",
            nodes[victim].name
        );
        times.push(took);
        // Restart it on its port as a newer life and wait for the full view.
        let old = &nodes[victim];
        let (name, addr, generation) = (old.name.clone(), old.addr, old.generation + 1);
        let seed = nodes[0].addr;
        nodes[victim] = Node::spawn(bin, &name, &addr.to_string(), &[seed], generation)?;
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_all(&refs, &lives(&refs))?;
    }
    stats(
        &format!("detection, {n} processes, kill -9 to dead in every view"),
        &mut times,
    );
    Ok(())
}

fn main() -> Result<()> {
    let runs: usize = std::env::var("FIGURES_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(1);
    let bin = cluster_bin()?;
    println!("binary: {}", bin.display());
    formation(&bin, runs)?;
    detection(&bin, 3, runs)?;
    detection(&bin, 20, runs)?;
    Ok(())
}
