//! Prototypes of owner-allocation variants, measured against `allocate`.
//!
//! README "Allocation figures" lists every variant tried for issue 4's
//! movement target; this example reproduces the ones tried in the second
//! round (owners only, R = 1, same random views as the `alloc` bench:
//! `node-<8 hex digits>` names from a seeded ChaCha8 RNG, one join and one
//! leave per view). Each variant shares the crate's preferences: member `m`
//! ranks the shards by the rendezvous score, and a shard orders the members
//! by the rank they give it (ties by score).
//!
//! ```sh
//! cargo run --release -p sharding --example alloc_variants            # all, N = 20
//! cargo run --release -p sharding --example alloc_variants -- small   # N = 3 and 5
//! cargo run --release -p sharding --example alloc_variants -- mcf2 2  # one variant, 2x views
//! cargo run --release -p sharding --example alloc_variants -- allocate bound  # + the bound
//! ```
//!
//! Every variant asserts the owner cap `ceil(S/N)` on every view it builds.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sharding::{allocate, stable_hash};

/// The MurmurHash3 `fmix64` finalizer, as in the crate.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The crate's rendezvous score of a (shard, member hash) pair.
fn score(shard: usize, member_hash: u64) -> u32 {
    (fmix64(member_hash ^ (shard as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 32) as u32
}

/// The preferences of one member set, as the crate builds them.
struct Prefs {
    n: usize,
    s: usize,
    /// `rank[m * s + shard]`: member `m`'s rank of the shard, 0 = best.
    rank: Vec<u32>,
    /// `order[shard * n + pos]`: the shard's `pos`-th preferred member.
    order: Vec<u32>,
    /// `pos[shard * n + m]`: where member `m` is in the shard's order.
    pos: Vec<u32>,
    /// Each member's name hash.
    hash: Vec<u64>,
}

impl Prefs {
    fn new(members: &[String], s: usize) -> Self {
        let n = members.len();
        let hash: Vec<u64> = members.iter().map(|m| stable_hash(m.as_bytes())).collect();
        let mut sc = vec![0u32; n * s];
        let mut rank = vec![0u32; n * s];
        for m in 0..n {
            for sh in 0..s {
                sc[m * s + sh] = score(sh, hash[m]);
            }
            let mut idx: Vec<usize> = (0..s).collect();
            idx.sort_by_key(|&i| (!sc[m * s + i], i));
            for (r, &i) in idx.iter().enumerate() {
                rank[m * s + i] = r as u32;
            }
        }
        let mut order = vec![0u32; s * n];
        let mut pos = vec![0u32; s * n];
        for sh in 0..s {
            let mut ms: Vec<usize> = (0..n).collect();
            ms.sort_by_key(|&m| (rank[m * s + sh], !sc[m * s + sh], m));
            for (p, &m) in ms.iter().enumerate() {
                order[sh * n + p] = m as u32;
                pos[sh * n + m] = p as u32;
            }
        }
        Self {
            n,
            s,
            rank,
            order,
            pos,
            hash,
        }
    }

    fn cap(&self) -> usize {
        self.s.div_ceil(self.n)
    }

    fn rank(&self, m: usize, sh: usize) -> u32 {
        self.rank[m * self.s + sh]
    }

    /// Each member's natural demand: the shards that put it first.
    fn demand(&self) -> Vec<usize> {
        let mut d = vec![0; self.n];
        for sh in 0..self.s {
            d[self.order[sh * self.n] as usize] += 1;
        }
        d
    }
}

/// Generic immediate acceptance in rounds: each round every unowned shard
/// proposes to the next member of `order` (cyclically, so it always ends
/// placed), members accept in increasing `accept` key while below `cap(m,
/// round)` and while `eligible(m, shard, round)`.
fn rounds(
    p: &Prefs,
    order: &[u32],
    accept: impl Fn(usize, usize) -> f64,
    cap: impl Fn(usize, usize) -> usize,
    eligible: impl Fn(usize, usize, usize) -> bool,
) -> Vec<u32> {
    let (n, s) = (p.n, p.s);
    let mut owner = vec![u32::MAX; s];
    let mut load = vec![0usize; n];
    let mut next = vec![0usize; s];
    let mut short: Vec<usize> = (0..s).collect();
    let mut round = 0;
    while !short.is_empty() {
        let mut props: Vec<(usize, f64, usize)> = short
            .iter()
            .map(|&sh| {
                let m = order[sh * n + next[sh] % n] as usize;
                next[sh] += 1;
                (m, accept(m, sh), sh)
            })
            .collect();
        props.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        for &(m, _, sh) in &props {
            if load[m] < cap(m, round) && eligible(m, sh, round) {
                load[m] += 1;
                owner[sh] = m as u32;
            }
        }
        short.retain(|&sh| owner[sh] == u32::MAX);
        round += 1;
    }
    owner
}

/// The crate's rule in the prototype: rank acceptance, cap in every round.
fn boston(p: &Prefs) -> Vec<u32> {
    let cap = p.cap();
    rounds(
        p,
        &p.order,
        |m, sh| f64::from(p.rank(m, sh)),
        |_, _| cap,
        |_, _, _| true,
    )
}

/// A capacitated min-cost assignment restricted to each shard's first `d`
/// members, widened by one when infeasible: successive shortest paths on
/// the member graph (Bellman-Ford), starting from every shard at its first
/// choice. `cost(m, shard)` is `i128`.
fn min_cost(p: &Prefs, d: usize, cost: &dyn Fn(usize, usize) -> i128) -> Vec<u32> {
    let (n, s, cap) = (p.n, p.s, p.cap());
    let d = d.min(n);
    let mut owner: Vec<u32> = (0..s).map(|sh| p.order[sh * n]).collect();
    let mut load = vec![0usize; n];
    for &o in &owner {
        load[o as usize] += 1;
    }
    const INF: i128 = i128::MAX / 4;
    while load.iter().any(|&l| l > cap) {
        // Cheapest move of one shard from a to b, for every pair.
        let mut edge = vec![(INF, usize::MAX); n * n];
        for (sh, &a) in owner.iter().enumerate() {
            let a = a as usize;
            for k in 0..d {
                let b = p.order[sh * n + k] as usize;
                if b != a {
                    let c = (cost(b, sh) - cost(a, sh), sh);
                    edge[a * n + b] = edge[a * n + b].min(c);
                }
            }
        }
        let mut dist: Vec<i128> = (0..n)
            .map(|m| if load[m] > cap { 0 } else { INF })
            .collect();
        let mut pred = vec![(usize::MAX, usize::MAX); n];
        for _ in 0..n {
            let mut changed = false;
            for a in 0..n {
                if dist[a] >= INF {
                    continue;
                }
                for b in 0..n {
                    let (c, sh) = edge[a * n + b];
                    if c < INF && dist[a] + c < dist[b] {
                        dist[b] = dist[a] + c;
                        pred[b] = (a, sh);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let Some(t) = (0..n)
            .filter(|&m| load[m] < cap && dist[m] < INF)
            .min_by_key(|&m| (dist[m], m))
        else {
            return min_cost(p, d + 1, cost);
        };
        load[t] += 1;
        let mut cur = t;
        while pred[cur].0 != usize::MAX {
            let (a, sh) = pred[cur];
            owner[sh] = cur as u32;
            cur = a;
        }
        load[cur] -= 1;
    }
    owner
}

/// Preferences reweighted `iters` times toward equal natural demand (member
/// key `(rank + 1) * f_m`, `f_m *= ((demand + 0.5) / mean)^alpha`), then
/// the crate's rounds on the reweighted order.
fn reweighted(p: &Prefs, iters: usize, alpha: f64) -> Vec<u32> {
    let (n, s) = (p.n, p.s);
    let mean = s as f64 / n as f64;
    let mut f = vec![1.0f64; n];
    let key = |f: &[f64], m: usize, sh: usize| (f64::from(p.rank(m, sh)) + 1.0) * f[m];
    let order_for = |f: &[f64]| {
        let mut order = vec![0u32; s * n];
        for sh in 0..s {
            let mut ms: Vec<usize> = (0..n).collect();
            ms.sort_by(|&a, &b| {
                key(f, a, sh)
                    .total_cmp(&key(f, b, sh))
                    .then(p.pos[sh * n + a].cmp(&p.pos[sh * n + b]))
            });
            for (k, &m) in ms.iter().enumerate() {
                order[sh * n + k] = m as u32;
            }
        }
        order
    };
    for _ in 0..iters {
        let order = order_for(&f);
        let mut d = vec![0.0f64; n];
        for sh in 0..s {
            d[order[sh * n] as usize] += 1.0;
        }
        for m in 0..n {
            f[m] *= ((d[m] + 0.5) / mean).powf(alpha);
        }
    }
    let cap = p.cap();
    rounds(
        p,
        &order_for(&f),
        |m, sh| f64::from(p.rank(m, sh)),
        |_, _| cap,
        |_, _, _| true,
    )
}

/// The crate's rounds, but a member accepts first the shards whose next
/// choice is `a * rank - b * next_choice_demand` smallest (`b = 0`: ranks).
fn next_aware(p: &Prefs, a: f64, b: f64, margin: bool) -> Vec<u32> {
    let (n, cap) = (p.n, p.cap());
    let demand = p.demand();
    let key = |m: usize, sh: usize| {
        let k = p.pos[sh * n + m] as usize;
        let next = (k + 1 < n).then(|| p.order[sh * n + k + 1] as usize);
        if margin {
            // Keep the shards whose next choice ranks them much worse.
            let next_rank = next.map_or(f64::MAX, |x| f64::from(p.rank(x, sh)));
            -(next_rank - f64::from(p.rank(m, sh)))
        } else {
            a * f64::from(p.rank(m, sh)) - b * next.map_or(0.0, |x| demand[x] as f64)
        }
    };
    rounds(p, &p.order, key, |_, _| cap, |_, _, _| true)
}

/// The crate's rounds with the first round's cap lowered by `k`.
fn low_first_cap(p: &Prefs, k: usize) -> Vec<u32> {
    let cap = p.cap();
    rounds(
        p,
        &p.order,
        |m, sh| f64::from(p.rank(m, sh)),
        |_, round| {
            if round == 0 {
                cap.saturating_sub(k)
            } else {
                cap
            }
        },
        |_, _, _| true,
    )
}

/// The crate's rounds, but in the first `window_rounds` rounds a member only
/// accepts shards it ranks below `alpha * cap` (a per-member window, so those
/// acceptances do not depend on the other members' proposals).
fn rank_window(p: &Prefs, alpha: f64, window_rounds: usize) -> Vec<u32> {
    let cap = p.cap();
    let w = (alpha * cap as f64) as u32;
    rounds(
        p,
        &p.order,
        |m, sh| f64::from(p.rank(m, sh)),
        |_, _| cap,
        |m, sh, round| round >= window_rounds || p.rank(m, sh) < w,
    )
}

/// Per-member quotas: `floor(S/N) + 1` for the `S mod N + slack` members
/// first by name hash, `floor(S/N)` for the others, then the crate's rounds.
fn hash_quotas(p: &Prefs, slack: usize) -> Vec<u32> {
    let (n, s) = (p.n, p.s);
    let floor = s / n;
    let extra = (s - n * floor + slack).min(n);
    let mut by_hash: Vec<usize> = (0..n).collect();
    by_hash.sort_by_key(|&m| p.hash[m]);
    let mut quota = vec![floor; n];
    for &m in by_hash.iter().take(extra) {
        quota[m] = (floor + 1).min(p.cap());
    }
    rounds(
        p,
        &p.order,
        |m, sh| f64::from(p.rank(m, sh)),
        |m, _| quota[m],
        |_, _, _| true,
    )
}

/// Greedy over (shard, member at the shard's current position) by key
/// `rank + lambda * position * S/N`, accepting while the member has room:
/// `lambda = 0` is deferred acceptance by rank (a stable matching), a large
/// `lambda` is the crate's immediate acceptance in rounds.
fn rank_plus_round(p: &Prefs, lambda: f64) -> Vec<u32> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let (n, s, cap) = (p.n, p.s, p.cap());
    let unit = lambda * s as f64 / n as f64;
    let key = |sh: usize, k: usize| {
        let m = p.order[sh * n + k] as usize;
        ((f64::from(p.rank(m, sh)) + unit * k as f64) * 1024.0) as u64
    };
    let mut heap: BinaryHeap<_> = (0..s).map(|sh| Reverse((key(sh, 0), sh, 0usize))).collect();
    let mut owner = vec![u32::MAX; s];
    let mut load = vec![0usize; n];
    while let Some(Reverse((_, sh, k))) = heap.pop() {
        let m = p.order[sh * n + k] as usize;
        if load[m] < cap {
            load[m] += 1;
            owner[sh] = m as u32;
        } else {
            heap.push(Reverse((key(sh, k + 1), sh, k + 1)));
        }
    }
    owner
}

/// Per-member caps: `ceil(S/N)`, minus one for the `N ceil(S/N) - S - slack`
/// members with the least natural demand (the holes placed up front), then
/// the crate's rounds.
fn demand_quotas(p: &Prefs, slack: usize) -> Vec<u32> {
    let (n, s, cap) = (p.n, p.s, p.cap());
    let demand = p.demand();
    let holes = (n * cap - s).saturating_sub(slack);
    let mut by: Vec<usize> = (0..n).collect();
    by.sort_by_key(|&m| (demand[m], p.hash[m]));
    let mut quota = vec![cap; n];
    for &m in by.iter().take(holes) {
        quota[m] -= 1;
    }
    rounds(
        p,
        &p.order,
        |m, sh| f64::from(p.rank(m, sh)),
        |m, _| quota[m],
        |_, _, _| true,
    )
}

/// The crate's round 1; afterwards each unplaced shard proposes to the
/// member with the most room among its next `k` untried members with room
/// (ties: its preference), or with `k = 0` to its next member with room.
fn toward_room(p: &Prefs, k: usize) -> Vec<u32> {
    let (n, s, cap) = (p.n, p.s, p.cap());
    let mut owner = vec![u32::MAX; s];
    let mut load = vec![0usize; n];
    let mut tried = vec![false; s * n];
    let mut short: Vec<usize> = (0..s).collect();
    let mut round = 0;
    while !short.is_empty() {
        let mut props: Vec<(usize, u32, usize)> = Vec::new();
        for &sh in &short {
            let mut open = (0..n)
                .map(|i| p.order[sh * n + i] as usize)
                .filter(|&m| !tried[sh * n + m] && load[m] < cap);
            let m = if round == 0 {
                p.order[sh * n] as usize
            } else if k == 0 {
                open.next()
                    .expect("capacity N * ceil(S/N) >= S leaves room")
            } else {
                open.take(k)
                    .max_by_key(|&m| (cap - load[m], std::cmp::Reverse(p.pos[sh * n + m])))
                    .expect("capacity N * ceil(S/N) >= S leaves room")
            };
            tried[sh * n + m] = true;
            props.push((m, p.rank(m, sh), sh));
        }
        props.sort_unstable();
        for &(m, _, sh) in &props {
            if load[m] < cap {
                load[m] += 1;
                owner[sh] = m as u32;
            }
        }
        short.retain(|&sh| owner[sh] == u32::MAX);
        round += 1;
    }
    owner
}

type Variant = (&'static str, Box<dyn Fn(&Prefs) -> Vec<u32>>);

fn variants() -> Vec<Variant> {
    // Rank-maximal weights: (S + 1)^position, capped so they fit in i128.
    let rank_max = |p: &Prefs, m: usize, sh: usize| {
        let k = p.pos[sh * p.n + m];
        (p.s as i128 + 1).pow(k.min(11)) << 24 | i128::from(p.rank(m, sh))
    };
    let position = |p: &Prefs, m: usize, sh: usize| {
        i128::from(p.pos[sh * p.n + m]) << 24 | i128::from(p.rank(m, sh))
    };
    vec![
        ("allocate", Box::new(|_: &Prefs| Vec::new())),
        ("boston", Box::new(boston)),
        (
            "mcf2",
            Box::new(move |p: &Prefs| min_cost(p, 2, &|m, sh| position(p, m, sh))),
        ),
        (
            "mcf3",
            Box::new(move |p: &Prefs| min_cost(p, 3, &|m, sh| position(p, m, sh))),
        ),
        (
            "mcfN",
            Box::new(move |p: &Prefs| min_cost(p, p.n, &|m, sh| position(p, m, sh))),
        ),
        (
            "rankmax",
            Box::new(move |p: &Prefs| min_cost(p, p.n, &|m, sh| rank_max(p, m, sh))),
        ),
        (
            "mcfN-member-rank",
            Box::new(|p: &Prefs| min_cost(p, p.n, &|m, sh| i128::from(p.rank(m, sh)))),
        ),
        ("reweight1-0.5", Box::new(|p: &Prefs| reweighted(p, 1, 0.5))),
        ("reweight2-0.5", Box::new(|p: &Prefs| reweighted(p, 2, 0.5))),
        (
            "accept-margin",
            Box::new(|p: &Prefs| next_aware(p, 0.0, 0.0, true)),
        ),
        (
            "accept-next-demand",
            Box::new(|p: &Prefs| next_aware(p, 0.0, 1.0, false)),
        ),
        (
            "accept-rank-5next-demand",
            Box::new(|p: &Prefs| next_aware(p, 1.0, 5.0, false)),
        ),
        ("first-cap-1", Box::new(|p: &Prefs| low_first_cap(p, 1))),
        ("first-cap-2", Box::new(|p: &Prefs| low_first_cap(p, 2))),
        (
            "window2-1round",
            Box::new(|p: &Prefs| rank_window(p, 2.0, 1)),
        ),
        (
            "window3-1round",
            Box::new(|p: &Prefs| rank_window(p, 3.0, 1)),
        ),
        ("da-by-rank", Box::new(|p: &Prefs| rank_plus_round(p, 0.0))),
        (
            "rank+1-round",
            Box::new(|p: &Prefs| rank_plus_round(p, 1.0)),
        ),
        (
            "quota-low-demand",
            Box::new(|p: &Prefs| demand_quotas(p, 0)),
        ),
        (
            "quota-low-demand-slack2",
            Box::new(|p: &Prefs| demand_quotas(p, 2)),
        ),
        ("skip-full", Box::new(|p: &Prefs| toward_room(p, 0))),
        (
            "most-room-of-next-3",
            Box::new(|p: &Prefs| toward_room(p, 3)),
        ),
        ("quota-hash", Box::new(|p: &Prefs| hash_quotas(p, 0))),
        ("quota-hash-slack5", Box::new(|p: &Prefs| hash_quotas(p, 5))),
    ]
}

fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("constants are nonzero")
}

/// The owner names of every shard under `variant` ("allocate": the crate).
fn owners(variant: &Variant, set: &BTreeSet<String>, s: usize) -> Vec<String> {
    if variant.0 == "allocate" {
        let a = allocate(set, nz(s as u32), nz(1));
        return a
            .shards()
            .map(|sh| a.owner(sh).unwrap_or("").to_string())
            .collect();
    }
    let members: Vec<String> = set.iter().cloned().collect();
    let p = Prefs::new(&members, s);
    let own = (variant.1)(&p);
    let mut load = vec![0usize; members.len()];
    for &o in &own {
        load[o as usize] += 1;
    }
    assert!(
        load.iter().all(|&l| l <= p.cap()),
        "{}: owner cap broken",
        variant.0
    );
    own.iter().map(|&o| members[o as usize].clone()).collect()
}

fn random_name(rng: &mut ChaCha8Rng) -> String {
    format!("node-{:08x}", rng.r#gen::<u32>())
}

/// Per-cell means, each over the ideal (`S/(N+1)` for a join, `S/N` for a
/// leave): all owner moves, the moves between members other than the one
/// joining or leaving, and a lower bound on those given the loads and the
/// transfers to or from that member.
#[derive(Default)]
struct Figures {
    join: f64,
    leave: f64,
    join_others: f64,
    join_bound: f64,
    leave_others: f64,
    leave_bound: f64,
}

/// Moves between `a` and `b` not involving `who`, and half the sum over
/// the other members of |load change - shards from or to `who`| (each such
/// unit needs a move between the others, and each move covers at most two).
fn others(a: &[String], b: &[String], who: &str) -> (f64, f64) {
    use std::collections::BTreeMap;
    let mut delta: BTreeMap<&str, i64> = BTreeMap::new();
    let mut moves = 0;
    for (x, y) in a.iter().zip(b) {
        if x == y {
            continue;
        }
        if x != who && y != who {
            moves += 1;
        }
        // Load change not explained by a transfer with `who`.
        if x != who && y != who {
            *delta.entry(x).or_default() -= 1;
            *delta.entry(y).or_default() += 1;
        }
    }
    let bound = delta.values().map(|d| d.abs()).sum::<i64>() as f64 / 2.0;
    (f64::from(moves), bound)
}

fn cell(variant: &Variant, s: usize, n: usize, views: usize, seed: u64) -> Figures {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let moves = |a: &[String], b: &[String]| a.iter().zip(b).filter(|(x, y)| x != y).count() as f64;
    let mut f = Figures::default();
    let (join_ideal, leave_ideal) = (s as f64 / (n + 1) as f64, s as f64 / n as f64);
    for _ in 0..views {
        let mut view = BTreeSet::new();
        while view.len() < n {
            view.insert(random_name(&mut rng));
        }
        let base = owners(variant, &view, s);
        let mut joined = view.clone();
        while joined.len() == n {
            joined.insert(random_name(&mut rng));
        }
        let joiner = joined
            .difference(&view)
            .next()
            .expect("one new member")
            .clone();
        let after = owners(variant, &joined, s);
        f.join += moves(&base, &after) / join_ideal;
        let (o, b) = others(&base, &after, &joiner);
        f.join_others += o / join_ideal;
        f.join_bound += b / join_ideal;
        let mut left = view.clone();
        let leaver = view
            .iter()
            .nth(rng.gen_range(0..n))
            .expect("index below N")
            .clone();
        left.remove(&leaver);
        let after = owners(variant, &left, s);
        f.leave += moves(&base, &after) / leave_ideal;
        let (o, b) = others(&base, &after, &leaver);
        f.leave_others += o / leave_ideal;
        f.leave_bound += b / leave_ideal;
    }
    let v = views as f64;
    for x in [
        &mut f.join,
        &mut f.leave,
        &mut f.join_others,
        &mut f.join_bound,
        &mut f.leave_others,
        &mut f.leave_bound,
    ] {
        *x /= v;
    }
    f
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let small = args.iter().any(|a| a == "small");
    let scale: f64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1.0);
    let bound = args.iter().any(|a| a == "bound");
    let only: Vec<&String> = args
        .iter()
        .filter(|a| *a != "small" && *a != "bound" && a.parse::<f64>().is_err())
        .collect();
    let cells: &[(usize, usize, usize)] = if small {
        &[(50, 3, 1000), (50, 5, 1000), (256, 5, 300)]
    } else {
        &[(256, 20, 300), (1024, 20, 100), (50, 20, 1000)]
    };
    println!("owner moves / ideal, join / leave (R = 1, seed 42, views per cell x{scale})");
    if bound {
        println!(
            "others: moves between the other members / ideal; bound: the least those can be for the same loads and transfers"
        );
    }
    for v in variants() {
        if !only.is_empty() && !only.iter().any(|o| *o == v.0) {
            continue;
        }
        let mut line = format!("{:<26}", v.0);
        for &(s, n, views) in cells {
            let views = ((views as f64 * scale) as usize).max(1);
            let f = cell(&v, s, n, views, 42);
            line += &format!(" | S={s} N={n}: {:.3} / {:.3}", f.join, f.leave);
            if bound {
                line += &format!(
                    " (others {:.3} / {:.3}, bound {:.3} / {:.3})",
                    f.join_others, f.leave_others, f.join_bound, f.leave_bound
                );
            }
        }
        println!("{line}");
    }
}
