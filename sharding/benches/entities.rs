//! Lookup time of a shard's entity map: `EntityMap` (a `HashMap` by id)
//! against a `BTreeMap<String, _>` (ordered by id) and a tree ordered by
//! stable hash (`BTreeMap<u64, (String, _)>`, the `EntityMap` layout until
//! 2026-12-06), with ids shaped like node-cli's (`job-<node>-<i>`, long
//! shared prefixes), 50 shards' maps looked up in the order tasks arrive
//! (each id in its own shard, so consecutive lookups go to different maps).
//! Rounds alternate the maps; medians are printed.
//!
//! `cargo bench -p sharding --bench entities`; `-- --test` runs a tiny
//! version (CI keeps it running).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use sharding::{EntityMap, stable_hash};

/// An entry of the region's size: an 88-byte value (a task's state,
/// version, acked).
type Value = [u64; 11];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median ns per lookup of `lookup` over every id, `passes` times a round.
fn time<F: FnMut(usize, &str)>(ids: &[(usize, String)], passes: usize, mut lookup: F) -> f64 {
    let t0 = Instant::now();
    for _ in 0..passes {
        for (s, id) in ids {
            lookup(*s, black_box(id.as_str()));
        }
    }
    t0.elapsed().as_nanos() as f64 / (passes * ids.len()) as f64
}

fn main() {
    const SHARDS: usize = 50;
    let quick = std::env::args().any(|a| a == "--test");
    let sizes: &[usize] = if quick { &[20] } else { &[120, 4_000, 20_000] };
    let rounds = if quick { 1 } else { 9 };
    println!("50 shards' maps, lookups interleaved across shards, medians of {rounds} rounds:");
    println!(
        "| entities per shard | BTreeMap<String, _> ns | BTreeMap<u64, (String, _)> ns | EntityMap<_> ns | stable_hash alone ns |"
    );
    println!("|---|---|---|---|---|");
    for &per_shard in sizes {
        let total = per_shard * SHARDS;
        let ids: Vec<(usize, String)> = (0..total)
            .map(|i| (i % SHARDS, format!("job-bench-1-{i}")))
            .collect();
        let mut trees: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new(); SHARDS];
        let mut by_hash: Vec<BTreeMap<u64, (String, Value)>> = vec![BTreeMap::new(); SHARDS];
        let mut maps: Vec<EntityMap<Value>> = (0..SHARDS).map(|_| EntityMap::new()).collect();
        for (s, id) in &ids {
            trees[*s].insert(id.clone(), [1; 11]);
            by_hash[*s].insert(stable_hash(id.as_bytes()), (id.clone(), [1; 11]));
            maps[*s].insert(id.clone(), [1; 11]);
        }
        let passes = (2_000_000 / total).max(1);
        let (mut t_tree, mut t_hash_tree, mut t_map, mut t_hash) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            t_tree.push(time(&ids, passes, |s, id| {
                black_box(trees[s].get_mut(id));
            }));
            t_hash_tree.push(time(&ids, passes, |s, id| {
                let entry = by_hash[s].get_mut(&stable_hash(id.as_bytes()));
                black_box(entry.filter(|(k, _)| k == id));
            }));
            t_map.push(time(&ids, passes, |s, id| {
                black_box(maps[s].get_mut(id));
            }));
            t_hash.push(time(&ids, passes, |_, id| {
                black_box(stable_hash(id.as_bytes()));
            }));
        }
        println!(
            "| {per_shard} | {:.1} | {:.1} | {:.1} | {:.1} |",
            median(t_tree),
            median(t_hash_tree),
            median(t_map),
            median(t_hash)
        );
    }
}
