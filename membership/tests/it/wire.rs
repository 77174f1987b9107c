//! The wire format: golden bytes pin every variant's encoding, every
//! message round-trips, and decoding arbitrary bytes never panics.

use membership::{Member, MemberId, MemberState, Message, RefuseReason, Update};
use proptest::prelude::*;

fn id(name: &str) -> MemberId {
    MemberId::new(name, "h:1", 2)
}

fn sample_update() -> Update {
    Update {
        member: Member {
            id: id("b"),
            incarnation: 3,
            state: MemberState::Suspect,
            metadata: vec![0xab],
        },
        accuser: Some("c".into()),
    }
}

/// One sample of every variant, in declaration order.
fn samples() -> Vec<Message> {
    vec![
        Message::Ping {
            from: id("a"),
            seq: 1,
            updates: vec![sample_update()],
        },
        Message::Ack {
            from: id("a"),
            seq: 1,
            updates: Vec::new(),
        },
        Message::PingReq {
            from: id("a"),
            seq: 2,
            target: id("b"),
            updates: Vec::new(),
        },
        Message::Nack {
            from: id("a"),
            seq: 2,
        },
        Message::Gossip {
            from: id("a"),
            updates: vec![sample_update()],
        },
        Message::SyncRequest {
            from: id("a"),
            to: "s:1".into(),
            digest: 5,
        },
        Message::SyncBuckets {
            from: id("a"),
            buckets: vec![1, 2],
        },
        Message::Sync {
            from: id("a"),
            buckets: vec![3],
            state: vec![sample_update()],
            reply: true,
        },
        Message::Join {
            from: id("a"),
            seed: "s:1".into(),
            incarnation: 0,
            metadata: vec![1],
        },
        Message::JoinAck {
            from: id("a"),
            state: Vec::new(),
        },
        Message::JoinRefused {
            from: id("a"),
            reason: RefuseReason::DuplicateName { existing: id("b") },
        },
        Message::JoinRefused {
            from: id("a"),
            reason: RefuseReason::StaleGeneration { current: 9 },
        },
        Message::JoinRefused {
            from: id("a"),
            reason: RefuseReason::ClusterFull { max_members: 3 },
        },
    ]
}

/// The encodings of `samples()`, hex. Never edit a line: add new ones.
const GOLDEN: &[&str] = &[
    "00016103683a31020101016203683a3102030101ab010163",
    "01016103683a31020100",
    "02016103683a310202016203683a310200",
    "03016103683a310202",
    "04016103683a310201016203683a3102030101ab010163",
    "05016103683a310203733a3105",
    "06016103683a3102020102",
    "07016103683a3102010301016203683a3102030101ab01016301",
    "08016103683a310203733a31000101",
    "09016103683a310200",
    "0a016103683a310200016203683a3102",
    "0a016103683a31020109",
    "0a016103683a31020203",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn golden_bytes_pin_every_variant() {
    let got: Vec<String> = samples()
        .iter()
        .map(|m| hex(&m.encode().expect("encodes")))
        .collect();
    assert_eq!(
        got, GOLDEN,
        "the wire format changed: variants are append-only"
    );
}

#[test]
fn encoded_len_is_exact() {
    for m in samples() {
        assert_eq!(m.encoded_len(), m.encode().expect("encodes").len());
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut bytes = samples()[3].encode().expect("encodes");
    bytes.push(0);
    assert!(Message::decode(&bytes).is_err());
}

fn member_id() -> impl Strategy<Value = MemberId> {
    ("[a-z0-9-]{1,16}", "[a-z0-9.:]{0,24}", any::<u64>())
        .prop_map(|(n, a, g)| MemberId::new(n, a, g))
}

fn update() -> impl Strategy<Value = Update> {
    (
        member_id(),
        any::<u64>(),
        prop_oneof![
            Just(MemberState::Alive),
            Just(MemberState::Suspect),
            Just(MemberState::Dead),
            Just(MemberState::Left)
        ],
        prop::collection::vec(any::<u8>(), 0..8),
        prop::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(id, incarnation, state, metadata, accuser)| Update {
            member: Member {
                id,
                incarnation,
                state,
                metadata,
            },
            accuser,
        })
}

fn message() -> impl Strategy<Value = Message> {
    let ups = || prop::collection::vec(update(), 0..4);
    prop_oneof![
        (member_id(), any::<u64>(), ups()).prop_map(|(from, seq, updates)| Message::Ping {
            from,
            seq,
            updates
        }),
        (member_id(), any::<u64>(), ups()).prop_map(|(from, seq, updates)| Message::Ack {
            from,
            seq,
            updates
        }),
        (member_id(), any::<u64>(), member_id(), ups()).prop_map(|(from, seq, target, updates)| {
            Message::PingReq {
                from,
                seq,
                target,
                updates,
            }
        }),
        (member_id(), any::<u64>()).prop_map(|(from, seq)| Message::Nack { from, seq }),
        (member_id(), ups()).prop_map(|(from, updates)| Message::Gossip { from, updates }),
        (member_id(), "[a-z:0-9]{0,10}", any::<u64>())
            .prop_map(|(from, to, digest)| Message::SyncRequest { from, to, digest }),
        (member_id(), prop::collection::vec(any::<u64>(), 0..8))
            .prop_map(|(from, buckets)| Message::SyncBuckets { from, buckets }),
        (
            member_id(),
            prop::collection::vec(any::<u64>(), 0..8),
            ups(),
            any::<bool>()
        )
            .prop_map(|(from, buckets, state, reply)| Message::Sync {
                from,
                buckets,
                state,
                reply
            }),
        (
            member_id(),
            "[a-z:0-9]{0,10}",
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(from, seed, incarnation, metadata)| Message::Join {
                from,
                seed,
                incarnation,
                metadata
            }),
        (member_id(), ups()).prop_map(|(from, state)| Message::JoinAck { from, state }),
        (member_id(), member_id()).prop_map(|(from, existing)| Message::JoinRefused {
            from,
            reason: RefuseReason::DuplicateName { existing }
        }),
        (member_id(), any::<u64>()).prop_map(|(from, current)| Message::JoinRefused {
            from,
            reason: RefuseReason::StaleGeneration { current }
        }),
        (member_id(), any::<u64>()).prop_map(|(from, max_members)| Message::JoinRefused {
            from,
            reason: RefuseReason::ClusterFull { max_members }
        }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = m.encode().expect("encodes");
        prop_assert_eq!(bytes.len(), m.encoded_len());
        prop_assert_eq!(Message::decode(&bytes).expect("decodes"), m);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn decoding_mutated_messages_never_panics(m in message(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = m.encode().expect("encodes");
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(decoded) = Message::decode(&bytes) {
            let _ = decoded.validate(&membership::swim::WireLimits {
                max_metadata_bytes: 512,
                max_updates: 16,
                max_state_entries: 1000,
            });
        }
    }
}

/// A name or address learnt by gossip that would forge or colour log
/// lines (a newline, an ANSI escape) is refused like one too long: the
/// message is dropped. The transport refuses the same in a handshake.
#[test]
fn a_member_name_or_address_with_control_characters_is_refused() {
    use membership::InvalidMessage;
    let limits = membership::swim::WireLimits {
        max_metadata_bytes: 512,
        max_updates: 16,
        max_state_entries: 1000,
    };
    let gossip = |u: Update| Message::Gossip {
        from: id("a"),
        updates: vec![u],
    };
    assert_eq!(gossip(sample_update()).validate(&limits), Ok(()));
    let mut u = sample_update();
    u.member.id.name = "ev\nFORGED ERROR".into();
    assert_eq!(
        gossip(u).validate(&limits),
        Err(InvalidMessage::NameChar {
            name: "ev\nFORGED ERROR".into(),
            c: '\n'
        })
    );
    let mut u = sample_update();
    u.member.id.addr = "h:1\u{1b}[31m".into();
    let e = gossip(u).validate(&limits).unwrap_err();
    assert_eq!(
        e,
        InvalidMessage::AddrChar {
            addr: "h:1\u{1b}[31m".into(),
            c: '\u{1b}'
        }
    );
    // Shown escaped.
    assert!(e.to_string().contains(r#""h:1\u{1b}[31m""#), "{e}");
    let mut u = sample_update();
    u.accuser = Some("c d".into());
    assert!(matches!(
        gossip(u).validate(&limits),
        Err(InvalidMessage::NameChar { c: ' ', .. })
    ));
    let sync = Message::SyncRequest {
        from: id("a"),
        to: "s:1\r".into(),
        digest: 5,
    };
    assert!(matches!(
        sync.validate(&limits),
        Err(InvalidMessage::AddrChar { c: '\r', .. })
    ));
}

/// A name or address that renders blank (the braille blank U+2800), holds
/// a noncharacter (U+FFFF) or starts with a combining mark (U+0301, which
/// would join the character before it in a log line) is refused, as the
/// transport's handshake refuses it; a mark after a base character is
/// part of the name.
#[test]
fn a_member_name_or_address_that_renders_blank_or_joins_is_refused() {
    use membership::InvalidMessage;
    let limits = membership::swim::WireLimits {
        max_metadata_bytes: 512,
        max_updates: 16,
        max_state_entries: 1000,
    };
    let with_name = |name: &str| {
        let mut u = sample_update();
        u.member.id.name = name.into();
        Message::Gossip {
            from: id("a"),
            updates: vec![u],
        }
        .validate(&limits)
    };
    let with_addr = |addr: &str| {
        let mut u = sample_update();
        u.member.id.addr = addr.into();
        Message::Gossip {
            from: id("a"),
            updates: vec![u],
        }
        .validate(&limits)
    };
    for (bad, c) in [
        ("\u{2800}", '\u{2800}'),
        ("n\u{2800}1", '\u{2800}'),
        ("n\u{ffff}", '\u{ffff}'),
        ("n\u{fdd0}", '\u{fdd0}'),
        ("n\u{10fffe}", '\u{10fffe}'),
    ] {
        let e = with_name(bad).unwrap_err();
        assert_eq!(
            e,
            InvalidMessage::NameChar {
                name: bad.into(),
                c
            }
        );
        assert!(e.to_string().is_ascii(), "shown escaped: {e}");
        assert!(matches!(
            with_addr(bad),
            Err(InvalidMessage::AddrChar { c: got, .. }) if got == c
        ));
    }
    let e = with_name("\u{301}a").unwrap_err();
    assert_eq!(
        e,
        InvalidMessage::NameLeadingMark {
            name: "\u{301}a".into(),
            c: '\u{301}'
        }
    );
    assert!(e.to_string().contains(r#""\u{301}a""#), "{e}");
    assert!(matches!(
        with_addr("\u{20d0}h:1"),
        Err(InvalidMessage::AddrLeadingMark { c: '\u{20d0}', .. })
    ));
    assert_eq!(with_name("e\u{301}"), Ok(()));
}
