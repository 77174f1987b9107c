//! [`EntityMap`]: the entities of one shard, by id.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::shard::stable_hash;

/// The map a region keeps for each shard: entity id to value, ordered by
/// `(stable_hash(id), id)` rather than by id.
///
/// Task ids are long and share prefixes (`job-node-1-17`, `job-node-1-18`),
/// so a `BTreeMap<String, _>` spends most of a lookup in string compares
/// (about a dozen `memcmp` calls per lookup at a few thousand entities per
/// shard, 14 % of the region's CPU in `perf` on the task path). Here a
/// lookup hashes the id once ([`stable_hash`], about 1 ns per byte) and
/// descends the tree by `u64`; the id is compared only within its hash's
/// bucket, which holds one entry unless two ids collide.
///
/// The order is total and the same on every node and release (the hash is
/// pinned), so it also serves as the cursor order of handoff pages
/// ([`EntityMap::after`]). Memory: 8 bytes more per entity than a
/// `BTreeMap<String, V>` (the hash).
#[derive(Debug, Clone)]
pub struct EntityMap<V> {
    tree: BTreeMap<u64, Bucket<V>>,
    len: usize,
}

/// The entries of one hash: almost always one.
#[derive(Debug, Clone)]
enum Bucket<V> {
    One((String, V)),
    /// Two or more ids with the same hash, sorted by id.
    Many(Vec<(String, V)>),
}

impl<V> Bucket<V> {
    fn as_slice(&self) -> &[(String, V)] {
        match self {
            Bucket::One(pair) => std::slice::from_ref(pair),
            Bucket::Many(list) => list,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [(String, V)] {
        match self {
            Bucket::One(pair) => std::slice::from_mut(pair),
            Bucket::Many(list) => list,
        }
    }
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
            tree: BTreeMap::new(),
            len: 0,
        }
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the map holds no entity.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of entity `id`.
    pub fn get(&self, id: &str) -> Option<&V> {
        let bucket = self.tree.get(&stable_hash(id.as_bytes()))?;
        bucket
            .as_slice()
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v)
    }

    /// The value of entity `id`, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        let bucket = self.tree.get_mut(&stable_hash(id.as_bytes()))?;
        bucket
            .as_mut_slice()
            .iter_mut()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v)
    }

    /// Sets entity `id` to `value`; returns the value it replaced.
    pub fn insert(&mut self, id: String, value: V) -> Option<V> {
        use std::collections::btree_map::Entry;
        let bucket = match self.tree.entry(stable_hash(id.as_bytes())) {
            Entry::Vacant(slot) => {
                slot.insert(Bucket::One((id, value)));
                self.len += 1;
                return None;
            }
            Entry::Occupied(slot) => slot.into_mut(),
        };
        if let Some((_, v)) = bucket.as_mut_slice().iter_mut().find(|(k, _)| *k == id) {
            return Some(std::mem::replace(v, value));
        }
        // A second id with this hash.
        let mut list = match std::mem::replace(bucket, Bucket::Many(Vec::new())) {
            Bucket::One(pair) => vec![pair],
            Bucket::Many(list) => list,
        };
        let at = list.partition_point(|(k, _)| k.as_str() < id.as_str());
        list.insert(at, (id, value));
        *bucket = Bucket::Many(list);
        self.len += 1;
        None
    }

    /// Removes entity `id`; returns its value.
    pub fn remove(&mut self, id: &str) -> Option<V> {
        use std::collections::btree_map::Entry;
        let Entry::Occupied(mut slot) = self.tree.entry(stable_hash(id.as_bytes())) else {
            return None;
        };
        let removed = match slot.get_mut() {
            Bucket::One((k, _)) if k == id => match slot.remove() {
                Bucket::One((_, v)) => Some(v),
                Bucket::Many(_) => None,
            },
            Bucket::One(_) => None,
            Bucket::Many(list) => {
                let i = list.iter().position(|(k, _)| k == id)?;
                let (_, v) = list.remove(i);
                if list.len() == 1 {
                    if let Some(pair) = list.pop() {
                        *slot.get_mut() = Bucket::One(pair);
                    }
                }
                Some(v)
            }
        };
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Every entity in map order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.tree
            .values()
            .flat_map(|b| b.as_slice().iter().map(|(k, v)| (k, v)))
    }

    /// Every entity in map order, values mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut V)> {
        self.tree
            .values_mut()
            .flat_map(|b| b.as_mut_slice().iter_mut().map(|(k, v)| (&*k, v)))
    }

    /// The entities after `id` in map order (all of them for `None`); `id`
    /// itself need not be in the map. The cursor of handoff pages.
    pub fn after(&self, id: Option<&str>) -> impl Iterator<Item = (&String, &V)> {
        let cursor = id.map(|id| (stable_hash(id.as_bytes()), id));
        let from = cursor.map_or(Bound::Unbounded, |(h, _)| Bound::Included(h));
        self.tree
            .range((from, Bound::Unbounded))
            .flat_map(|(h, b)| b.as_slice().iter().map(move |(k, v)| (*h, k, v)))
            .filter(move |(h, k, _)| match cursor {
                Some((ch, cid)) => *h != ch || k.as_str() > cid,
                None => true,
            })
            .map(|(_, k, v)| (k, v))
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
        /// the same contents in `(hash, id)` order, and every page cursor
        /// resumes right after its id.
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
            let got: Vec<(String, u32)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
            prop_assert_eq!(&got, &want);
            for (k, v) in &model {
                prop_assert_eq!(map.get(k), Some(v));
            }
            prop_assert_eq!(map.get("not-an-id"), None);
            for i in 0..=want.len() {
                let cursor = i.checked_sub(1).map(|j| want[j].0.as_str());
                let rest: Vec<(String, u32)> = map.after(cursor).map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(&rest[..], &want[i..]);
            }
        }
    }

    /// Two ids with one hash share a bucket; both stay reachable, in id
    /// order, and removing one leaves the other.
    #[test]
    fn colliding_ids_share_a_bucket() {
        let mut map = EntityMap::new();
        // Force a collision by planting a second entry under one hash.
        map.insert("a".to_owned(), 1);
        let h = stable_hash(b"a");
        let Some(bucket) = map.tree.get_mut(&h) else {
            panic!("a is in the map")
        };
        let Bucket::One(first) = std::mem::replace(bucket, Bucket::Many(Vec::new())) else {
            panic!("one entry")
        };
        *bucket = Bucket::Many(vec![first, ("b-colliding".to_owned(), 2)]);
        map.len = 2;

        assert_eq!(map.get("a"), Some(&1));
        let ids: Vec<&String> = map.iter().map(|(k, _)| k).collect();
        assert_eq!(ids, ["a", "b-colliding"]);
        assert_eq!(map.after(Some("a")).count(), 1);
        assert_eq!(map.remove("a"), Some(1));
        assert!(matches!(map.tree.get(&h), Some(Bucket::One(_))));
        assert_eq!(map.len(), 1);
    }
}
