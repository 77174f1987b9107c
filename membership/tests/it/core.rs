//! Behaviour of one core (and small clusters): joining, identity rules,
//! refutation, metadata, leaving, input validation.

use std::time::{Duration, Instant};

use membership::sim::{NetConfig, Sim};
use membership::{
    ConfigError, Event, Member, MemberId, MemberState, MembershipConfig, Message, MetadataError,
    RefuseReason, Status, Swim, Transmit, Update,
};

use crate::harness::{formed, seed};

fn core(name: &str, addr: &str, generation: u64) -> Swim {
    Swim::new(
        MemberId::new(name, addr, generation),
        Vec::new(),
        MembershipConfig::default(),
        7,
    )
    .expect("valid config")
}

fn transmits(c: &mut Swim) -> Vec<Transmit> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn events(c: &mut Swim) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn alive(id: &MemberId, incarnation: u64) -> Update {
    Update {
        member: Member {
            id: id.clone(),
            incarnation,
            state: MemberState::Alive,
            metadata: Vec::new(),
        },
        accuser: None,
    }
}

fn with_state(u: Update, state: MemberState, accuser: Option<&str>) -> Update {
    Update {
        member: Member { state, ..u.member },
        accuser: accuser.map(str::to_owned),
    }
}

/// A core that formed its own cluster.
fn formed_core(name: &str, addr: &str) -> (Swim, Instant) {
    let now = Instant::now();
    let mut c = core(name, addr, 1);
    c.join(now, vec![addr.to_owned()]);
    assert_eq!(events(&mut c), vec![Event::Joined]);
    transmits(&mut c);
    (c, now)
}

#[test]
fn a_seed_list_naming_only_ourselves_forms_a_cluster_at_once() {
    let now = Instant::now();
    let mut c = core("n1", "127.0.0.1:1", 1);
    c.join(now, vec!["127.0.0.1:1".into()]);
    assert_eq!(c.status(), Status::Joined);
    assert_eq!(events(&mut c), vec![Event::Joined]);
    assert!(
        transmits(&mut c)
            .iter()
            .all(|t| !matches!(t.msg, Message::Join { .. })),
        "no join request to ourselves"
    );
}

#[test]
fn our_own_join_coming_back_means_that_seed_is_ourselves() {
    let now = Instant::now();
    let mut c = core("node-1", "10.0.0.2:25520", 1);
    c.join(now, vec!["node-1:25520".into()]);
    assert_eq!(c.status(), Status::Joining);
    let sent = transmits(&mut c);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to_addr, "node-1:25520");
    // The driver resolved `node-1` to our own address: the request arrives here.
    c.handle_message(now, "10.0.0.2:25520", sent[0].msg.clone());
    assert_eq!(c.status(), Status::Joined);
    assert_eq!(events(&mut c), vec![Event::Joined]);
}

#[test]
fn join_retries_with_backoff_and_fails_at_the_deadline() {
    let start = Instant::now();
    let mut c = core("n2", "127.0.0.1:2", 1);
    c.join(start, vec!["127.0.0.1:1".into()]);
    assert_eq!(transmits(&mut c).len(), 1, "the first attempt goes at once");
    let mut attempts = Vec::new();
    let mut now = start;
    while let Some(t) = c.poll_timeout() {
        now = t.max(now);
        c.handle_timeout(now);
        for tx in transmits(&mut c) {
            if matches!(tx.msg, Message::Join { .. }) {
                attempts.push(now - start);
            }
        }
        if c.status() != Status::Joining {
            break;
        }
    }
    let deadline = MembershipConfig::default().join_deadline();
    assert_eq!(c.status(), Status::Failed);
    assert_eq!(now - start, deadline);
    assert_eq!(
        events(&mut c),
        vec![Event::JoinFailed {
            seeds: vec!["127.0.0.1:1".into()],
            invalid: None,
        }]
    );
    assert_eq!(c.poll_timeout(), None, "a failed core has no timers");
    // 200 ms, doubling, capped at 1 s: 0.2, 0.6, 1.4, 2.4, 3.4, ...
    let gaps: Vec<u128> = attempts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(&gaps[..5], &[400, 800, 1000, 1000, 1000]);
    assert_eq!(attempts[0], Duration::from_millis(200));
}

/// A seed's answer this node drops as invalid (here a `join-ack` holding
/// a member's metadata over this node's `max_metadata_bytes`) does not
/// join it; when the deadline passes, the failure says what was dropped,
/// so "no answer" is not all the user reads.
#[test]
fn a_join_failure_names_the_last_answer_dropped_as_invalid() {
    let start = Instant::now();
    let config = MembershipConfig {
        max_metadata_bytes: 19,
        ..MembershipConfig::default()
    };
    let mut c = Swim::new(MemberId::new("n2", "127.0.0.1:2", 1), Vec::new(), config, 7)
        .expect("valid config");
    c.join(start, vec!["127.0.0.1:1".into()]);
    transmits(&mut c);
    let seed = MemberId::new("n1", "127.0.0.1:1", 1);
    let mut worker = alive(&MemberId::new("w", "127.0.0.1:3", 1), 1);
    worker.member.metadata = vec![b'x'; 48];
    c.handle_message(
        start,
        "127.0.0.1:1",
        Message::JoinAck {
            from: seed.clone(),
            state: vec![alive(&seed, 1), worker],
        },
    );
    assert_eq!(
        c.status(),
        Status::Joining,
        "an invalid answer does not join"
    );
    c.handle_timeout(start + MembershipConfig::default().join_deadline());
    assert_eq!(c.status(), Status::Failed);
    match events(&mut c).as_slice() {
        [Event::JoinFailed { seeds, invalid }] => {
            assert_eq!(seeds, &["127.0.0.1:1".to_owned()]);
            let invalid = invalid.as_deref().expect("the dropped answer is named");
            assert!(
                invalid.starts_with("127.0.0.1:1: join-ack: metadata of 48 bytes")
                    && invalid.contains("max_metadata_bytes"),
                "{invalid}"
            );
        }
        other => panic!("expected one JoinFailed, got {other:?}"),
    }
}

/// A driver that learnt no seed can let this node in (each refused our
/// handshake for another cluster name) gives the join up at once: the
/// same failure as at the deadline, without waiting for it.
#[test]
fn a_join_given_up_fails_at_once_and_keeps_no_timers() {
    let start = Instant::now();
    let mut c = core("n2", "127.0.0.1:2", 1);
    c.join(start, vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
    assert_eq!(
        c.join_seeds(),
        ["127.0.0.1:1".to_owned()],
        "our own address is not a seed to try"
    );
    transmits(&mut c);
    c.give_up_join();
    assert_eq!(c.status(), Status::Failed);
    assert!(c.join_seeds().is_empty());
    assert_eq!(
        events(&mut c),
        vec![Event::JoinFailed {
            seeds: vec!["127.0.0.1:1".into()],
            invalid: None,
        }]
    );
    assert_eq!(c.poll_timeout(), None, "a failed core has no timers");
    // Not joining: nothing to give up.
    c.give_up_join();
    assert!(events(&mut c).is_empty());
    let mut alone = core("n3", "127.0.0.1:3", 1);
    alone.join(start, Vec::new());
    events(&mut alone);
    alone.give_up_join();
    assert_eq!(alone.status(), Status::Joined);
    assert!(events(&mut alone).is_empty());
}

#[test]
fn a_second_process_with_a_taken_name_is_refused() {
    let guard = seed("a_second_process_with_a_taken_name_is_refused", 11);
    let mut sim = formed(guard.seed, 3, NetConfig::default());
    let original = sim.node(1).id();
    let dup = sim.add_named_node("node-1", "10.9.9.9:7946", vec![Sim::default_addr(0)]);
    sim.run_for(Duration::from_secs(3));
    let refused: Vec<&Event> = sim
        .node(dup)
        .events
        .iter()
        .map(|(_, _, e)| e)
        .filter(|e| matches!(e, Event::JoinRefused { .. }))
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", sim.node(dup).events);
    match refused[0] {
        Event::JoinRefused {
            reason: RefuseReason::DuplicateName { existing },
            ..
        } => assert_eq!(existing, &original),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(sim.node(dup).core().map(Swim::status), Some(Status::Failed));
    for i in [0, 2] {
        let c = sim.node(i).core().unwrap();
        let m = c.member("node-1").unwrap();
        assert_eq!(m.id, original);
        assert_eq!(m.state, MemberState::Alive);
    }
    assert!(sim.downs().is_empty(), "nobody was disturbed");
}

#[test]
fn a_restart_at_a_new_address_replaces_the_silent_old_life_at_once() {
    let guard = seed(
        "a_restart_at_a_new_address_replaces_the_silent_old_life_at_once",
        12,
    );
    let mut sim = formed(guard.seed, 4, NetConfig::default());
    let old = sim.node(2).id();
    sim.restart(2, Some("10.8.8.8:7946".into()));
    let new = sim.node(2).id();
    assert!(new.generation > old.generation);
    let all = [0, 1, 2, 3];
    let t0 = sim.elapsed();
    let t = sim
        .run_until_cond(Duration::from_secs(10), Duration::from_millis(10), |s| {
            s.converged(&all)
        })
        .expect("the new life is adopted");
    // Well before the old life could be suspected and declared dead.
    assert!(t - t0 < Duration::from_millis(1500), "took {:?}", t - t0);
    for i in [0, 1, 3] {
        let evs: Vec<&Event> = sim.node(i).events.iter().map(|(_, _, e)| e).collect();
        assert!(
            evs.iter()
                .any(|e| matches!(e, Event::MemberDown(m) if m.id == old)),
            "node {i}: {evs:?}"
        );
        assert!(
            evs.iter()
                .any(|e| matches!(e, Event::MemberUp(m) if m.id == new))
        );
    }
}

#[test]
fn a_join_from_an_older_generation_is_refused() {
    let (mut c, now) = formed_core("a", "h:1");
    let b5 = MemberId::new("b", "h:2", 5);
    c.handle_message(
        now,
        "h:2",
        Message::Join {
            from: b5.clone(),
            seed: "h:1".into(),
            incarnation: 0,
            metadata: Vec::new(),
        },
    );
    assert!(
        transmits(&mut c)
            .iter()
            .any(|t| matches!(t.msg, Message::JoinAck { .. }))
    );
    c.handle_message(
        now,
        "h:3",
        Message::Join {
            from: MemberId::new("b", "h:3", 3),
            seed: "h:1".into(),
            incarnation: 0,
            metadata: Vec::new(),
        },
    );
    let sent = transmits(&mut c);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to_addr, "h:3");
    assert!(matches!(
        &sent[0].msg,
        Message::JoinRefused {
            reason: RefuseReason::StaleGeneration { current: 5 },
            ..
        }
    ));
    assert_eq!(c.member("b").unwrap().id, b5);
}

#[test]
fn a_declared_death_is_refuted_and_reported_as_lost_shards() {
    let (mut c, now) = formed_core("a", "h:1");
    let me = c.local().id.clone();
    let b = MemberId::new("b", "h:2", 1);
    let dead = with_state(alive(&me, 0), MemberState::Dead, Some("b"));
    c.handle_message(
        now,
        "h:2",
        Message::Gossip {
            from: b.clone(),
            updates: vec![alive(&b, 0), dead],
        },
    );
    let evs = events(&mut c);
    assert!(evs.contains(&Event::RejoinedAfterDeath {
        declared_by: Some("b".into()),
        incarnation: 1,
    }));
    assert_eq!(c.local().incarnation, 1);
    assert_eq!(c.local().state, MemberState::Alive);
    assert_eq!(c.status(), Status::Joined);
    // The refutation goes out with the next message.
    c.handle_message(
        now,
        "h:2",
        Message::Ping {
            from: b,
            seq: 9,
            updates: Vec::new(),
        },
    );
    let sent = transmits(&mut c);
    let Message::Ack { updates, .. } = &sent[0].msg else {
        panic!("expected an ack, got {sent:?}");
    };
    assert!(updates.iter().any(|u| u.member.id == me
        && u.member.incarnation == 1
        && u.member.state == MemberState::Alive));
}

#[test]
fn a_death_reached_on_an_incarnation_we_already_raised_still_counts() {
    // The stall sequence of RELIABILITY.md finding 1: after a stall we read
    // an old suspicion first (and refute it), then the death verdict the
    // others reached on that same, now outdated, incarnation.
    let (mut c, now) = formed_core("a", "h:1");
    let me = c.local().id.clone();
    let b = MemberId::new("b", "h:2", 1);
    // b accuses us of `state` at `incarnation`; returns the deaths we
    // reported (the incarnations of our RejoinedAfterDeath events).
    let mut accuse = |state, incarnation| -> Vec<u64> {
        c.handle_message(
            now,
            "h:2",
            Message::Gossip {
                from: b.clone(),
                updates: vec![with_state(alive(&me, incarnation), state, Some("b"))],
            },
        );
        events(&mut c)
            .into_iter()
            .filter_map(|e| match e {
                Event::RejoinedAfterDeath {
                    declared_by,
                    incarnation,
                } => {
                    assert_eq!(declared_by.as_deref(), Some("b"));
                    Some(incarnation)
                }
                _ => None,
            })
            .collect()
    };
    // The old suspicion is refuted (incarnation 1), no death.
    assert_eq!(accuse(MemberState::Suspect, 0), Vec::<u64>::new());
    // The verdict on incarnation 0 is a death, refuted at 2.
    assert_eq!(accuse(MemberState::Dead, 0), vec![2]);
    // The same verdict arriving again (a retransmission) is stale.
    assert_eq!(accuse(MemberState::Dead, 0), Vec::<u64>::new());
    // A later verdict, on the refuted incarnation, is a new death.
    assert_eq!(accuse(MemberState::Dead, 2), vec![3]);
    assert_eq!(c.local().incarnation, 3);
}

/// A member we held dead comes back on a higher incarnation: it is sent
/// our death verdict, so it learns that it lost its shards even if it never
/// heard the verdict while it was stalled.
#[test]
fn a_revived_member_is_told_it_was_declared_dead() {
    let (mut c, now) = formed_core("a", "h:1");
    let b = MemberId::new("b", "h:2", 1);
    let d = MemberId::new("d", "h:4", 1);
    // b and d join; d declares b dead at incarnation 0.
    c.handle_message(
        now,
        "h:4",
        Message::Gossip {
            from: d.clone(),
            updates: vec![alive(&d, 0), alive(&b, 0)],
        },
    );
    c.handle_message(
        now,
        "h:4",
        Message::Gossip {
            from: d.clone(),
            updates: vec![with_state(alive(&b, 0), MemberState::Dead, Some("d"))],
        },
    );
    assert_eq!(c.member("b").unwrap().state, MemberState::Dead);
    transmits(&mut c);
    // b speaks again on incarnation 1 (it refuted an older suspicion).
    c.handle_message(
        now,
        "h:2",
        Message::Gossip {
            from: b.clone(),
            updates: vec![alive(&b, 1)],
        },
    );
    assert_eq!(c.member("b").unwrap().state, MemberState::Alive);
    let told = transmits(&mut c).into_iter().any(|t| {
        t.to_addr == "h:2"
            && matches!(&t.msg, Message::Gossip { updates, .. } if updates.iter().any(|u| {
                u.member.id == b && u.member.state == MemberState::Dead && u.member.incarnation == 0
            }))
    });
    assert!(told, "b is sent the verdict it missed");
}

#[test]
fn a_suspicion_of_ourselves_is_refuted_without_losing_shards() {
    let (mut c, now) = formed_core("a", "h:1");
    let me = c.local().id.clone();
    let b = MemberId::new("b", "h:2", 1);
    c.handle_message(
        now,
        "h:2",
        Message::Gossip {
            from: b,
            updates: vec![with_state(alive(&me, 0), MemberState::Suspect, Some("b"))],
        },
    );
    assert_eq!(c.local().incarnation, 1);
    assert!(
        events(&mut c)
            .iter()
            .all(|e| !matches!(e, Event::RejoinedAfterDeath { .. }))
    );
    assert_eq!(
        c.local_health(),
        1,
        "being suspected counts against our own health"
    );
}

#[test]
fn a_newer_life_of_our_name_supersedes_us() {
    let (mut c, now) = formed_core("a", "h:1");
    let newer = MemberId::new("a", "h:9", 2);
    c.handle_message(
        now,
        "h:2",
        Message::Gossip {
            from: MemberId::new("b", "h:2", 1),
            updates: vec![alive(&newer, 0)],
        },
    );
    assert_eq!(events(&mut c), vec![Event::Superseded { by: newer }]);
    assert_eq!(c.status(), Status::Superseded);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn metadata_is_bounded_and_changes_are_disseminated() {
    let guard = seed("metadata_is_bounded_and_changes_are_disseminated", 13);
    let mut sim = formed(guard.seed, 5, NetConfig::default());
    let max = MembershipConfig::default().max_metadata_bytes;
    assert_eq!(
        sim.set_metadata(3, vec![0; max + 1]),
        Err(MetadataError::TooLarge { len: max + 1, max })
    );
    sim.set_metadata(3, b"zone=a".to_vec()).unwrap();
    sim.run_for(Duration::from_secs(2));
    for i in [0, 1, 2, 4] {
        let c = sim.node(i).core().unwrap();
        assert_eq!(c.member("node-3").unwrap().metadata, b"zone=a");
        assert!(
            sim.node(i)
                .events
                .iter()
                .any(|(_, _, e)| matches!(e, Event::MemberUpdated(m) if m.metadata == b"zone=a"))
        );
    }
    assert_eq!(
        Swim::new(
            MemberId::new("x", "h:1", 1),
            vec![0; max + 1],
            MembershipConfig::default(),
            1
        )
        .err(),
        Some(ConfigError::MetadataTooLarge { len: max + 1, max })
    );
}

#[test]
fn a_graceful_leave_is_seen_as_left_not_down() {
    let guard = seed("a_graceful_leave_is_seen_as_left_not_down", 14);
    let mut sim = formed(guard.seed, 5, NetConfig::default());
    sim.leave(2);
    sim.run_for(Duration::from_secs(3));
    let leaver: Vec<&Event> = sim.node(2).events.iter().map(|(_, _, e)| e).collect();
    assert_eq!(leaver.last(), Some(&&Event::Left));
    assert_eq!(sim.node(2).core().map(Swim::status), Some(Status::Left));
    for i in [0, 1, 3, 4] {
        assert_eq!(
            sim.node(i).core().unwrap().member("node-2").unwrap().state,
            MemberState::Left
        );
        assert!(
            sim.node(i)
                .events
                .iter()
                .any(|(_, _, e)| matches!(e, Event::MemberLeft(m) if m.id.name == "node-2"))
        );
    }
    assert!(sim.downs().is_empty());
}

#[test]
fn invalid_messages_are_dropped_and_counted() {
    let (mut c, now) = formed_core("a", "h:1");
    let long = MemberId::new("x".repeat(membership::swim::MAX_NAME_BYTES + 1), "h:2", 1);
    c.handle_message(
        now,
        "h:2",
        Message::Ping {
            from: long,
            seq: 1,
            updates: Vec::new(),
        },
    );
    let b = MemberId::new("b", "h:2", 1);
    let too_many = vec![alive(&b, 0); membership::swim::MAX_UPDATES_PER_MESSAGE + 1];
    c.handle_message(
        now,
        "h:2",
        Message::Gossip {
            from: b.clone(),
            updates: too_many,
        },
    );
    let mut big = alive(&b, 0);
    big.member.metadata = vec![0; 100_000];
    c.handle_message(
        now,
        "h:2",
        Message::Gossip {
            from: b,
            updates: vec![big],
        },
    );
    assert_eq!(c.stats().invalid_messages, 3);
    assert!(transmits(&mut c).is_empty());
    assert!(c.member("b").is_none());
}

#[test]
fn a_full_table_refuses_new_names() {
    let now = Instant::now();
    let config = MembershipConfig {
        max_members: 2,
        ..MembershipConfig::default()
    };
    let mut c = Swim::new(MemberId::new("a", "h:1", 1), Vec::new(), config, 1).unwrap();
    c.join(now, Vec::new());
    transmits(&mut c);
    for (name, addr) in [("b", "h:2"), ("c", "h:3"), ("d", "h:4")] {
        c.handle_message(
            now,
            addr,
            Message::Join {
                from: MemberId::new(name, addr, 1),
                seed: "h:1".into(),
                incarnation: 0,
                metadata: Vec::new(),
            },
        );
    }
    let sent = transmits(&mut c);
    let refused: Vec<&Transmit> = sent
        .iter()
        .filter(|t| matches!(t.msg, Message::JoinRefused { .. }))
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].to_addr, "h:4");
    assert!(matches!(
        refused[0].msg,
        Message::JoinRefused {
            reason: RefuseReason::ClusterFull { max_members: 2 },
            ..
        }
    ));
    assert!(c.member("d").is_none());
    assert_eq!(c.stats().members_dropped, 1);
}
