//! [`EntityMap`]: the entities of one shard, by id.

use std::collections::HashMap;

use crate::shard::stable_hash;

/// The map a region keeps for each shard: entity id to value.
///
/// A `HashMap<String, V>` (std's, so SipHash with a key drawn per process:
/// ids chosen to collide cannot slow it down) with one ordered query,
/// [`EntityMap::after`], for the cursor of handoff pages. That order is
/// `(stable_hash(id), id)`: total, and the same on every node and release
/// (the hash is pinned).
///
/// Why not an ordered tree: a lookup is about one cache miss for the
/// control bytes and one for the entry, where a tree descends several
/// nodes. At 4,000 entities per shard, looked up across 50 shards, a tree
/// ordered by `(stable_hash, id)` took 393 ns per lookup, a
/// `BTreeMap<String, _>` 175 ns (task ids looked up in order share its
/// leaves) and a `HashMap` 172 ns; at 20,000 per shard 784, 215 and 217 ns
/// (`cargo bench -p sharding --bench entities`, 2026-12-06, AMD EPYC). A
/// tree by id spends its time in string compares when lookups do not come
/// in id order (14 % of the region's CPU on the task path in 2026-12-04's
/// profile). Pages cost more instead: each [`EntityMap::after`] scans the
/// whole map, `O(n)` per page, which a handoff can afford.
#[derive(Debug, Clone)]
pub struct EntityMap<V> {
    map: HashMap<String, V>,
}

impl<V> Default for EntityMap<V> {
    fn default() -> Self {
        EntityMap::new()
    }
}

impl<V> EntityMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        EntityMap {
            map: HashMap::new(),
        }
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the map holds no entity.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value of entity `id`.
    pub fn get(&self, id: &str) -> Option<&V> {
        self.map.get(id)
    }

    /// The value of entity `id`, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        self.map.get_mut(id)
    }

    /// Sets entity `id` to `value`; returns the value it replaced.
    pub fn insert(&mut self, id: String, value: V) -> Option<V> {
        self.map.insert(id, value)
    }

    /// Removes entity `id`; returns its value.
    pub fn remove(&mut self, id: &str) -> Option<V> {
        self.map.remove(id)
    }

    /// Every entity, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.map.iter()
    }

    /// Every entity, in no particular order, values mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut V)> {
        self.map.iter_mut()
    }

    /// At most `limit` entities after `id` in `(stable_hash(id), id)`
    /// order, in that order (the first `limit` of the map for `None`);
    /// `id` itself need not be in the map. The cursor of handoff pages:
    /// the next page starts after the last id of this one.
    ///
    /// Cost: hashes every id and scans the whole map, `O(n + limit log
    /// limit)`.
    pub fn after(&self, id: Option<&str>, limit: usize) -> Vec<(&String, &V)> {
        let cursor = id.map(|id| (stable_hash(id.as_bytes()), id));
        let mut rest: Vec<(u64, &String, &V)> = self
            .map
            .iter()
            .map(|(k, v)| (stable_hash(k.as_bytes()), k, v))
            .filter(|(h, k, _)| cursor.is_none_or(|c| (*h, k.as_str()) > c))
            .collect();
        let order = |a: &(u64, &String, &V), b: &(u64, &String, &V)| (a.0, a.1).cmp(&(b.0, b.1));
        if rest.len() > limit {
            if limit == 0 {
                return Vec::new();
            }
            rest.select_nth_unstable_by(limit - 1, order);
            rest.truncate(limit);
        }
        rest.sort_unstable_by(order);
        rest.into_iter().map(|(_, k, v)| (k, v)).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u32),
        Remove(String),
    }

    /// Ids from a small alphabet so inserts, replacements and removals of
    /// the same id happen often.
    fn op() -> impl Strategy<Value = Op> {
        let id = "[a-c]{0,3}";
        prop_oneof![
            (id, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            id.prop_map(Op::Remove),
        ]
    }

    /// Keys in the map's order, computed independently.
    fn ordered(model: &BTreeMap<String, u32>) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by(|a, b| {
            (stable_hash(a.0.as_bytes()), &a.0).cmp(&(stable_hash(b.0.as_bytes()), &b.0))
        });
        v
    }

    proptest! {
        /// Against a `BTreeMap` model: the same answers to every operation,
        /// the same contents, and every page cursor resumes right after its
        /// id in `(hash, id)` order, with or without a limit.
        #[test]
        fn behaves_like_an_ordered_map(ops in prop::collection::vec(op(), 0..200)) {
            let mut map = EntityMap::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(map.insert(k.clone(), v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                }
                prop_assert_eq!(map.len(), model.len());
            }
            let want = ordered(&model);
            let mut got: Vec<(String, u32)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
            got.sort_by(|a, b| {
                (stable_hash(a.0.as_bytes()), &a.0).cmp(&(stable_hash(b.0.as_bytes()), &b.0))
            });
            prop_assert_eq!(&got, &want);
            for (k, v) in &model {
                prop_assert_eq!(map.get(k), Some(v));
            }
            prop_assert_eq!(map.get("not-an-id"), None);
            for i in 0..=want.len() {
                let cursor = i.checked_sub(1).map(|j| want[j].0.as_str());
                let rest: Vec<(String, u32)> =
                    map.after(cursor, usize::MAX).into_iter().map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(&rest[..], &want[i..]);
                // A limit keeps the first ones of that order.
                for limit in [0, 1, 2] {
                    let page: Vec<(String, u32)> =
                        map.after(cursor, limit).into_iter().map(|(k, v)| (k.clone(), *v)).collect();
                    prop_assert_eq!(&page[..], &want[i..(i + limit).min(want.len())]);
                }
            }
        }
    }
}
