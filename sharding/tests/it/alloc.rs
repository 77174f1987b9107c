//! Allocation invariants (proptest over random views and churn), the
//! movement and balance targets of issue 4 (averaged over seeded random
//! views), and a golden allocation pinning the algorithm across releases.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sharding::{Allocation, ShardId, allocate};

fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

/// Checks every per-view invariant of `a` for `members`, `s` shards and
/// replication `r`; returns a description of the first violation.
fn check_invariants(
    a: &Allocation,
    members: &BTreeSet<String>,
    s: u32,
    r: u32,
) -> Result<(), String> {
    let n = members.len();
    if a.num_shards().get() != s || a.replication().get() != r {
        return Err("shape".into());
    }
    if n == 0 {
        for sh in a.shards() {
            if a.owner(sh).is_some() || !a.holders(sh).is_empty() {
                return Err(format!("shard {sh} has holders with no members"));
            }
        }
        return Ok(());
    }
    let per = n.min(r as usize);
    if a.holders_per_shard() != per {
        return Err(format!(
            "holders_per_shard {} != {per}",
            a.holders_per_shard()
        ));
    }
    let owner_cap = (s as usize).div_ceil(n);
    let replica_cap = (s as usize * (per - 1)).div_ceil(n);
    let mut owned = 0;
    for (name, load) in a.loads() {
        if load.owned > owner_cap {
            return Err(format!(
                "{name} owns {} > ceil(S/N) = {owner_cap}",
                load.owned
            ));
        }
        if per == n {
            // Every member holds every shard: the replicas are forced.
            if load.replicas != s as usize - load.owned {
                return Err(format!("{name}: {} replicas with R >= N", load.replicas));
            }
        } else if load.replicas > replica_cap {
            return Err(format!(
                "{name} holds {} replicas > {replica_cap}",
                load.replicas
            ));
        }
        if a.shards_owned_by(name).len() != load.owned
            || a.shards_held_by(name).len() != load.owned + load.replicas
        {
            return Err(format!("{name}: per-member lists disagree with loads"));
        }
        owned += load.owned;
    }
    if owned != s as usize {
        return Err(format!("{owned} owned shards != {s}"));
    }
    for sh in a.shards() {
        let holders = a.holders(sh);
        let distinct: BTreeSet<&String> = holders.iter().collect();
        if holders.len() != per || distinct.len() != per {
            return Err(format!(
                "shard {sh}: holders {holders:?}, want {per} distinct"
            ));
        }
        if holders.iter().any(|h| !members.contains(h)) {
            return Err(format!("shard {sh}: a holder is not a member"));
        }
        if a.owner(sh) != Some(holders[0].as_str()) || a.replicas(sh) != &holders[1..] {
            return Err(format!("shard {sh}: owner/replicas disagree with holders"));
        }
    }
    if a.owner(ShardId(s)).is_some() || !a.holders(ShardId(s)).is_empty() {
        return Err("an out-of-range shard has holders".into());
    }
    Ok(())
}

/// Member names: short, any Unicode, including ones sharing prefixes.
fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop_oneof!["node-[0-9]{1,3}", "\\PC{0,10}"], 0..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_view_satisfies_the_invariants(names in names(), s in 1u32..300, r in 1u32..5) {
        let members: BTreeSet<String> = names.iter().cloned().collect();
        let a = allocate(&members, nz(s), nz(r));
        if let Err(e) = check_invariants(&a, &members, s, r) {
            return Err(TestCaseError::fail(e));
        }
    }

    #[test]
    fn member_order_never_matters(names in names(), s in 1u32..300, r in 1u32..4, seed in any::<u64>()) {
        let forward: BTreeSet<String> = names.iter().cloned().collect();
        let mut shuffled = names.clone();
        shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut other = BTreeSet::new();
        for n in shuffled.iter().rev() {
            other.insert(n.clone());
        }
        prop_assert_eq!(allocate(&forward, nz(s), nz(r)), allocate(&other, nz(s), nz(r)));
    }

    /// Random joins and leaves: every view is valid, a leave moves at least
    /// the leaver's shards, a join gives the joiner only moved shards, and
    /// the same set always gives the same allocation.
    #[test]
    fn churn_keeps_the_invariants(
        start in prop::collection::btree_set("node-[0-9]{1,2}", 0..12),
        ops in prop::collection::vec((any::<bool>(), "node-[0-9]{1,2}"), 1..12),
        s in 1u32..200,
        r in 1u32..4,
    ) {
        let mut members = start;
        let mut prev = allocate(&members, nz(s), nz(r));
        for (join, name) in ops {
            let before = members.clone();
            if join { members.insert(name.clone()); } else { members.remove(&name); }
            let next = allocate(&members, nz(s), nz(r));
            if let Err(e) = check_invariants(&next, &members, s, r) {
                return Err(TestCaseError::fail(format!("after {} {name}: {e}", if join { "join" } else { "leave" })));
            }
            prop_assert_eq!(&next, &allocate(&members, nz(s), nz(r)));
            let moves = prev.moves_to(&next);
            if members == before {
                prop_assert_eq!(moves.owners, 0);
                prop_assert_eq!(moves.holders, 0);
            } else if join {
                prop_assert!(moves.owners >= next.shards_owned_by(&name).len());
            } else {
                prop_assert!(moves.owners >= prev.shards_owned_by(&name).len());
                // Each shard the leaver held needs a new holder unless the
                // shards now have fewer holders (N dropped below R).
                let lost = if next.holders_per_shard() == prev.holders_per_shard() {
                    prev.shards_held_by(&name).len()
                } else {
                    0
                };
                prop_assert!(moves.holders >= lost);
            }
            let changed = prev.owner_changes(&next).count();
            prop_assert_eq!(changed, moves.owners);
            prev = next;
        }
    }
}

#[test]
fn empty_set_leaves_every_shard_unowned() {
    let a = allocate(&BTreeSet::new(), nz(50), nz(2));
    assert_eq!(a.holders_per_shard(), 0);
    assert!(
        a.shards()
            .all(|sh| a.owner(sh).is_none() && a.holders(sh).is_empty())
    );
    assert!(a.shards_owned_by("node-1").is_empty());
    assert!(a.loads().is_empty());
}

#[test]
fn fewer_members_than_replication_gives_every_member_every_shard() {
    let members: BTreeSet<String> = ["b", "a"].iter().map(|s| s.to_string()).collect();
    let a = allocate(&members, nz(10), nz(3));
    assert_eq!(a.holders_per_shard(), 2);
    assert_eq!(a.shards_held_by("a").len(), 10);
    assert_eq!(a.shards_held_by("b").len(), 10);
}

/// Views where the replica capacity has no slack (`S * (R - 1)` a multiple
/// of `N`), which the proposal rounds alone can leave short: the augmenting
/// paths must still place every replica within the capacity.
#[test]
fn replicas_fit_their_capacity_without_slack() {
    for (s, n, r) in [
        (12, 3, 2),
        (42, 14, 4),
        (10, 5, 2),
        (64, 16, 2),
        (1024, 16, 2),
        (30, 6, 3),
    ] {
        for salt in 0..20 {
            let members: BTreeSet<String> = (0..n).map(|i| format!("m{salt}-{i}")).collect();
            let a = allocate(&members, nz(s), nz(r));
            if let Err(e) = check_invariants(&a, &members, s, r) {
                panic!("S={s} N={n} R={r} salt {salt}: {e}");
            }
        }
    }
}

/// The allocation of a small view, pinned: every node of a cluster must
/// compute the same owners, so any change to the algorithm or its hash is a
/// protocol change and must show up here.
#[test]
fn golden_allocation() {
    let members: BTreeSet<String> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let a = allocate(&members, nz(12), nz(2));
    let got: Vec<(String, String)> = a
        .shards()
        .map(|sh| (a.holders(sh)[0].clone(), a.holders(sh)[1].clone()))
        .collect();
    let got: Vec<(&str, &str)> = got.iter().map(|(o, r)| (&o[5..], &r[5..])).collect();
    assert_eq!(got, GOLDEN_12);
}

const GOLDEN_12: [(&str, &str); 12] = [
    ("1", "3"),
    ("1", "3"),
    ("2", "1"),
    ("3", "1"),
    ("3", "1"),
    ("3", "2"),
    ("3", "2"),
    ("2", "1"),
    ("1", "2"),
    ("2", "3"),
    ("1", "2"),
    ("2", "3"),
];

/// Mean owner moves per single join and per single leave, each as a ratio to
/// the ideal (the joiner's fair share `S/(N+1)`, the leaver's `S/N`), and the
/// fraction of a leaver's shards whose new owner held their replica.
struct Churn {
    join: f64,
    leave: f64,
    successor: f64,
}

fn random_name(rng: &mut ChaCha8Rng) -> String {
    format!("node-{:08x}", rng.r#gen::<u32>())
}

fn measure_churn(seed: u64, s: u32, n: usize, views: usize) -> Churn {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut join, mut leave, mut succ, mut succ_of) = (0.0, 0.0, 0usize, 0usize);
    for _ in 0..views {
        let mut view = BTreeSet::new();
        while view.len() < n {
            view.insert(random_name(&mut rng));
        }
        let base = allocate(&view, nz(s), nz(2));

        let mut joined = view.clone();
        while joined.len() == n {
            joined.insert(random_name(&mut rng));
        }
        let moves = base.moves_to(&allocate(&joined, nz(s), nz(2)));
        join += moves.owners as f64 / (f64::from(s) / (n + 1) as f64);

        let leaver = view.iter().nth(rng.gen_range(0..n)).unwrap().clone();
        let mut left = view.clone();
        left.remove(&leaver);
        let after = allocate(&left, nz(s), nz(2));
        leave += base.moves_to(&after).owners as f64 / (f64::from(s) / n as f64);
        for sh in base.shards_owned_by(&leaver) {
            succ_of += 1;
            if after
                .owner(sh)
                .is_some_and(|o| base.replicas(sh).iter().any(|r| r == o))
            {
                succ += 1;
            }
        }
    }
    Churn {
        join: join / views as f64,
        leave: leave / views as f64,
        successor: succ as f64 / succ_of.max(1) as f64,
    }
}

/// The seed for the averaged movement test: `ALLOC_SEED` to replay, else a
/// fixed default (the bounds have margin over the statistical noise).
fn churn_seed() -> u64 {
    std::env::var("ALLOC_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_a110c)
}

/// Issue 4's movement target where there are at least 10 shards per member
/// and fewer than 20 members: a single join or leave moves, on average,
/// at most 1.25x the ideal. Also the replica successor fraction.
#[test]
fn movement_is_within_1_25x_of_ideal_at_ten_shards_per_member() {
    let seed = churn_seed();
    for (s, n, views) in [
        (50, 3, 1500),
        (50, 5, 1500),
        (256, 3, 300),
        (256, 5, 300),
        (1024, 3, 60),
        (1024, 5, 60),
    ] {
        let c = measure_churn(seed, s, n, views);
        println!(
            "S={s} N={n}: join {:.3} leave {:.3} successor {:.3}",
            c.join, c.leave, c.successor
        );
        assert!(
            c.join <= 1.25 && c.leave <= 1.25,
            "S={s} N={n}: join {:.3} leave {:.3} over 1.25x (replay with ALLOC_SEED={seed})",
            c.join,
            c.leave
        );
        assert!(
            c.successor >= 0.8,
            "S={s} N={n}: successor {:.3} (ALLOC_SEED={seed})",
            c.successor
        );
    }
}

/// Twenty members: the reference (a stateless balanced allocation)
/// moves 1.7x the ideal at 50 shards; these bounds pin what this algorithm
/// measures (see README "Allocation figures") with margin, so a regression
/// shows. At 256 and 1024 shards the 1.25x is not met: see README.
#[test]
fn movement_with_twenty_members_beats_the_reference() {
    let seed = churn_seed();
    for (s, views, bound) in [(50, 600, 1.45), (256, 150, 1.75), (1024, 40, 1.5)] {
        let c = measure_churn(seed, s, 20, views);
        println!(
            "S={s} N=20: join {:.3} leave {:.3} successor {:.3}",
            c.join, c.leave, c.successor
        );
        assert!(
            c.join <= bound && c.leave <= bound,
            "S={s} N=20: join {:.3} leave {:.3} over {bound} (replay with ALLOC_SEED={seed})",
            c.join,
            c.leave
        );
        assert!(
            c.successor >= 0.55,
            "S={s} N=20: successor {:.3} (ALLOC_SEED={seed})",
            c.successor
        );
    }
}
