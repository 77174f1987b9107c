//! Shard ids: the golden values every node and release must agree on.

use std::num::NonZeroU32;

use proptest::prelude::*;
use sharding::wire::life_stamp;
use sharding::{ShardId, shard_id, stable_hash};

fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

/// Ids covering the empty string, ASCII, the seed's task ids, and multi-byte
/// UTF-8 (Latin, CJK, an emoji).
const IDS: [&str; 8] = [
    "",
    "a",
    "task-1",
    "job-node-1-0",
    "counter-42",
    "ünïcødé",
    "日本語",
    "🦀",
];

#[test]
fn stable_hash_golden_values() {
    let got: Vec<u64> = IDS.iter().map(|id| stable_hash(id.as_bytes())).collect();
    let want: [u64; 8] = GOLDEN_HASH;
    assert_eq!(got, want);
}

#[test]
fn shard_id_golden_values() {
    for (num_shards, want) in [(50, GOLDEN_50), (1024, GOLDEN_1024)] {
        let got: Vec<u32> = IDS
            .iter()
            .map(|id| shard_id(id, nz(num_shards)).0)
            .collect();
        assert_eq!(got, want, "num_shards = {num_shards}");
    }
}

/// A life's stamp is `stable_hash(name ++ 0xff ++ generation, little-endian)`
/// (PROTOCOL.md, Messages), and it tells apart every life of these names
/// and generations, including the same name in another generation.
#[test]
fn a_life_stamp_is_the_hash_of_name_and_generation() {
    let mut bytes = b"node-1".to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(&7u64.to_le_bytes());
    assert_eq!(life_stamp("node-1", 7), stable_hash(&bytes));
    let mut seen = std::collections::BTreeSet::new();
    for name in IDS {
        for generation in [0, 1, 2, 1_765_000_000_000, u64::MAX] {
            assert!(
                seen.insert(life_stamp(name, generation)),
                "{name:?} #{generation}"
            );
        }
    }
}

#[test]
fn one_shard_holds_everything() {
    for id in IDS {
        assert_eq!(shard_id(id, nz(1)), ShardId(0));
    }
}

#[test]
fn shard_id_wire_form_is_a_bare_varint() {
    assert_eq!(postcard::to_stdvec(&ShardId(7)).unwrap(), [7]);
    assert_eq!(postcard::to_stdvec(&ShardId(300)).unwrap(), [0xac, 0x02]);
    assert_eq!(ShardId(12).to_string(), "12");
}

#[test]
fn ids_spread_evenly_over_shards() {
    // 50,000 seed-style task ids over 50 shards: every shard within 15% of
    // the mean of 1,000 (the binomial standard deviation is about 31).
    let mut counts = [0u32; 50];
    for i in 0..50_000 {
        counts[shard_id(&format!("job-node-1-{i}"), nz(50)).index()] += 1;
    }
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(*min > 850 && *max < 1150, "min {min} max {max}");
}

proptest! {
    #[test]
    fn shard_id_is_in_range(id in "\\PC{0,40}", num_shards in 1u32..5000) {
        let s = shard_id(&id, nz(num_shards));
        prop_assert!(s.0 < num_shards);
        prop_assert_eq!(s, shard_id(&id.clone(), nz(num_shards)));
    }

    #[test]
    fn shard_id_round_trips_through_postcard(v in any::<u32>()) {
        let bytes = postcard::to_stdvec(&ShardId(v)).unwrap();
        prop_assert_eq!(postcard::from_bytes::<ShardId>(&bytes).unwrap(), ShardId(v));
    }
}

/// Checked against an independent Python implementation of the documented
/// algorithm.
const GOLDEN_HASH: [u64; 8] = [
    17280346270528514342,
    9413272369427828315,
    6456970077027769447,
    13328539759570664730,
    6489660564466488205,
    14173888969990455629,
    16218896763332251880,
    10667599283631105574,
];
const GOLDEN_50: [u32; 8] = [42, 15, 47, 30, 5, 29, 30, 24];
const GOLDEN_1024: [u32; 8] = [294, 603, 103, 282, 909, 333, 232, 550];
