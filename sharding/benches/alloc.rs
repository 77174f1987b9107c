//! Allocation figures: balance, movement per single join and leave, replica
//! successors, and the time of `allocate` and `shard_id`.
//!
//! `cargo bench -p sharding --bench alloc` prints a Markdown table (the one
//! in README "Allocation figures"); `-- --test` runs a tiny version so CI
//! keeps it compiling and running. Views are random member names from a
//! seeded RNG (`ALLOC_SEED` to change the seed).

use std::collections::BTreeSet;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use sharding::{Allocation, allocate, shard_id};

const R: u32 = 2;

fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("bench constants are nonzero")
}

fn random_name(rng: &mut ChaCha8Rng) -> String {
    format!("node-{:08x}", rng.r#gen::<u32>())
}

fn random_view(rng: &mut ChaCha8Rng, n: usize) -> BTreeSet<String> {
    let mut view = BTreeSet::new();
    while view.len() < n {
        view.insert(random_name(rng));
    }
    view
}

/// Sums over many views of one (S, N) cell.
#[derive(Default)]
struct Cell {
    views: usize,
    max_owned: usize,
    max_replicas: usize,
    join_owner: f64,
    join_holder: f64,
    leave_owner: f64,
    leave_holder: f64,
    successors: usize,
    successor_of: usize,
    alloc_time: Duration,
}

fn max_loads(a: &Allocation) -> (usize, usize) {
    let loads = a.loads();
    let owned = loads.iter().map(|(_, l)| l.owned).max().unwrap_or(0);
    let replicas = loads.iter().map(|(_, l)| l.replicas).max().unwrap_or(0);
    (owned, replicas)
}

fn measure(rng: &mut ChaCha8Rng, s: u32, n: usize, views: usize, timing_runs: usize) -> Cell {
    let mut c = Cell::default();
    let sf = f64::from(s);
    for _ in 0..views {
        let view = random_view(rng, n);
        let base = allocate(&view, nz(s), nz(R));
        let (o, r) = max_loads(&base);
        c.max_owned = c.max_owned.max(o);
        c.max_replicas = c.max_replicas.max(r);

        // One join: ideal = the joiner's fair share S/(N+1) of owners and
        // R*S/(N+1) of holders.
        let mut joined = view.clone();
        while joined.len() == n {
            joined.insert(random_name(rng));
        }
        let after = allocate(&joined, nz(s), nz(R));
        let m = base.moves_to(&after);
        let ideal = sf / (n + 1) as f64;
        c.join_owner += m.owners as f64 / ideal;
        c.join_holder += m.holders as f64 / (ideal * f64::from(R));

        // One leave: ideal = the leaver's share S/N, R*S/N of holders.
        let leaver = view
            .iter()
            .nth(rng.gen_range(0..n))
            .expect("index below the view size")
            .clone();
        let mut left = view.clone();
        left.remove(&leaver);
        let after = allocate(&left, nz(s), nz(R));
        let m = base.moves_to(&after);
        let ideal = sf / n as f64;
        c.leave_owner += m.owners as f64 / ideal;
        c.leave_holder += m.holders as f64 / (ideal * f64::from(R));
        for sh in base.shards_owned_by(&leaver) {
            c.successor_of += 1;
            if after
                .owner(sh)
                .is_some_and(|o| base.replicas(sh).iter().any(|r| r == o))
            {
                c.successors += 1;
            }
        }
        c.views += 1;
    }
    // allocate() time: the median of `timing_runs` runs on one view.
    let view = random_view(rng, n);
    let mut times: Vec<Duration> = (0..timing_runs.max(1))
        .map(|_| {
            let t = Instant::now();
            black_box(allocate(black_box(&view), nz(s), nz(R)));
            t.elapsed()
        })
        .collect();
    times.sort();
    c.alloc_time = times[times.len() / 2];
    c
}

/// Median nanoseconds per call of `f` over `ids`.
fn ns_per_call(ids: &[String], rounds: usize, f: impl Fn(&str) -> u32) -> f64 {
    let mut per: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let t = Instant::now();
            for id in ids {
                black_box(f(black_box(id)));
            }
            t.elapsed().as_nanos() as f64 / ids.len() as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    per[per.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let seed: u64 = std::env::var("ALLOC_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(42);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    println!(
        "allocation figures, R = {R}, seed {seed}{}",
        if quick { " (--test: tiny run)" } else { "" }
    );
    println!();
    println!(
        "| S | N | max owned / ceil(S/N) | max replicas / ceil(S/N) | join: owner moves / ideal | leave: owner moves / ideal | join: holder moves / ideal | leave: holder moves / ideal | leaver's shards taken by their replica | allocate() median |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for s in [50u32, 256, 1024] {
        for n in [3usize, 5, 20] {
            let views = match (quick, s) {
                (true, _) => 3,
                (false, 50) => 4000,
                (false, 256) => 1000,
                (false, _) => 300,
            };
            let c = measure(&mut rng, s, n, views, if quick { 3 } else { 301 });
            let v = c.views as f64;
            let cap = (s as usize).div_ceil(n);
            println!(
                "| {s} | {n} | {} / {cap} | {} / {cap} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1}% | {:.1} µs |",
                c.max_owned,
                c.max_replicas,
                c.join_owner / v,
                c.leave_owner / v,
                c.join_holder / v,
                c.leave_holder / v,
                100.0 * c.successors as f64 / c.successor_of.max(1) as f64,
                c.alloc_time.as_secs_f64() * 1e6,
            );
        }
    }

    // shard_id per call, against a SHA-256-based alternative.
    let ids: Vec<String> = (0..10_000).map(|i| format!("job-node-1-{i}")).collect();
    let rounds = if quick { 1 } else { 51 };
    let fnv = ns_per_call(&ids, rounds, |id| shard_id(id, nz(1024)).0);
    let sha = ns_per_call(&ids, rounds, |id| {
        let d = Sha256::digest(id.as_bytes());
        let h = u64::from_be_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes"));
        (h % 1024) as u32
    });
    println!();
    println!(
        "shard_id (FNV-1a + fmix64) on ~14-byte ids: {fnv:.1} ns/call; SHA-256 first 8 bytes: {sha:.1} ns/call ({:.1}x)",
        sha / fnv
    );
}
