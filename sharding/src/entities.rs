//! [`EntityMap`]: the entities of one shard, by id; [`IdHasher`] and
//! [`IdKey`]: an id hashed once for every map of a region.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashTable;

use crate::shard::stable_hash;

/// The hash function of a group of [`EntityMap`]s: SipHash-1-3 (std's
/// `RandomState`) with keys drawn per process, so ids chosen to collide
/// cannot slow a map down. Maps made [`EntityMap::with_hasher`] from one
/// `IdHasher` (or its clones) share it, so an id hashed once
/// ([`IdHasher::key`]) is looked up in all of them without hashing it again:
/// a region looks a task's id up in four or five maps per message, and
/// hashing it each time was a fifth of its instructions per task
/// (`BENCHMARKS.md`, session 12).
#[derive(Debug, Clone)]
pub struct IdHasher {
    state: RandomState,
    /// Tells this hasher's keys from another's: a map given a key of
    /// another hasher hashes the id itself.
    tag: u64,
}

impl Default for IdHasher {
    fn default() -> Self {
        IdHasher::new()
    }
}

impl IdHasher {
    /// A hasher with fresh keys.
    pub fn new() -> Self {
        static TAGS: AtomicU64 = AtomicU64::new(1);
        IdHasher {
            state: RandomState::new(),
            tag: TAGS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// `id` with its hash, for lookups in this hasher's maps.
    pub fn key<'a>(&self, id: &'a str) -> IdKey<'a> {
        IdKey {
            id,
            hash: IdHash {
                hash: self.state.hash_one(id),
                tag: self.tag,
            },
        }
    }

    fn hash(&self, id: &str) -> u64 {
        self.state.hash_one(id)
    }
}

/// An entity id and its hash under one [`IdHasher`] ([`IdHasher::key`]).
/// Given to a map of another hasher it still finds the id (the map hashes
/// it again), only slower.
#[derive(Debug, Clone, Copy)]
pub struct IdKey<'a> {
    id: &'a str,
    hash: IdHash,
}

impl<'a> IdKey<'a> {
    /// The id.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The hash alone, without the borrow of the id (to insert the id's
    /// own `String`: [`EntityMap::insert_hashed`]).
    pub fn hash(&self) -> IdHash {
        self.hash
    }
}

/// The hash of an id under one [`IdHasher`] ([`IdKey::hash`]).
#[derive(Debug, Clone, Copy)]
pub struct IdHash {
    hash: u64,
    tag: u64,
}

/// The map a region keeps for each shard: entity id to value (also its
/// other maps by entity id: parked asks, answers waiting for replicas).
///
/// A hash table by id ([`IdHasher`]: SipHash with per-process keys; `hashbrown`'s
/// table, which is std's `HashMap` inside, so each entry is the id's
/// `String` and the value, nothing more) with one ordered query,
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
///
/// Every method by `&str` hashes the id; the `*_key` methods take an
/// [`IdKey`] hashed before.
#[derive(Debug, Clone)]
pub struct EntityMap<V> {
    table: HashTable<(String, V)>,
    hasher: IdHasher,
}

impl<V> Default for EntityMap<V> {
    fn default() -> Self {
        EntityMap::new()
    }
}

impl<V> EntityMap<V> {
    /// An empty map with a hasher of its own.
    pub fn new() -> Self {
        EntityMap::with_hasher(&IdHasher::new())
    }

    /// An empty map hashing with `hasher` (a clone of it: maps of one
    /// hasher take the same [`IdKey`]s).
    pub fn with_hasher(hasher: &IdHasher) -> Self {
        EntityMap {
            table: HashTable::new(),
            hasher: hasher.clone(),
        }
    }

    /// The hasher this map's [`IdKey`]s come from.
    pub fn hasher(&self) -> &IdHasher {
        &self.hasher
    }

    /// The hash of `key` in this map: its own, or computed again for a key
    /// of another hasher.
    fn hash_of(&self, key: &IdKey<'_>) -> u64 {
        self.hash_or(key.hash, key.id)
    }

    /// `hash` when it is of this map's hasher, else `id`'s hash in it.
    fn hash_or(&self, hash: IdHash, id: &str) -> u64 {
        if hash.tag == self.hasher.tag {
            hash.hash
        } else {
            self.hasher.hash(id)
        }
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Entities the map holds room for without growing.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// True when the map holds no entity.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The value of entity `id`.
    pub fn get(&self, id: &str) -> Option<&V> {
        self.get_key(&self.hasher.key(id))
    }

    /// The value of the entity `key` names.
    pub fn get_key(&self, key: &IdKey<'_>) -> Option<&V> {
        let hash = self.hash_of(key);
        self.table.find(hash, |(k, _)| k == key.id).map(|(_, v)| v)
    }

    /// The value of entity `id`, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        let key = self.hasher.key(id);
        self.get_mut_key(&key)
    }

    /// The value of the entity `key` names, mutably.
    pub fn get_mut_key(&mut self, key: &IdKey<'_>) -> Option<&mut V> {
        let hash = self.hash_of(key);
        self.table
            .find_mut(hash, |(k, _)| k == key.id)
            .map(|(_, v)| v)
    }

    /// True when entity `id` is in the map.
    pub fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// True when the entity `key` names is in the map.
    pub fn contains(&self, key: &IdKey<'_>) -> bool {
        self.get_key(key).is_some()
    }

    /// Sets entity `id` to `value`; returns the value it replaced.
    pub fn insert(&mut self, id: String, value: V) -> Option<V> {
        let hash = self.hasher.key(&id).hash();
        self.insert_hashed(hash, id, value)
    }

    /// Sets entity `id`, whose hash is `hash` ([`IdKey::hash`]), to
    /// `value`; returns the value it replaced.
    pub fn insert_hashed(&mut self, hash: IdHash, id: String, value: V) -> Option<V> {
        let hash = self.hash_or(hash, &id);
        match self.table.find_mut(hash, |(k, _)| *k == id) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                let hasher = &self.hasher;
                self.table
                    .insert_unique(hash, (id, value), |(k, _)| hasher.hash(k));
                None
            }
        }
    }

    /// Sets the entity `key` names to `value` (copying the id only when it
    /// is new); returns the value it replaced.
    pub fn insert_key(&mut self, key: &IdKey<'_>, value: V) -> Option<V> {
        let hash = self.hash_of(key);
        match self.table.find_mut(hash, |(k, _)| k == key.id) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                let hasher = &self.hasher;
                self.table
                    .insert_unique(hash, (key.id.to_owned(), value), |(k, _)| hasher.hash(k));
                None
            }
        }
    }

    /// The value of the entity `key` names, inserted by `make` first when
    /// absent.
    pub fn get_or_insert_with(&mut self, key: &IdKey<'_>, make: impl FnOnce() -> V) -> &mut V {
        let hash = self.hash_of(key);
        let hasher = &self.hasher;
        let entry = self
            .table
            .entry(hash, |(k, _)| k == key.id, |(k, _)| hasher.hash(k));
        &mut entry
            .or_insert_with(|| (key.id.to_owned(), make()))
            .into_mut()
            .1
    }

    /// Removes entity `id`; returns its value.
    pub fn remove(&mut self, id: &str) -> Option<V> {
        let key = self.hasher.key(id);
        self.remove_key(&key)
    }

    /// Removes the entity `key` names; returns its value.
    pub fn remove_key(&mut self, key: &IdKey<'_>) -> Option<V> {
        self.remove_entry_key(key).map(|(_, v)| v)
    }

    /// Removes the entity `key` names; returns its id and value.
    pub fn remove_entry_key(&mut self, key: &IdKey<'_>) -> Option<(String, V)> {
        let hash = self.hash_of(key);
        self.table
            .find_entry(hash, |(k, _)| k == key.id)
            .ok()
            .map(|e| e.remove().0)
    }

    /// Removes every entity.
    pub fn clear(&mut self) {
        self.table.clear();
    }

    /// Keeps the entities `keep` returns true for.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut V) -> bool) {
        self.table.retain(|(k, v)| keep(k, v));
    }

    /// Removes and returns the entities `take` returns true for, in no
    /// particular order (as the iterator is consumed; those it does not
    /// reach stay).
    pub fn extract_if<'a>(
        &'a mut self,
        mut take: impl FnMut(&String, &mut V) -> bool + 'a,
    ) -> impl Iterator<Item = (String, V)> + 'a {
        self.table.extract_if(move |(k, v)| take(k, v))
    }

    /// Removes and returns every entity, in no particular order.
    pub fn drain(&mut self) -> impl Iterator<Item = (String, V)> + '_ {
        self.table.drain()
    }

    /// Every entity, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }

    /// Every entity, in no particular order, values mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut V)> {
        self.table.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Every id, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.table.iter().map(|(k, _)| k)
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

impl<V> IntoIterator for EntityMap<V> {
    type Item = (String, V);
    type IntoIter = hashbrown::hash_table::IntoIter<(String, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.table.into_iter()
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
        /// By an [`IdKey`]: of the map's own hasher (`true`) or another's.
        InsertKey(String, u32, bool),
        RemoveKey(String, bool),
        GetOrInsert(String, u32, bool),
    }

    /// Ids from a small alphabet so inserts, replacements and removals of
    /// the same id happen often.
    fn op() -> impl Strategy<Value = Op> {
        let id = "[a-c]{0,3}";
        prop_oneof![
            (id, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            id.prop_map(Op::Remove),
            (id, any::<u32>(), any::<bool>()).prop_map(|(k, v, own)| Op::InsertKey(k, v, own)),
            (id, any::<bool>()).prop_map(|(k, own)| Op::RemoveKey(k, own)),
            (id, any::<u32>(), any::<bool>()).prop_map(|(k, v, own)| Op::GetOrInsert(k, v, own)),
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
        /// Against a `BTreeMap` model: the same answers to every operation (by
    /// id, and by keys of the map's hasher or of another),
        /// the same contents, and every page cursor resumes right after its
        /// id in `(hash, id)` order, with or without a limit.
        #[test]
        fn behaves_like_an_ordered_map(ops in prop::collection::vec(op(), 0..200)) {
            let mut map = EntityMap::new();
            let mut model = BTreeMap::new();
            let other = IdHasher::new();
            for op in ops {
                let hasher = |own: bool| if own { map.hasher().clone() } else { other.clone() };
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(map.insert(k.clone(), v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                    Op::InsertKey(k, v, own) => {
                        let key = hasher(own).key(&k);
                        prop_assert_eq!(map.insert_key(&key, v), model.insert(k.clone(), v));
                    }
                    Op::RemoveKey(k, own) => {
                        let key = hasher(own).key(&k);
                        prop_assert_eq!(map.contains(&key), model.contains_key(&k));
                        prop_assert_eq!(map.remove_key(&key), model.remove(&k));
                    }
                    Op::GetOrInsert(k, v, own) => {
                        let key = hasher(own).key(&k);
                        let got = *map.get_or_insert_with(&key, || v);
                        prop_assert_eq!(got, *model.entry(k.clone()).or_insert(v));
                    }
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
