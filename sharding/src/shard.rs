//! Stable shard ids: which shard an entity id belongs to.
//!
//! Every node must map an entity id to the same shard, on every platform and
//! in every release, so the hash is fixed here and never `std`'s randomized
//! `DefaultHasher`. [`stable_hash`] is FNV-1a 64 over the id's UTF-8 bytes,
//! followed by the MurmurHash3 `fmix64` finalizer; [`shard_id`] is that value
//! modulo the number of shards. A golden test pins the values, so changing
//! anything here is a breaking change of the cluster protocol.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

/// The FNV-1a 64 offset basis (Fowler, Noll, Vo; IETF draft-eastlake-fnv).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// The FNV 64-bit prime, 2^40 + 2^8 + 0xb3.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A shard: an index in `0..num_shards`.
///
/// Shards are the unit of ownership, handoff and replication. Entity ids map
/// to shards with [`shard_id`]; shards map to members with
/// [`allocate`](crate::alloc::allocate). It serializes as a bare `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u32);

impl ShardId {
    /// The shard's index as a `usize`, for indexing per-shard tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A map keyed by shard, hashed with [`ShardHasher`] instead of SipHash.
pub(crate) type ShardMap<V> = HashMap<ShardId, V, BuildHasherDefault<ShardHasher>>;

/// The hasher of [`ShardMap`]: a shard id multiplied by a 64-bit odd
/// constant (2^64 / golden ratio, Knuth's multiplicative hashing, TAOCP
/// vol. 3, 6.4): the low bits of the product, hashbrown's bucket index,
/// are a permutation of the id's low bits (the constant is odd), and its
/// top seven bits, hashbrown's tag byte, are well mixed. A region's maps
/// by shard hold at most `num_shards` keys, so there is nothing for chosen
/// keys to collide into at scale, and they are looked up several times per
/// message (with SipHash, about 100 instructions each:
/// `scripts/instructions.sh`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ShardHasher(u64);

impl Hasher for ShardHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    /// Not used by `ShardId` (which hashes as one `u32`); any other bytes
    /// go through the same step one at a time.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u32> for ShardId {
    fn from(index: u32) -> Self {
        Self(index)
    }
}

/// The shard of `entity_id` among `num_shards` shards:
/// `stable_hash(entity_id.as_bytes()) % num_shards`.
///
/// The result is in `0..num_shards`, identical on every platform and release
/// (pinned by a golden test). Any string is valid, including the empty one.
/// Cost: about one nanosecond per byte plus a few nanoseconds (see the
/// `alloc` bench), so it is cheap enough to run per message.
pub fn shard_id(entity_id: &str, num_shards: NonZeroU32) -> ShardId {
    let shard = stable_hash(entity_id.as_bytes()) % u64::from(num_shards.get());
    // The remainder is below `num_shards`, itself a u32.
    ShardId(u32::try_from(shard).expect("a remainder mod a u32 fits in a u32"))
}

/// The crate's fixed 64-bit hash: FNV-1a 64 over `bytes`, then the
/// MurmurHash3 `fmix64` finalizer.
///
/// FNV-1a (Fowler, Noll, Vo) is a byte-at-a-time multiply-xor hash whose low
/// bits mix poorly; `fmix64` (Austin Appleby, MurmurHash3) is a bijective
/// avalanche step that fixes that, so the value can be reduced modulo any
/// shard count. Precisely, with wrapping 64-bit arithmetic:
///
/// ```text
/// h = 0xcbf29ce484222325
/// for b in bytes { h = (h ^ b) * 0x100000001b3 }
/// h ^= h >> 33; h *= 0xff51afd7ed558ccd
/// h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53
/// h ^= h >> 33
/// ```
///
/// It is not a cryptographic hash: an adversary who picks entity ids can pile
/// them into one shard. It also names members in the allocation
/// ([`allocate`](crate::alloc::allocate)), so the allocation is as stable as
/// this function.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET_BASIS;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// The MurmurHash3 64-bit finalizer (Appleby): a bijection on `u64` in which
/// every input bit affects every output bit.
pub(crate) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_part_matches_the_published_test_vector() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (draft-eastlake-fnv,
        // appendix test vectors); undo nothing, just check the first stage.
        let mut h = FNV_OFFSET_BASIS;
        h ^= u64::from(b'a');
        h = h.wrapping_mul(FNV_PRIME);
        assert_eq!(h, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn fmix64_is_a_bijection_on_samples() {
        // fmix64(0) = 0 and distinct inputs give distinct outputs.
        assert_eq!(fmix64(0), 0);
        let outs: std::collections::BTreeSet<u64> = (0..10_000u64).map(fmix64).collect();
        assert_eq!(outs.len(), 10_000);
    }
}
