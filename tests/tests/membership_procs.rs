//! Issue 3 on real processes on loopback: three `membership` `cluster`
//! example processes form a cluster; one is killed with SIGKILL and the
//! others mark it dead; it is restarted on the same port (a newer
//! generation) and is alive again in every view, its older life gone.
//!
//! The binary is located as `membership-figures` does (see
//! `procs::cluster_bin`): `$MEMBERSHIP_CLUSTER_BIN`, else
//! `target/<profile>/examples/cluster` (built by `cargo test --workspace`),
//! else `cargo build -p membership --example cluster`.
//!
//! Deadlines are generous (the machine is shared); the measured figures
//! come from `cargo run --release -p casty-tests --bin membership-figures`.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../src/bin/membership-figures/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use casty_tests::{serial, wait_until};
use procs::{Node, cluster_bin, lives, unix_ms};

/// Formation, detection and rejoin each get this long.
const WITHIN: Duration = Duration::from_secs(20);

/// Waits until the latest view of every node in `nodes` is exactly
/// `expected`; panics naming the first node that is not there.
fn wait_all(nodes: &[&Node], expected: &BTreeMap<String, u64>, what: &str) {
    let deadline = Instant::now() + WITHIN;
    for n in nodes {
        assert!(
            wait_until(deadline, || n.latest().as_ref() == Some(expected)),
            "{what}: {} holds {:?}, expected {expected:?}",
            n.name,
            n.latest()
        );
    }
}

#[test]
fn three_processes_form_detect_a_kill_and_take_back_a_restart() {
    let _heavy = serial();
    let bin = cluster_bin().unwrap();
    let a = Node::spawn(&bin, "a", "127.0.0.1:0", &[], 1).unwrap();
    let b = Node::spawn(&bin, "b", "127.0.0.1:0", &[a.addr], 1).unwrap();
    let mut c = Node::spawn(&bin, "c", "127.0.0.1:0", &[a.addr], 1).unwrap();
    wait_all(&[&a, &b, &c], &lives(&[&a, &b, &c]), "formation");

    // kill -9 c: a and b mark it dead (not active any more).
    let killed_ms = unix_ms();
    c.process.kill().unwrap();
    let survivors = lives(&[&a, &b]);
    wait_all(&[&a, &b], &survivors, "after kill -9 c");
    let detected = [&a, &b]
        .iter()
        .map(|n| {
            n.wait_view(killed_ms, Instant::now(), |v| v == &survivors)
                .unwrap()
                .at_ms
        })
        .max()
        .unwrap();
    let c_port = c.addr;
    drop(c);

    // Restart c on the same port, a newer generation.
    let c2 = Node::spawn(&bin, "c", &c_port.to_string(), &[a.addr], 2).unwrap();
    assert_eq!(c2.addr, c_port, "restarted on the same port");
    let everyone = lives(&[&a, &b, &c2]);
    wait_all(&[&a, &b, &c2], &everyone, "after restarting c");
    println!(
        "kill -9 to dead in every view: {} ms; c's new life (generation 2) is alive in every view",
        detected.saturating_sub(killed_ms)
    );
}
