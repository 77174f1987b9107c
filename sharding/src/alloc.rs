//! Shard allocation: which member owns each shard and which members hold its
//! replicas, as a pure function of the member set.
//!
//! Every node computes [`allocate`] from its own view of the alive members
//! (suspect members included, dead and left ones excluded); nodes with the
//! same view get the same [`Allocation`] without talking to each other.
//!
//! # Algorithm
//!
//! With `S` shards, `N` members and `k = min(R, N) - 1` replicas per shard:
//!
//! 1. **Preferences** (rendezvous hashing, Thaler & Ravishankar, "Using
//!    name-based mappings to increase hit rates", IEEE/ACM ToN 1998): each
//!    (shard, member) pair gets a 32-bit score, the upper half of
//!    `fmix64(stable_hash(member) ^ (shard + 1) * 0x9e3779b97f4a7c15)`.
//!    Each member ranks all `S` shards by its scores (rank 0 = its highest
//!    score, ties to the smaller shard index); each shard orders the members
//!    by the rank they give it (ties: higher score, then the name first in
//!    byte order). A rank does not depend on the other members, so joins and
//!    leaves do not reshuffle preferences, and this per-member normalization
//!    makes first choices more even than raw scores do.
//! 2. **Owners** (shard-proposing immediate acceptance, the "Boston
//!    mechanism" of Abdulkadiroğlu & Sönmez, "School Choice: A Mechanism
//!    Design Approach", AER 2003), with every member's capacity
//!    `ceil(S / N)`: in round `q`, every shard still without an owner
//!    proposes to its `q`-th preferred member; each member accepts its
//!    proposals in its own rank order while it owns fewer than the capacity,
//!    and an acceptance is final. The capacity bounds every load, and since
//!    `N * ceil(S / N) >= S` every shard is placed within `N` rounds.
//! 3. **Replicas**: the same rounds again, each shard proposing to its next
//!    preferred member that does not hold it yet until it has `k`
//!    acceptances, with a replica capacity of `ceil(S * k / N)` per member.
//!    When the capacity has no slack the rounds can leave a shard short; it
//!    then gets its replica through an augmenting path (a member that does
//!    not hold it takes it and passes one of its own replicas along a chain
//!    ending at a member with room; Hopcroft & Karp, SIAM J. Comput. 1973),
//!    and only if no such path exists (the owners leave no way to respect
//!    the capacity, e.g. `R >= N`) from the non-holder with the fewest
//!    replicas.
//!
//! Measured figures (balance, movement per join and leave, replica
//! successors, time) are in the crate's `README.md`, section "Allocation
//! figures"; `PROTOCOL.md`, section "Allocation", states the invariants.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use crate::shard::{ShardId, fmix64, stable_hash};

/// The Weyl constant 2^64 / φ (odd), spreading shard indices before mixing.
const SHARD_SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// The rendezvous score of `member_hash` for shard index `shard`, higher
/// preferred: the upper 32 bits of
/// `fmix64(member_hash ^ (shard + 1) * 0x9e3779b97f4a7c15)`.
fn score(shard: u32, member_hash: u64) -> u32 {
    (fmix64(member_hash ^ (u64::from(shard) + 1).wrapping_mul(SHARD_SPREAD)) >> 32) as u32
}

/// Which member owns each shard and which members hold its replicas, for one
/// member set. Built by [`allocate`].
///
/// Each shard has `holders_per_shard() = min(R, N)` distinct holders: the
/// owner first, then the replicas (none at all when the member set is empty).
/// A [`ShardId`] outside `0..num_shards()` has no owner and no holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The members in name order (the set's order).
    members: Vec<String>,
    num_shards: NonZeroU32,
    replication: NonZeroU32,
    /// Holders per shard: `min(R, N)`, 0 when there are no members.
    per_shard: usize,
    /// `num_shards * per_shard` indices into `members`; shard `s` holds
    /// `[s * per_shard, (s + 1) * per_shard)`, owner first.
    holders: Vec<u32>,
    /// The same as names, so [`Allocation::holders`] can lend a slice.
    holder_names: Vec<String>,
}

/// How many shards own or hold a member in an [`Allocation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    /// Shards the member owns.
    pub owned: usize,
    /// Shards the member holds as a replica.
    pub replicas: usize,
}

/// What changes between two allocations of the same shard count; see
/// [`Allocation::moves_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Moves {
    /// Shards whose owner differs (including gaining or losing an owner).
    pub owners: usize,
    /// New (shard, holder) pairs: for each shard, the holders in the new
    /// allocation that did not hold it before. Each one is a state copy.
    pub holders: usize,
}

/// Allocates `num_shards` shards over `members` with `replication` holders
/// per shard (owner included), as a pure function of the set.
///
/// Every shard gets an owner and `min(R, N) - 1` distinct replicas distinct
/// from the owner, where `N = members.len()`. No member owns more than
/// `ceil(S / N)` shards. When `R < N`, no member holds more than
/// `ceil(S * (R - 1) / N)` replicas; when `R >= N` every member holds every
/// shard. With an empty set every shard is unowned. The algorithm and its
/// sources are in the [module docs](self).
///
/// # Panics
///
/// Never, for any input; time and memory grow as `S * N`, so `S` should
/// stay what it is meant to be (tens to thousands).
///
/// Cost: `O(S * N)` time and memory in the common case (`O(S * N^2)` more
/// per augmenting path, rarely needed); about 0.5 ms for 1024 shards over
/// 20 members (see the `alloc` bench). Member names may be any strings; they
/// enter only through [`stable_hash`] and, for ties, their byte order.
pub fn allocate(
    members: &BTreeSet<String>,
    num_shards: NonZeroU32,
    replication: NonZeroU32,
) -> Allocation {
    let members: Vec<String> = members.iter().cloned().collect();
    let n = members.len();
    let s = num_shards.get() as usize;
    if n == 0 {
        return Allocation {
            members,
            num_shards,
            replication,
            per_shard: 0,
            holders: Vec::new(),
            holder_names: Vec::new(),
        };
    }
    let per_shard = n.min(replication.get() as usize);
    let prefs = Preferences::new(&members, num_shards.get());
    let mut table = HolderTable::new(s, per_shard);

    let owner_cap = s.div_ceil(n);
    prefs.rounds(&mut table, 1, owner_cap);

    let replicas = per_shard - 1;
    if replicas > 0 {
        let replica_cap = (s * replicas).div_ceil(n);
        let mut load = prefs.rounds(&mut table, per_shard, replica_cap);
        prefs.fill_short(&mut table, &mut load, replica_cap);
    }

    let holders = table.cells;
    debug_assert!(holders.iter().all(|&m| (m as usize) < n));
    let holder_names = holders
        .iter()
        .map(|&m| members[m as usize].clone())
        .collect();
    Allocation {
        members,
        num_shards,
        replication,
        per_shard,
        holders,
        holder_names,
    }
}

/// The holders of every shard while they are being chosen: `per` cells per
/// shard (member indices, owner first), of which the first `len[shard]` are
/// filled.
struct HolderTable {
    per: usize,
    cells: Vec<u32>,
    len: Vec<usize>,
}

impl HolderTable {
    fn new(s: usize, per: usize) -> Self {
        Self {
            per,
            cells: vec![u32::MAX; s * per],
            len: vec![0; s],
        }
    }

    fn get(&self, shard: usize) -> &[u32] {
        &self.cells[shard * self.per..shard * self.per + self.len[shard]]
    }

    fn is_full(&self, shard: usize) -> bool {
        self.len[shard] == self.per
    }

    fn contains(&self, shard: usize, member: u32) -> bool {
        self.get(shard).contains(&member)
    }

    fn push(&mut self, shard: usize, member: u32) {
        debug_assert!(!self.is_full(shard) && !self.contains(shard, member));
        self.cells[shard * self.per + self.len[shard]] = member;
        self.len[shard] += 1;
    }

    /// Replaces replica `old` of `shard` by `new`, in place.
    fn replace(&mut self, shard: usize, old: u32, new: u32) {
        let start = shard * self.per;
        let slot = self.cells[start + 1..start + self.len[shard]]
            .iter()
            .position(|&m| m == old)
            .expect("replace is only called for a replica of the shard");
        self.cells[start + 1 + slot] = new;
    }
}

/// A member's place in one shard's order of preference: `(key, member)`
/// with `key = rank << 32 | !score`, smaller preferred. Distinct per member.
type Place = (u64, u32);

/// The preference tables of one member set: per member, its rank of every
/// shard; per shard, the key ordering the members.
struct Preferences {
    n: usize,
    s: usize,
    /// `rank[m * s + shard]`: member `m`'s rank of `shard`, 0 = best.
    rank: Vec<u32>,
    /// `by_rank[m * s + r]`: the shard member `m` ranks `r`-th.
    by_rank: Vec<u32>,
    /// `key[shard * n + m]`: `rank << 32 | !score` of member `m` for the
    /// shard; the shard prefers smaller `(key, m)`.
    key: Vec<u64>,
    /// `top[shard * TOP..][..TOP]`: the shard's first `TOP` places in order,
    /// padded with `(u64::MAX, u32::MAX)` when `N < TOP`.
    top: Vec<Place>,
}

/// How many first choices per shard [`Preferences`] keeps sorted.
const TOP: usize = 4;

impl Preferences {
    fn new(members: &[String], num_shards: u32) -> Self {
        let n = members.len();
        let s = num_shards as usize;
        let mut scores = vec![0u32; n * s]; // scores[m * s + shard]
        for (m, name) in members.iter().enumerate() {
            let h = stable_hash(name.as_bytes());
            for shard in 0..num_shards {
                scores[m * s + shard as usize] = score(shard, h);
            }
        }
        let mut rank = vec![0u32; n * s];
        let mut by_rank = vec![0u32; n * s];
        let mut sorter = RadixSorter::default();
        for m in 0..n {
            // Highest score first; the sort is stable, so ties keep the
            // smaller shard index first.
            let order = sorter.sort_desc(&scores[m * s..(m + 1) * s]);
            for (r, &shard) in order.iter().enumerate() {
                rank[m * s + shard as usize] = r as u32;
                by_rank[m * s + r] = shard;
            }
        }
        let mut key = vec![0u64; s * n];
        for m in 0..n {
            let (ranks, row) = (&rank[m * s..(m + 1) * s], &scores[m * s..(m + 1) * s]);
            for shard in 0..s {
                key[shard * n + m] = u64::from(ranks[shard]) << 32 | u64::from(!row[shard]);
            }
        }
        let mut top = Vec::with_capacity(s * TOP);
        for shard in 0..s {
            let row = &key[shard * n..(shard + 1) * n];
            // The first TOP places by insertion: most shards never look
            // further (an owner and a replica or two).
            let mut best: [Place; TOP] = [(u64::MAX, u32::MAX); TOP];
            for (m, &k) in row.iter().enumerate() {
                let mut place = (k, m as u32);
                if place >= best[TOP - 1] {
                    continue;
                }
                for b in best.iter_mut() {
                    if place < *b {
                        std::mem::swap(b, &mut place);
                    }
                }
            }
            top.extend_from_slice(&best);
        }
        Self {
            n,
            s,
            rank,
            by_rank,
            key,
            top,
        }
    }

    /// The member `shard` prefers right after `after` (its first choice for
    /// `None`); `None` past its last choice. `O(N)`.
    fn next_choice(&self, shard: usize, after: Option<Place>) -> Option<Place> {
        let top = &self.top[shard * TOP..(shard + 1) * TOP];
        let cached = match after {
            None => Some(0),
            Some(a) => top[..TOP - 1].iter().position(|&p| p == a).map(|i| i + 1),
        };
        if let Some(i) = cached {
            let place = top[i];
            return (place.1 != u32::MAX).then_some(place);
        }
        let row = &self.key[shard * self.n..(shard + 1) * self.n];
        let mut best: Option<Place> = None;
        for (m, &k) in row.iter().enumerate() {
            let place = (k, m as u32);
            if after.is_some_and(|a| place <= a) {
                continue;
            }
            if best.is_none_or(|b| place < b) {
                best = Some(place);
            }
        }
        best
    }

    /// All members in `shard`'s order of preference. `O(N log N)`.
    fn choices(&self, shard: usize) -> Vec<u32> {
        let row = &self.key[shard * self.n..(shard + 1) * self.n];
        let mut places: Vec<Place> = row
            .iter()
            .enumerate()
            .map(|(m, &k)| (k, m as u32))
            .collect();
        places.sort_unstable();
        places.into_iter().map(|(_, m)| m).collect()
    }

    /// Runs proposal rounds until every shard has `want` holders or has
    /// proposed to every member: each round, every short shard proposes to
    /// its next preferred member that does not hold it yet, and each member
    /// accepts in its own rank order while it has fewer than `cap` shards
    /// from this pass. Acceptances are final. Returns the pass's loads.
    fn rounds(&self, table: &mut HolderTable, want: usize, cap: usize) -> Vec<usize> {
        let s = self.s;
        let mut load = vec![0usize; self.n];
        let mut last: Vec<Option<Place>> = vec![None; s];
        let mut short: Vec<u32> = (0..s as u32)
            .filter(|&sh| table.len[sh as usize] < want)
            .collect();
        // (member << 32 | member's rank of the shard): sorting groups the
        // proposals by member, best-ranked first.
        let mut proposals: Vec<u64> = Vec::with_capacity(s);
        while !short.is_empty() {
            proposals.clear();
            short.retain(|&sh| {
                let sh = sh as usize;
                loop {
                    // Past its last choice: left to `fill_short`.
                    let Some(place) = self.next_choice(sh, last[sh]) else {
                        return false;
                    };
                    last[sh] = Some(place);
                    let m = place.1;
                    if !table.contains(sh, m) {
                        let r = self.rank[m as usize * s + sh];
                        proposals.push(u64::from(m) << 32 | u64::from(r));
                        return true;
                    }
                }
            });
            proposals.sort_unstable();
            for &p in &proposals {
                let m = (p >> 32) as usize;
                let shard = self.by_rank[m * s + (p as u32) as usize] as usize;
                if load[m] < cap {
                    load[m] += 1;
                    table.push(shard, m as u32);
                }
            }
            short.retain(|&sh| table.len[sh as usize] < want);
        }
        load
    }

    /// Completes the replicas of shards that [`Self::rounds`] left short
    /// (possible when the replica capacity has little or no slack), in shard
    /// order. Each missing replica comes from an augmenting path
    /// ([`Self::augment`]) when one exists, so the capacity holds whenever
    /// the owners leave any way to respect it; otherwise the shard takes the
    /// non-holder with the fewest replicas (ties: its preference order), over
    /// the capacity. `load` is the replica count per member.
    fn fill_short(&self, table: &mut HolderTable, load: &mut [usize], cap: usize) {
        for sh in 0..self.s {
            while !table.is_full(sh) {
                if self.augment(table, load, cap, sh) {
                    continue;
                }
                let pick = self
                    .choices(sh)
                    .into_iter()
                    .filter(|&m| !table.contains(sh, m))
                    .min_by_key(|&m| load[m as usize])
                    .expect("holders per shard <= N, so a short shard has a non-holder");
                load[pick as usize] += 1;
                table.push(sh, pick);
            }
        }
    }

    /// Adds one replica to `shard` without exceeding `cap`, if possible: a
    /// breadth-first search for the shortest chain "a non-holder of `shard`
    /// takes it and passes one of its replicas to a member not holding that
    /// one, which passes one of its own on, ..., until a member with spare
    /// capacity" (an augmenting path of bipartite b-matching, as in
    /// Hopcroft & Karp, SIAM J. Comput. 1973). Owners never move. Returns
    /// whether it added the replica.
    fn augment(
        &self,
        table: &mut HolderTable,
        load: &mut [usize],
        cap: usize,
        shard: usize,
    ) -> bool {
        let n = self.n;
        // Each member's replica shards, in shard order.
        let mut replica_of: Vec<Vec<u32>> = vec![Vec::new(); n];
        for sh in 0..self.s {
            for &m in table.get(sh).iter().skip(1) {
                replica_of[m as usize].push(sh as u32);
            }
        }
        // via[z] = (y, t): on the path, z takes replica shard t from y.
        let mut via: Vec<Option<(u32, u32)>> = vec![None; n];
        let mut seen = vec![false; n];
        let mut queue = std::collections::VecDeque::new();
        for m in self.choices(shard) {
            if !table.contains(shard, m) {
                seen[m as usize] = true;
                queue.push_back(m);
            }
        }
        let mut unseen = seen.iter().filter(|&&s| !s).count();
        while let Some(y) = queue.pop_front() {
            if load[y as usize] < cap {
                // Apply the path backwards from the member with room: each
                // member on it takes one replica and gives one away, except
                // this last one, which only takes.
                load[y as usize] += 1;
                let mut cur = y;
                while let Some((x, t)) = via[cur as usize] {
                    table.replace(t as usize, x, cur);
                    cur = x;
                }
                table.push(shard, cur);
                return true;
            }
            if unseen == 0 {
                continue;
            }
            for &t in &replica_of[y as usize] {
                for z in 0..n as u32 {
                    if !seen[z as usize] && !table.contains(t as usize, z) {
                        seen[z as usize] = true;
                        unseen -= 1;
                        via[z as usize] = Some((y, t));
                        queue.push_back(z);
                    }
                }
            }
        }
        false
    }
}

/// A stable least-significant-digit radix sort of shard indices by their
/// 32-bit score, reusing its buffers across members.
#[derive(Default)]
struct RadixSorter {
    /// `!score << 32 | index`, sorted by the upper half.
    items: Vec<u64>,
    spare: Vec<u64>,
    order: Vec<u32>,
}

impl RadixSorter {
    /// The indices `0..scores.len()` by descending score, equal scores in
    /// ascending index order. Four stable 8-bit passes over the upper half
    /// of `!score << 32 | index`, so equal scores keep their index order.
    fn sort_desc(&mut self, scores: &[u32]) -> &[u32] {
        self.items.clear();
        self.items.extend(
            scores
                .iter()
                .enumerate()
                .map(|(i, &sc)| u64::from(!sc) << 32 | i as u64),
        );
        let mut counts = [[0usize; 256]; 4];
        for &item in &self.items {
            for (pass, count) in counts.iter_mut().enumerate() {
                count[(item >> (32 + 8 * pass)) as u8 as usize] += 1;
            }
        }
        self.spare.clear();
        self.spare.resize(self.items.len(), 0);
        for (pass, count) in counts.iter().enumerate() {
            let mut next = [0usize; 256];
            let mut sum = 0;
            for (d, &c) in count.iter().enumerate() {
                next[d] = sum;
                sum += c;
            }
            for &item in &self.items {
                let d = (item >> (32 + 8 * pass)) as u8 as usize;
                self.spare[next[d]] = item;
                next[d] += 1;
            }
            std::mem::swap(&mut self.items, &mut self.spare);
        }
        self.order.clear();
        self.order
            .extend(self.items.iter().map(|&item| item as u32));
        &self.order
    }
}

impl Allocation {
    /// The number of shards `S`.
    pub fn num_shards(&self) -> NonZeroU32 {
        self.num_shards
    }

    /// The configured replication factor `R` (holders per shard, owner
    /// included). Fewer members than `R` give fewer holders: see
    /// [`Self::holders_per_shard`].
    pub fn replication(&self) -> NonZeroU32 {
        self.replication
    }

    /// The actual number of holders of every shard: `min(R, N)`, or 0 when
    /// there are no members.
    pub fn holders_per_shard(&self) -> usize {
        self.per_shard
    }

    /// The members the allocation was computed for, in name order.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The shards `0..S` in order.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = ShardId> + use<> {
        (0..self.num_shards.get()).map(ShardId)
    }

    /// The indices into `members` of `shard`'s holders, owner first; empty
    /// for an unknown shard or an empty member set.
    fn holder_indices(&self, shard: ShardId) -> &[u32] {
        let start = shard.index().saturating_mul(self.per_shard);
        let end = start.saturating_add(self.per_shard);
        self.holders.get(start..end).unwrap_or(&[])
    }

    fn index_of(&self, member: &str) -> Option<u32> {
        self.members
            .binary_search_by(|m| m.as_str().cmp(member))
            .ok()
            .map(|i| i as u32)
    }

    /// The owner of `shard`; `None` when the member set is empty or the shard
    /// is not in `0..S`.
    pub fn owner(&self, shard: ShardId) -> Option<&str> {
        self.holders(shard).first().map(String::as_str)
    }

    /// The holders of `shard`: the owner first, then the replicas in the
    /// order the allocation chose them (mostly the shard's preference
    /// order); `holders_per_shard()` distinct names, or empty when the shard
    /// has no owner.
    pub fn holders(&self, shard: ShardId) -> &[String] {
        let start = shard.index().saturating_mul(self.per_shard);
        let end = start.saturating_add(self.per_shard);
        self.holder_names.get(start..end).unwrap_or(&[])
    }

    /// The replicas of `shard`: its holders without the owner
    /// (`holders_per_shard() - 1` distinct names, or none).
    pub fn replicas(&self, shard: ShardId) -> &[String] {
        self.holders(shard).get(1..).unwrap_or(&[])
    }

    /// Whether `member` holds `shard` (as owner or replica).
    pub fn is_holder(&self, shard: ShardId, member: &str) -> bool {
        self.holders(shard).iter().any(|h| h == member)
    }

    /// The shards `member` owns, in order; empty for a non-member.
    pub fn shards_owned_by(&self, member: &str) -> Vec<ShardId> {
        let Some(m) = self.index_of(member) else {
            return Vec::new();
        };
        self.shards()
            .filter(|&sh| self.holder_indices(sh).first() == Some(&m))
            .collect()
    }

    /// The shards `member` holds, as owner or replica, in order; empty for a
    /// non-member.
    pub fn shards_held_by(&self, member: &str) -> Vec<ShardId> {
        let Some(m) = self.index_of(member) else {
            return Vec::new();
        };
        self.shards()
            .filter(|&sh| self.holder_indices(sh).contains(&m))
            .collect()
    }

    /// Every member's load, in name order.
    pub fn loads(&self) -> Vec<(&str, Load)> {
        let mut loads = vec![Load::default(); self.members.len()];
        for chunk in self.holders.chunks(self.per_shard.max(1)) {
            if let Some((&owner, replicas)) = chunk.split_first() {
                loads[owner as usize].owned += 1;
                for &r in replicas {
                    loads[r as usize].replicas += 1;
                }
            }
        }
        self.members.iter().map(String::as_str).zip(loads).collect()
    }

    /// The shards whose owner differs in `next`, with the owner here and
    /// there, in shard order. Shards beyond either allocation's `S` count as
    /// unowned on that side.
    pub fn owner_changes<'a>(
        &'a self,
        next: &'a Allocation,
    ) -> impl Iterator<Item = (ShardId, Option<&'a str>, Option<&'a str>)> + 'a {
        let s = self.num_shards.get().max(next.num_shards.get());
        (0..s).map(ShardId).filter_map(move |sh| {
            let (a, b) = (self.owner(sh), next.owner(sh));
            (a != b).then_some((sh, a, b))
        })
    }

    /// Counts what changes from `self` to `next`: owner changes and new
    /// (shard, holder) pairs. Shards beyond either allocation's `S` count as
    /// having no holders on that side. Cost `O(S * R^2)`.
    pub fn moves_to(&self, next: &Allocation) -> Moves {
        let s = self.num_shards.get().max(next.num_shards.get());
        let mut moves = Moves::default();
        for sh in (0..s).map(ShardId) {
            if self.owner(sh) != next.owner(sh) {
                moves.owners += 1;
            }
            moves.holders += next
                .holders(sh)
                .iter()
                .filter(|h| !self.is_holder(sh, h))
                .count();
        }
        moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).expect("test constants are nonzero")
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn preferences_are_permutations() {
        let members: Vec<String> = (0..7).map(|i| format!("node-{i}")).collect();
        let p = Preferences::new(&members, 50);
        for m in 0..7 {
            let ranks: BTreeSet<u32> = (0..50).map(|sh| p.rank[m * 50 + sh]).collect();
            assert_eq!(ranks.len(), 50);
            for r in 0..50 {
                let sh = p.by_rank[m * 50 + r] as usize;
                assert_eq!(p.rank[m * 50 + sh] as usize, r);
            }
        }
        for sh in 0..50 {
            let all = p.choices(sh);
            assert_eq!(all.iter().copied().collect::<BTreeSet<u32>>().len(), 7);
            // Walking next_choice gives the same order as choices.
            let mut walked = Vec::new();
            let mut last = None;
            while let Some(place) = p.next_choice(sh, last) {
                walked.push(place.1);
                last = Some(place);
            }
            assert_eq!(walked, all);
        }
    }

    #[test]
    fn full_replication_fills_every_member() {
        // R = N: every member holds every shard, the corner case where the
        // replica capacity is tight.
        for s in 1..40 {
            let a = allocate(&set(&["a", "b", "c"]), nz(s), nz(3));
            for sh in a.shards() {
                let h: BTreeSet<&String> = a.holders(sh).iter().collect();
                assert_eq!(h.len(), 3, "S={s} shard {sh}");
            }
        }
    }
}
