//! Scenario 7: merging is order-independent, and a delayed `alive` with a
//! lower incarnation never revives a dead member.

use std::time::Instant;

use membership::{Member, MemberId, MemberState, MembershipConfig, Message, Swim, Update};
use proptest::prelude::*;

fn receiver() -> (Swim, Instant) {
    let now = Instant::now();
    let mut c = Swim::new(
        MemberId::new("z", "h:0", 1),
        Vec::new(),
        MembershipConfig::default(),
        3,
    )
    .expect("valid config");
    c.join(now, Vec::new());
    (c, now)
}

fn apply_one_by_one(updates: &[Update]) -> Swim {
    let (mut c, now) = receiver();
    let sender = MemberId::new("s", "h:9", 1);
    for u in updates {
        c.handle_message(
            now,
            "h:9",
            Message::Gossip {
                from: sender.clone(),
                updates: vec![u.clone()],
            },
        );
    }
    c
}

fn state() -> impl Strategy<Value = MemberState> {
    prop_oneof![
        Just(MemberState::Alive),
        Just(MemberState::Suspect),
        Just(MemberState::Dead),
        Just(MemberState::Left),
    ]
}

fn update() -> impl Strategy<Value = Update> {
    (
        prop::sample::select(vec!["a", "b", "c"]),
        1u64..=2,
        0u64..=3,
        state(),
        prop::sample::select(vec![Vec::new(), b"m1".to_vec(), b"m2".to_vec()]),
        prop::option::of(prop::sample::select(vec!["x", "y"])),
        prop::sample::select(vec!["h:1", "h:2"]),
    )
        .prop_map(
            |(name, generation, incarnation, state, metadata, accuser, addr)| Update {
                member: Member {
                    id: MemberId::new(name, addr, generation),
                    incarnation,
                    state,
                    metadata,
                },
                accuser: accuser.map(str::to_owned),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Applying the same updates in any order gives the same view.
    #[test]
    fn update_order_does_not_matter(
        (updates, shuffled) in prop::collection::vec(update(), 1..24)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let a = apply_one_by_one(&updates).view();
        let b = apply_one_by_one(&shuffled).view();
        prop_assert_eq!(a, b);
    }

    /// Whatever else arrives, once a life is dead at incarnation `d`, an
    /// `alive` of that life with incarnation ≤ `d` arriving later leaves it
    /// dead.
    #[test]
    fn a_delayed_lower_alive_never_revives_the_dead(
        noise in prop::collection::vec(update(), 0..12),
        dead_inc in 0u64..=3,
        lower in 0u64..=3,
    ) {
        let lower = lower.min(dead_inc);
        let life = MemberId::new("d", "h:5", 7);
        let dead = Update {
            member: Member { id: life.clone(), incarnation: dead_inc, state: MemberState::Dead, metadata: Vec::new() },
            accuser: Some("x".into()),
        };
        let late = Update {
            member: Member { id: life, incarnation: lower, state: MemberState::Alive, metadata: Vec::new() },
            accuser: None,
        };
        let mut seq = noise;
        seq.push(dead);
        seq.push(late);
        let c = apply_one_by_one(&seq);
        let m = c.member("d").expect("known");
        prop_assert_eq!(m.state, MemberState::Dead);
        prop_assert_eq!(m.incarnation, dead_inc);
    }
}
