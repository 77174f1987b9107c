//! Strangers and misbehaving peers: wrong cluster, oversized frames, random
//! bytes and HTTP on the transport's port. Each is refused with a reason
//! where one can be sent, and nothing else is disturbed.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::EitherWriter;
use transport::frame::{FrameCodec, Header, Kind};
use transport::handshake::{Hello, HelloReply, MAGIC};
use transport::{
    AskError, BindError, Channel, HandshakeError, IdentityError, IdentityField, Lane, LocalNode,
    NodeId, PROTOCOL_VERSION, Transport, TransportConfig,
};

use crate::support::{node, node_with, wait_until};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Pong(u64),
}

/// Answers every `Ping(n)` on channel 1 (control lane) with `Pong(n)`.
fn echo(t: &Transport) -> Channel<Msg> {
    let (ch, mut inbox) = Channel::<Msg>::register(t, 1, Lane::Control).unwrap();
    tokio::spawn(async move {
        while let Some(r) = inbox.recv().await {
            if let (Msg::Ping(n), Some(resp)) = (r.msg, r.responder) {
                let _ = resp.reply_msg(&Msg::Pong(n));
            }
        }
    });
    ch
}

async fn ping(ch: &Channel<Msg>, peer: &str, n: u64) -> Result<Msg, AskError> {
    ch.ask(peer, &Msg::Ping(n), Duration::from_secs(5)).await
}

/// A handshake frame as a dialer would send it to `to` (its settings: the
/// frame limit the transport adds).
fn hello_frame(cluster: &str, to: &Transport) -> BytesMut {
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: cluster.into(),
        from: NodeId {
            name: "raw".into(),
            addr: "127.0.0.1:1".into(),
            generation: 1,
        },
        lane: Lane::Bulk,
        settings: to.settings().to_owned(),
    };
    let mut buf = BytesMut::new();
    FrameCodec::new(1 << 20)
        .encode(
            Bytes::from(postcard::to_allocvec(&hello).unwrap()),
            &mut buf,
        )
        .unwrap();
    buf
}

/// Reads what the acceptor sends until it closes (at most 5 s) and decodes
/// the first frame as a handshake reply, if there is one.
async fn reply_until_eof(s: &mut TcpStream) -> Option<HelloReply> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the acceptor closes the connection")
        .ok()?;
    let mut buf = BytesMut::from(&got[..]);
    let frame = FrameCodec::new(1 << 20).decode(&mut buf).ok()??;
    Some(HelloReply::decode(&frame).unwrap())
}

fn refused_reason(reply: Option<HelloReply>) -> String {
    match reply {
        Some(HelloReply::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The reason of a refusal for another cluster name, which dialing again
/// cannot change ([`HelloReply::Mismatch`]).
fn mismatch_reason(reply: Option<HelloReply>) -> String {
    match reply {
        Some(HelloReply::Mismatch { reason }) => reason,
        other => panic!("expected a refusal for good, got {other:?}"),
    }
}

/// Log lines written while a test runs on the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// Where this thread's log lines go while a test captures them, and
    /// the least severe level kept.
    static CAPTURE: RefCell<Option<(Logs, tracing::Level)>> = const { RefCell::new(None) };
}

/// The writer of this test binary's one subscriber: each event goes to
/// the capture of the thread that logs it, if that thread has one and
/// the event is at its level or above, else nowhere.
///
/// One global subscriber, not one per test (`set_default`): tracing
/// caches each callsite's interest process-wide, computed by whichever
/// thread reaches the callsite first. With per-thread subscribers, a
/// sibling test without one could reach a callsite first and cache it as
/// never wanted, and this test's events there were silently lost (seen
/// as a missing "inbound link down" and a missing warning under load).
#[derive(Clone, Copy)]
struct ThreadCapture;

impl<'a> MakeWriter<'a> for ThreadCapture {
    type Writer = EitherWriter<Logs, std::io::Sink>;

    fn make_writer(&'a self) -> Self::Writer {
        EitherWriter::B(std::io::sink())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        CAPTURE.with_borrow(|capture| match capture {
            Some((logs, level)) if meta.level() <= level => EitherWriter::A(logs.clone()),
            _ => EitherWriter::B(std::io::sink()),
        })
    }
}

/// Ends this thread's capture when dropped.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.set(None);
    }
}

impl Logs {
    /// Captures what this thread logs at `level` and above (at most
    /// debug) until the guard is dropped (tasks of a current-thread
    /// runtime log on this thread).
    fn capture(level: tracing::Level) -> (Logs, CaptureGuard) {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(ThreadCapture)
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other subscriber in this test binary");
        });
        // Callsites first reached before the subscriber was installed
        // are asked again.
        tracing::callsite::rebuild_interest_cache();
        let logs = Logs::default();
        CAPTURE.set(Some((logs.clone(), level)));
        (logs, CaptureGuard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Current-thread runtime: every task logs through this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn wrong_cluster_is_refused_with_the_reason_on_both_sides() {
    let (logs, _guard) = Logs::capture(tracing::Level::WARN);

    let a = node("a", "one").await;
    let b = node("b", "two").await;
    let ca = echo(&a);
    echo(&b);
    let err = ping(&ca, &b.identity().addr, 1).await.unwrap_err();
    // The dialer's error carries the acceptor's reason.
    match &err {
        AskError::Unreachable { reason, .. } => {
            assert!(reason.contains("refused by peer"), "{reason}");
            assert!(reason.contains(r#"cluster name "one""#), "{reason}");
        }
        e => panic!("unexpected {e:?}"),
    }
    // The acceptor counted it.
    assert_eq!(b.stats().handshakes_refused, 1);
    assert_eq!(a.stats().dial_failures, 1);
    // Both logged a warning with the reason.
    let text = logs.text();
    assert!(
        text.contains("WARN") && text.contains("handshake refused") && text.contains("two"),
        "acceptor's warning missing:\n{text}"
    );
    assert!(
        text.contains("handshake refused by peer"),
        "dialer's warning missing:\n{text}"
    );
    // The dialer keeps the reason for callers whose sends are one-way.
    let b_addr = b.identity().addr.clone();
    let reason = a.refusal(&b_addr).expect("the refusal is kept");
    assert!(reason.contains(r#"cluster name "one""#), "{reason}");
    // Another cluster name is a refusal dialing again cannot change.
    assert!(a.refused_for_good(&b_addr));
    // A second refusal for the same reason is not warned again.
    let _ = ping(&ca, &b_addr, 2).await.unwrap_err();
    let warned = logs.text().matches("handshake refused by peer").count();
    assert_eq!(warned, 1, "a repeated refusal is logged at debug level");
    assert_eq!(a.stats().dial_failures, 2);
    // The acceptor warns of one reason at its 1st, 2nd, 4th, ...
    // refusal: five refusals, three warnings (a node of another cluster
    // retries its join every second or so).
    for i in 3..=5 {
        let _ = ping(&ca, &b_addr, i).await.unwrap_err();
    }
    assert_eq!(b.stats().handshakes_refused, 5);
    let acceptor_warnings = logs
        .text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("handshake refused (warned"))
        .count();
    assert_eq!(acceptor_warnings, 3, "{}", logs.text());
    // Forgetting the peer forgets its refusal.
    a.forget(&b_addr);
    assert_eq!(a.refusal(&b_addr), None);
    assert!(!a.refused_for_good(&b_addr));
}

/// A node of the same cluster name with other cluster settings (e.g.
/// another shard count) is refused as one of another cluster is: for good,
/// with both settings in the reason.
#[tokio::test]
async fn other_cluster_settings_are_refused_for_good_with_both_values() {
    let with = |settings: &str| LocalNode {
        cluster: "one".into(),
        settings: settings.into(),
        name: format!("n-{settings}"),
        generation: 1,
        listen: "127.0.0.1:0".into(),
        advertise_host: "127.0.0.1".into(),
    };
    let stop = CancellationToken::new();
    let bind =
        |settings: &str| Transport::bind(with(settings), TransportConfig::default(), stop.clone());
    let a = bind("num_shards=10").await.unwrap();
    let b = bind("num_shards=50").await.unwrap();
    let same = bind("num_shards=50").await.unwrap();
    let ca = echo(&a);
    echo(&b);
    let cs = echo(&same);
    let b_addr = b.identity().addr.clone();
    match ping(&ca, &b_addr, 1).await.unwrap_err() {
        AskError::Unreachable { reason, .. } => assert!(
            reason.contains(r#"settings "num_shards=10 max_frame_bytes=8388608""#)
                && reason.contains(r#"with "num_shards=50 max_frame_bytes=8388608""#),
            "{reason}"
        ),
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(b.stats().handshakes_refused, 1);
    assert!(a.refused_for_good(&b_addr));
    // The same settings pass.
    assert!(matches!(ping(&cs, &b_addr, 2).await, Ok(Msg::Pong(2))));
    // Another frame limit is another setting: pages sized for one would
    // be refused by the other.
    let small = Transport::bind(
        with("num_shards=50"),
        TransportConfig {
            max_frame_bytes: 65_536,
            ..TransportConfig::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();
    match ping(&echo(&small), &b_addr, 3).await.unwrap_err() {
        AskError::Unreachable { reason, .. } => {
            assert!(reason.contains("max_frame_bytes=65536"), "{reason}")
        }
        e => panic!("unexpected {e:?}"),
    }
    stop.cancel();
}

/// The `Hello` of a raw dialer "raw" of cluster "c" speaking `version`.
fn raw_hello(version: u16, settings: &str) -> Hello {
    Hello {
        magic: MAGIC,
        version,
        cluster: "c".into(),
        from: NodeId {
            name: "raw".into(),
            addr: "127.0.0.1:1".into(),
            generation: 1,
        },
        lane: Lane::Control,
        settings: settings.to_owned(),
    }
}

#[tokio::test]
async fn wrong_version_and_cluster_from_a_raw_dialer_get_a_reason() {
    let b = node("b", "c").await;
    // Wrong cluster.
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&hello_frame("other", &b)).await.unwrap();
    let reason = mismatch_reason(reply_until_eof(&mut s).await);
    assert!(reason.contains("cluster name"), "{reason}");
    // Wrong version.
    let mut hello = raw_hello(PROTOCOL_VERSION + 1, b.settings());
    let mut frame = BytesMut::new();
    FrameCodec::new(1 << 20)
        .encode(
            Bytes::from(postcard::to_allocvec(&hello).unwrap()),
            &mut frame,
        )
        .unwrap();
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&frame).await.unwrap();
    // For good, as another cluster name is: dialing again cannot help.
    let reason = mismatch_reason(reply_until_eof(&mut s).await);
    assert!(reason.contains("protocol version"), "{reason}");
    // The right handshake is accepted.
    hello.version = PROTOCOL_VERSION;
    let mut frame = BytesMut::new();
    FrameCodec::new(1 << 20)
        .encode(
            Bytes::from(postcard::to_allocvec(&hello).unwrap()),
            &mut frame,
        )
        .unwrap();
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&frame).await.unwrap();
    let mut buf = BytesMut::new();
    let reply = loop {
        if let Some(f) = FrameCodec::new(1 << 20).decode(&mut buf).unwrap() {
            break HelloReply::decode(&f).unwrap();
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    };
    assert!(matches!(reply, HelloReply::Accepted { node } if node.name == "b"));
    assert_eq!(b.stats().handshakes_refused, 2);
}

/// A `Hello` as version 1 sent it: no `settings` at the end.
#[derive(Serialize)]
struct HelloV1 {
    magic: [u8; 4],
    version: u16,
    cluster: String,
    from: NodeId,
    lane: Lane,
}

/// Sends `body` as a connection's first frame to `to`; its answer.
async fn answer_to(to: &Transport, body: Vec<u8>) -> Option<HelloReply> {
    let mut frame = BytesMut::new();
    FrameCodec::new(1 << 20)
        .encode(Bytes::from(body), &mut frame)
        .unwrap();
    let mut s = TcpStream::connect(to.local_addr()).await.unwrap();
    s.write_all(&frame).await.unwrap();
    reply_until_eof(&mut s).await
}

/// Any two versions refuse each other at the version check, whatever
/// their `Hello` holds after the version: for good (`Mismatch`) for a
/// dialer of version 2 or later, `Refused` for version 1, some of whose
/// builds cannot decode `Mismatch`.
#[tokio::test]
async fn another_protocol_version_is_refused_at_the_version_check_whatever_follows() {
    let b = node("b", "c").await;
    let refusal = |theirs: u16| {
        format!("protocol version {theirs} not supported (this node speaks {PROTOCOL_VERSION})")
    };
    let hello = |version: u16| raw_hello(version, b.settings());
    let older = PROTOCOL_VERSION - 1;
    assert!(older >= 2, "a version that decodes Mismatch");
    // The previous version's Hello, laid out as ours.
    let body = postcard::to_allocvec(&hello(older)).unwrap();
    assert_eq!(mismatch_reason(answer_to(&b, body).await), refusal(older));
    // A Hello of another version cut right after its version.
    let newer = PROTOCOL_VERSION + 1;
    let body = postcard::to_allocvec(&hello(newer)).unwrap();
    assert_eq!(
        mismatch_reason(answer_to(&b, body[..5].to_vec()).await),
        refusal(newer)
    );
    // Version 1's Hello, without settings: the version refusal, not
    // "undecodable handshake", as a `Refused`.
    let h = hello(1);
    let v1 = HelloV1 {
        magic: h.magic,
        version: h.version,
        cluster: h.cluster,
        from: h.from,
        lane: h.lane,
    };
    let body = postcard::to_allocvec(&v1).unwrap();
    assert_eq!(refused_reason(answer_to(&b, body).await), refusal(1));
    // Our own version cut short is still undecodable.
    let mut body = postcard::to_allocvec(&hello(PROTOCOL_VERSION)).unwrap();
    body.truncate(body.len() - 1);
    let reason = refused_reason(answer_to(&b, body).await);
    assert!(reason.starts_with("undecodable handshake"), "{reason}");
    // So is our magic without a version.
    let reason = refused_reason(answer_to(&b, MAGIC.to_vec()).await);
    assert!(reason.starts_with("undecodable handshake"), "{reason}");
    assert_eq!(b.stats().handshakes_refused, 5);
}

/// A dialer refused for its protocol version records the refusal as for
/// good, whether a newer acceptor says so with `Mismatch` or an acceptor
/// before version 3 with `Refused`; other refusals are not for good.
#[tokio::test]
async fn a_dialer_refused_for_its_version_is_refused_for_good() {
    let a = node("a", "c").await;
    let ca = echo(&a);
    let version = |ours: u16| {
        HandshakeError::Version {
            theirs: PROTOCOL_VERSION,
            ours,
        }
        .to_string()
    };
    let cases = [
        (
            HelloReply::Mismatch {
                reason: version(PROTOCOL_VERSION + 1),
            },
            true,
        ),
        (
            HelloReply::Refused {
                reason: version(PROTOCOL_VERSION - 1),
            },
            true,
        ),
        (
            HelloReply::Refused {
                reason: "too many connections (max 1)".into(),
            },
            false,
        ),
    ];
    for (reply, for_good) in cases {
        let (HelloReply::Mismatch { reason } | HelloReply::Refused { reason }) = reply.clone()
        else {
            unreachable!()
        };
        let peer = transport::testing::answering(reply).await.unwrap();
        match ping(&ca, &peer, 1).await.unwrap_err() {
            AskError::Unreachable { reason: r, .. } => {
                assert_eq!(r, format!("refused by peer: {reason}"))
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(a.refusal(&peer), Some(reason.clone()));
        assert_eq!(a.refused_for_good(&peer), for_good, "{reason}");
    }
}

#[tokio::test]
async fn oversized_frame_closes_that_connection_and_the_listener_serves_the_next() {
    let config = TransportConfig {
        max_frame_bytes: 64 * 1024,
        ..TransportConfig::default()
    };
    let b = node_with("b", "c", config.clone()).await;
    echo(&b);
    // A peer that passes the handshake, then announces a frame above the
    // maximum.
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&hello_frame("c", &b)).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if FrameCodec::new(1 << 20).decode(&mut buf).unwrap().is_some() {
            break;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
    s.write_all(&(64 * 1024 + 1u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&[0u8; 1024]).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing is sent back after the handshake");
    wait_until("the frame error count", Duration::from_secs(5), || {
        b.stats().frame_errors == 1
    })
    .await;

    // A stranger whose very first length is oversized is refused too.
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let reason = refused_reason(reply_until_eof(&mut s).await);
    assert!(reason.contains("bad magic"), "{reason}");

    // The next connection is served (a node with the same frame limit:
    // it is a cluster setting).
    let a = node_with("a", "c", config).await;
    let ca = echo(&a);
    assert_eq!(
        ping(&ca, &b.identity().addr, 7).await.unwrap(),
        Msg::Pong(7)
    );
}

#[tokio::test]
async fn random_bytes_and_http_are_refused_without_disturbing_links() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let ca = echo(&a);
    echo(&b);
    let b_addr = b.identity().addr.clone();
    assert_eq!(ping(&ca, &b_addr, 1).await.unwrap(), Msg::Pong(1));

    // An HTTP request.
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: node-b\r\n\r\n")
        .await
        .unwrap();
    let reason = refused_reason(reply_until_eof(&mut s).await);
    assert!(reason.contains("bad magic"), "{reason}");

    // Random bytes (seeded), in a few shapes: a huge length, a small
    // length with garbage, and garbage that ends mid-frame.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut garbage = vec![0u8; 4096];
    rng.fill(&mut garbage[..]);
    garbage[0] |= 0x80; // the first length reads as > 2 GiB
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&garbage).await.unwrap();
    let reason = refused_reason(reply_until_eof(&mut s).await);
    assert!(reason.contains("bad magic"), "{reason}");

    let mut small = vec![0, 0, 0, 200];
    small.extend((0..200).map(|_| rng.r#gen::<u8>() | 1));
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&small).await.unwrap();
    let reason = refused_reason(reply_until_eof(&mut s).await);
    assert!(reason.contains("bad magic"), "{reason}");

    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed in time");

    // The existing link was not disturbed, and still works.
    assert_eq!(ping(&ca, &b_addr, 2).await.unwrap(), Msg::Pong(2));
    wait_until("every stranger counted", Duration::from_secs(5), || {
        b.stats().handshakes_refused == 4
    })
    .await;
    assert_eq!(a.stats().dial_failures, 0);
    assert_eq!(a.stats().dropped_on_link_failure, 0);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let config = TransportConfig {
        handshake_timeout_ms: 200,
        ..TransportConfig::default()
    };
    let b = node_with("b", "c", config).await;
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed by the acceptor")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(b.stats().handshakes_refused, 1);
}

#[tokio::test]
async fn too_many_handshakes_in_progress_are_refused_at_accept() {
    let config = TransportConfig {
        max_handshaking_connections: 2,
        handshake_timeout_ms: 10_000,
        ..TransportConfig::default()
    };
    let b = node_with("b", "c", config).await;
    // Two silent connections hold both handshake slots; the listener
    // accepts in order, so the third finds none free.
    let _s1 = TcpStream::connect(b.local_addr()).await.unwrap();
    let _s2 = TcpStream::connect(b.local_addr()).await.unwrap();
    let mut s3 = TcpStream::connect(b.local_addr()).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s3.read_to_end(&mut rest))
        .await
        .expect("closed at accept")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(b.stats().connections_refused, 1);
    assert_eq!(b.stats().handshakes_refused, 0);
}

#[tokio::test]
async fn a_dialer_sending_replies_is_cut_off() {
    let b = node("b", "c").await;
    echo(&b);
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&hello_frame("c", &b)).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if FrameCodec::new(1 << 20).decode(&mut buf).unwrap().is_some() {
            break;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
    // Replies flow from acceptor to dialer only.
    let mut frame = BytesMut::new();
    Header {
        channel: 1,
        kind: Kind::Reply { corr: 1 },
    }
    .encode_frame(b"forged", 1 << 20, &mut frame)
    .unwrap();
    s.write_all(&frame).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed by the acceptor");
    wait_until("the frame error count", Duration::from_secs(5), || {
        b.stats().frame_errors == 1
    })
    .await;
}

#[tokio::test]
async fn a_peer_cannot_answer_asks_sent_to_another() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let ca = echo(&a);
    // b takes asks and never answers them.
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 1, Lane::Control).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(r) = ib.recv().await {
            held.push(r.responder);
        }
    });
    // A fake peer accepts a's link and answers every correlation id it can
    // guess.
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = accept_as_fake(fake).await;
        let mut out = BytesMut::new();
        for corr in 0..200 {
            Header {
                channel: 1,
                kind: Kind::Reply { corr },
            }
            .encode_frame(
                &postcard::to_allocvec(&Msg::Pong(9)).unwrap(),
                1 << 20,
                &mut out,
            )
            .unwrap();
        }
        s.write_all(&out).await.unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    let to_b = tokio::spawn({
        let ca = ca.clone();
        let b_addr = b.identity().addr.clone();
        async move {
            ca.ask::<Msg>(&b_addr, &Msg::Ping(1), Duration::from_millis(500))
                .await
        }
    });
    // Open the link to the fake peer while the ask to b is pending.
    wait_until("the ask to b to be pending", Duration::from_secs(5), || {
        b.stats().frames_received >= 1
    })
    .await;
    ca.tell(&fake_addr, &Msg::Ping(2)).unwrap();
    let err = to_b.await.unwrap().unwrap_err();
    assert!(matches!(err, AskError::Timeout { .. }), "{err:?}");
    assert!(a.stats().late_replies >= 100, "{:?}", a.stats());
}

/// Accepts one connection on `fake` as a peer named "fake": reads the
/// dialer's `Hello` and answers `Accepted`. Returns the connection and
/// what was read past the `Hello`.
async fn accept_as_fake(fake: tokio::net::TcpListener) -> (TcpStream, BytesMut) {
    let (mut s, _) = fake.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let mut codec = FrameCodec::new(1 << 20);
    while codec.decode(&mut buf).unwrap().is_none() {
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
    let accepted = HelloReply::Accepted {
        node: NodeId {
            name: "fake".into(),
            addr: "127.0.0.1:1".into(),
            generation: 1,
        },
    };
    let mut out = BytesMut::new();
    codec
        .encode(
            Bytes::from(postcard::to_allocvec(&accepted).unwrap()),
            &mut out,
        )
        .unwrap();
    s.write_all(&out).await.unwrap();
    (s, buf)
}

/// Reads the dialer's next frame on a fake peer's connection (after
/// [`accept_as_fake`]) and returns its correlation id.
///
/// # Panics
/// When the connection closes first or the frame is not an ask.
async fn next_ask(s: &mut TcpStream, buf: &mut BytesMut) -> u64 {
    let mut codec = FrameCodec::new(1 << 20);
    let ask = loop {
        if let Some(f) = codec.decode(buf).unwrap() {
            break f;
        }
        assert!(s.read_buf(buf).await.unwrap() > 0);
    };
    let Kind::Ask { corr } = Header::decode(&ask).unwrap().0.kind else {
        panic!("an ask");
    };
    corr
}

/// A fake peer on a free port (returned) that accepts one dialer
/// ([`accept_as_fake`]), reads its first ask, writes `answer(corr)` for
/// it, closes its side and drains the dialer until it closes.
async fn fake_answering_one_ask(answer: impl FnOnce(u64) -> BytesMut + Send + 'static) -> String {
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, mut buf) = accept_as_fake(fake).await;
        let corr = next_ask(&mut s, &mut buf).await;
        s.write_all(&answer(corr)).await.unwrap();
        s.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    addr
}

/// An address nothing listens on: a port bound and closed just now.
fn unused_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Asks `peer` through `ch` until `t` counts `upto` failed dials in all
/// (the link backs off between dials, up to 2 s).
async fn fail_dials(t: &Transport, ch: &Channel<Msg>, peer: &str, upto: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while t.stats().dial_failures < upto {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{upto} failed dials"
        );
        let _ = ch
            .ask::<Msg>(peer, &Msg::Ping(i), Duration::from_millis(300))
            .await;
        i += 1;
    }
}

/// A node that is leaving expects its peers to vanish (a whole cluster
/// stopping): failing to reach one is logged at debug level, where the
/// same failures are warned from the 2nd in a row otherwise.
#[tokio::test(flavor = "current_thread")]
async fn a_leaving_node_does_not_warn_of_peers_it_cannot_reach() {
    let (logs, _guard) = Logs::capture(tracing::Level::WARN);
    let gone = unused_addr();
    let staying = node("staying", "c").await;
    fail_dials(&staying, &echo(&staying), &gone, 4).await;
    let warned = logs.text().matches("cannot reach peer").count();
    assert!(warned >= 1, "a node that stays warns:\n{}", logs.text());

    let leaving = node("leaving", "c").await;
    leaving.leaving();
    fail_dials(&leaving, &echo(&leaving), &gone, 4).await;
    let now = logs.text().matches("cannot reach peer").count();
    assert_eq!(
        now,
        warned,
        "a leaving node does not warn:\n{}",
        logs.text()
    );
}

/// A seed this node joins through may not be listening yet: failing to
/// reach it is information until the join ends, then warned as for any
/// peer.
#[tokio::test(flavor = "current_thread")]
async fn a_seed_not_up_yet_is_information_until_the_join_ends() {
    let (logs, _guard) = Logs::capture(tracing::Level::INFO);
    let seed = unused_addr();
    let t = node("joiner", "c").await;
    let ch = echo(&t);
    let warnings = || {
        logs.text()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot reach peer"))
            .count()
    };
    t.joining_through(std::slice::from_ref(&seed));
    // A one-way frame too, which the failed dial takes with it.
    ch.tell(&seed, &Msg::Ping(0)).unwrap();
    fail_dials(&t, &ch, &seed, 4).await;
    assert!(t.stats().dropped_on_link_failure >= 1);
    assert_eq!(warnings(), 0, "joining: information only\n{}", logs.text());
    assert!(
        logs.text().contains("cannot reach a seed yet"),
        "still logged at info:\n{}",
        logs.text()
    );
    // One line per failure, not two: what the dial took with it is debug
    // detail while joining.
    assert!(
        !logs.text().contains("one-way frames dropped"),
        "{}",
        logs.text()
    );
    t.joined();
    // The 8th failure in a row is one a peer is warned at.
    fail_dials(&t, &ch, &seed, 8).await;
    assert!(warnings() >= 1, "after the join: warned\n{}", logs.text());
}

/// A dial that reaches something other than a node (an HTTP server, whose
/// answer reads as a huge frame length) fails naming what answered, not
/// with a frame size.
#[tokio::test]
async fn a_dial_answered_by_http_says_it_is_not_a_casty_peer() {
    let a = node("a", "c").await;
    let ca = echo(&a);
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let err = ping(&ca, &http_addr, 1).await.unwrap_err().to_string();
    assert!(err.contains("not a casty peer"), "{err}");
    assert!(err.contains("\"HTTP\""), "{err}");
    assert!(!err.contains("exceeds the maximum"), "{err}");
}

/// A dialer whose name holds a newline, or whose address holds an ANSI
/// escape, would forge or colour the acceptor's log lines wherever it is
/// named (the tester's `peer=ev` then a forged `ERROR ... FORGED` line):
/// its `Hello` is refused with the typed error, the value escaped, and no
/// log line holds the raw bytes.
#[tokio::test(flavor = "current_thread")]
async fn a_hello_with_a_newline_in_the_name_or_an_escape_in_the_address_is_refused() {
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    let b = node("b", "c").await;
    echo(&b);
    let forged_name = "ev\nFORGED-LINE ERROR victim node_cli: FORGED";
    let forged_addr = "127.0.0.1:1\u{1b}[31mFORGED";
    for (name, addr, field, c, escaped) in [
        (
            forged_name,
            "127.0.0.1:1",
            IdentityField::Name,
            '\n',
            r"ev\nFORGED-LINE",
        ),
        (
            "raw",
            forged_addr,
            IdentityField::Addr,
            '\u{1b}',
            r"1\u{1b}[31mFORGED",
        ),
    ] {
        let mut hello = raw_hello(PROTOCOL_VERSION, b.settings());
        hello.from.name = name.into();
        hello.from.addr = addr.into();
        // The typed error names the field and the first bad character.
        match hello.check("c", b.settings()) {
            Err(HandshakeError::Identity(IdentityError::Unprintable {
                field: f,
                value,
                c: got,
            })) => {
                assert_eq!((f, got), (field, c));
                assert_eq!(
                    value,
                    if field == IdentityField::Name {
                        name
                    } else {
                        addr
                    }
                );
            }
            other => panic!("expected an identity refusal, got {other:?}"),
        }
        // Over the wire: refused, with the value escaped in the reason.
        let reason = refused_reason(answer_to(&b, postcard::to_allocvec(&hello).unwrap()).await);
        assert!(reason.contains(&format!("node {field} ")), "{reason}");
        assert!(reason.contains(escaped), "{reason}");
        assert!(!reason.contains(c), "{reason:?}");
    }
    assert_eq!(b.stats().handshakes_refused, 2);
    let text = logs.text();
    assert!(text.contains("handshake refused"), "{text}");
    assert!(text.contains(r"ev\nFORGED-LINE"), "logged escaped:\n{text}");
    assert!(
        !text.contains('\u{1b}'),
        "an ESC byte was logged:\n{text:?}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED-LINE")),
        "a forged line was logged:\n{text}"
    );
}

/// The acceptor's identity is checked by the dialer too (it is logged
/// with every failure of the link), and an acceptor's refusal reason is
/// kept and logged with what would split a line escaped.
#[tokio::test]
async fn an_acceptor_s_bad_identity_or_forged_reason_does_not_reach_the_dialer_s_log() {
    let a = node("a", "c").await;
    let ca = echo(&a);
    let peer = transport::testing::answering(HelloReply::Accepted {
        node: NodeId {
            name: "x\ny".into(),
            addr: "127.0.0.1:1".into(),
            generation: 1,
        },
    })
    .await
    .unwrap();
    match ping(&ca, &peer, 1).await.unwrap_err() {
        AskError::Unreachable { reason, .. } => {
            assert!(reason.contains(r#"node name "x\ny""#), "{reason}")
        }
        e => panic!("unexpected {e:?}"),
    }
    let peer = transport::testing::answering(HelloReply::Refused {
        reason: "no\nFORGED-LINE \u{1b}[31m".into(),
    })
    .await
    .unwrap();
    let _ = ping(&ca, &peer, 2).await.unwrap_err();
    assert_eq!(
        a.refusal(&peer).as_deref(),
        Some(r"no\nFORGED-LINE \u{1b}[31m")
    );
}

/// A node cannot start with an identity its peers would refuse.
#[tokio::test]
async fn bind_refuses_a_local_identity_peers_would_refuse() {
    let local = |name: &str, host: &str| LocalNode {
        cluster: "c".into(),
        settings: String::new(),
        name: name.into(),
        generation: 1,
        listen: "127.0.0.1:0".into(),
        advertise_host: host.into(),
    };
    let bind = |l| Transport::bind(l, TransportConfig::default(), CancellationToken::new());
    for (l, field) in [
        (local("two words", "127.0.0.1"), IdentityField::Name),
        (local("", "127.0.0.1"), IdentityField::Name),
        (local("a", "host\u{1b}[2J"), IdentityField::Addr),
    ] {
        match bind(l).await {
            Err(BindError::Identity(
                IdentityError::Unprintable { field: f, .. } | IdentityError::Empty { field: f },
            )) => assert_eq!(f, field),
            other => panic!("expected an identity error, got {other:?}"),
        }
    }
    let e = bind(local(
        &"n".repeat(transport::MAX_NAME_BYTES + 1),
        "127.0.0.1",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(e, BindError::Identity(IdentityError::TooLong { .. })),
        "{e:?}"
    );
    assert!(bind(local("ok-name_1.2", "127.0.0.1")).await.is_ok());
}

/// A node cannot start with a cluster name its handshake cannot carry:
/// a `Hello` above the handshake frame is refused by every peer unread,
/// so a 20,000-byte cluster name bound, and no node ever joined it.
#[tokio::test]
async fn bind_refuses_a_cluster_name_the_handshake_cannot_carry() {
    let local = |cluster: String| LocalNode {
        cluster,
        settings: String::new(),
        name: "a".into(),
        generation: 1,
        listen: "127.0.0.1:0".into(),
        advertise_host: "127.0.0.1".into(),
    };
    let bind = |l| Transport::bind(l, TransportConfig::default(), CancellationToken::new());
    match bind(local("c".repeat(20_000))).await {
        Err(BindError::Config(reason)) => {
            assert!(reason.contains("handshake does not fit"), "{reason}");
            assert!(reason.contains("20000 bytes"), "{reason}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(bind(local("c".repeat(1_000))).await.is_ok());
}

/// Strangers by the hundred (connections closed without a handshake,
/// HTTP requests, more than the handshake table holds) are warned of at
/// the 1st, 2nd, 4th, ... of each kind, not once each: the tester's 300
/// connections logged 300 warnings. (A connection closed before a byte
/// is not warned at all unless the table was full: see
/// `a_port_probe_is_not_warned_as_a_refused_handshake`.)
#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_bad_connections_warns_log_n_times_per_kind() {
    let (logs, _guard) = Logs::capture(tracing::Level::WARN);
    let config = TransportConfig {
        max_handshaking_connections: 4,
        ..TransportConfig::default()
    };
    let b = node_with("b", "c", config).await;
    const EACH: u64 = 100;
    for _ in 0..EACH {
        drop(TcpStream::connect(b.local_addr()).await.unwrap());
        let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    }
    wait_until("every stranger refused", Duration::from_secs(20), || {
        let st = b.stats();
        st.handshakes_refused + st.connections_refused == 2 * EACH
    })
    .await;
    let warned = logs.text().lines().filter(|l| l.contains("WARN")).count() as u64;
    // At most three kinds (closed, bad magic, a full handshake table),
    // each warned ⌊log2 n⌋ + 1 times for its n.
    let bound = 3 * (u64::from((2 * EACH).ilog2()) + 1);
    assert!(
        (1..=bound).contains(&warned),
        "{warned} warnings for {} strangers:\n{}",
        2 * EACH,
        logs.text()
    );
    // Every HTTP request is warned or throttled; a connection closed
    // without a byte only when the handshake table was full (otherwise
    // it is a port probe, said at debug).
    let counted = warned + b.stats().warnings_throttled;
    assert!((EACH..=2 * EACH).contains(&counted), "{counted}");
}

/// Undecodable messages close their connection with one warning, not one
/// per frame already queued from it (a fuzzed connection logged 11), and
/// connections closed so are warned at the 1st, 2nd, 4th, ...
#[tokio::test(flavor = "current_thread")]
async fn undecodable_messages_are_warned_once_per_connection() {
    let (logs, _guard) = Logs::capture(tracing::Level::WARN);
    let b = node("b", "c").await;
    echo(&b);
    let mut frames = BytesMut::new();
    for _ in 0..10 {
        // Variant 9 of `Msg`: there is none.
        Header {
            channel: 1,
            kind: Kind::Tell,
        }
        .encode_frame(&[9, 0, 0], 1 << 20, &mut frames)
        .unwrap();
    }
    for _ in 0..3 {
        let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
        let mut out = hello_frame("c", &b);
        out.extend_from_slice(&frames);
        s.write_all(&out).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("closed by the acceptor");
    }
    assert!(b.stats().decode_errors >= 3, "{:?}", b.stats());
    let warned = logs
        .text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("undecodable message"))
        .count();
    // The 1st and 2nd connection closed so, not the 3rd.
    assert_eq!(warned, 2, "{}", logs.text());
}

/// A rejection's reason is the peer's text, which callers log: what would
/// split or colour a log line arrives escaped.
#[tokio::test]
async fn a_rejection_reason_arrives_escaped() {
    let a = node("a", "c").await;
    let ca = echo(&a);
    let fake_addr = fake_answering_one_ask(|corr| {
        let mut out = BytesMut::new();
        Header {
            channel: 1,
            kind: Kind::Reject { corr },
        }
        .encode_frame(b"no\nFORGED-LINE \x1b[31m", 1 << 20, &mut out)
        .unwrap();
        out
    })
    .await;
    match ping(&ca, &fake_addr, 1).await.unwrap_err() {
        AskError::Rejected { reason, .. } => {
            assert_eq!(reason, r"no\nFORGED-LINE \u{1b}[31m")
        }
        e => panic!("unexpected {e:?}"),
    }
}

/// A stranger that names another cluster on every connection is warned
/// of at the 1st, 2nd, 4th, ... such refusal, as one kind: the throttle
/// counts refusals by kind, not by the reason's text, which holds the
/// stranger's value (100 names were 100 warnings). The warnings still
/// say the name, escaped.
#[tokio::test(flavor = "current_thread")]
async fn a_stranger_varying_its_cluster_name_is_warned_log_n_times() {
    let (logs, _guard) = Logs::capture(tracing::Level::WARN);
    let b = node("b", "c").await;
    const N: u64 = 100;
    for i in 0..N {
        let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
        s.write_all(&hello_frame(&format!("other-{i}\n"), &b))
            .await
            .unwrap();
        let reason = mismatch_reason(reply_until_eof(&mut s).await);
        assert!(reason.contains(&format!(r#""other-{i}\n""#)), "{reason}");
    }
    assert_eq!(b.stats().handshakes_refused, N);
    let text = logs.text();
    let warned = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cluster name"))
        .count() as u64;
    assert_eq!(warned, u64::from(N.ilog2()) + 1, "{text}");
    assert_eq!(b.stats().warnings_throttled, N - warned);
    // The first is warned with the stranger's name, escaped.
    assert!(text.contains(r#"cluster name "other-0\n""#), "{text}");
    assert!(!text.contains("other-0\n"), "{text:?}");
}

/// A peer that closes its connection inside a frame lost the connection
/// (it gave up on this node while this node was stopped, and the rest of
/// the frame never came): logged at debug as a connection closed
/// mid-frame, not warned as a bad frame nor counted in `frame_errors`, on
/// an inbound connection and an outbound link alike. A resumed node
/// warned "bad frame ... connection closed inside a frame" for each.
/// A malformed frame (a length above the limit) is still warned.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_closed_mid_frame_is_lost_not_a_bad_frame() {
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    let warnings = || {
        logs.text()
            .lines()
            .filter(|l| l.contains("WARN"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let b = node("b", "c").await;
    echo(&b);
    let handshaken = || async {
        let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
        s.write_all(&hello_frame("c", &b)).await.unwrap();
        let mut buf = BytesMut::new();
        while FrameCodec::new(1 << 20).decode(&mut buf).unwrap().is_none() {
            assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        }
        s
    };
    // Inbound: a whole frame, then all but the last byte of one, then
    // the end of the stream.
    let mut s = handshaken().await;
    let mut frame = BytesMut::new();
    Header {
        channel: 1,
        kind: Kind::Tell,
    }
    .encode_frame(
        &postcard::to_allocvec(&Msg::Ping(1)).unwrap(),
        1 << 20,
        &mut frame,
    )
    .unwrap();
    let mut out = frame.clone();
    out.extend_from_slice(&frame[..frame.len() - 1]);
    s.write_all(&out).await.unwrap();
    s.shutdown().await.unwrap();
    wait_until(
        "b to see the connection end",
        Duration::from_secs(5),
        || logs.text().contains("inbound link down"),
    )
    .await;
    assert!(
        logs.text().contains("closed mid-frame"),
        "said at debug:\n{}",
        logs.text()
    );
    assert_eq!(b.stats().frames_received, 1);
    assert_eq!(b.stats().frame_errors, 0);
    assert_eq!(warnings(), Vec::<String>::new());

    // Outbound: the acceptor answers the ask with part of a reply and
    // closes.
    let a = node("a", "c").await;
    let ca = echo(&a);
    let fake_addr = fake_answering_one_ask(|corr| {
        let mut out = BytesMut::new();
        Header {
            channel: 1,
            kind: Kind::Reply { corr },
        }
        .encode_frame(
            &postcard::to_allocvec(&Msg::Pong(1)).unwrap(),
            1 << 20,
            &mut out,
        )
        .unwrap();
        out.truncate(out.len() - 1);
        out
    })
    .await;
    match ping(&ca, &fake_addr, 1).await.unwrap_err() {
        AskError::Unreachable { reason, .. } => {
            assert!(reason.contains("closed mid-frame"), "{reason}")
        }
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(a.stats().frame_errors, 0);
    assert_eq!(warnings(), Vec::<String>::new());

    // A length above the limit is malformed: warned.
    let mut s = handshaken().await;
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    wait_until("the frame error count", Duration::from_secs(5), || {
        b.stats().frame_errors == 1
    })
    .await;
    let warned = warnings();
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(warned[0].contains("bad frame"), "{warned:#?}");
}

/// A connection closed (or reset) before it sends a byte (a load
/// balancer's or an orchestrator's port probe) is not warned as a refused
/// handshake: 20 probes gave 5 warnings ("handshake refused ...
/// connection closed during the handshake") before, and probes closed
/// with a reset warned "connection reset by peer". A `Hello` cut short
/// still is.
#[tokio::test(flavor = "current_thread")]
async fn a_port_probe_is_not_warned_as_a_refused_handshake() {
    let (logs, _guard) = Logs::capture(tracing::Level::WARN);
    let b = node("b", "c").await;
    echo(&b);
    for _ in 0..20 {
        let s = TcpStream::connect(b.local_addr()).await.unwrap();
        drop(s);
    }
    // Some health checkers close with a reset (linger 0): the same.
    for _ in 0..20 {
        let s = TcpStream::connect(b.local_addr()).await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
    }
    wait_until("every probe counted", Duration::from_secs(5), || {
        b.stats().handshakes_refused == 40
    })
    .await;
    assert_eq!(logs.text(), "", "no warning for a probe");

    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    let hello = hello_frame("c", &b);
    s.write_all(&hello[..hello.len() / 2]).await.unwrap();
    drop(s);
    wait_until("the cut hello counted", Duration::from_secs(5), || {
        b.stats().handshakes_refused == 41
    })
    .await;
    let text = logs.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("handshake refused"), "{text}");
}
