//! Figures for `taskqueue/README.md` (a plain `main`, `harness = false`).
//!
//! 1. Memory: 1,000,000 completed tasks with ids `job-node-1-<i>`, each
//!    built through the entity's handler (submit, then the job's result),
//!    held in a `HashMap<String, TaskEntity>`, and (in another run) the way
//!    `sharding`'s region holds them: per shard a `sharding::EntityMap` from
//!    id to state, version, stamp and acknowledged version. Bytes per task = RSS growth /
//!    tasks, read from `/proc/self/status`; each layout is measured in a
//!    fresh child process of this bench.
//! 2. Speed: per-task cost of 500-iteration tasks, single-threaded and on
//!    every core, for
//!    - `raw`: a plain SHA-256 loop through the `sha2` `Digest` API (the
//!      baseline),
//!    - `compute`: `taskqueue::work::compute`,
//!    - `entity`: the whole task path without the region: submit through
//!      `TaskEntity::handle`, run the queued job, deliver its result.
//!
//!    Rounds alternate the three so drift on a shared machine hits each
//!    alike; the medians and the ratio `raw time / entity time` (the
//!    entity's throughput as a fraction of the raw loop's) are printed.
//!
//! The bench runs with node-cli's global allocator (mimalloc, built
//! without transparent huge pages), so the memory figure is a node's.
//!
//! `cargo bench -p taskqueue --bench hash` for the figures;
//! `-- --test` runs a small, quick version (CI keeps it running).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Instant;

use sha2::{Digest, Sha256};
use sharding::{Context, Entity, EntityMap};
use taskqueue::{TaskEntity, TaskMsg, work};

/// The allocator node-cli runs with (see `node-cli/src/main.rs`), so the
/// figures stand for a node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ITERATIONS: u32 = 500;

/// One measured path: a task's payload in, its 8 result bytes out.
type TaskFn = fn(&str) -> [u8; 8];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(layout) = args.iter().find_map(|a| a.strip_prefix("--memory-child=")) {
        let tasks = args
            .iter()
            .find_map(|a| a.strip_prefix("--tasks="))
            .unwrap()
            .parse()
            .unwrap();
        memory(layout, tasks);
        return;
    }
    let quick = args.iter().any(|a| a == "--test");
    let tasks: u64 = if quick { 20_000 } else { 1_000_000 };
    // Each memory figure in a fresh process, so one's freed blocks do not
    // hide the other's growth.
    for layout in ["hashmap", "region"] {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .arg(format!("--memory-child={layout}"))
            .arg(format!("--tasks={tasks}"))
            .status()
            .unwrap();
        assert!(status.success(), "memory child {layout} failed");
    }
    speed(quick);
}

/// The resident set size in bytes (`VmRSS` of `/proc/self/status`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A completed task built through the handler: submit, then a result
/// delivered as the job's output would be. The hash itself is not what is
/// measured here: the job is dropped and a cheap, distinct result
/// delivered in its place.
fn completed_task(ctx: &mut Context<TaskMsg>, id: &str, i: u64) -> TaskEntity {
    let mut state = None;
    TaskEntity::handle(
        ctx,
        id,
        &mut state,
        TaskMsg::Submit {
            payload: format!("payload-{i}"),
            iterations: ITERATIONS,
        },
    );
    drop(ctx.take_jobs());
    let result = work::compute(id.as_bytes(), NonZeroU32::MIN).to_hex();
    TaskEntity::handle(
        ctx,
        id,
        &mut state,
        TaskMsg::Completed {
            result,
            processed_by: "node-1".into(),
        },
    );
    state.unwrap()
}

/// The shape of an entity in `sharding`'s region: state, version, the stamp
/// of the owner life that numbered it, and the version the replicas
/// confirmed.
#[allow(dead_code)] // only its size matters
struct RegionEntry {
    state: TaskEntity,
    version: u64,
    stamp: u64,
    acked: u64,
}

/// The region's default shard count (`[defaults.sharding] num_shards`).
const NUM_SHARDS: u32 = 50;

/// Builds `tasks` completed tasks held in `layout` and prints the RSS growth:
/// `hashmap` is one `HashMap<String, TaskEntity>`; `region` is what
/// `sharding`'s region holds, one `sharding::EntityMap<RegionEntry>` per
/// shard (the region's own map type).
fn memory(layout: &str, tasks: u64) {
    let before = rss_bytes();
    let mut ctx = Context::new("node-1");
    let shards = NonZeroU32::new(NUM_SHARDS).unwrap();
    let mut map: HashMap<String, TaskEntity> = HashMap::new();
    let mut region: Vec<EntityMap<RegionEntry>> =
        (0..NUM_SHARDS).map(|_| EntityMap::new()).collect();
    for i in 0..tasks {
        let id = format!("job-node-1-{i}");
        let task = completed_task(&mut ctx, &id, i);
        if layout == "hashmap" {
            map.insert(id, task);
        } else {
            let shard = sharding::shard_id(&id, shards).index();
            let entry = RegionEntry {
                state: task,
                version: 2,
                stamp: sharding::wire::life_stamp("node-1", 1),
                acked: 2,
            };
            region[shard].insert(id, entry);
        }
    }
    let after = rss_bytes();
    let (map, region) = black_box((map, region));
    let held = map.len() + region.iter().map(EntityMap::len).sum::<usize>();
    assert_eq!(held as u64, tasks);
    let grown = after.saturating_sub(before);
    let what = if layout == "hashmap" {
        "one HashMap<String, TaskEntity>"
    } else {
        "50 EntityMap<{TaskEntity, version, stamp, acked}> (the region's map)"
    };
    // The goal is for 1,000,000 tasks held; a quick run's figure carries
    // the allocator's fixed costs over fewer tasks.
    let goal = if tasks >= 1_000_000 {
        "goal <= 200"
    } else {
        "quick run: the goal of <= 200 is for 1,000,000 tasks"
    };
    println!(
        "memory: {tasks} completed tasks in {what}: RSS +{:.1} MiB = {:.0} bytes/task ({goal})",
        grown as f64 / (1024.0 * 1024.0),
        grown as f64 / tasks as f64,
    );
    if layout == "hashmap" {
        let sample = map.get("job-node-1-0").unwrap();
        println!(
            "memory: size_of TaskEntity {} bytes; replicated (postcard) state {} bytes/task plus the id",
            std::mem::size_of::<TaskEntity>(),
            postcard::to_allocvec(sample).unwrap().len(),
        );
    }
}

/// The baseline: SHA-256 applied 500 times through the `Digest` API.
fn raw(payload: &str) -> [u8; 8] {
    let mut digest: [u8; 32] = Sha256::digest(payload.as_bytes()).into();
    for _ in 1..ITERATIONS {
        digest = Sha256::digest(digest).into();
    }
    let mut short = [0u8; 8];
    short.copy_from_slice(&digest[..8]);
    short
}

/// The crate's computation alone.
fn compute(payload: &str) -> [u8; 8] {
    work::compute(payload.as_bytes(), NonZeroU32::new(ITERATIONS).unwrap()).0
}

/// The whole task path on one node without the region: submit, the queued
/// job, its result delivered.
fn entity(payload: &str) -> [u8; 8] {
    let mut ctx = Context::new("node-1");
    let mut state = None;
    TaskEntity::handle(
        &mut ctx,
        payload,
        &mut state,
        TaskMsg::Submit {
            payload: payload.to_owned(),
            iterations: ITERATIONS,
        },
    );
    for job in ctx.take_jobs() {
        let msg = job.run();
        TaskEntity::handle(&mut ctx, payload, &mut state, msg);
    }
    state.unwrap().result().unwrap().0
}

/// Runs `f` over `payloads` on `threads` threads (each takes every
/// `threads`-th payload); returns nanoseconds per task of wall time.
fn time_per_task(f: TaskFn, payloads: &[String], threads: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for p in payloads.iter().skip(t).step_by(threads) {
                    black_box(f(black_box(p)));
                }
            });
        }
    });
    start.elapsed().as_nanos() as f64 / payloads.len() as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn speed(quick: bool) {
    let (tasks, rounds) = if quick { (40, 1) } else { (4_000, 9) };
    let payloads: Vec<String> = (0..tasks).map(|i| format!("job-node-1-{i}")).collect();
    // The three paths agree before anything is timed.
    for p in &payloads {
        assert_eq!(raw(p), compute(p));
        assert_eq!(raw(p), entity(p));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut thread_counts = vec![1];
    if cores > 1 {
        thread_counts.push(cores);
    }
    for threads in thread_counts {
        let kinds: [(&str, TaskFn); 3] = [("raw", raw), ("compute", compute), ("entity", entity)];
        let mut times: [Vec<f64>; 3] = Default::default();
        for round in 0..rounds {
            for k in 0..3 {
                // Rotate the order each round.
                let k = (k + round) % 3;
                times[k].push(time_per_task(kinds[k].1, &payloads, threads));
            }
        }
        let medians: Vec<f64> = times.into_iter().map(median).collect();
        for ((name, _), ns) in kinds.iter().zip(&medians) {
            println!(
                "speed: {threads} thread(s), {ITERATIONS}-iteration tasks, {name:>7}: median {:.2} us/task = {:.0} tasks/s",
                ns / 1000.0,
                1e9 / ns,
            );
        }
        println!(
            "speed: {threads} thread(s): entity/raw throughput ratio {:.3} (goal >= 0.95), compute/raw {:.3}",
            medians[0] / medians[2],
            medians[0] / medians[1],
        );
    }
}
