//! A network partition {A} | {B, C} with real TCP behaviour (issue 8,
//! scenario 3): nodes on distinct loopback addresses, cut with iptables.
//!
//! The cut matches source and destination addresses, so it relies on each
//! node's outbound connections coming from its own address (the transport
//! binds them to the listener's IP). It needs root and a working
//! `iptables` (`apt-get install -y iptables`): where `iptables -L` fails
//! the test prints why and returns without checking anything.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casty_tests::{LostWriteChecker, serial, wait_until};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{Probe, assert_exits_0, completed, logged, spawn, spawn_addr};

/// The iptables chain holding the cut (removed by [`Cut`]'s drop).
const CHAIN: &str = "CASTY_PARTITION";

fn iptables(args: &[&str]) -> bool {
    Command::new("iptables")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why iptables cannot cut here (not root, no binary, no netfilter), or
/// `None` when `iptables -L` works.
fn iptables_unusable() -> Option<String> {
    match Command::new("iptables").args(["-L", "-n"]).output() {
        Err(e) => Some(format!("cannot run iptables: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "`iptables -L -n` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Drops every packet between the two address sets while alive.
struct Cut;

impl Cut {
    fn new(side_a: &[&str], side_b: &[&str]) -> Cut {
        Cut::remove();
        assert!(
            iptables(&["-N", CHAIN]) && iptables(&["-I", "INPUT", "-j", CHAIN]),
            "iptables failed (root and the iptables package are needed)"
        );
        for x in side_a {
            for y in side_b {
                for (s, d) in [(x, y), (y, x)] {
                    assert!(iptables(&["-A", CHAIN, "-s", s, "-d", d, "-j", "DROP"]));
                }
            }
        }
        Cut
    }

    fn remove() {
        let _ = iptables(&["-D", "INPUT", "-j", CHAIN]);
        let _ = iptables(&["-F", CHAIN]);
        let _ = iptables(&["-X", CHAIN]);
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        Cut::remove();
    }
}

/// Submits `prefix-<i>` from `probe` (8 in flight) until `stop`, recording
/// each outcome in [`probe_outcomes`].
fn load(probe: &Probe, prefix: &str, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let q = probe.queue.clone();
    let prefix = prefix.to_owned();
    let out = Arc::clone(&probe_outcomes(probe));
    probe.rt.spawn(async move {
        futures::stream::iter(0u64..)
            .take_while(|_| futures::future::ready(!stop.is_cancelled()))
            .map(|i| {
                let q = q.clone();
                let id = format!("{prefix}-{i}");
                async move {
                    let ok = q.submit(&id, &format!("doc-{id}"), 500).await.is_ok();
                    (id, ok, Instant::now())
                }
            })
            .buffer_unordered(8)
            .for_each(|o| {
                out.lock().unwrap().push(o);
                futures::future::ready(())
            })
            .await;
    })
}

/// Submissions of one probe: (task id, acknowledged, when it returned).
type Outcomes = Arc<Mutex<Vec<(String, bool, Instant)>>>;

/// Per-probe outcome lists, keyed by probe name.
fn probe_outcomes(probe: &Probe) -> Outcomes {
    static ALL: Mutex<Vec<(String, Outcomes)>> = Mutex::new(Vec::new());
    let mut all = ALL.lock().unwrap();
    if let Some((_, v)) = all.iter().find(|(n, _)| *n == probe.name) {
        return Arc::clone(v);
    }
    let v = Arc::default();
    all.push((probe.name.clone(), Arc::clone(&v)));
    v
}

/// Makes `probe` drop its shard state when membership says this life was
/// declared dead while running, as node-cli does (`node-cli/src/node.rs`),
/// so the probes on the losing side behave like the node beside them.
fn reset_on_death(probe: &Probe) {
    let mut events = probe.members.subscribe();
    let q = probe.queue.clone();
    let name = probe.name.clone();
    probe.rt.spawn(async move {
        while let Ok(ev) = events.recv().await {
            if let membership::Event::RejoinedAfterDeath { .. } = ev {
                eprintln!("[{name}] declared dead while running: dropping shard state");
                let _ = q.reset().await;
            }
        }
    });
}

/// Scenario 3: a (127.0.0.2) with probe `pa` (127.0.0.6) is cut from b, c
/// (127.0.0.3, .4) and the probe (127.0.0.5) for 10 s while both probes
/// submit, then healed. Membership must converge (every member sees all
/// five active) without an operator; the majority side (b, c, probe) is
/// never told it was declared dead (so it keeps its shards); every task
/// acknowledged on the majority side is then present once with the right
/// value when queried from both sides; and every node finishes its run
/// with exit 0.
///
/// Tasks acknowledged by the minority side are required too: that side is
/// declared dead by the majority and, when it learns so, recovers every
/// shard anew and pushes what it holds to the current owners (sharding's
/// `reset`), so nothing it acknowledged during the cut is lost
/// (RELIABILITY.md, finding 3).
///
/// The node-cli processes run with `--tasks 0 --nodes 6`: they own shards
/// and store tasks but submit none, and wait for a sixth member, which
/// joins only at the end, so they stay up through the cut instead of
/// passing their final barrier with the members their side still sees.
#[test]
fn partition_one_from_two_then_heal() {
    if let Some(why) = iptables_unusable() {
        eprintln!("SKIPPED partition_one_from_two_then_heal: {why} (needs root and iptables)");
        return;
    }
    let _heavy = serial();
    Cut::remove();
    let args = |host: &'static str, seed: Option<&str>| {
        let mut v = vec![
            "--host".to_owned(),
            host.to_owned(),
            "--nodes".into(),
            "6".into(),
            "--tasks".into(),
            "0".into(),
        ];
        if let Some(s) = seed {
            v.push("--seed".into());
            v.push(s.into());
        }
        v
    };
    let a_args = args("127.0.0.2", None);
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let (mut a, seed) = spawn_addr("a", &a_refs);
    let seed_s = seed.to_string();
    let mut nodes = vec![];
    for (name, host) in [("b", "127.0.0.3"), ("c", "127.0.0.4")] {
        let v = args(host, Some(&seed_s));
        let r: Vec<&str> = v.iter().map(String::as_str).collect();
        nodes.push(spawn(name, &r));
    }
    let probe = Probe::join_on("probe", "127.0.0.5", seed);
    let pa = Probe::join_on("pa", "127.0.0.6", seed);
    probe.wait_members(5, Duration::from_secs(30));
    pa.wait_members(5, Duration::from_secs(30));
    reset_on_death(&probe);
    reset_on_death(&pa);

    let stop = CancellationToken::new();
    let loads = [
        load(&probe, "bc-side", stop.clone()),
        load(&pa, "a-side", stop.clone()),
    ];
    let cut_at = Instant::now();
    let cut = Cut::new(
        &["127.0.0.2", "127.0.0.6"],
        &["127.0.0.3", "127.0.0.4", "127.0.0.5"],
    );
    assert!(
        wait_until(Instant::now() + Duration::from_secs(20), || !probe
            .is_active("a")
            && !pa.is_active("b")),
        "the sides never declared each other dead"
    );
    eprintln!("sides split after {:.2}s", cut_at.elapsed().as_secs_f64());
    // The partition's length is the fault itself, not a synchronization.
    let _ = wait_until(cut_at + Duration::from_secs(10), || false);
    drop(cut);
    let healed = Instant::now();
    let converged = wait_until(Instant::now() + Duration::from_secs(60), || {
        probe.members.view().active_count() == 5 && pa.members.view().active_count() == 5
    });
    eprintln!(
        "FIGURE partition: converged={converged} {:.2}s after the heal (probe sees {}, pa sees {})",
        healed.elapsed().as_secs_f64(),
        probe.members.view().active_count(),
        pa.members.view().active_count()
    );
    // Submits keep going a little past the convergence, on both sides.
    let _ = wait_until(Instant::now() + Duration::from_secs(2), || false);
    stop.cancel();
    for l in loads {
        probe.rt.block_on(l).unwrap();
    }
    assert!(converged, "membership did not converge after the heal");
    for p in &nodes {
        assert!(
            !logged(p, "declared dead while running"),
            "{} (majority side) was told it had been declared dead",
            p.label()
        );
    }

    // Acknowledged submissions: those of the majority side are required;
    // those of the minority side are counted by when they were
    // acknowledged (before the cut, during it, after the heal).
    let mut checker = LostWriteChecker::new();
    let mut required = Vec::new();
    let mut minority_acked = Vec::new();
    let mut during_cut = std::collections::BTreeSet::new();
    for p in [&probe, &pa] {
        for (id, ok, at) in probe_outcomes(p).lock().unwrap().iter() {
            let payload = format!("doc-{id}");
            let majority = id.starts_with("bc-side");
            if !*ok {
                checker.attempted(id, payload.as_bytes(), 500);
                continue;
            }
            checker.acknowledged(id, payload.as_bytes(), 500);
            if majority {
                required.push(id.clone());
            } else {
                minority_acked.push(id.clone());
                if *at > cut_at && *at < healed {
                    during_cut.insert(id.clone());
                }
            }
        }
    }
    eprintln!(
        "{} acknowledged on the majority side, {} on the minority side ({} of them during the cut)",
        required.len(),
        minority_acked.len(),
        during_cut.len()
    );
    let all: Vec<String> = required.iter().chain(&minority_acked).cloned().collect();
    let mut errors = Vec::new();
    let mut minority_found = 0usize;
    let mut during_cut_found = 0usize;
    for p in [&probe, &pa] {
        let results: Vec<(String, Result<String, String>)> = p.rt.block_on(
            futures::stream::iter(all.iter().cloned())
                .map(|id| {
                    let q = p.queue.clone();
                    async move {
                        let r = q
                            .wait_result(&id, Duration::from_secs(30))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|s| completed(&s).map(str::to_owned));
                        (id, r)
                    }
                })
                .buffer_unordered(64)
                .collect(),
        );
        for (id, r) in results {
            let majority = id.starts_with("bc-side");
            match r {
                Ok(v) => {
                    checker.observed(&id, &v);
                    let counted = !majority && p.name == "probe";
                    minority_found += usize::from(counted);
                    during_cut_found += usize::from(counted && during_cut.contains(&id));
                }
                Err(e) => errors.push(format!("from {}: {id}: {e}", p.name)),
            }
        }
    }
    eprintln!(
        "FIGURE partition: minority-side tasks answered after the heal: {} of {} acknowledged ({} of {} acknowledged during the cut)",
        minority_found,
        minority_acked.len(),
        during_cut_found,
        during_cut.len()
    );
    for p in std::iter::once(&a).chain(&nodes) {
        for line in p.stderr().snapshot().iter().filter(|l| {
            [
                "member down",
                "member up",
                "declared dead",
                "minority",
                "sync failed",
                "recovering every shard",
                "shards moved",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            eprintln!("[{}] {line}", p.label());
        }
    }
    assert!(
        errors.is_empty(),
        "{} queries of required tasks failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(20)]
    );
    checker.assert_no_lost_writes();

    // The sixth member the node-cli processes wait for.
    let late = Probe::join_on("late", "127.0.0.7", seed);
    std::thread::scope(|s| {
        s.spawn(|| pa.finish_workload(Duration::from_secs(60)));
        s.spawn(|| late.finish_workload(Duration::from_secs(60)));
        probe.finish_workload(Duration::from_secs(60));
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_exits_0(&mut a, deadline);
    for p in &mut nodes {
        assert_exits_0(p, deadline);
    }
}
