//! The member table (`Table`, private) and the snapshot the core hands
//! out ([`View`]).
//!
//! The table holds one record per name (the newest life known), the
//! sorted names of active members (for random choices without scanning
//! the map), the dead count (for the minority rule) and the reap queue.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::swim::member::{Member, MemberState};

/// A snapshot of the membership as seen by one node: every known member
/// by name, including the local one, with its life, incarnation, state and
/// metadata. Dead and left members stay listed until reaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The local member's name.
    pub local: String,
    /// Every member by name (the local one included).
    pub members: BTreeMap<String, Member>,
}

impl View {
    /// The record of `name`, if known.
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    /// Active members (alive or suspect), the local one included, in name
    /// order. This is the set shard allocation is computed from.
    pub fn active(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.is_active())
    }

    /// Number of active members (alive or suspect), the local one
    /// included.
    pub fn active_count(&self) -> usize {
        self.active().count()
    }

    /// Number of members in state `state`.
    pub fn count(&self, state: MemberState) -> usize {
        self.members.values().filter(|m| m.state == state).count()
    }
}

/// One record and when (local time) it entered its current state.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) member: Member,
    pub(crate) since: Instant,
    /// Index in `Table::active` (alive, suspect) or `Table::dead` (dead);
    /// unused for left members.
    slot: usize,
}

/// Which index list a state belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Active,
    Dead,
    Left,
}

fn class(state: MemberState) -> Class {
    match state {
        MemberState::Alive | MemberState::Suspect => Class::Active,
        MemberState::Dead => Class::Dead,
        MemberState::Left => Class::Left,
    }
}

/// The members we know, other than ourselves.
///
/// Entries live in a slab (`slots`, reused through `free`); `by_name` maps
/// a name to its slot and is only ever looked up, never iterated, so the
/// hash function cannot influence any output. Iteration goes over the
/// slab, and `active`/`dead` are unordered name lists with O(1) insert and
/// remove (each entry knows its position); all of these change only in
/// response to inputs, so their order, and every random choice made from
/// them, is a deterministic function of the inputs.
#[derive(Debug)]
pub(crate) struct Table {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_name: NameMap<usize>,
    /// Names of alive and suspect members.
    active: Vec<String>,
    /// Names of dead members.
    dead: Vec<String>,
    /// (entered dead/left, name) for every gone member: the reap queue.
    gone: BTreeSet<(Instant, String)>,
    /// Per bucket, the wrapping sum of the hashes of its active members
    /// (see [`Table::buckets`]).
    buckets: [u64; SYNC_BUCKETS],
}

/// Number of digest buckets a view is split into for anti-entropy: when
/// two views differ, only the buckets whose digests differ are exchanged.
pub const SYNC_BUCKETS: usize = 256;

/// The bucket of a member name: FNV-1a of the name, modulo
/// [`SYNC_BUCKETS`].
pub(crate) fn bucket_of(name: &str) -> usize {
    let mut h = Fnv::new();
    h.bytes(name.as_bytes());
    (h.0 % SYNC_BUCKETS as u64) as usize
}

/// The digest of a whole view: FNV-1a over its bucket digests.
pub(crate) fn view_digest(buckets: &[u64]) -> u64 {
    let mut h = Fnv::new();
    for b in buckets {
        h.bytes(&b.to_le_bytes());
    }
    h.0
}

/// A 64-bit hash of (name, generation, incarnation, state): FNV-1a
/// finished with the splitmix64 mixer so that sums of hashes stay well
/// spread.
pub(crate) fn member_hash(m: &Member) -> u64 {
    let mut h = Fnv::new();
    h.member(m);
    let mut z = h.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Default for Table {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            by_name: NameMap::default(),
            active: Vec::new(),
            dead: Vec::new(),
            gone: BTreeSet::new(),
            buckets: [0; SYNC_BUCKETS],
        }
    }
}

impl Table {
    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        let i = *self.by_name.get(name)?;
        self.slots.get(i)?.as_ref()
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Entry> {
        let i = *self.by_name.get(name)?;
        self.slots.get_mut(i)?.as_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Every entry, in slab order (deterministic, not sorted).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().flatten()
    }

    fn insert(&mut self, name: String, entry: Entry) {
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(entry);
                i
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        self.by_name.insert(name, i);
    }

    fn remove(&mut self, name: &str) -> Option<Entry> {
        let i = self.by_name.remove(name)?;
        let e = self.slots.get_mut(i)?.take();
        self.free.push(i);
        e
    }

    /// Names of alive and suspect members (unordered, see the type doc).
    pub(crate) fn active(&self) -> &[String] {
        &self.active
    }

    /// Names of dead (not left) members (unordered).
    pub(crate) fn dead(&self) -> &[String] {
        &self.dead
    }

    fn list(&mut self, c: Class) -> Option<&mut Vec<String>> {
        match c {
            Class::Active => Some(&mut self.active),
            Class::Dead => Some(&mut self.dead),
            Class::Left => None,
        }
    }

    /// Removes slot `slot` from list `c`, fixing the slot of the name
    /// moved into its place.
    fn unlist(&mut self, c: Class, slot: usize) {
        let Some(list) = self.list(c) else { return };
        if slot >= list.len() {
            return;
        }
        list.swap_remove(slot);
        let moved = list.get(slot).cloned();
        if let Some(m) = moved {
            if let Some(e) = self.get_mut(&m) {
                e.slot = slot;
            }
        }
    }

    /// Appends `name` to list `c`; returns its slot.
    fn enlist(&mut self, c: Class, name: &str) -> usize {
        match self.list(c) {
            Some(list) => {
                list.push(name.to_owned());
                list.len() - 1
            }
            None => usize::MAX,
        }
    }

    fn add_hash(&mut self, m: &Member, add: bool) {
        if !m.is_active() {
            return;
        }
        let b = bucket_of(&m.id.name);
        let h = member_hash(m);
        self.buckets[b] = if add {
            self.buckets[b].wrapping_add(h)
        } else {
            self.buckets[b].wrapping_sub(h)
        };
    }

    /// Stores `member` as the record of its name, replacing any previous
    /// one, and returns the previous record. `since` is reset when the
    /// state changes (or the life does).
    pub(crate) fn set(&mut self, member: Member, now: Instant) -> Option<Member> {
        let new_class = class(member.state);
        self.add_hash(&member, true);
        let Some(e) = self.get_mut(&member.id.name) else {
            let name = member.id.name.clone();
            let slot = self.enlist(new_class, &name);
            if new_class != Class::Active {
                self.gone.insert((now, name.clone()));
            }
            self.insert(
                name,
                Entry {
                    member,
                    since: now,
                    slot,
                },
            );
            return None;
        };
        let unchanged = e.member.state == member.state && e.member.id == member.id;
        let old = std::mem::replace(&mut e.member, member);
        let old_since = e.since;
        if !unchanged {
            e.since = now;
        }
        let since = e.since;
        let slot = e.slot;
        let name = e.member.id.name.clone();
        let old_class = class(old.state);
        self.add_hash(&old, false);
        if old_class != new_class {
            self.unlist(old_class, slot);
            let slot = self.enlist(new_class, &name);
            if let Some(e) = self.get_mut(&name) {
                e.slot = slot;
            }
        }
        if old_class != Class::Active {
            self.gone.remove(&(old_since, name.clone()));
        }
        if new_class != Class::Active {
            self.gone.insert((since, name));
        }
        Some(old)
    }

    /// Removes dead and left members that entered that state at or before
    /// `cutoff`; returns them.
    pub(crate) fn reap(&mut self, cutoff: Instant) -> Vec<Member> {
        let mut reaped = Vec::new();
        while let Some((since, name)) = self.gone.first().cloned() {
            if since > cutoff {
                break;
            }
            self.gone.pop_first();
            if let Some(e) = self.remove(&name) {
                self.unlist(class(e.member.state), e.slot);
                reaped.push(e.member);
            }
        }
        reaped
    }

    /// When the next gone member entered its state (add `reap_after` for
    /// its reaping time).
    pub(crate) fn next_reap(&self) -> Option<Instant> {
        self.gone.first().map(|(since, _)| *since)
    }

    /// The per-bucket digests of the active members and the local one:
    /// bucket `b` is the wrapping sum of [`member_hash`] over the active
    /// members whose name falls in `b`. Two nodes with the same active
    /// view get the same digests; dead and left entries are left out, so
    /// reaping at different times never makes views differ. Maintained
    /// incrementally, so this is O(buckets).
    pub(crate) fn buckets(&self, local: &Member) -> Vec<u64> {
        let mut out = self.buckets.to_vec();
        if local.is_active() {
            let b = bucket_of(&local.id.name);
            out[b] = out[b].wrapping_add(member_hash(local));
        }
        out
    }
}

/// A `HashMap` keyed by member name with the FNV-1a hasher: deterministic
/// (no random keys), and only used for lookups, never iterated.
pub(crate) type NameMap<V> =
    std::collections::HashMap<String, V, std::hash::BuildHasherDefault<FnvHasher>>;

/// FNV-1a as a `std::hash::Hasher`.
#[derive(Debug)]
pub(crate) struct FnvHasher(Fnv);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(Fnv::new())
    }
}

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.bytes(bytes);
    }
}

#[derive(Debug)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn member(&mut self, m: &Member) {
        self.bytes(m.id.name.as_bytes());
        self.bytes(&[0xff]);
        self.bytes(&m.id.generation.to_le_bytes());
        self.bytes(&m.incarnation.to_le_bytes());
        self.bytes(&[m.state as u8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swim::member::MemberId;
    use std::time::Duration;

    fn member(name: &str, state: MemberState) -> Member {
        Member {
            id: MemberId::new(name, "h:1", 1),
            incarnation: 0,
            state,
            metadata: Vec::new(),
        }
    }

    #[test]
    fn indexes_follow_state_changes_and_reap() {
        let t0 = Instant::now();
        let mut t = Table::default();
        t.set(member("b", MemberState::Alive), t0);
        t.set(member("a", MemberState::Suspect), t0);
        assert_eq!(t.active(), ["b", "a"]);
        t.set(member("a", MemberState::Dead), t0 + Duration::from_secs(1));
        assert_eq!(t.active(), ["b"]);
        assert_eq!(t.dead(), ["a"]);
        assert!(t.reap(t0).is_empty());
        let reaped = t.reap(t0 + Duration::from_secs(1));
        assert_eq!(reaped.len(), 1);
        assert!(t.dead().is_empty());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn digests_ignore_gone_members_and_depend_on_active_ones() {
        let t0 = Instant::now();
        let local = member("m", MemberState::Alive);
        let mut a = Table::default();
        let mut b = Table::default();
        a.set(member("x", MemberState::Alive), t0);
        b.set(member("z", MemberState::Alive), t0);
        b.set(member("x", MemberState::Alive), t0);
        b.set(member("z", MemberState::Dead), t0);
        assert_eq!(a.buckets(&local), b.buckets(&local));
        b.set(member("x", MemberState::Suspect), t0);
        let (da, db) = (a.buckets(&local), b.buckets(&local));
        let differing: Vec<usize> = (0..SYNC_BUCKETS).filter(|&i| da[i] != db[i]).collect();
        assert_eq!(differing, vec![bucket_of("x")]);
        b.reap(t0);
        a.set(member("x", MemberState::Suspect), t0);
        assert_eq!(a.buckets(&local), b.buckets(&local));
    }
}
