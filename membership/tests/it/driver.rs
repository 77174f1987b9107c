//! The tokio driver over the real transport on loopback.

use std::time::Duration;

use membership::{MemberState, MembershipConfig, MembershipHandle};
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

struct Node {
    transport: Transport,
    members: MembershipHandle,
    stop: CancellationToken,
}

/// A transport of cluster `cluster` listening on `127.0.0.1:port` (0: a
/// free port).
async fn bind(
    cluster: &str,
    name: &str,
    port: u16,
    generation: u64,
    stop: &CancellationToken,
) -> Transport {
    Transport::bind(
        LocalNode {
            cluster: cluster.into(),
            settings: String::new(),
            name: name.into(),
            generation,
            listen: format!("127.0.0.1:{port}"),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig::default(),
        stop.clone(),
    )
    .await
    .unwrap()
}

async fn node(name: &str, port: u16, seeds: Vec<String>, generation: u64) -> Node {
    let stop = CancellationToken::new();
    let transport = bind("driver-test", name, port, generation, &stop).await;
    let seeds = if seeds.is_empty() {
        vec![transport.identity().addr.clone()]
    } else {
        seeds
    };
    let members =
        membership::start(&transport, MembershipConfig::default(), seeds, stop.clone()).unwrap();
    Node {
        transport,
        members,
        stop,
    }
}

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_detect_a_crash_and_see_a_restart() {
    let a = node("a", 0, vec![], 1).await;
    let seed = a.transport.identity().addr.clone();
    let b = node("b", 0, vec![seed.clone()], 1).await;
    let c = node("c", 0, vec![seed.clone()], 1).await;
    for n in [&a, &b, &c] {
        n.members.wait_joined(T).await.unwrap();
        n.members.wait_for(3, T).await.unwrap();
    }
    // Crash c (no leave): the others mark it dead.
    let c_port = c.transport.local_addr().port();
    c.stop.cancel();
    c.transport.shutdown().await;
    for n in [&a, &b] {
        let mut view = n.members.watch_view();
        tokio::time::timeout(T, async {
            loop {
                if view
                    .borrow_and_update()
                    .get("c")
                    .is_some_and(|m| m.state == MemberState::Dead)
                {
                    break;
                }
                view.changed().await.unwrap();
            }
        })
        .await
        .unwrap();
    }
    // Restart c on the same port with a new generation: alive everywhere.
    let c2 = node("c", c_port, vec![seed], 2).await;
    c2.members.wait_joined(T).await.unwrap();
    for n in [&a, &b, &c2] {
        let mut view = n.members.watch_view();
        tokio::time::timeout(T, async {
            loop {
                if view
                    .borrow_and_update()
                    .get("c")
                    .is_some_and(|m| m.state == MemberState::Alive && m.id.generation == 2)
                {
                    break;
                }
                view.changed().await.unwrap();
            }
        })
        .await
        .unwrap();
    }
    // Graceful leave of b is seen as Left.
    b.members.leave(T).await.unwrap();
    let mut view = a.members.watch_view();
    tokio::time::timeout(T, async {
        loop {
            if view
                .borrow_and_update()
                .get("b")
                .is_some_and(|m| m.state == MemberState::Left)
            {
                break;
            }
            view.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    b.stop.cancel();
}

#[tokio::test]
async fn unreachable_seed_fails_the_join_with_a_clear_error() {
    let stop = CancellationToken::new();
    let transport = bind("driver-test", "lonely", 0, 1, &stop).await;
    // A port nobody listens on: bind one, note it, drop it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let config = MembershipConfig {
        join_deadline_ms: 1_000,
        ..MembershipConfig::default()
    };
    let handle = membership::start(&transport, config, vec![dead_addr], stop.clone()).unwrap();
    let err = handle.wait_joined(T).await.unwrap_err();
    assert!(
        matches!(err, membership::DriverError::JoinFailed { .. }),
        "{err:?}"
    );
    stop.cancel();
}

/// A seed of another cluster refuses our handshake for good: the join is
/// given up at its first refusal, long before the default 30 s deadline,
/// and the error says why.
#[tokio::test]
async fn a_seed_of_another_cluster_fails_the_join_at_once() {
    let stop = CancellationToken::new();
    let seed = bind("other-cluster", "seed", 0, 1, &stop).await;
    let joiner = bind("driver-test", "stranger", 0, 1, &stop).await;
    let seed_addr = seed.identity().addr.clone();
    let config = MembershipConfig::default();
    assert!(config.join_deadline() >= Duration::from_secs(30));
    let started = std::time::Instant::now();
    let handle = membership::start(&joiner, config, vec![seed_addr.clone()], stop.clone()).unwrap();
    let err = handle.wait_joined(T).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up at once, not at the deadline: {:?}",
        started.elapsed()
    );
    match &err {
        membership::DriverError::JoinFailed {
            seeds, for_good, ..
        } => {
            assert_eq!(seeds, &vec![seed_addr]);
            assert!(for_good);
        }
        e => panic!("unexpected {e:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("every seed refused this node for good") && text.contains("other-cluster"),
        "{text}"
    );
    stop.cancel();
}

/// A seed of another protocol version refuses our handshake for good, as
/// one of another cluster does: a newer seed with `Mismatch`, one before
/// version 3 with `Refused`. The join is given up at once and the error
/// gives the version, not "no answer within the join deadline".
#[tokio::test]
async fn a_seed_of_another_protocol_version_fails_the_join_at_once() {
    use transport::handshake::HelloReply;
    use transport::{HandshakeError, PROTOCOL_VERSION};

    let version = |ours: u16| {
        HandshakeError::Version {
            theirs: PROTOCOL_VERSION,
            ours,
        }
        .to_string()
    };
    for reply in [
        HelloReply::Mismatch {
            reason: version(PROTOCOL_VERSION + 1),
        },
        HelloReply::Refused {
            reason: version(PROTOCOL_VERSION - 1),
        },
    ] {
        let stop = CancellationToken::new();
        let seed_addr = transport::testing::answering(reply.clone()).await.unwrap();
        let joiner = bind("driver-test", "upgraded", 0, 1, &stop).await;
        let config = MembershipConfig::default();
        assert!(config.join_deadline() >= Duration::from_secs(30));
        let started = std::time::Instant::now();
        let handle =
            membership::start(&joiner, config, vec![seed_addr.clone()], stop.clone()).unwrap();
        let err = handle.wait_joined(T).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gave up at once, not at the deadline: {:?} ({reply:?})",
            started.elapsed()
        );
        assert!(
            matches!(
                &err,
                membership::DriverError::JoinFailed { for_good: true, .. }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("every seed refused this node for good")
                && text.contains(&format!(
                    "refused by {seed_addr}: protocol version {PROTOCOL_VERSION} not supported"
                ))
                && !text.contains("join deadline"),
            "{text}"
        );
        stop.cancel();
    }
}

/// Metadata given to `start_with_metadata` travels with the join: the
/// seed's first record of the joiner (its `MemberUp`) and a third member's
/// already hold it, so nobody sees the joiner without it. Metadata past
/// `max_metadata_bytes` is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_metadata_is_in_every_first_record_of_the_member() {
    let a = node("a", 0, vec![], 1).await;
    let seed = a.transport.identity().addr.clone();
    let b = node("b", 0, vec![seed.clone()], 1).await;
    b.members.wait_joined(T).await.unwrap();
    let mut a_events = a.members.subscribe();
    let mut b_events = b.members.subscribe();

    let stop = CancellationToken::new();
    let transport = bind("driver-test", "tagged", 0, 1, &stop).await;
    let too_large = MembershipConfig::default().max_metadata_bytes + 1;
    let err = membership::start_with_metadata(
        &transport,
        MembershipConfig::default(),
        vec![seed.clone()],
        vec![0; too_large],
        stop.clone(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            membership::DriverError::Config(membership::ConfigError::MetadataTooLarge { .. })
        ),
        "{err:?}"
    );
    let tagged = membership::start_with_metadata(
        &transport,
        MembershipConfig::default(),
        vec![seed],
        b"role=worker".to_vec(),
        stop.clone(),
    )
    .unwrap();
    tagged.wait_joined(T).await.unwrap();
    assert_eq!(
        tagged.view().get("tagged").unwrap().metadata,
        b"role=worker"
    );
    for events in [&mut a_events, &mut b_events] {
        let first = tokio::time::timeout(T, async {
            loop {
                match events.recv().await.unwrap() {
                    membership::Event::MemberUp(m) if m.id.name == "tagged" => return m,
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(first.metadata, b"role=worker", "{first:?}");
    }
    stop.cancel();
    a.stop.cancel();
    b.stop.cancel();
}
