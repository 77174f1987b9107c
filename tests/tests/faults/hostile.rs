//! Hostile input on the cluster port (issue 8, "Hostile input").

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use casty_tests::{LostWriteChecker, serial, wait_until};

use crate::{assert_exits_0, observe_log, spawn, spawn_addr};

/// Idle connections opened at once (`FAULTS_IDLE` overrides; the issue's
/// full size is 1000).
fn idle_count() -> usize {
    std::env::var("FAULTS_IDLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

/// A minimal TLS 1.2 ClientHello record (no extensions).
const CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0x2f, // record: handshake, TLS 1.0, 47 bytes
    0x01, 0x00, 0x00, 0x2b, // ClientHello, 43 bytes
    0x03, 0x03, // TLS 1.2
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,   // random
    0x00, // session id length
    0x00, 0x02, 0x13, 0x01, // one cipher suite
    0x01, 0x00, // null compression
];

/// Sends `bytes` (maybe none) and waits for the node to close the
/// connection (end of file or reset), at most `within`. Returns how long
/// that took, or `None` if the connection was still open.
fn closed_after(addr: SocketAddr, bytes: &[u8], within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    if !bytes.is_empty() {
        // The node may close before reading it all: a write error is fine.
        let _ = s.write_all(bytes);
    }
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            // A refusal message before the close is fine.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

/// Random bytes, an HTTP request, a TLS ClientHello, a half-open
/// connection (connects, sends nothing) and many idle connections at once
/// against a node's port: each is closed by the node within its handshake
/// deadline, each kind is warned (at the 1st, 2nd, 4th, ... connection of
/// the kind, not once per connection), and the node then completes a
/// normal run with a second node (every result right, exit 0).
#[test]
fn hostile_input_is_refused_and_the_node_keeps_serving() {
    let _heavy = serial();
    let within = Duration::from_secs(10);
    let (mut a, addr) = spawn_addr("a", &["--nodes", "2", "--tasks", "100"]);

    // Deterministic "random" bytes (xorshift64, fixed seed).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let http = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n";
    for (what, bytes) in [
        ("random bytes", noise.as_slice()),
        ("an HTTP request", http.as_slice()),
        ("a TLS ClientHello", CLIENT_HELLO),
        ("a half-open connection", &[][..]),
    ] {
        let took = closed_after(addr, bytes, within);
        eprintln!("{what}: closed after {took:?}");
        assert!(took.is_some(), "{what}: still open after {within:?}");
    }

    // Many idle connections at once: every one is closed (refused over the
    // handshake cap, or timed out) within the deadline.
    let n = idle_count();
    let start = Instant::now();
    let mut idle: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut closed = 0;
    for s in &mut idle {
        let left =
            (start + within + Duration::from_secs(5)).saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(_) => {
                    closed += 1;
                    break;
                }
            }
        }
    }
    eprintln!(
        "{closed} of {n} idle connections closed by the node within {:.1}s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(closed, n, "idle connections still open");
    drop(idle);

    // Each kind of refusal is warned, at the 1st, 2nd, 4th, ... connection
    // of its kind (a flood of bad connections must not flood the log): the
    // bad magic of the random bytes, the HTTP request and the TLS record,
    // the half-open and idle connections' timeouts, and the idle ones over
    // the handshake cap. A connection is closed before its refusal line
    // reaches our reader thread: give the log a moment to catch up.
    let refusals = || -> Vec<String> {
        a.stderr()
            .snapshot()
            .into_iter()
            .filter(|l| {
                l.contains("WARN")
                    && (l.contains("handshake refused") || l.contains("refusing connection"))
            })
            .collect()
    };
    let kinds = ["bad magic bytes", "no handshake within"];
    let warned = |lines: &[String]| kinds.iter().all(|k| lines.iter().any(|l| l.contains(k)));
    wait_until(Instant::now() + Duration::from_secs(10), || {
        warned(&refusals())
    });
    let lines = refusals();
    assert!(
        warned(&lines),
        "each kind of hostile connection is warned: {lines:#?}"
    );
    // Three kinds (bad magic, timeout, over the cap), each warned at most
    // log2(count) + 1 times.
    let most = 3 * ((n + 4).ilog2() as usize + 1);
    assert!(
        lines.len() <= most,
        "{} refusal warnings for {} connections, more than {most}: {lines:#?}",
        lines.len(),
        n + 4
    );

    // The node still serves: a normal run with a second node.
    let mut b = spawn(
        "b",
        &[
            "--nodes",
            "2",
            "--tasks",
            "100",
            "--seed",
            &addr.to_string(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_exits_0(&mut a, deadline);
    assert_exits_0(&mut b, deadline);
    let mut checker = LostWriteChecker::new();
    for node in ["a", "b"] {
        for i in 0..100 {
            let id = format!("job-{node}-{i}");
            checker.acknowledged(&id, format!("doc-{id}").as_bytes(), 500);
        }
    }
    assert_eq!(observe_log(&mut checker, &a), 100);
    assert_eq!(observe_log(&mut checker, &b), 100);
    checker.assert_no_lost_writes();
}
