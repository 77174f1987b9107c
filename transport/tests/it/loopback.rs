//! Two or more transports over loopback: delivery, order, asks, restarts,
//! queues and shutdown.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use transport::{AskError, Channel, Lane, SendError, TransportConfig};

use crate::support::{node, node_at, node_with, wait_until};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Pong(u64),
    /// Answered with the replier's generation.
    WhoAreYou,
    Generation(u64),
}

#[tokio::test]
async fn tell_and_ask_between_two_transports() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 5, Lane::Bulk).unwrap();
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 5, Lane::Bulk).unwrap();
    let b_addr = b.identity().addr.clone();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(r) = ib.recv().await {
            assert_eq!(r.from.name, "a");
            match (r.msg, r.responder) {
                (Msg::Ping(n), Some(resp)) => {
                    resp.reply_msg(&Msg::Pong(n)).unwrap();
                    break;
                }
                (Msg::Ping(n), None) => seen.push(n),
                (m, _) => panic!("unexpected {m:?}"),
            }
        }
        seen
    });
    for i in 0..1000 {
        ca.tell(&b_addr, &Msg::Ping(i)).unwrap();
    }
    let reply: Msg = ca
        .ask(&b_addr, &Msg::Ping(7), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, Msg::Pong(7));
    let seen = server.await.unwrap();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_messages_arrive_complete_and_in_order() {
    const N: u64 = 100_000;
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 1, Lane::Bulk).unwrap();
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 1, Lane::Bulk).unwrap();
    let b_addr = b.identity().addr.clone();
    let sender = tokio::spawn(async move {
        for i in 0..N {
            ca.send(&b_addr, &Msg::Ping(i)).await.unwrap();
        }
    });
    for expect in 0..N {
        let r = tokio::time::timeout(Duration::from_secs(30), ib.recv())
            .await
            .expect("message in time")
            .expect("inbox open");
        assert_eq!(r.msg, Msg::Ping(expect), "message {expect} out of order");
    }
    sender.await.unwrap();
    assert_eq!(a.stats().dropped_on_link_failure, 0);
    assert_eq!(b.stats().frames_received, N);
}

#[tokio::test]
async fn restarted_peer_is_redialled_and_traffic_resumes() {
    let a = node("a", "c").await;
    let b1 = node_at("b", "c", "127.0.0.1:0", 1, TransportConfig::default()).await;
    let port = b1.local_addr().port();
    let b_addr = b1.identity().addr.clone();
    let (ca, _ia) = Channel::<Msg>::register(&a, 1, Lane::Control).unwrap();
    let serve = |ib: transport::Inbox<Msg>, generation: u64| {
        tokio::spawn(async move {
            let mut ib = ib;
            while let Some(r) = ib.recv().await {
                if let Some(resp) = r.responder {
                    resp.reply_msg(&Msg::Generation(generation)).unwrap();
                }
            }
        })
    };
    let (_cb1, ib1) = Channel::<Msg>::register(&b1, 1, Lane::Control).unwrap();
    serve(ib1, 1);
    let first: Msg = ca
        .ask(&b_addr, &Msg::WhoAreYou, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first, Msg::Generation(1));

    // b stops; its port is bound again by a new life of b.
    b1.shutdown().await;
    drop(b1);
    let b2 = node_at(
        "b",
        "c",
        &format!("127.0.0.1:{port}"),
        2,
        TransportConfig::default(),
    )
    .await;
    assert_eq!(b2.identity().addr, b_addr);
    let (_cb2, ib2) = Channel::<Msg>::register(&b2, 1, Lane::Control).unwrap();
    serve(ib2, 2);

    // Asks fail (typed errors) until a has noticed and redialled, then
    // reach the new life.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut failures = 0;
    let reply = loop {
        match ca
            .ask::<Msg>(&b_addr, &Msg::WhoAreYou, Duration::from_millis(500))
            .await
        {
            Ok(r) => break r,
            Err(AskError::Unreachable { .. } | AskError::Timeout { .. }) => failures += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b never came back ({failures} failed asks)"
        );
    };
    assert_eq!(reply, Msg::Generation(2));
    // And it keeps working.
    for _ in 0..10 {
        let r: Msg = ca
            .ask(&b_addr, &Msg::WhoAreYou, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r, Msg::Generation(2));
    }
}

#[tokio::test]
async fn ask_times_out_with_its_error_and_a_late_reply_is_counted() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 3, Lane::Control).unwrap();
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 3, Lane::Control).unwrap();
    let b_addr = b.identity().addr.clone();
    // b takes the ask and holds its responder without answering.
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let r = ib.recv().await.unwrap();
        held_tx.send(r.responder.unwrap()).unwrap();
        // Keep the inbox alive.
        while ib.recv().await.is_some() {}
    });
    let err = ca
        .ask::<Msg>(&b_addr, &Msg::Ping(1), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AskError::Timeout {
            peer: b_addr.clone(),
            timeout_ms: 200
        }
    );
    // The reply that comes after the timeout is dropped and counted.
    let responder = held_rx.await.unwrap();
    responder.reply_msg(&Msg::Pong(1)).unwrap();
    wait_until("the late reply", Duration::from_secs(5), || {
        a.stats().late_replies == 1
    })
    .await;
}

#[tokio::test]
async fn dropped_responder_rejects_the_ask_at_once() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 3, Lane::Control).unwrap();
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 3, Lane::Control).unwrap();
    tokio::spawn(async move {
        while let Some(r) = ib.recv().await {
            drop(r.responder);
        }
    });
    let err = ca
        .ask::<Msg>(&b.identity().addr, &Msg::Ping(1), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AskError::Rejected { reason, .. } if reason.contains("dropped")),
        "{err:?}"
    );
}

#[tokio::test]
async fn ask_to_an_unregistered_channel_is_rejected_and_counted() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 9, Lane::Bulk).unwrap();
    let err = ca
        .ask::<Msg>(&b.identity().addr, &Msg::Ping(1), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AskError::Rejected { reason, .. } if reason.contains("no receiver for channel 9")),
        "{err:?}"
    );
    assert_eq!(b.stats().unknown_channel, 1);
}

#[tokio::test]
async fn undecodable_message_closes_the_connection_and_rejects_the_ask() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    // a speaks strings on channel 4, b expects `Msg`.
    let (ca, _ia) = Channel::<String>::register(&a, 4, Lane::Bulk).unwrap();
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 4, Lane::Bulk).unwrap();
    tokio::spawn(async move { while ib.recv().await.is_some() {} });
    let err = ca
        .ask::<Msg>(
            &b.identity().addr,
            &"not a Msg at all".to_owned(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    // The rejection goes back on the same connection, ahead of its close.
    assert!(
        matches!(&err, AskError::Rejected { reason, .. } if reason.contains("undecodable")),
        "{err:?}"
    );
    assert_eq!(b.stats().decode_errors, 1);
}

#[tokio::test]
async fn full_queue_refuses_tells_and_a_failed_dial_fails_queued_frames() {
    // A "peer" that accepts TCP but never answers the handshake.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let config = TransportConfig {
        outbound_queue_frames: 16,
        handshake_timeout_ms: 300,
        ..TransportConfig::default()
    };
    let a = node_with("a", "c", config).await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 1, Lane::Bulk).unwrap();
    // The dial hangs in its handshake: 16 tells fill the queue.
    for i in 0..16 {
        ca.tell(&silent_addr, &Msg::Ping(i)).unwrap();
    }
    let err = ca.tell(&silent_addr, &Msg::Ping(16)).unwrap_err();
    assert_eq!(
        err,
        SendError::QueueFull {
            peer: silent_addr.clone(),
            capacity: 16
        }
    );
    // An ask waits for room; when the handshake times out the queued tells
    // are counted as dropped and the waiting ask fails with the link.
    let ask_err = ca
        .ask::<Msg>(&silent_addr, &Msg::Ping(0), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(&ask_err, AskError::Unreachable { reason, .. } if reason.contains("handshake")),
        "{ask_err:?}"
    );
    let stats = a.stats();
    assert_eq!(stats.dropped_on_link_failure, 16);
    assert_eq!(stats.dial_failures, 1);
}

#[tokio::test]
async fn shutdown_flushes_queued_frames_and_ends_inboxes() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 1, Lane::Bulk).unwrap();
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 1, Lane::Bulk).unwrap();
    let b_addr = b.identity().addr.clone();
    for i in 0..5_000 {
        ca.tell(&b_addr, &Msg::Ping(i)).unwrap();
    }
    a.shutdown().await;
    assert_eq!(
        ca.tell(&b_addr, &Msg::Ping(0)).unwrap_err(),
        SendError::Shutdown
    );
    for i in 0..5_000 {
        let r = tokio::time::timeout(Duration::from_secs(10), ib.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.msg, Msg::Ping(i));
    }
    assert_eq!(a.stats().dropped_on_link_failure, 0);
    b.shutdown().await;
    assert!(ib.recv().await.is_none(), "inbox ends after shutdown");
}

#[tokio::test]
async fn forget_drops_the_links_and_a_later_send_dials_again() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 1, Lane::Bulk).unwrap();
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 1, Lane::Bulk).unwrap();
    let b_addr = b.identity().addr.clone();
    ca.tell(&b_addr, &Msg::Ping(1)).unwrap();
    assert_eq!(ib.recv().await.unwrap().msg, Msg::Ping(1));
    a.forget(&b_addr);
    ca.tell(&b_addr, &Msg::Ping(2)).unwrap();
    assert_eq!(ib.recv().await.unwrap().msg, Msg::Ping(2));
    assert_eq!(a.stats().dropped_on_link_failure, 0);
}

/// A peer that accepts links and then stalls, like a SIGSTOPped process
/// whose kernel still holds its connections: it completes each handshake,
/// then reads nothing, answers nothing and closes nothing (the streams are
/// kept open until the returned task is aborted).
async fn stalled_peer() -> (String, tokio::task::JoinHandle<()>) {
    use bytes::{Bytes, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::{Decoder, Encoder};
    use transport::frame::FrameCodec;
    use transport::handshake::{Hello, HelloReply};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let me = transport::NodeId {
        name: "stalled".into(),
        addr: addr.clone(),
        generation: 1,
    };
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = BytesMut::new();
            let hello = loop {
                if let Some(f) = FrameCodec::new(1 << 20).decode(&mut buf).unwrap() {
                    break Some(Hello::decode(&f).unwrap());
                }
                if s.read_buf(&mut buf).await.unwrap() == 0 {
                    break None;
                }
            };
            let Some(hello) = hello else { continue };
            assert_eq!(hello.cluster, "c");
            let reply = HelloReply::Accepted { node: me.clone() };
            let mut frame = BytesMut::new();
            FrameCodec::new(1 << 20)
                .encode(
                    Bytes::from(postcard::to_allocvec(&reply).unwrap()),
                    &mut frame,
                )
                .unwrap();
            s.write_all(&frame).await.unwrap();
            held.push(s);
        }
    });
    (addr, task)
}

/// An ask in flight to a peer that stalls (its connection stays up, it
/// answers nothing) fails with the retriable `Unreachable` once the peer is
/// forgotten (the membership driver forgets members declared dead) and the
/// flush deadline passed, not at its own, much later, timeout: no answer
/// can come back on a forgotten link, and the stalled peer's answers after
/// it resumes go to a closed connection. Before the fix the ask waited out
/// its whole timeout (here 20 s), which stranded `wait_result` asks in a
/// SIGSTOP of 5 s (RELIABILITY.md).
#[tokio::test]
async fn an_ask_in_flight_to_a_stalled_peer_fails_once_the_peer_is_forgotten() {
    let a = node("a", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 1, Lane::Bulk).unwrap();
    let (peer, stalled) = stalled_peer().await;
    let ask = {
        let peer = peer.clone();
        tokio::spawn(async move {
            ca.ask::<Msg>(&peer, &Msg::Ping(1), Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ask.is_finished(), "the stalled peer answers nothing");
    let forgotten_at = tokio::time::Instant::now();
    a.forget(&peer);
    let r = tokio::time::timeout(Duration::from_secs(10), ask)
        .await
        .expect("the ask ends within 10 s of the forget, not at its 20 s timeout")
        .unwrap();
    let waited = forgotten_at.elapsed();
    assert!(matches!(r, Err(AskError::Unreachable { .. })), "{r:?}");
    let flush = Duration::from_millis(TransportConfig::default().flush_deadline_ms);
    assert!(
        waited < flush + Duration::from_secs(2),
        "failed {waited:?} after the forget"
    );
    stalled.abort();
}

#[tokio::test]
async fn untyped_register_tell_and_ask() {
    use bytes::Bytes;
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let mut rx = b.register(7).unwrap();
    assert!(matches!(
        b.register(7),
        Err(transport::RegisterError::Taken(7))
    ));
    assert!(matches!(
        b.register(64),
        Err(transport::RegisterError::OutOfRange(64))
    ));
    let b_addr = b.identity().addr.clone();
    tokio::spawn(async move {
        while let Some(inbound) = rx.recv().await {
            assert_eq!(inbound.from().name, "a");
            assert_eq!(inbound.channel(), 7);
            let lane = inbound.lane();
            let is_ask = inbound.is_ask();
            let (body, responder) = inbound.into_parts();
            assert_eq!(is_ask, responder.is_some());
            if let Some(r) = responder {
                if &body[..] == b"drop me" {
                    drop(r);
                } else {
                    let mut answer = body.to_vec();
                    answer.extend_from_slice(format!(" via {lane:?}").as_bytes());
                    r.reply(Bytes::from(answer)).unwrap();
                }
            }
        }
    });
    a.tell(&b_addr, Lane::Bulk, 7, Bytes::from_static(b"one way"))
        .unwrap();
    a.send(&b_addr, Lane::Control, 7, Bytes::from_static(b"waits"))
        .await
        .unwrap();
    let reply = a
        .ask(
            &b_addr,
            Lane::Bulk,
            7,
            Bytes::from_static(b"hello"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(&reply[..], b"hello via Bulk");
    let err = a
        .ask(
            &b_addr,
            Lane::Control,
            7,
            Bytes::from_static(b"drop me"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AskError::Rejected { .. }), "{err:?}");
    let huge = Bytes::from(vec![0u8; a.config().max_frame_bytes + 1]);
    assert!(matches!(
        a.tell(&b_addr, Lane::Bulk, 7, huge),
        Err(SendError::TooLarge { .. })
    ));
    wait_until("all frames received", Duration::from_secs(5), || {
        b.stats().frames_received == 4
    })
    .await;
}

#[tokio::test]
async fn peers_may_be_named_by_dns_name() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 1, Lane::Control).unwrap();
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 1, Lane::Control).unwrap();
    tokio::spawn(async move {
        while let Some(r) = ib.recv().await {
            if let (Msg::Ping(n), Some(resp)) = (r.msg, r.responder) {
                resp.reply_msg(&Msg::Pong(n)).unwrap();
            }
        }
    });
    // Resolved at dial time (here by the system resolver).
    let by_name = format!("localhost:{}", b.local_addr().port());
    let reply: Msg = ca
        .ask(&by_name, &Msg::Ping(3), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, Msg::Pong(3));
}
