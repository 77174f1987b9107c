//! Lookup time of a shard's entity map: `EntityMap` (ordered by stable hash,
//! then id) against a `BTreeMap<String, _>` (ordered by id), at 4,000
//! entities per shard (200,000 tasks over 50 shards) with ids shaped like
//! node-cli's (`job-<node>-<i>`, long shared prefixes). Rounds alternate the
//! two; medians are printed.
//!
//! `cargo bench -p sharding --bench entities`; `-- --test` runs a tiny
//! version (CI keeps it running).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use sharding::EntityMap;

/// An entry of the region's size: an 88-byte value (a task's state,
/// version, acked).
type Value = [u64; 11];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let (entities, passes, rounds) = if quick { (400, 2, 1) } else { (4_000, 200, 9) };
    // Every 50th task id lands in one shard on average: spread them alike.
    let ids: Vec<String> = (0..entities)
        .map(|i| format!("job-bench-1-{}", i * 50 + 7))
        .collect();
    let mut tree: BTreeMap<String, Value> = BTreeMap::new();
    let mut map: EntityMap<Value> = EntityMap::new();
    for id in &ids {
        tree.insert(id.clone(), [1; 11]);
        map.insert(id.clone(), [1; 11]);
    }
    let lookups = (passes * entities) as f64;
    let (mut t_tree, mut t_map) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..passes {
            for id in &ids {
                black_box(tree.get(black_box(id.as_str())));
            }
        }
        t_tree.push(t0.elapsed().as_nanos() as f64 / lookups);
        let t0 = Instant::now();
        for _ in 0..passes {
            for id in &ids {
                black_box(map.get(black_box(id.as_str())));
            }
        }
        t_map.push(t0.elapsed().as_nanos() as f64 / lookups);
    }
    let (a, b) = (median(t_tree), median(t_map));
    println!("entity map lookups, {entities} entities, medians of {rounds} rounds:");
    println!("| map | ns per lookup |");
    println!("|---|---|");
    println!("| BTreeMap<String, _> | {a:.1} |");
    println!("| EntityMap<_> | {b:.1} |");
    println!("ratio EntityMap / BTreeMap: {:.2}", b / a);
    interleaved(quick);
}

/// A node's view: 50 shards' maps, looked up in the order tasks arrive
/// (each id in its own shard, so consecutive lookups go to different
/// maps), at 120 and 4,000 entities per shard (6,000 and 200,000 tasks).
fn interleaved(quick: bool) {
    const SHARDS: usize = 50;
    let sizes: &[usize] = if quick { &[20] } else { &[120, 4_000] };
    let rounds = if quick { 1 } else { 9 };
    println!("\n50 shards' maps, lookups interleaved across shards, medians of {rounds} rounds:");
    println!(
        "| entities per shard | BTreeMap<String, _> ns | EntityMap<_> ns | stable_hash alone ns |"
    );
    println!("|---|---|---|---|");
    for &per_shard in sizes {
        let total = per_shard * SHARDS;
        let ids: Vec<(usize, String)> = (0..total)
            .map(|i| (i % SHARDS, format!("job-bench-1-{i}")))
            .collect();
        let mut trees: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new(); SHARDS];
        let mut maps: Vec<EntityMap<Value>> = (0..SHARDS).map(|_| EntityMap::new()).collect();
        for (s, id) in &ids {
            trees[*s].insert(id.clone(), [1; 11]);
            maps[*s].insert(id.clone(), [1; 11]);
        }
        let passes = (2_000_000 / total).max(1);
        let lookups = (passes * total) as f64;
        let (mut t_tree, mut t_map) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t0 = Instant::now();
            for _ in 0..passes {
                for (s, id) in &ids {
                    black_box(trees[*s].get_mut(black_box(id.as_str())));
                }
            }
            t_tree.push(t0.elapsed().as_nanos() as f64 / lookups);
            let t0 = Instant::now();
            for _ in 0..passes {
                for (s, id) in &ids {
                    black_box(maps[*s].get_mut(black_box(id.as_str())));
                }
            }
            t_map.push(t0.elapsed().as_nanos() as f64 / lookups);
        }
        let t0 = Instant::now();
        for _ in 0..passes {
            for (_, id) in &ids {
                black_box(sharding::stable_hash(black_box(id.as_bytes())));
            }
        }
        let hash = t0.elapsed().as_nanos() as f64 / lookups;
        println!(
            "| {per_shard} | {:.1} | {:.1} | {hash:.1} |",
            median(t_tree),
            median(t_map)
        );
    }
}
