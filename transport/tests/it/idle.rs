//! `[transport] idle_timeout_ms`: an inbound connection silent after its
//! handshake is closed; the dialer's link redials on its next frame; an ask
//! awaiting its answer keeps the connection open.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};
use transport::frame::FrameCodec;
use transport::handshake::{Hello, HelloReply, MAGIC};
use transport::{Channel, Lane, NodeId, PROTOCOL_VERSION, Transport, TransportConfig};

use crate::support::{node, node_with, wait_until};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Pong(u64),
    /// Answered with `Pong` after this many ms.
    Slow(u64, u64),
}

const IDLE_MS: u64 = 300;

fn short_idle() -> TransportConfig {
    TransportConfig {
        idle_timeout_ms: IDLE_MS,
        ..TransportConfig::default()
    }
}

/// Answers `Ping(n)` and `Slow(n, ms)` with `Pong(n)` on channel 1 of
/// `lane`; forwards every `n` received (tells included) to the receiver.
fn echo(t: &Transport, lane: Lane) -> mpsc::UnboundedReceiver<u64> {
    let (_, mut inbox) = Channel::<Msg>::register(t, 1, lane).unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(r) = inbox.recv().await {
            let (n, delay) = match r.msg {
                Msg::Ping(n) => (n, 0),
                Msg::Slow(n, ms) => (n, ms),
                Msg::Pong(_) => continue,
            };
            let _ = seen_tx.send(n);
            if let Some(resp) = r.responder {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let _ = resp.reply_msg(&Msg::Pong(n));
                });
            }
        }
    });
    seen
}

async fn recv(seen: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("a message within 5 s")
        .expect("the inbox is open")
}

#[tokio::test]
async fn a_silent_link_is_closed_and_the_next_frames_redial() {
    for lane in [Lane::Control, Lane::Bulk] {
        let a = node("a", "c").await;
        let b = node_with("b", "c", short_idle()).await;
        let mut seen = echo(&b, lane);
        let (ch, _inbox) = Channel::<Msg>::register(&a, 1, lane).unwrap();
        let peer = b.local_addr().to_string();
        let ask = async |n| {
            ch.ask::<Msg>(&peer, &Msg::Ping(n), Duration::from_secs(5))
                .await
                .unwrap()
        };
        assert_eq!(ask(1).await, Msg::Pong(1));
        assert_eq!(recv(&mut seen).await, 1);

        // Nothing more is sent: b closes the connection, a's link sees it.
        wait_until("the idle close", Duration::from_secs(5), || {
            b.stats().idle_closed == 1 && a.stats().links_down == 1
        })
        .await;

        // The next tell and ask go out on a new connection.
        ch.tell(&peer, &Msg::Ping(2)).unwrap();
        assert_eq!(recv(&mut seen).await, 2);
        assert_eq!(ask(3).await, Msg::Pong(3));
        assert_eq!(recv(&mut seen).await, 3);
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(sb.idle_closed, 1, "{lane:?}: {sb:?}");
        assert_eq!(sa.dial_failures, 0, "{lane:?}: {sa:?}");
        assert_eq!(sa.dropped_on_link_failure, 0, "{lane:?}: {sa:?}");
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn an_ask_awaiting_its_answer_keeps_the_connection_open() {
    let a = node("a", "c").await;
    let b = node_with("b", "c", short_idle()).await;
    let mut seen = echo(&b, Lane::Bulk);
    let (ch, _inbox) = Channel::<Msg>::register(&a, 1, Lane::Bulk).unwrap();
    let peer = b.local_addr().to_string();
    // The answer takes 3 idle periods; the asker sends nothing meanwhile.
    let slow = Msg::Slow(9, 3 * IDLE_MS);
    let ask = ch.ask::<Msg>(&peer, &slow, Duration::from_secs(5));
    // Checked while the answer is awaited, two idle periods in: once it
    // is sent the connection may close at the next timer (no byte has
    // come for three periods by then), which a loaded machine reached
    // before a check after the answer (1 run in 23 beside busy loops).
    let during = async {
        tokio::time::sleep(Duration::from_millis(2 * IDLE_MS)).await;
        (b.stats().idle_closed, a.stats().links_down)
    };
    let (reply, during) = tokio::join!(ask, during);
    assert_eq!(reply.unwrap(), Msg::Pong(9));
    assert_eq!(during, (0, 0), "closed while an ask awaited its answer");
    assert_eq!(recv(&mut seen).await, 9);
    // Answered, the connection is idle and closed.
    wait_until("the idle close", Duration::from_secs(5), || {
        b.stats().idle_closed == 1
    })
    .await;
}

#[tokio::test]
async fn zero_disables_the_idle_close() {
    let config = TransportConfig {
        idle_timeout_ms: 0,
        ..TransportConfig::default()
    };
    config.validate().unwrap();
    let a = node("a", "c").await;
    let b = node_with("b", "c", config).await;
    let mut seen = echo(&b, Lane::Control);
    let (ch, _inbox) = Channel::<Msg>::register(&a, 1, Lane::Control).unwrap();
    let peer = b.local_addr().to_string();
    ch.tell(&peer, &Msg::Ping(1)).unwrap();
    assert_eq!(recv(&mut seen).await, 1);
    // Ten times the short timeout of the other tests, silent: still open
    // (a slow answer on the same connection proves it was never closed).
    let reply: Msg = ch
        .ask(&peer, &Msg::Slow(2, 10 * IDLE_MS), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply, Msg::Pong(2));
    assert_eq!(b.stats().idle_closed, 0);
    assert_eq!(a.stats().links_down, 0);
}

#[tokio::test]
async fn a_raw_client_silent_after_its_handshake_is_cut_off() {
    let b = node_with("b", "c", short_idle()).await;
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: "c".into(),
        from: NodeId {
            name: "raw".into(),
            addr: "127.0.0.1:1".into(),
            generation: 1,
        },
        lane: Lane::Bulk,
        settings: b.settings().to_owned(),
    };
    let mut frame = BytesMut::new();
    FrameCodec::new(1 << 20)
        .encode(
            Bytes::from(postcard::to_allocvec(&hello).unwrap()),
            &mut frame,
        )
        .unwrap();
    s.write_all(&frame).await.unwrap();
    // The acceptor answers, then closes once the client stays silent.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("closed by the acceptor within 5 s")
        .unwrap();
    let mut buf = BytesMut::from(&got[..]);
    let reply = FrameCodec::new(1 << 20).decode(&mut buf).unwrap().unwrap();
    assert!(matches!(
        HelloReply::decode(&reply).unwrap(),
        HelloReply::Accepted { .. }
    ));
    assert_eq!(b.stats().idle_closed, 1);
    assert_eq!(b.stats().handshakes_refused, 0);
}
