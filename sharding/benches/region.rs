//! Region figures across two processes on loopback: ask latency to a remote
//! entity (p50/p99; a read, and a write replicated with R = 2) and tell
//! throughput to remote entities with R = 2, beside a raw tokio TCP
//! round trip (one 64-byte frame ping-pong) measured in the same run.
//!
//! `cargo bench -p sharding --bench region` prints the figures;
//! `-- --test` runs a short version (CI). The bench starts itself a second
//! time as the server process (`REGION_BENCH_SERVE=1`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sharding::{Context, Entity, Handled, MemberMap, Region, RegionConfig, WorkerPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, NodeId, Transport, TransportConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counter(u64);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Msg {
    Add(u64),
    Get,
}

impl Entity for Counter {
    type Msg = Msg;
    type Reply = u64;
    const TYPE_NAME: &'static str = "bench-counter";

    fn handle(_: &mut Context<Msg>, _: &str, state: &mut Option<Self>, msg: Msg) -> Handled<u64> {
        match msg {
            Msg::Add(n) => {
                let c = state.get_or_insert(Counter(0));
                c.0 += n;
                Handled::Reply(c.0)
            }
            Msg::Get => Handled::Reply(state.as_ref().map_or(0, |c| c.0)),
        }
    }
}

fn id_line(id: &NodeId) -> String {
    format!("{} {} {}", id.name, id.addr, id.generation)
}

fn parse_id(line: &str) -> Option<NodeId> {
    let mut parts = line.split_whitespace();
    Some(NodeId {
        name: parts.next()?.to_owned(),
        addr: parts.next()?.to_owned(),
        generation: parts.next()?.parse().ok()?,
    })
}

async fn transport(name: &str, stop: &CancellationToken) -> Transport {
    Transport::bind(
        LocalNode {
            cluster: "region-bench".into(),
            settings: String::new(),
            name: name.into(),
            generation: 1,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig::default(),
        stop.clone(),
    )
    .await
    .expect("bind on loopback")
}

fn config() -> RegionConfig {
    let mut c = RegionConfig::default();
    c.mailbox.capacity = 100_000;
    c
}

/// The server process: a region and a raw echo listener; prints both
/// addresses, reads the client's identity, serves until stdin closes.
async fn serve() {
    let stop = CancellationToken::new();
    let t = transport("server", &stop).await;
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let echo_addr = echo.local_addr().expect("echo addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; 68];
                while s.read_exact(&mut buf).await.is_ok() {
                    if s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    println!("{}", id_line(t.identity()));
    println!("{echo_addr}");
    let (tx, rx) = watch::channel(MemberMap::new());
    let _region =
        Region::start::<Counter>(&t, 30, config(), rx, WorkerPool::new(1, 0), stop.clone())
            .expect("region");
    let stdin = std::io::stdin();
    let mut line = String::new();
    let client = tokio::task::spawn_blocking(move || {
        stdin.lock().read_line(&mut line).ok()?;
        parse_id(&line)
    })
    .await
    .ok()
    .flatten()
    .expect("client identity on stdin");
    let me = t.identity().clone();
    tx.send_replace(MemberMap::from([
        (me.name.clone(), me),
        (client.name.clone(), client),
    ]));
    // Serve until the client closes stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut rest = String::new();
        let _ = std::io::stdin().lock().read_line(&mut rest);
    })
    .await;
    stop.cancel();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn client(quick: bool) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env("REGION_BENCH_SERVE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("server identity");
    let server = parse_id(&line).expect("server identity line");
    line.clear();
    out.read_line(&mut line).expect("echo address");
    let echo_addr = line.trim().to_owned();

    let stop = CancellationToken::new();
    let t = transport("client", &stop).await;
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{}", id_line(t.identity())).expect("send identity");
    let me = t.identity().clone();
    let (_tx, rx) = watch::channel(MemberMap::from([
        (me.name.clone(), me),
        (server.name.clone(), server.clone()),
    ]));
    let region =
        Region::start::<Counter>(&t, 30, config(), rx, WorkerPool::new(1, 0), stop.clone())
            .expect("region");
    let deadline = Instant::now() + Duration::from_secs(10);
    while region.routing().members.len() < 2 {
        assert!(Instant::now() < deadline, "the region never saw its view");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let routing = region.routing();
    let remote: Vec<String> = (0..100_000)
        .map(|i| format!("c{i}"))
        .filter(|id| routing.owner_of(id).map(|n| n.name.as_str()) == Some("server"))
        .take(1000)
        .collect();
    let timeout = Duration::from_secs(10);
    // Wait until the server has its view too (it fetched its shards).
    let deadline = Instant::now() + Duration::from_secs(10);
    while region.ask(&remote[0], Msg::Get, timeout).await.is_err() {
        assert!(Instant::now() < deadline, "server never answered");
    }

    let rounds = if quick { 200 } else { 20_000 };
    // Raw baseline: 64-byte frames (4-byte prefix) ping-pong.
    let mut s = tokio::net::TcpStream::connect(&echo_addr)
        .await
        .expect("echo");
    s.set_nodelay(true).expect("nodelay");
    let mut raw = Vec::with_capacity(rounds);
    let mut buf = [7u8; 68];
    for _ in 0..rounds {
        let t0 = Instant::now();
        s.write_all(&buf).await.expect("write");
        s.read_exact(&mut buf).await.expect("read");
        raw.push(t0.elapsed());
    }
    raw.sort();
    let mut reads = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let id = &remote[i % remote.len()];
        let t0 = Instant::now();
        region.ask(id, Msg::Get, timeout).await.expect("remote get");
        reads.push(t0.elapsed());
    }
    reads.sort();
    let mut writes = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let id = &remote[i % remote.len()];
        let t0 = Instant::now();
        region
            .ask(id, Msg::Add(1), timeout)
            .await
            .expect("remote add");
        writes.push(t0.elapsed());
    }
    writes.sort();
    // Tells: Add(1) to remote entities, R = 2, until all applied.
    let tells = if quick { 2_000 } else { 500_000 };
    let mut before: BTreeMap<&str, u64> = BTreeMap::new();
    for id in &remote {
        before.insert(id, region.ask(id, Msg::Get, timeout).await.expect("get"));
    }
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut i = 0usize;
    while sent < tells {
        let id = &remote[i % remote.len()];
        match region.tell(id, Msg::Add(1)) {
            Ok(()) => {
                sent += 1;
                i += 1;
            }
            Err(_) => tokio::task::yield_now().await,
        }
    }
    // All applied: the counters grew by `tells` in total.
    loop {
        let mut now = 0u64;
        for id in &remote {
            now += region.ask(id, Msg::Get, timeout).await.expect("get") - before[id.as_str()];
        }
        if now >= tells {
            assert_eq!(now, tells, "more increments than tells");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let tell_secs = t0.elapsed().as_secs_f64();
    drop(stdin);
    let _ = child.wait();
    stop.cancel();

    let (raw50, raw99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let (r50, r99) = (percentile(&reads, 0.5), percentile(&reads, 0.99));
    let (w50, w99) = (percentile(&writes, 0.5), percentile(&writes, 0.99));
    println!("region bench: two processes on loopback, {rounds} asks each, {tells} tells");
    println!("| figure | p50 µs | p99 µs | p50 / raw p50 | p99 / raw p99 |");
    println!("|---|---|---|---|---|");
    println!(
        "| raw TCP round trip (64 B) | {:.1} | {:.1} | 1.00 | 1.00 |",
        us(raw50),
        us(raw99)
    );
    println!(
        "| ask, remote read | {:.1} | {:.1} | {:.2} | {:.2} |",
        us(r50),
        us(r99),
        us(r50) / us(raw50),
        us(r99) / us(raw99)
    );
    println!(
        "| ask, remote write (R = 2) | {:.1} | {:.1} | {:.2} | {:.2} |",
        us(w50),
        us(w99),
        us(w50) / us(raw50),
        us(w99) / us(raw99)
    );
    println!(
        "tells to remote entities (R = 2): {:.0} /s ({tells} in {tell_secs:.3} s, all applied)",
        tells as f64 / tell_secs
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::var_os("REGION_BENCH_SERVE").is_some() {
        runtime.block_on(serve());
    } else {
        let quick = std::env::args().any(|a| a == "--test");
        runtime.block_on(client(quick));
    }
}
