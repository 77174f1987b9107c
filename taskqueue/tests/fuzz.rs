//! The fuzz target of the workspace's wire: every decoder a peer's bytes
//! reach, and the sans-IO handlers the decoded messages go to, fed with
//! arbitrary bytes and with structure-aware mutations of valid encodings
//! (RELIABILITY.md, "Hostile input").
//!
//! - transport: the frame reader and codec (a byte stream cut into
//!   arbitrary reads, as a socket delivers it), frame headers, and the
//!   handshake (`Hello`, `HelloReply`);
//! - membership: `Message` decoding, then a joined SWIM core handling the
//!   decoded messages and its timers;
//! - sharding: the region wire (`Wire`, `WireReply`) of every entity type
//!   of the task queue;
//! - taskqueue: the task, report and barrier messages and replies, then
//!   the entities' handlers on the decoded messages and states.
//!
//! Each property asserts: no panic; no allocation beyond the frame limit
//! (a counting allocator below measures the largest single allocation and
//! the peak of live bytes while a decoder runs); no hang (a watchdog
//! aborts the process, printing the input, when one case runs longer than
//! [`HANG_LIMIT`]; every loop that consumes input is checked to make
//! progress).
//!
//! It lives here because `taskqueue` is the one library crate that depends
//! on every crate whose wire it fuzzes and has `proptest`.
//!
//! Cases per property: `FUZZ_CASES` (default [`DEFAULT_CASES`], a few
//! seconds, so `cargo test --workspace` stays fast). `scripts/fuzz.sh
//! [cases]` runs the target with a budget; with `FUZZ_CASES=1000000` each
//! property runs a million cases. Inputs that once found a bug are kept
//! as plain `#[test]`s at the end of this file.

// The counting allocator implements `GlobalAlloc`, an unsafe trait; it only
// forwards to `System` and counts. Nothing else in this file is unsafe.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use membership::swim::{MemberState, Message, Swim, Update, WireLimits};
use membership::{Member, MemberId, MembershipConfig, RefuseReason};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sharding::wire::{Holding, Record, Wire, WireReply};
use sharding::{Context, Entity, Handled, RegionError};
use taskqueue::{
    BarrierEntity, BarrierMsg, BarrierReply, JobOutput, ReportEntity, ReportMsg, ReportReply,
    ShortDigest, TaskEntity, TaskMsg, TaskReply, TaskState, TaskStatus, ValidationError,
};
use tokio_util::codec::Decoder;
use transport::frame::{
    FrameCodec, FrameReader, Header, Kind, LENGTH_PREFIX_BYTES, READ_CHUNK_BYTES, frames_in,
};
use transport::handshake::{HANDSHAKE_MAX_FRAME_BYTES, Hello, HelloReply, MAGIC};
use transport::{FrameError, Lane, NodeId, PROTOCOL_VERSION, TransportConfig};

/// Cases per property when `FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 2_000;

/// A case running longer than this is a hang: the watchdog aborts.
const HANG_LIMIT: Duration = Duration::from_secs(30);

/// The frame limit of a default transport (8 MiB): what a peer may make a
/// node buffer for one frame, so what decoding one body may allocate.
fn default_frame_limit() -> usize {
    TransportConfig::default().max_frame_bytes
}

fn cases() -> u32 {
    match std::env::var("FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("FUZZ_CASES={v:?} is not a number of cases")),
        Err(_) => DEFAULT_CASES,
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        max_shrink_iters: 20_000,
        // Inputs that found a bug are kept as named tests at the end of
        // this file, not in a seed file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

thread_local! {
    /// Inputs that decoded as the type tried, on this thread (each
    /// property runs on a thread of its own): how deep the cases get.
    static DECODED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_decoded() {
    DECODED.with(|d| d.set(d.get() + 1));
}

/// Runs `test` on [`cases`] values of `strategy` (plus shrinking after a
/// failure), each under the watchdog, and prints how many cases ran, how
/// long they took and the slowest one. Panics with the minimal failing
/// input when a case fails.
fn fuzz<S>(name: &'static str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Clone + Send + 'static,
{
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let ran = std::cell::Cell::new(0u64);
    let slowest = std::cell::Cell::new(Duration::ZERO);
    let start = Instant::now();
    let result = runner.run(&strategy, |value| {
        let began = Instant::now();
        let r = watchdog::case(name, Box::new(value.clone()), || test(value));
        ran.set(ran.get() + 1);
        slowest.set(slowest.get().max(began.elapsed()));
        r
    });
    println!(
        "{name}: {} cases in {:.2?}, slowest case {:.2?}, {} inputs decoded",
        ran.get(),
        start.elapsed(),
        slowest.get(),
        DECODED.with(std::cell::Cell::get),
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

// ---------------------------------------------------------------------
// Allocation meter
// ---------------------------------------------------------------------

/// Counts, per thread, live heap bytes, their peak and the largest single
/// allocation, so a property can bound what one decode allocated.
mod meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn grew(size: usize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + size as isize;
            live.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }

    fn shrank(size: usize) {
        let _ = LIVE.try_with(|live| live.set(live.get() - size as isize));
    }

    // SAFETY: every method forwards to `System` with the caller's
    // arguments unchanged; the counting touches only const-initialized
    // thread-locals of plain integers (no allocation, no destructor).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded as is.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded as is.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded as is.
            unsafe { System.dealloc(ptr, layout) };
            shrank(layout.size());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded as is.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                shrank(layout.size());
                grew(new_size);
            }
            p
        }
    }

    /// What was allocated on this thread while a closure ran.
    #[derive(Debug, Clone, Copy)]
    pub struct Usage {
        /// The largest single allocation (or reallocation), in bytes.
        pub largest: usize,
        /// The most bytes live at once beyond those live at the start.
        pub peak: usize,
    }

    /// Runs `f` and measures its allocations on this thread.
    pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
        let start = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(start));
        LARGEST.with(|l| l.set(0));
        let r = f();
        let usage = Usage {
            largest: LARGEST.with(Cell::get),
            peak: (PEAK.with(Cell::get) - start).max(0) as usize,
        };
        (r, usage)
    }
}

#[global_allocator]
static ALLOC: meter::Counting = meter::Counting;

// ---------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------

/// Aborts the process when one case runs longer than [`HANG_LIMIT`],
/// printing the property and the input, so a hang fails the run with
/// something to replay instead of stalling it.
mod watchdog {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::thread::ThreadId;
    use std::time::Instant;

    struct Running {
        property: &'static str,
        since: Instant,
        input: Box<dyn std::fmt::Debug + Send>,
    }

    fn running() -> &'static Mutex<HashMap<ThreadId, Running>> {
        static RUNNING: OnceLock<Mutex<HashMap<ThreadId, Running>>> = OnceLock::new();
        RUNNING.get_or_init(|| {
            std::thread::spawn(|| {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    let map = running().lock().unwrap_or_else(|p| p.into_inner());
                    for r in map.values() {
                        if r.since.elapsed() > super::HANG_LIMIT {
                            eprintln!(
                                "fuzz: property {} hung for more than {:?} on input {:02x?}",
                                r.property,
                                super::HANG_LIMIT,
                                r.input
                            );
                            std::process::abort();
                        }
                    }
                }
            });
            Mutex::new(HashMap::new())
        })
    }

    /// Runs one case of `property` on `input` (shown if it hangs).
    pub fn case<R>(
        property: &'static str,
        input: Box<dyn std::fmt::Debug + Send>,
        f: impl FnOnce() -> R,
    ) -> R {
        let id = std::thread::current().id();
        let entry = Running {
            property,
            since: Instant::now(),
            input,
        };
        running()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry);
        // Unregisters even when the case panics (a failure proptest then
        // shrinks), so a finished case never looks hung.
        struct Done(ThreadId);
        impl Drop for Done {
            fn drop(&mut self) {
                running()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.0);
            }
        }
        let _done = Done(id);
        f()
    }
}

// ---------------------------------------------------------------------
// Structure-aware mutation
// ---------------------------------------------------------------------

/// One change to an encoding. Positions are taken modulo the length, so
/// any value applies to any input.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    /// A run of continuation bytes: a varint length or count claiming a
    /// huge value, or never ending.
    HugeVarint {
        at: usize,
        len: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u8),
        Just(1),
        Just(0x7f),
        Just(0x80),
        Just(0xff),
        any::<u8>()
    ];
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        3 => (any::<usize>(), interesting).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        1 => (any::<usize>(), vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        1 => (any::<usize>(), 1usize..11).prop_map(|(at, len)| Mutation::HugeVarint { at, len }),
    ]
}

fn apply(mut v: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let pos = |at: usize, len: usize| at % (len + 1);
        match m {
            Mutation::FlipBit { at, bit } if !v.is_empty() => {
                let i = at % v.len();
                v[i] ^= 1 << bit;
            }
            Mutation::SetByte { at, value } if !v.is_empty() => {
                let i = at % v.len();
                v[i] = *value;
            }
            Mutation::Insert { at, bytes } => {
                let i = pos(*at, v.len());
                v.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let i = pos(*at, v.len());
                let end = (i + len).min(v.len());
                v.drain(i..end);
            }
            Mutation::Truncate { at } => {
                let i = pos(*at, v.len());
                v.truncate(i);
            }
            Mutation::Duplicate { at, len } if !v.is_empty() => {
                let i = at % v.len();
                let end = (i + len).min(v.len());
                let copy = v[i..end].to_vec();
                v.splice(end..end, copy);
            }
            Mutation::HugeVarint { at, len } => {
                let i = pos(*at, v.len());
                v.splice(i..i, std::iter::repeat_n(0xff, *len));
            }
            _ => {}
        }
    }
    v
}

/// Bytes a hostile peer might send where a `T` is expected: mostly valid
/// encodings of generated values with a few mutations (so the decoder gets
/// deep before it fails), some raw noise.
fn hostile<T: Serialize + Debug + 'static>(
    valid: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Vec<u8>> {
    let encoded = valid
        .prop_map(|v| postcard::to_allocvec(&v).unwrap())
        .boxed();
    prop_oneof![
        1 => vec(any::<u8>(), 0..256),
        1 => encoded.clone(),
        5 => (encoded, vec(mutation(), 1..5)).prop_map(|(v, m)| apply(v, &m)),
    ]
    .boxed()
}

/// Decodes `bytes` as the transport's typed channels do
/// (`postcard::from_bytes`), measuring the allocations; checks they stay
/// within the frame limit and that a decoded value re-encodes to bytes
/// that decode again to the same encoding.
fn decode_bounded<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
) -> Result<Option<T>, TestCaseError> {
    let (decoded, usage) = meter::measure(|| postcard::from_bytes::<T>(bytes));
    let limit = default_frame_limit();
    prop_assert!(
        usage.largest <= limit && usage.peak <= limit,
        "decoding {} bytes as {} allocated {:?} (frame limit {limit})",
        bytes.len(),
        std::any::type_name::<T>(),
        usage
    );
    let Ok(value) = decoded else {
        return Ok(None);
    };
    count_decoded();
    let again = postcard::to_allocvec(&value).unwrap();
    let back: T = postcard::from_bytes(&again)
        .map_err(|e| TestCaseError::fail(format!("re-encoding does not decode: {e}")))?;
    prop_assert_eq!(&postcard::to_allocvec(&back).unwrap(), &again);
    Ok(Some(value))
}

// ---------------------------------------------------------------------
// transport: frames and handshake
// ---------------------------------------------------------------------

fn kind() -> impl Strategy<Value = Kind> {
    let corr = prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()];
    prop_oneof![
        Just(Kind::Tell),
        corr.clone().prop_map(|corr| Kind::Ask { corr }),
        corr.clone().prop_map(|corr| Kind::Reply { corr }),
        corr.prop_map(|corr| Kind::Reject { corr }),
    ]
}

/// One piece of a byte stream sent to a connection.
fn segment(limit: usize) -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        Just(limit as u32),
        Just(limit as u32 + 1),
        Just(u32::MAX),
        Just((limit as u32).saturating_sub(1)),
        any::<u32>(),
    ];
    prop_oneof![
        // A well-formed frame (header and body).
        4 => (any::<u8>(), kind(), vec(any::<u8>(), 0..600)).prop_map(move |(channel, kind, body)| {
            let mut buf = BytesMut::new();
            let header = Header { channel, kind };
            match header.encode_frame(&body, limit, &mut buf) {
                Ok(()) => buf.to_vec(),
                Err(_) => Vec::new(),
            }
        }),
        // A length prefix alone, maybe huge, then a little of its body.
        1 => (prefix, vec(any::<u8>(), 0..64)).prop_map(|(len, tail)| {
            let mut v = len.to_be_bytes().to_vec();
            v.extend(tail);
            v
        }),
        // Noise.
        1 => vec(any::<u8>(), 0..128),
    ]
}

fn frame_limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1024usize),
        Just(HANDSHAKE_MAX_FRAME_BYTES),
        Just(READ_CHUNK_BYTES - LENGTH_PREFIX_BYTES),
        Just(READ_CHUNK_BYTES),
        Just(1 << 20),
        Just(default_frame_limit()),
    ]
}

fn stream() -> impl Strategy<Value = (usize, Vec<u8>)> {
    frame_limit().prop_flat_map(|limit| {
        (
            Just(limit),
            (vec(segment(limit), 0..12), vec(mutation(), 0..4))
                .prop_map(|(segments, m)| apply(segments.concat(), &m)),
        )
    })
}

/// Feeds `stream` to a frame reader in reads of the sizes in `reads` (as a
/// connection's reader does: every complete frame handed on before the
/// next read) and decodes each frame's header. Returns why the connection
/// would close, if it would.
fn read_stream(
    limit: usize,
    stream: &[u8],
    reads: &[usize],
) -> Result<Option<FrameError>, TestCaseError> {
    // The reader never holds more than one maximal frame: a prefix above
    // the limit is refused before anything is reserved for it.
    let bound = LENGTH_PREFIX_BYTES + limit;
    let mut reader = FrameReader::new(limit);
    let mut rest = stream;
    let mut reads = reads.iter().cycle();
    let mut frames = 0usize;
    while !rest.is_empty() {
        let want = (*reads.next().unwrap_or(&1)).clamp(1, rest.len());
        let (n, usage) = meter::measure(|| reader.feed(&rest[..want]));
        prop_assert!(n >= 1, "a read of {want} bytes made no progress");
        prop_assert!(
            usage.largest <= bound,
            "feed allocated {usage:?}, limit {bound}"
        );
        rest = &rest[n..];
        loop {
            let (next, usage) = meter::measure(|| reader.next_frames());
            prop_assert!(
                usage.largest <= bound,
                "next_frames allocated {usage:?}, limit {bound}"
            );
            match next {
                Ok(Some(region)) => {
                    for range in frames_in(&region) {
                        frames += 1;
                        prop_assert!(range.len() <= limit);
                        if let Ok((_, used)) = Header::decode(&region[range.clone()]) {
                            prop_assert!(used <= range.len());
                            count_decoded();
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => return Ok(Some(e)),
            }
            prop_assert!(frames <= stream.len() / LENGTH_PREFIX_BYTES + 1);
        }
        prop_assert!(
            reader.capacity() <= bound,
            "reader capacity {} above {bound}",
            reader.capacity()
        );
    }
    Ok(None)
}

fn node_id() -> impl Strategy<Value = NodeId> {
    (
        prop_oneof![Just("node-1".to_owned()), ".{0,40}"],
        prop_oneof![Just("127.0.0.1:25520".to_owned()), ".{0,40}"],
        any::<u64>(),
    )
        .prop_map(|(name, addr, generation)| NodeId {
            name,
            addr,
            generation,
        })
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        prop_oneof![4 => Just(MAGIC), 1 => any::<[u8; 4]>()],
        prop_oneof![4 => Just(PROTOCOL_VERSION), 1 => any::<u16>()],
        prop_oneof![Just("casty".to_owned()), ".{0,24}"],
        node_id(),
        prop_oneof![Just(Lane::Control), Just(Lane::Bulk)],
        prop_oneof![Just(String::new()), ".{0,24}"],
    )
        .prop_map(|(magic, version, cluster, from, lane, settings)| Hello {
            magic,
            version,
            cluster,
            from,
            lane,
            settings,
        })
}

fn hello_reply() -> impl Strategy<Value = HelloReply> {
    prop_oneof![
        node_id().prop_map(|node| HelloReply::Accepted { node }),
        ".{0,80}".prop_map(|reason| HelloReply::Refused { reason }),
    ]
}

/// What strangers send to the cluster port.
fn stranger() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"GET / HTTP/1.1\r\nHost: node-1\r\n\r\n".to_vec()),
        // The start of a TLS 1.2 ClientHello record.
        Just(vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03
        ]),
        Just(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        vec(any::<u8>(), 0..64),
    ]
}

/// Arbitrary and mutated frame streams, cut into arbitrary reads, through
/// the frame reader and the header decoder.
#[test]
fn fuzz_frame_reader() {
    fuzz(
        "fuzz_frame_reader",
        (stream(), vec(1usize..70_000, 1..8)),
        |((limit, stream), reads)| read_stream(limit, &stream, &reads).map(|_| ()),
    );
}

/// The tokio-util codec on the same streams: frames come out until the
/// first error, the buffer never grows past one maximal frame.
#[test]
fn fuzz_frame_codec() {
    fuzz(
        "fuzz_frame_codec",
        (stream(), any::<bool>()),
        |((limit, stream), eof)| {
            let bound = READ_CHUNK_BYTES
                .max(LENGTH_PREFIX_BYTES + limit)
                .max(stream.len());
            let mut codec = FrameCodec::new(limit);
            let mut src = BytesMut::from(&stream[..]);
            let mut frames = 0usize;
            loop {
                let (r, usage) = meter::measure(|| {
                    if eof {
                        codec.decode_eof(&mut src)
                    } else {
                        codec.decode(&mut src)
                    }
                });
                prop_assert!(
                    usage.largest <= bound,
                    "decode allocated {usage:?}, limit {bound}"
                );
                match r {
                    Ok(Some(frame)) => {
                        frames += 1;
                        prop_assert!(frame.len() <= limit);
                        prop_assert!(frames <= stream.len() / LENGTH_PREFIX_BYTES + 1);
                        if Header::decode_frame(frame.freeze()).is_ok() {
                            count_decoded();
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(src.capacity() <= bound);
            Ok(())
        },
    );
}

/// Handshake bodies (hostile `Hello`s, answers, strangers' first bytes)
/// through the acceptor's and the dialer's decoders, then as the first
/// bytes of a connection read with the handshake's 16 KiB limit.
#[test]
fn fuzz_handshake() {
    let body = prop_oneof![hostile(hello()), hostile(hello_reply()), stranger()];
    fuzz(
        "fuzz_handshake",
        (body, any::<bool>(), vec(1usize..600, 1..4)),
        |(body, framed, reads)| {
            let limit = HANDSHAKE_MAX_FRAME_BYTES;
            let (_, usage) = meter::measure(|| {
                if let Ok(hello) = Hello::decode(&body) {
                    count_decoded();
                    let _ = hello.check("casty", "");
                }
                if HelloReply::decode(&body).is_ok() {
                    count_decoded();
                }
            });
            prop_assert!(
                usage.largest <= limit && usage.peak <= limit,
                "handshake decode allocated {usage:?}"
            );
            // Framed as a handshake, or raw (a stranger's first bytes).
            let mut stream = Vec::new();
            if framed {
                stream.extend((body.len() as u32).to_be_bytes());
            }
            stream.extend(&body);
            read_stream(limit, &stream, &reads).map(|_| ())
        },
    );
}

// ---------------------------------------------------------------------
// membership: Message decoding and the SWIM core
// ---------------------------------------------------------------------

const LOCAL: (&str, &str, u64) = ("local", "10.0.0.1:25520", 100);
const NAMES: [&str; 5] = ["local", "n1", "n2", "n3", "n4"];

fn member_id() -> impl Strategy<Value = MemberId> {
    let name = prop_oneof![
        8 => prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned),
        1 => ".{0,8}",
        1 => Just("x".repeat(membership::swim::MAX_NAME_BYTES + 1)),
    ];
    let addr = prop_oneof![
        8 => (1u8..6).prop_map(|i| format!("10.0.0.{i}:25520")),
        1 => Just(String::new()),
        1 => ".{0,12}",
    ];
    let generation = prop_oneof![
        Just(LOCAL.2),
        Just(LOCAL.2 + 1),
        Just(1u64),
        Just(u64::MAX),
        any::<u64>()
    ];
    (name, addr, generation).prop_map(|(n, a, g)| MemberId::new(n, a, g))
}

fn incarnation() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4, Just(u64::MAX - 1), Just(u64::MAX), any::<u64>()]
}

fn update() -> impl Strategy<Value = Update> {
    (
        member_id(),
        incarnation(),
        prop_oneof![
            Just(MemberState::Alive),
            Just(MemberState::Suspect),
            Just(MemberState::Dead),
            Just(MemberState::Left)
        ],
        vec(any::<u8>(), 0..8),
        prop::option::of(prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned)),
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

fn swim_message() -> impl Strategy<Value = Message> {
    let updates = || vec(update(), 0..6);
    let seq = prop_oneof![0u64..8, any::<u64>()];
    let buckets = prop_oneof![vec(any::<u64>(), 0..4), vec(any::<u64>(), 16..17)];
    prop_oneof![
        (member_id(), seq.clone(), updates()).prop_map(|(from, seq, updates)| Message::Ping {
            from,
            seq,
            updates
        }),
        (member_id(), seq.clone(), updates()).prop_map(|(from, seq, updates)| Message::Ack {
            from,
            seq,
            updates
        }),
        (member_id(), seq.clone(), member_id(), updates()).prop_map(
            |(from, seq, target, updates)| Message::PingReq {
                from,
                seq,
                target,
                updates
            }
        ),
        (member_id(), seq).prop_map(|(from, seq)| Message::Nack { from, seq }),
        (member_id(), updates()).prop_map(|(from, updates)| Message::Gossip { from, updates }),
        (member_id(), ".{0,20}", any::<u64>())
            .prop_map(|(from, to, digest)| Message::SyncRequest { from, to, digest }),
        (member_id(), buckets.clone())
            .prop_map(|(from, buckets)| Message::SyncBuckets { from, buckets }),
        (member_id(), buckets, updates(), any::<bool>()).prop_map(
            |(from, buckets, state, reply)| Message::Sync {
                from,
                buckets,
                state,
                reply
            }
        ),
        (
            member_id(),
            ".{0,20}",
            incarnation(),
            vec(any::<u8>(), 0..8)
        )
            .prop_map(|(from, seed, incarnation, metadata)| Message::Join {
                from,
                seed,
                incarnation,
                metadata
            }),
        (member_id(), updates()).prop_map(|(from, state)| Message::JoinAck { from, state }),
        (
            member_id(),
            prop_oneof![
                member_id().prop_map(|existing| RefuseReason::DuplicateName { existing }),
                any::<u64>().prop_map(|current| RefuseReason::StaleGeneration { current }),
                any::<u64>().prop_map(|max_members| RefuseReason::ClusterFull { max_members }),
            ]
        )
            .prop_map(|(from, reason)| Message::JoinRefused { from, reason }),
    ]
}

/// A core that formed a cluster and took in members n1..n4.
fn joined_core(now: Instant) -> Swim {
    let config = MembershipConfig::default();
    let mut core = Swim::new(
        MemberId::new(LOCAL.0, LOCAL.1, LOCAL.2),
        Vec::new(),
        config,
        7,
    )
    .expect("the default config and a short name are valid");
    core.join(now, Vec::new());
    for (i, name) in NAMES.iter().enumerate().skip(1) {
        let from = MemberId::new(*name, format!("10.0.0.{}:25520", i + 1), 1);
        core.handle_message(
            now,
            &from.addr.clone(),
            Message::Join {
                seed: LOCAL.1.to_owned(),
                from,
                incarnation: 0,
                metadata: Vec::new(),
            },
        );
    }
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
    core
}

/// Drains the core's outputs, checking every message it would send is one
/// its peers accept.
fn drain_core(core: &mut Swim, limits: &WireLimits) -> Result<(), TestCaseError> {
    let mut outputs = 0usize;
    while let Some(t) = core.poll_transmit() {
        outputs += 1;
        prop_assert!(outputs < 100_000, "the core keeps producing messages");
        if let Err(e) = t.msg.validate(limits) {
            return Err(TestCaseError::fail(format!(
                "after hostile input the core sends an invalid {} to {}: {e}",
                t.msg.kind(),
                t.to_addr
            )));
        }
        prop_assert!(t.msg.encoded_len() <= default_frame_limit());
    }
    while core.poll_event().is_some() {
        outputs += 1;
        prop_assert!(outputs < 100_000, "the core keeps producing events");
    }
    Ok(())
}

/// Hostile bytes decoded as membership messages (both decoders the crate
/// offers) and handed to a joined SWIM core, with time moving on and its
/// timers firing between messages.
#[test]
fn fuzz_membership() {
    let steps = vec((hostile(swim_message()), 0u64..3_000), 1..6);
    fuzz("fuzz_membership", steps, |steps| {
        let start = Instant::now();
        let mut now = start;
        let mut core = joined_core(now);
        let config = MembershipConfig::default();
        let limits = WireLimits {
            max_metadata_bytes: config.max_metadata_bytes,
            max_updates: config.max_piggyback_updates,
            max_state_entries: config.max_members.saturating_add(2),
        };
        for (bytes, advance_ms) in &steps {
            let strict = Message::decode(bytes).ok();
            let msg = decode_bounded::<Message>(bytes)?;
            if let Some(m) = &strict {
                prop_assert_eq!(Some(m), msg.as_ref());
            }
            if let Some(msg) = msg {
                let from = msg.from().addr.clone();
                core.handle_message(now, &from, msg);
                drain_core(&mut core, &limits)?;
            }
            now += Duration::from_millis(*advance_ms);
            let mut fired = 0;
            while core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now);
                drain_core(&mut core, &limits)?;
                fired += 1;
                prop_assert!(fired < 1_000, "a timer does not move past now");
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------
// sharding and taskqueue: the region wire, the entities' messages
// ---------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("job-node-1-7".to_owned()),
        Just("node-1".to_owned()),
        ".{0,24}"
    ]
}

fn iterations() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..4, Just(u32::MAX), any::<u32>()]
}

fn hex16() -> impl Strategy<Value = String> {
    prop_oneof![any::<u64>().prop_map(|v| format!("{v:016x}")), ".{0,20}"]
}

fn task_msg() -> impl Strategy<Value = TaskMsg> {
    prop_oneof![
        (text(), iterations()).prop_map(|(payload, iterations)| TaskMsg::Submit {
            payload,
            iterations
        }),
        Just(TaskMsg::Get),
        Just(TaskMsg::WaitResult),
        (hex16(), text()).prop_map(|(result, processed_by)| TaskMsg::Completed {
            result,
            processed_by
        }),
        (text(), iterations()).prop_map(|(payload, iterations)| TaskMsg::SubmitAndWait {
            payload,
            iterations
        }),
        (text(), iterations(), any::<[u8; 8]>(), text()).prop_map(
            |(payload, iterations, result, by)| TaskMsg::Computed(JobOutput::new(
                &payload,
                iterations,
                ShortDigest(result),
                &by
            ))
        ),
    ]
}

/// A submit that creates a task (under a non-empty id).
fn task_submit() -> impl Strategy<Value = TaskMsg> {
    (text(), prop_oneof![1u32..4, Just(u32::MAX), 1u32..]).prop_map(|(payload, iterations)| {
        TaskMsg::Submit {
            payload,
            iterations,
        }
    })
}

/// A node's report, which creates the report entity.
fn report_submit() -> impl Strategy<Value = ReportMsg> {
    (
        text(),
        prop::collection::btree_map(text(), any::<u64>(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(node, distribution, total)| ReportMsg::Report {
            node,
            distribution,
            total,
        })
}

fn task_state() -> impl Strategy<Value = TaskState> {
    prop_oneof![Just(TaskState::Pending), Just(TaskState::Completed)]
}

fn validation_error() -> impl Strategy<Value = ValidationError> {
    prop_oneof![
        Just(ValidationError::EmptyTaskId),
        (any::<u64>(), any::<u64>()).prop_map(|(len_bytes, max_bytes)| {
            ValidationError::TaskIdTooLong {
                len_bytes,
                max_bytes,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(len_bytes, max_bytes)| {
            ValidationError::PayloadTooLarge {
                len_bytes,
                max_bytes,
            }
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(iterations, max)| {
            ValidationError::IterationsOutOfRange { iterations, max }
        }),
    ]
}

fn task_reply() -> impl Strategy<Value = TaskReply> {
    prop_oneof![
        Just(TaskReply::Accepted),
        (
            text(),
            task_state(),
            prop::option::of(hex16()),
            prop::option::of(text())
        )
            .prop_map(
                |(id, status, result, processed_by)| TaskReply::Status(TaskStatus {
                    id,
                    status,
                    result,
                    processed_by
                })
            ),
        Just(TaskReply::NotFound),
        task_state().prop_map(|existing| TaskReply::Conflict { existing }),
        validation_error().prop_map(TaskReply::Invalid),
    ]
}

fn report_msg() -> impl Strategy<Value = ReportMsg> {
    prop_oneof![
        (
            text(),
            prop::collection::btree_map(text(), any::<u64>(), 0..4),
            any::<u64>()
        )
            .prop_map(|(node, distribution, total)| ReportMsg::Report {
                node,
                distribution,
                total
            }),
        Just(ReportMsg::FinalReport),
        any::<u32>().prop_map(|n| ReportMsg::WaitForReports { n }),
        vec(text(), 0..4).prop_map(|members| ReportMsg::WaitForReportsFrom { members }),
    ]
}

fn report_reply() -> impl Strategy<Value = ReportReply> {
    prop_oneof![
        any::<u32>().prop_map(|nodes_reported| ReportReply::Recorded { nodes_reported }),
        vec(report_msg(), 0..4).prop_map(|msgs| {
            let mut state = None;
            for m in msgs {
                let _ = ReportEntity::handle(&mut Context::new("n"), "run", &mut state, m);
            }
            ReportReply::Final(state.map(|r| r.merged()).unwrap_or_default())
        }),
    ]
}

fn barrier_msg() -> impl Strategy<Value = BarrierMsg> {
    prop_oneof![
        (text(), prop_oneof![0u32..4, any::<u32>()])
            .prop_map(|(node, n)| BarrierMsg::Arrive { node, n }),
        (text(), vec(text(), 0..4))
            .prop_map(|(node, members)| BarrierMsg::ArriveAmong { node, members }),
    ]
}

fn barrier_reply() -> impl Strategy<Value = BarrierReply> {
    any::<u32>().prop_map(|arrived| BarrierReply::Released { arrived })
}

/// Entity states reached through their own handlers (the only way to
/// build them), from a few generated messages.
fn entity<E: Entity + Debug>(
    create: impl Strategy<Value = E::Msg> + 'static,
    msg: impl Strategy<Value = E::Msg> + 'static,
) -> BoxedStrategy<E>
where
    E::Msg: Debug,
{
    (create, vec(msg, 0..3))
        .prop_filter_map("no state", |(first, more)| {
            let mut state = None;
            let msgs = std::iter::once(first).chain(more);
            let mut ctx = Context::new("node-1");
            for m in msgs {
                let _ = E::handle(&mut ctx, "id-1", &mut state, m);
            }
            // Jobs are not run here: a submit may ask for u32::MAX iterations.
            drop(ctx.take_jobs());
            state
        })
        .boxed()
}

fn region_error() -> impl Strategy<Value = RegionError> {
    prop_oneof![
        (text(), any::<u64>())
            .prop_map(|(entity, timeout_ms)| RegionError::Timeout { entity, timeout_ms }),
        (text(), text()).prop_map(|(node, reason)| RegionError::Unreachable { node, reason }),
        text().prop_map(|node| RegionError::Dropped { node }),
        any::<u32>().prop_map(|shard| RegionError::NoOwner { shard }),
        any::<u8>().prop_map(|hops| RegionError::TooManyHops { hops }),
        (any::<u32>(), text())
            .prop_map(|(shard, reason)| RegionError::ReplicationFailed { shard, reason }),
        any::<u32>().prop_map(|shard| RegionError::Moved { shard }),
    ]
}

fn record<E: Entity + Debug>(state: BoxedStrategy<E>) -> BoxedStrategy<Record<E>> {
    (
        text(),
        prop_oneof![0u64..4, any::<u64>()],
        prop_oneof![0u64..4, any::<u64>()],
        // `None`: a tombstone (the entity removed at `version`).
        prop::option::of(state),
        // `Some`: a state a reset restored from that confirmed version.
        prop::option::of(prop_oneof![0u64..4, any::<u64>()]),
    )
        .prop_map(|(id, version, stamp, state, restored_from)| Record {
            id,
            version,
            stamp,
            state,
            restored_from,
        })
        .boxed()
}

fn wire<E: Entity + Debug>(
    msg: impl Strategy<Value = E::Msg> + 'static,
    state: BoxedStrategy<E>,
) -> impl Strategy<Value = Wire<E>>
where
    E::Msg: Debug,
{
    let msg = msg.boxed();
    prop_oneof![
        (text(), msg.clone(), any::<u8>(), any::<u64>()).prop_map(|(id, msg, hops, timeout_ms)| {
            Wire::Deliver {
                id,
                msg,
                hops,
                timeout_ms,
            }
        }),
        (any::<u32>(), record(state.clone()))
            .prop_map(|(shard, record)| Wire::Replicate { shard, record }),
        (any::<u32>(), prop::option::of(text()))
            .prop_map(|(shard, after)| Wire::Fetch { shard, after }),
        (any::<u32>(), vec(record(state.clone()), 0..3))
            .prop_map(|(shard, records)| Wire::Sync { shard, records }),
        vec((any::<u32>(), record(state.clone())), 0..3)
            .prop_map(|records| Wire::ReplicateBatch { records }),
        (any::<u32>(), vec(record(state), 0..3))
            .prop_map(|(shard, records)| Wire::HandOver { shard, records }),
        (vec((text(), msg), 0..3), any::<u8>(), any::<u64>()).prop_map(
            |(items, hops, timeout_ms)| Wire::DeliverBatch {
                items,
                hops,
                timeout_ms,
            }
        ),
    ]
}

fn wire_reply<E: Entity + Debug>(
    reply: impl Strategy<Value = E::Reply> + 'static,
    state: BoxedStrategy<E>,
) -> impl Strategy<Value = WireReply<E>>
where
    E::Reply: Debug,
{
    let reply = reply.boxed();
    prop_oneof![
        reply.clone().prop_map(WireReply::Reply),
        Just(()).prop_map(|()| WireReply::Ack),
        (vec(record(state), 0..3), any::<bool>())
            .prop_map(|(records, more)| WireReply::Page { records, more }),
        region_error().prop_map(WireReply::Error),
        vec(
            prop_oneof![reply.prop_map(Ok), region_error().prop_map(Err)],
            0..3
        )
        .prop_map(WireReply::Replies),
        vec(
            prop_oneof![
                Just(Holding::Held),
                Just(Holding::Other),
                Just(Holding::Newer)
            ],
            0..3
        )
        .prop_map(WireReply::Holding),
    ]
}

/// Runs a message through entity `E`'s handler as the owner's region would,
/// running the jobs it queues when they are cheap (a handful of SHA-256
/// iterations) and feeding their output back.
fn handle<E: Entity>(id: &str, state: &mut Option<E>, msg: E::Msg, run_jobs: bool) {
    let mut ctx = Context::new("node-1");
    let mut queue = vec![msg];
    let mut steps = 0;
    while let Some(msg) = queue.pop() {
        steps += 1;
        assert!(steps < 100, "jobs keep queueing jobs");
        match E::handle(&mut ctx, id, state, msg) {
            Handled::Reply(_) | Handled::Wait => {}
        }
        let jobs = ctx.take_jobs();
        if run_jobs {
            queue.extend(jobs.into_iter().map(|job| job.run()));
        }
    }
}

/// Whether a submit's job is cheap enough to run in a fuzz case.
fn cheap(msg: &TaskMsg) -> bool {
    !matches!(msg, TaskMsg::Submit { iterations, .. } | TaskMsg::SubmitAndWait { iterations, .. } if *iterations > 16)
}

/// Decodes `bytes` as the region wire of entity `E` and applies what a
/// region applies: messages through the handler, records as states (an
/// activated record restarts its work, not run here).
fn region_wire<E: Entity>(
    bytes: &[u8],
    cheap: impl Fn(&E::Msg) -> bool,
) -> Result<(), TestCaseError> {
    let _ = decode_bounded::<WireReply<E>>(bytes)?;
    let Some(wire) = decode_bounded::<Wire<E>>(bytes)? else {
        return Ok(());
    };
    match wire {
        Wire::Deliver { id, msg, .. } => {
            let run = cheap(&msg);
            handle::<E>(&id, &mut None, msg, run);
        }
        Wire::Replicate { record, .. } => activate(record),
        Wire::Sync { records, .. } | Wire::HandOver { records, .. } => {
            records.into_iter().for_each(activate)
        }
        Wire::ReplicateBatch { records } => records.into_iter().for_each(|(_, r)| activate(r)),
        Wire::DeliverBatch { items, .. } => {
            for (id, msg) in items {
                let run = cheap(&msg);
                handle::<E>(&id, &mut None, msg, run);
            }
        }
        Wire::Fetch { .. } => {}
    }
    Ok(())
}

fn activate<E: Entity>(mut record: Record<E>) {
    let mut ctx = Context::new("node-1");
    if let Some(state) = record.state.as_mut() {
        state.on_activate(&mut ctx, &record.id);
    }
    drop(ctx.take_jobs());
}

/// The region wire of the task entity: decode, then apply.
#[test]
fn fuzz_sharding_task_wire() {
    let bytes = prop_oneof![
        hostile(wire::<TaskEntity>(
            task_msg(),
            entity::<TaskEntity>(task_submit(), task_msg())
        )),
        hostile(wire_reply::<TaskEntity>(
            task_reply(),
            entity::<TaskEntity>(task_submit(), task_msg())
        )),
    ];
    fuzz("fuzz_sharding_task_wire", bytes, |bytes| {
        region_wire::<TaskEntity>(&bytes, cheap)
    });
}

/// The region wire of the report and barrier entities.
#[test]
fn fuzz_sharding_report_and_barrier_wire() {
    let bytes = prop_oneof![
        hostile(wire::<ReportEntity>(
            report_msg(),
            entity::<ReportEntity>(report_submit(), report_msg())
        )),
        hostile(wire_reply::<ReportEntity>(
            report_reply(),
            entity::<ReportEntity>(report_submit(), report_msg())
        )),
        hostile(wire::<BarrierEntity>(
            barrier_msg(),
            entity::<BarrierEntity>(barrier_msg(), barrier_msg())
        )),
        hostile(wire_reply::<BarrierEntity>(
            barrier_reply(),
            entity::<BarrierEntity>(barrier_msg(), barrier_msg())
        )),
    ];
    fuzz("fuzz_sharding_report_and_barrier_wire", bytes, |bytes| {
        region_wire::<ReportEntity>(&bytes, |_| true)?;
        region_wire::<BarrierEntity>(&bytes, |_| true)
    });
}

/// The task queue's messages and replies decoded alone, and a sequence of
/// decoded messages through each entity's handler on one state.
#[test]
fn fuzz_taskqueue_messages() {
    let step = prop_oneof![
        hostile(task_msg()),
        hostile(task_reply()),
        hostile(report_msg()),
        hostile(report_reply()),
        hostile(barrier_msg()),
        hostile(barrier_reply()),
        hostile(entity::<TaskEntity>(task_submit(), task_msg())),
    ];
    fuzz("fuzz_taskqueue_messages", vec(step, 1..6), |steps| {
        let mut task: Option<TaskEntity> = None;
        let mut report: Option<ReportEntity> = None;
        let mut barrier: Option<BarrierEntity> = None;
        for bytes in &steps {
            let _ = decode_bounded::<TaskReply>(bytes)?;
            let _ = decode_bounded::<ReportReply>(bytes)?;
            let _ = decode_bounded::<BarrierReply>(bytes)?;
            if let Some(state) = decode_bounded::<TaskEntity>(bytes)? {
                task = Some(state);
            }
            if let Some(msg) = decode_bounded::<TaskMsg>(bytes)? {
                let run = cheap(&msg);
                handle(&"t".repeat(bytes.len() % 3), &mut task, msg, run);
            }
            if let Some(msg) = decode_bounded::<ReportMsg>(bytes)? {
                handle("run", &mut report, msg, true);
            }
            if let Some(msg) = decode_bounded::<BarrierMsg>(bytes)? {
                handle("start", &mut barrier, msg, true);
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------
// Fixed inputs: the shapes the properties are built around, and inputs
// that found a bug.
// ---------------------------------------------------------------------

/// Found by `fuzz_membership`: a peer's ping piggybacking "local is
/// suspect at incarnation u64::MAX" makes the core compute
/// `u64::MAX + 1` when it refutes (membership/src/swim/protocol/merge.rs,
/// `apply_about_self`): a panic with overflow checks (the membership
/// driver task dies), a wrap to incarnation 0 without them (the refutation
/// loses to the accusation, and the node is declared dead for good).
/// The bytes are the message as a peer sends it.
#[test]
fn refuting_a_suspicion_at_the_largest_incarnation_does_not_panic() {
    let now = Instant::now();
    let mut core = joined_core(now);
    let ping = Message::Ping {
        from: MemberId::new("n1", "10.0.0.2:25520", 1),
        seq: 1,
        updates: vec![Update {
            member: Member {
                id: MemberId::new(LOCAL.0, LOCAL.1, LOCAL.2),
                incarnation: u64::MAX,
                state: MemberState::Suspect,
                metadata: Vec::new(),
            },
            accuser: Some("n1".to_owned()),
        }],
    };
    let bytes = postcard::to_allocvec(&ping).unwrap();
    assert_eq!(
        bytes,
        [
            0, 2, 110, 49, 14, 49, 48, 46, 48, 46, 48, 46, 50, 58, 50, 53, 53, 50, 48, 1, 1, 1, 5,
            108, 111, 99, 97, 108, 14, 49, 48, 46, 48, 46, 48, 46, 49, 58, 50, 53, 53, 50, 48, 100,
            255, 255, 255, 255, 255, 255, 255, 255, 255, 1, 1, 0, 1, 2, 110, 49
        ]
    );
    let msg: Message = postcard::from_bytes(&bytes).unwrap();
    core.handle_message(now, "10.0.0.2:25520", msg);
    // Whatever the core decides (refuse the update, or refute without
    // overflowing), it must keep running and stay alive in its own view.
    assert_eq!(core.status(), membership::Status::Joined);
    assert_eq!(core.local().state, MemberState::Alive);
    assert_eq!(
        ping.validate(&WireLimits {
            max_metadata_bytes: 1024,
            max_updates: 64,
            max_state_entries: 64,
        }),
        Err(membership::InvalidMessage::IncarnationTooLarge {
            incarnation: u64::MAX,
            max: membership::swim::MAX_INCARNATION,
        })
    );
}

/// A length prefix of 4 GiB - 1 is refused before anything is reserved.
#[test]
fn huge_length_prefix_allocates_nothing() {
    let stream = [0xff, 0xff, 0xff, 0xff, 0, 0, 0];
    let (r, usage) = meter::measure(|| read_stream(1024, &stream, &[7]));
    assert!(matches!(r, Ok(Some(FrameError::TooLarge { .. }))));
    assert!(usage.largest <= 1024 + LENGTH_PREFIX_BYTES, "{usage:?}");
}

/// A membership message claiming 2^32 updates decodes to an error without
/// reserving for them beyond the frame limit.
#[test]
fn huge_sequence_count_is_bounded() {
    let mut bytes = postcard::to_allocvec(&Message::Gossip {
        from: MemberId::new("n1", "10.0.0.2:25520", 1),
        updates: Vec::new(),
    })
    .unwrap();
    // Replace the empty count (last byte) with a 5-byte varint of 2^32 - 1.
    bytes.pop();
    bytes.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    let (r, usage) = meter::measure(|| postcard::from_bytes::<Message>(&bytes));
    assert!(r.is_err());
    assert!(usage.peak <= default_frame_limit(), "{usage:?}");
}

/// The harness itself: the meter sees an allocation above the frame limit
/// (so the properties' bounds can fail).
#[test]
fn the_meter_sees_an_allocation_above_the_frame_limit() {
    let big = default_frame_limit() + 1;
    let (v, usage) = meter::measure(|| vec![1u8; big]);
    assert_eq!(v.len(), big);
    assert!(usage.largest >= big && usage.peak >= big, "{usage:?}");
    drop(v);
    let (_, usage) = meter::measure(|| Vec::<u8>::with_capacity(16));
    assert!(usage.largest < 1024 && usage.peak < 1024, "{usage:?}");
}
