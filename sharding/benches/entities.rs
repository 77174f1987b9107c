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

/// An entry of the region's size: a 40-byte state, version, acked.
type Value = [u64; 7];

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
        tree.insert(id.clone(), [1; 7]);
        map.insert(id.clone(), [1; 7]);
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
}
