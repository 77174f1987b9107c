//! Throughput and ask latency of the transport, each beside a raw tokio TCP
//! baseline measured in the same run on the same runtime (2 worker threads).
//!
//! - one way: 64-byte typed messages, `Channel::send` in one task and
//!   `Inbox::recv` in another, against length-prefixed 64-byte frames
//!   written 512 per `write_all` on a bare `TcpStream` and parsed by a bare
//!   reader; also the same typed frames received as `()`, which is the
//!   transport's own cost without the message's decoding;
//! - round trip: `Channel::ask` on the control lane, against a ping-pong of
//!   one 64-byte frame on a bare `TcpStream`.
//!
//! Rounds of the transport and of the baselines alternate (round trips in
//! blocks of 1,000), so load from other processes on the machine hits both
//! alike; the figures to judge are the ratios.
//!
//! Run: `cargo bench -p transport --bench throughput` (about a minute);
//! `-- --test` is a short smoke run that only checks it works. For
//! profiling: `BENCH_ONLY=raw|typed|unit|rtt`, `BENCH_MSGS=n`,
//! `BENCH_ROUNDS=n`, `BENCH_WORKERS=n`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use transport::{Channel, Inbox, Lane, LocalNode, Transport, TransportConfig};

/// Size of the raw baseline's frame body, in bytes.
const FRAME_BYTES: usize = 64;
/// Raw frames per `write_all` in the one-way baseline.
const RAW_BATCH_FRAMES: usize = 512;

/// The typed message, shaped like the task queue's traffic: a sequence
/// number, a shard id and a task key. postcard encodes a `Data` here in 62
/// bytes (tag 1, `seq` 3, `shard` 3, key length 1, key 54); with the
/// transport's 2-byte header the frame body is 64 bytes, like the raw frames
/// (`run` checks it).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Msg {
    Data(Body),
    Ping(Body),
    Pong(Body),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Body {
    seq: u64,
    shard: u16,
    key: String,
}

struct Sizes {
    one_way_msgs: u64,
    rounds: usize,
    rtt_samples: usize,
    rtt_block: usize,
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    let mut sizes = if smoke {
        Sizes {
            one_way_msgs: 20_000,
            rounds: 1,
            rtt_samples: 400,
            rtt_block: 100,
        }
    } else {
        Sizes {
            one_way_msgs: 2_000_000,
            rounds: 5,
            rtt_samples: 100_000,
            rtt_block: 1_000,
        }
    };
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = env("BENCH_MSGS") {
        sizes.one_way_msgs = n;
    }
    if let Some(n) = env("BENCH_ROUNDS") {
        sizes.rounds = n as usize;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env("BENCH_WORKERS").unwrap_or(2) as usize)
        .enable_all()
        .build()
        .expect("runtime");
    // Run on a worker thread, as an application task would, not on the
    // main thread that `block_on` parks.
    rt.block_on(async move { tokio::spawn(run(sizes, smoke)).await })
        .expect("bench task");
}

async fn node(name: &str) -> Transport {
    Transport::bind(
        LocalNode {
            cluster: "bench".into(),
            settings: String::new(),
            name: name.into(),
            generation: 1,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig::default(),
        CancellationToken::new(),
    )
    .await
    .expect("bind")
}

async fn run(sizes: Sizes, smoke: bool) {
    // Frame body = 2-byte header + message: 64 bytes, like the raw frames.
    let len = postcard::to_allocvec(&data(1_000_000)).unwrap().len();
    assert_eq!(2 + len, FRAME_BYTES, "typed frame size");
    let a = node("a").await;
    let b = node("b").await;
    let (bulk_a, _inbox_a) = Channel::<Msg>::register(&a, 1, Lane::Bulk).unwrap();
    let (_bulk_b, mut inbox_b) = Channel::<Msg>::register(&b, 1, Lane::Bulk).unwrap();
    let (ctl_a, _ctl_inbox_a) = Channel::<Msg>::register(&a, 2, Lane::Control).unwrap();
    let (_ctl_b, mut ctl_inbox_b) = Channel::<Msg>::register(&b, 2, Lane::Control).unwrap();
    // The same frames, received as `()`: the transport without the
    // message's own decoding.
    let (unit_a, _unit_inbox_a) = Channel::<Msg>::register(&a, 3, Lane::Bulk).unwrap();
    let (_unit_b, mut unit_inbox_b) = Channel::<()>::register(&b, 3, Lane::Bulk).unwrap();
    let b_addr = b.identity().addr.clone();

    // The ask server on b: answers every Ping with a Pong.
    tokio::spawn(async move {
        while let Some(r) = ctl_inbox_b.recv().await {
            if let (Msg::Ping(body), Some(resp)) = (r.msg, r.responder) {
                let _ = resp.reply_msg(&Msg::Pong(body));
            }
        }
    });
    // The raw echo server.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = echo.accept().await {
            tokio::spawn(raw_echo(s));
        }
    });

    // Warm the links up (dial, handshake) outside the timed parts.
    let _: Msg = ctl_a
        .ask(&b_addr, &ping(0), Duration::from_secs(5))
        .await
        .unwrap();
    bulk_a.send(&b_addr, &data(0)).await.unwrap();
    inbox_b.recv().await.unwrap();
    unit_a.send(&b_addr, &data(0)).await.unwrap();
    unit_inbox_b.recv().await.unwrap();

    println!(
        "transport bench: {} messages one way x {} rounds, {} round trips, 2 worker threads",
        sizes.one_way_msgs, sizes.rounds, sizes.rtt_samples
    );
    // `BENCH_ONLY=raw|typed|unit|rtt` narrows the run, for profiling.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name;

    // One way: rounds of the three alternate.
    let n = sizes.one_way_msgs;
    let (mut raw, mut typed, mut unit) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        if part("raw") {
            raw.push(raw_one_way(n).await);
        }
        if part("typed") {
            typed.push(
                one_way(&bulk_a, &mut inbox_b, &b_addr, n, |m, seq| {
                    assert!(matches!(m, Msg::Data(b) if b.seq == seq), "out of order");
                })
                .await,
            );
        }
        if part("unit") {
            unit.push(one_way(&unit_a, &mut unit_inbox_b, &b_addr, n, |_, _| {}).await);
        }
    }
    let raw = median(&mut raw);
    let typed = median(&mut typed);
    let unit = median(&mut unit);
    if !raw.is_nan() {
        println!("one way, raw TCP, 64 B frames in batches  : {raw:>10.0} frames/s");
    }
    if !typed.is_nan() {
        println!(
            "one way, Channel::send -> Inbox::recv      : {typed:>10.0} msgs/s  {:.2} of raw  {}",
            typed / raw,
            verdict(typed >= 2_000_000.0 && typed / raw >= 0.3),
        );
    }
    if !unit.is_nan() {
        println!(
            "  same frames received as () (no decoding) : {unit:>10.0} msgs/s  {:.2} of raw",
            unit / raw
        );
    }

    // Round trips, interleaved in blocks.
    if part("rtt") {
        let mut raw_rtt = Vec::with_capacity(sizes.rtt_samples);
        let mut ask_rtt = Vec::with_capacity(sizes.rtt_samples);
        let mut s = TcpStream::connect(echo_addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut seq = 0u64;
        while raw_rtt.len() < sizes.rtt_samples {
            for _ in 0..sizes.rtt_block {
                raw_rtt.push(raw_round_trip(&mut s).await);
            }
            for _ in 0..sizes.rtt_block {
                seq += 1;
                let msg = ping(seq);
                let t = Instant::now();
                let r: Msg = ctl_a
                    .ask(&b_addr, &msg, Duration::from_secs(5))
                    .await
                    .unwrap();
                ask_rtt.push(t.elapsed());
                assert!(matches!(r, Msg::Pong(b) if b.seq == seq));
            }
        }
        let raw = Percentiles::of(&mut raw_rtt);
        let ask = Percentiles::of(&mut ask_rtt);
        println!("round trip, raw TCP ping-pong of one frame : {raw}");
        println!("round trip, Channel::ask on the control lane: {ask}");
        println!(
            "  ratios: p50 {:.2} {}, p99 {:.2} {}",
            ask.p50 / raw.p50,
            verdict(ask.p50 / raw.p50 <= 2.0),
            ask.p99 / raw.p99,
            verdict(ask.p99 / raw.p99 <= 1.5),
        );
    }
    let stats = a.stats();
    assert_eq!(stats.dropped_on_link_failure, 0);
    if smoke {
        println!("(smoke run: figures are not meaningful)");
    }
    a.shutdown().await;
    b.shutdown().await;
}

fn verdict(met: bool) -> &'static str {
    if met { "(goal met)" } else { "(goal missed)" }
}

fn body(seq: u64) -> Body {
    Body {
        seq,
        shard: 40_000,
        key: "task-7f3e9a2c-41d8-4b6f-9c1e-0a5d3b8e6f21/attempt-0001".into(),
    }
}

fn data(seq: u64) -> Msg {
    Msg::Data(body(seq))
}

fn ping(seq: u64) -> Msg {
    Msg::Ping(body(seq))
}

/// Sends `n` messages with `Channel::send` from a task of their own and
/// receives them in this one; returns messages per second from the first
/// send until the last message was received (decoded as `R`, checked).
async fn one_way<R: DeserializeOwned>(
    ch: &Channel<Msg>,
    inbox: &mut Inbox<R>,
    peer: &str,
    n: u64,
    check: impl Fn(&R, u64),
) -> f64 {
    let start = Instant::now();
    let sender = {
        let ch = ch.clone();
        let peer = peer.to_owned();
        tokio::spawn(async move {
            let mut msg = data(0);
            for seq in 1..=n {
                if let Msg::Data(b) = &mut msg {
                    b.seq = seq;
                }
                ch.send(&peer, &msg).await.unwrap();
            }
        })
    };
    for seq in 1..=n {
        let r = inbox.recv().await.unwrap();
        check(&r.msg, seq);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    sender.await.unwrap();
    rate
}

/// Writes `n` length-prefixed frames in batches over a fresh connection and
/// returns frames per second, until the reader has parsed the last one.
async fn raw_one_way(n: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::with_capacity(256 * 1024);
        let mut seen = 0u64;
        while seen < n {
            if s.read_buf(&mut buf).await.unwrap() == 0 {
                panic!("raw writer closed early");
            }
            while buf.len() >= 4 {
                let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                buf.advance(4);
                let frame = buf.split_to(len);
                std::hint::black_box(frame);
                seen += 1;
            }
            buf.reserve(64 * 1024);
        }
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let start = Instant::now();
    let mut buf = BytesMut::with_capacity(RAW_BATCH_FRAMES * (4 + FRAME_BYTES));
    let body = [0xabu8; FRAME_BYTES];
    let mut sent = 0u64;
    while sent < n {
        buf.clear();
        let k = (n - sent).min(RAW_BATCH_FRAMES as u64);
        for _ in 0..k {
            buf.put_u32(FRAME_BYTES as u32);
            buf.put_slice(&body);
        }
        s.write_all(&buf).await.unwrap();
        sent += k;
    }
    reader.await.unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

async fn raw_echo(mut s: TcpStream) {
    s.set_nodelay(true).unwrap();
    let mut frame = [0u8; 4 + FRAME_BYTES];
    while s.read_exact(&mut frame).await.is_ok() {
        if s.write_all(&frame).await.is_err() {
            return;
        }
    }
}

async fn raw_round_trip(s: &mut TcpStream) -> Duration {
    let mut frame = [0xabu8; 4 + FRAME_BYTES];
    frame[..4].copy_from_slice(&(FRAME_BYTES as u32).to_be_bytes());
    let t = Instant::now();
    s.write_all(&frame).await.unwrap();
    s.read_exact(&mut frame).await.unwrap();
    t.elapsed()
}

/// The median; NaN for no samples.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Round-trip percentiles, in µs.
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
}

impl Percentiles {
    fn of(v: &mut [Duration]) -> Percentiles {
        v.sort();
        let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:>6.1} µs  p90 {:>6.1} µs  p99 {:>7.1} µs  p99.9 {:>8.1} µs",
            self.p50, self.p90, self.p99, self.p999
        )
    }
}
