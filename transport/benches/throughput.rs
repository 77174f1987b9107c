//! Throughput and ask latency of the transport, each beside a raw tokio TCP
//! baseline measured in the same run on the same runtime.
//!
//! - one way: ~64-byte typed messages with `Channel::send`, against
//!   length-prefixed 64-byte frames written in batches on a bare `TcpStream`;
//! - round trip: `Channel::ask` on the control lane, against a ping-pong of
//!   one 64-byte frame on a bare `TcpStream`.
//!
//! Rounds of the transport and of the baseline alternate, so load from other
//! processes on the machine hits both alike; the figures to judge are the
//! ratios.
//!
//! Run: `cargo bench -p transport --bench throughput`
//! (`-- --test` for a short smoke run that only checks it works).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use transport::{Channel, Lane, LocalNode, Transport, TransportConfig};

/// Size of the raw baseline's frame body, in bytes.
const FRAME_BYTES: usize = 64;
/// Raw frames per `write_all` in the one-way baseline.
const RAW_BATCH_FRAMES: usize = 512;

/// The typed message, shaped like the task queue's traffic: a sequence
/// number, a shard id, a 128-bit task id and a 256-bit digest, no heap
/// data. postcard encodes a `Data` here in 62 bytes (tag 1, `seq` 3,
/// `shard` 3, `task` 2 × 9, `digest` 10 + 3 × 9 varint bytes); with the
/// transport's 2-byte header the frame body is 64 bytes, like the raw
/// frames (`main` checks it).
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
    task: [u64; 2],
    digest: [u64; 4],
}

struct Sizes {
    one_way_msgs: u64,
    rounds: usize,
    rtt_samples: usize,
    rtt_block: usize,
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    let sizes = if smoke {
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::env::var("BENCH_WORKERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2),
        )
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

    println!(
        "transport throughput bench: {} msgs one way x {} rounds, {} round trips",
        sizes.one_way_msgs, sizes.rounds, sizes.rtt_samples
    );

    // One way. `BENCH_ONLY=typed|raw|rtt|micro` narrows the run for profiling.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only == "micro" {
        micro();
        return;
    }
    let mut raw_rates = Vec::new();
    let mut typed_rates = Vec::new();
    for _ in 0..sizes.rounds {
        if only.is_empty() || only == "raw" {
            raw_rates.push(raw_one_way(sizes.one_way_msgs).await);
        }
        if only.is_empty() || only == "typed" {
            typed_rates
                .push(typed_one_way(&bulk_a, &mut inbox_b, &b_addr, sizes.one_way_msgs).await);
        }
    }
    if !only.is_empty() && only != "rtt" {
        println!("raw {raw_rates:?}\ntyped {typed_rates:?}");
        return;
    }
    if only == "rtt" {
        raw_rates.push(1.0);
        typed_rates.push(1.0);
    }
    let raw = median(&mut raw_rates);
    let typed = median(&mut typed_rates);
    println!(
        "one way, raw tcp 64 B frames : {:>12.0} frames/s (median of {})",
        raw, sizes.rounds
    );
    println!(
        "one way, Channel::send 64 B  : {:>12.0} msgs/s   (median of {})  ratio {:.2} (goal >= 2,000,000 and >= 0.30)",
        typed,
        sizes.rounds,
        typed / raw
    );

    // Round trips, interleaved in blocks.
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
    if only == "rtt" {
        for (name, v) in [("raw", &mut raw_rtt), ("ask", &mut ask_rtt)] {
            v.sort();
            let at = |q: f64| micros(v[((v.len() as f64 * q) as usize).min(v.len() - 1)]);
            println!(
                "{name}: p50 {:.1} p90 {:.1} p95 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} µs",
                at(0.5),
                at(0.9),
                at(0.95),
                at(0.99),
                at(0.999),
                at(1.0)
            );
        }
    }
    let (raw50, raw99) = percentiles(&mut raw_rtt);
    let (ask50, ask99) = percentiles(&mut ask_rtt);
    println!(
        "round trip, raw tcp ping-pong: p50 {:>8.1} µs  p99 {:>8.1} µs",
        micros(raw50),
        micros(raw99)
    );
    println!(
        "round trip, Channel::ask     : p50 {:>8.1} µs  p99 {:>8.1} µs  ratios p50 {:.2} (goal <= 2.0)  p99 {:.2} (goal <= 1.5)",
        micros(ask50),
        micros(ask99),
        micros(ask50) / micros(raw50),
        micros(ask99) / micros(raw99)
    );
    let stats = a.stats();
    assert_eq!(stats.dropped_on_link_failure, 0);
    if smoke {
        println!("smoke run: figures are not meaningful");
    }
    a.shutdown().await;
    b.shutdown().await;
}

fn body(seq: u64) -> Body {
    Body {
        seq,
        shard: 40_000,
        task: [0x0123_4567_89ab_cdef, 0x0fed_cba9_8765_4321],
        digest: [
            0x8000_0000_0000_0001,
            0x1111_2222_3333_4444,
            0x5555_6666_7777_0888,
            0x0999_aaaa_bbbb_cccc,
        ],
    }
}

fn data(seq: u64) -> Msg {
    Msg::Data(body(seq))
}

fn ping(seq: u64) -> Msg {
    Msg::Ping(body(seq))
}

/// Sends `n` messages with `Channel::send` and returns messages per second,
/// from the first send until the last message was received and decoded.
async fn typed_one_way(
    ch: &Channel<Msg>,
    inbox: &mut transport::Inbox<Msg>,
    peer: &str,
    n: u64,
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
    let mut expect = 1;
    while expect <= n {
        let r = inbox.recv().await.unwrap();
        match r.msg {
            Msg::Data(b) => {
                assert_eq!(b.seq, expect, "out of order");
                expect += 1;
            }
            m => panic!("unexpected {m:?}"),
        }
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

/// Single-threaded costs of the pieces of one message, for profiling.
fn micro() {
    let n = 5_000_000u64;
    let msg = data(1_000_000);
    let t = Instant::now();
    let mut buf = Vec::with_capacity(128);
    for i in 0..n {
        buf.clear();
        let m = std::hint::black_box(&msg);
        buf = postcard::to_extend(m, buf).unwrap();
        std::hint::black_box((&buf, i));
    }
    println!("encode: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let m: Msg = postcard::from_bytes(std::hint::black_box(&buf)).unwrap();
        std::hint::black_box(m);
    }
    println!("decode: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
    let id = transport::NodeId {
        name: "node-a".into(),
        addr: "127.0.0.1:40000".into(),
        generation: 1,
    };
    let t = Instant::now();
    for _ in 0..n {
        let c = std::hint::black_box(&id).clone();
        std::hint::black_box(c);
    }
    println!(
        "NodeId clone+drop: {:.1} ns",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
