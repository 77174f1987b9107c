//! One node, in process, through the whole `TaskQueue`: tasks/s for
//! 500-iteration tasks (submit, hash on the region's worker pool, wait for
//! the result; one ask each, and in batches with `submit_many` and
//! `wait_results`), beside three raw SHA-256 loops on the same number of
//! threads measured in the same run: the `Digest` API's, the queue's own
//! `work::compute` (the compression function called directly, about 10 %
//! faster here) and `work::compute_pair` (two tasks interleaved on a
//! thread, as the pool's threads run them when the queue is deep). The
//! ratios are against the fastest of the three. Rounds alternate the paths
//! so machine noise hits all alike; medians, the ratios and the process
//! CPU per task (its excess over the fastest raw loop's is what the queue
//! adds) are printed.
//!
//! The bench runs with node-cli's global allocator (mimalloc), so its
//! runtime figures are a node's.
//!
//! `cargo bench -p taskqueue --bench queue`; `-- --test` runs a quick
//! version (CI); `-- --instructions N` runs only `submit_many_and_wait`
//! over N tasks, for `scripts/instructions.sh` (instructions per task
//! under callgrind).

use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use sharding::{MemberMap, RegionConfig};
use taskqueue::{NewTask, TaskQueue, TasksConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

/// The allocator node-cli runs with (see `node-cli/src/main.rs`), so the
/// figures stand for a node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ITERATIONS: u32 = 500;

fn raw_task(payload: &str) -> [u8; 32] {
    let mut d: [u8; 32] = Sha256::digest(payload.as_bytes()).into();
    for _ in 1..ITERATIONS {
        d = Sha256::digest(d).into();
    }
    d
}

/// The same work as [`raw_task`] through the queue's own hash loop, which
/// calls SHA-256's compression function directly (5-7 % faster than the
/// `Digest` API per round, `cargo bench -p taskqueue --bench hash`).
fn compute_task(payload: &str) -> taskqueue::work::ShortDigest {
    const N: std::num::NonZeroU32 = match std::num::NonZeroU32::new(ITERATIONS) {
        Some(n) => n,
        None => panic!("ITERATIONS is at least 1"),
    };
    taskqueue::work::compute(payload.as_bytes(), N)
}

/// Tasks/s of the raw loop of two tasks interleaved (`work::compute_pair`)
/// on `threads` threads, `tasks` tasks in all.
fn raw_pair_rate(threads: usize, tasks: usize, round: usize) -> f64 {
    const N: std::num::NonZeroU32 = match std::num::NonZeroU32::new(ITERATIONS) {
        Some(n) => n,
        None => panic!("ITERATIONS is at least 1"),
    };
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut mine = (t..tasks).step_by(threads);
                while let Some(i) = mine.next() {
                    let a = format!("doc-raw-{round}-{i}");
                    match mine.next() {
                        Some(k) => {
                            let b = format!("doc-raw-{round}-{k}");
                            std::hint::black_box(taskqueue::work::compute_pair(
                                (a.as_bytes(), N),
                                (b.as_bytes(), N),
                            ));
                        }
                        None => {
                            std::hint::black_box(taskqueue::work::compute(a.as_bytes(), N));
                        }
                    }
                }
            });
        }
    });
    tasks as f64 / t0.elapsed().as_secs_f64()
}

/// Tasks/s of a raw loop (`task`) on `threads` threads, `tasks` tasks in all.
fn raw_rate<T>(task: fn(&str) -> T, threads: usize, tasks: usize, round: usize) -> f64 {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..tasks).step_by(threads) {
                    std::hint::black_box(task(&format!("doc-raw-{round}-{i}")));
                }
            });
        }
    });
    tasks as f64 / t0.elapsed().as_secs_f64()
}

async fn queue_rate(queue: TaskQueue, tasks: usize, round: usize) -> f64 {
    let t0 = Instant::now();
    // Owned ids and a queue handle per task: the client is a spawned task
    // (see `on_runtime`), so what it holds across awaits is `'static`.
    futures::stream::iter((0..tasks).map(|i| (queue.clone(), format!("job-{round}-{i}"))))
        .map(|(queue, id)| async move {
            queue
                .submit(&id, &format!("doc-{id}"), ITERATIONS)
                .await
                .expect("submit");
            queue
                .wait_result(&id, Duration::from_secs(60))
                .await
                .expect("result");
        })
        .buffer_unordered(512)
        .collect::<Vec<()>>()
        .await;
    tasks as f64 / t0.elapsed().as_secs_f64()
}

/// The ids of one round of a batched path, in batches of [`BATCH`], each
/// with a queue handle of its own.
fn batches(
    queue: &TaskQueue,
    prefix: &str,
    tasks: usize,
    round: usize,
) -> Vec<(TaskQueue, Vec<String>)> {
    let ids: Vec<String> = (0..tasks)
        .map(|i| format!("{prefix}-{round}-{i}"))
        .collect();
    ids.chunks(BATCH)
        .map(|chunk| (queue.clone(), chunk.to_vec()))
        .collect()
}

/// Tasks per batch and batches in flight on the batched path (node-cli's
/// workload uses the same).
const BATCH: usize = 256;
const BATCHES_IN_FLIGHT: usize = 4;

/// The bench's tasks for `ids`: payload `doc-<id>`, [`ITERATIONS`].
fn new_tasks(ids: &[String]) -> Vec<NewTask> {
    ids.iter()
        .map(|id| NewTask {
            id: id.clone(),
            payload: format!("doc-{id}"),
            iterations: ITERATIONS,
        })
        .collect()
}

async fn batched_rate(queue: TaskQueue, tasks: usize, round: usize) -> f64 {
    let t0 = Instant::now();
    futures::stream::iter(batches(&queue, "batch", tasks, round))
        .map(|(queue, chunk)| async move {
            let batch = new_tasks(&chunk);
            for r in queue.submit_many(batch).await {
                r.expect("submit");
            }
            for r in queue.wait_results(&chunk, Duration::from_secs(60)).await {
                r.expect("result");
            }
        })
        .buffer_unordered(BATCHES_IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    tasks as f64 / t0.elapsed().as_secs_f64()
}

async fn combined_rate(queue: TaskQueue, tasks: usize, round: usize) -> f64 {
    let t0 = Instant::now();
    futures::stream::iter(batches(&queue, "both", tasks, round))
        .map(|(queue, chunk)| async move {
            let batch = new_tasks(&chunk);
            for r in queue
                .submit_many_and_wait(batch, Duration::from_secs(60))
                .await
            {
                r.expect("result");
            }
        })
        .buffer_unordered(BATCHES_IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    tasks as f64 / t0.elapsed().as_secs_f64()
}

/// CPU time (user + system) of this whole process so far, in µs: every
/// thread's, the hashing workers' and the runtime's alike.
fn process_cpu_us() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

/// CPU time on the clock of each of this process's threads, summed by
/// kind, in µs: `[hashing pool, runtime, the rest]` (the rest: the main
/// thread, parked in `block_on`, and any other). From
/// `/proc/self/task/<tid>/schedstat` (its first field: ns on a CPU) and
/// the thread's `comm`; threads that are gone are not counted.
fn thread_cpu_us() -> [f64; 3] {
    let mut by_kind = [0.0; 3];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_kind;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns: f64 = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let kind = if comm.starts_with("casty-worker") {
            0
        } else if comm.starts_with("tokio-rt") {
            1
        } else {
            2
        };
        by_kind[kind] += ns / 1e3;
    }
    by_kind
}

/// Runs a client on the runtime as a task of its own and waits for its
/// figure.
async fn on_runtime<F: std::future::Future<Output = f64> + Send + 'static>(f: F) -> f64 {
    tokio::spawn(f).await.expect("client task")
}

/// One measured phase: its figure, the process CPU µs per task, and that
/// split by thread kind ([`thread_cpu_us`]).
struct Phase {
    rate: f64,
    cpu: f64,
    split: [f64; 3],
}

/// Runs one measured phase.
async fn with_cpu<F: std::future::Future<Output = f64>>(tasks: usize, f: F) -> Phase {
    let (c0, t0) = (process_cpu_us(), thread_cpu_us());
    let rate = f.await;
    let (c1, t1) = (process_cpu_us(), thread_cpu_us());
    let n = tasks as f64;
    let [pool, runtime] = [0, 1].map(|k| (t1[k] - t0[k]) / n);
    let cpu = (c1 - c0) / n;
    // The rest is the process's CPU less the two long-lived kinds: summed
    // from `/proc` it could go negative, a thread that had just been
    // joined (the raw loop's) being listed at the start and gone at the end.
    Phase {
        rate,
        cpu,
        split: [pool, runtime, cpu - pool - runtime],
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Starts `nodes` nodes in this process (`solo` alone, else `node-<k>`),
/// each a `TaskQueue` with its own transport on a free loopback port and
/// `threads` hashing workers, all with a hand-set view of all of them (no
/// membership), and waits until every one routes by it (with several
/// nodes, the shards' first fetches may still run: asks to a shard in
/// recovery are held, so the first round's rate includes them; the
/// instruction counts of `scripts/instructions.sh` take the difference of
/// two runs, where they cancel). Returns the queues
/// and the senders of their views (a queue stops seeing members once its
/// sender is dropped).
async fn start_cluster(
    nodes: usize,
    threads: usize,
    stop: &CancellationToken,
) -> (Vec<TaskQueue>, Vec<watch::Sender<MemberMap>>) {
    let mut transports = Vec::new();
    for k in 0..nodes {
        let name = if nodes == 1 {
            "solo".to_owned()
        } else {
            format!("node-{k}")
        };
        let transport = Transport::bind(
            LocalNode {
                cluster: "queue-bench".into(),
                settings: String::new(),
                name,
                generation: 1,
                listen: "127.0.0.1:0".into(),
                advertise_host: "127.0.0.1".into(),
            },
            TransportConfig::default(),
            stop.clone(),
        )
        .await
        .expect("bind");
        transports.push(transport);
    }
    let members: MemberMap = transports
        .iter()
        .map(|t| (t.identity().name.clone(), t.identity().clone()))
        .collect();
    let (mut queues, mut views) = (Vec::new(), Vec::new());
    for transport in &transports {
        let (tx, view) = watch::channel(members.clone());
        let mut region = RegionConfig::default();
        region.mailbox.capacity = 100_000;
        let config = TasksConfig {
            workers: threads as u32,
            ..TasksConfig::default()
        };
        let queue = TaskQueue::start(transport, region, config, view, stop.clone()).expect("queue");
        queues.push(queue);
        views.push(tx);
    }
    for queue in &queues {
        while queue.task_region().routing().members.len() != nodes {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    (queues, views)
}

/// The number after `flag` on the command line, if `flag` is there.
///
/// # Panics
/// When no number follows it.
fn number_arg(flag: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == flag)?;
    let n = args.get(i + 1).and_then(|n| n.parse().ok());
    Some(n.unwrap_or_else(|| panic!("{flag} takes a number")))
}

fn main() {
    // `--instructions N [--nodes K]`: run only `submit_many_and_wait`,
    // N tasks from each of K nodes in this process (1 by default; more
    // replicate with the default replication factor), print the rate and
    // stop, reading no CPU clock (for `scripts/instructions.sh`, which runs
    // this under callgrind, where rustix's vDSO lookup does not work).
    let only = number_arg("--instructions");
    let nodes = number_arg("--nodes").unwrap_or(1);
    let quick = std::env::args().any(|a| a == "--test");
    let (tasks, rounds) = if quick { (500, 1) } else { (20_000, 5) };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // As node-cli runs: half the cores for the runtime, all of them for
    // the hashing pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads((threads / 2).max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let stop = CancellationToken::new();
        if let Some(tasks) = only {
            let (queues, _views) = start_cluster(nodes, threads, &stop).await;
            let t0 = Instant::now();
            let clients = queues
                .iter()
                .enumerate()
                .map(|(k, queue)| on_runtime(combined_rate(queue.clone(), tasks, k)));
            futures::future::join_all(clients).await;
            let rate = (tasks * nodes) as f64 / t0.elapsed().as_secs_f64();
            println!("submit_many_and_wait: {tasks} tasks from each of {nodes} nodes, {rate:.0} tasks/s");
            stop.cancel();
            return;
        }
        let (mut queues, _views) = start_cluster(1, threads, &stop).await;
        let queue = queues.pop().expect("one queue");
        let (mut raw, mut raw_compute, mut raw_pair) = (Vec::new(), Vec::new(), Vec::new());
        let (mut compute_cpu, mut pair_cpu) = (Vec::new(), Vec::new());
        let mut paths: [Vec<Phase>; 3] = Default::default();
        for round in 0..rounds {
            raw.push(raw_rate(raw_task, threads, tasks, round));
            let p = with_cpu(tasks, async { raw_rate(compute_task, threads, tasks, round) }).await;
            raw_compute.push(p.rate);
            compute_cpu.push(p.cpu);
            let p = with_cpu(tasks, async { raw_pair_rate(threads, tasks, round) }).await;
            raw_pair.push(p.rate);
            pair_cpu.push(p.cpu);
            // The clients run as tasks on the runtime, as node-cli's
            // workload does: the region's answers wake them there, not a
            // thread parked in `block_on`.
            paths[0].push(with_cpu(tasks, on_runtime(queue_rate(queue.clone(), tasks, round))).await);
            paths[1].push(with_cpu(tasks, on_runtime(batched_rate(queue.clone(), tasks, round))).await);
            paths[2].push(with_cpu(tasks, on_runtime(combined_rate(queue.clone(), tasks, round))).await);
        }
        let rates = paths
            .each_ref()
            .map(|p| median(p.iter().map(|x| x.rate).collect()));
        let cpus = paths
            .each_ref()
            .map(|p| median(p.iter().map(|x| x.cpu).collect()));
        let splits = paths
            .each_ref()
            .map(|p| [0, 1, 2].map(|k| median(p.iter().map(|x| x.split[k]).collect())));
        let [through, batched, combined] = rates;
        let [through_cpu, batched_cpu, combined_cpu] = cpus;
        let (raw_digest, raw_compute, raw_pair) =
            (median(raw), median(raw_compute), median(raw_pair));
        // The baseline is the fastest raw loop, so the queue's own faster
        // hash loops do not count as the queue's merit.
        let raw = raw_digest.max(raw_compute).max(raw_pair);
        let raw_cpu = if raw_pair >= raw_compute {
            median(pair_cpu)
        } else {
            median(compute_cpu)
        };
        println!("taskqueue bench: one node in process, {threads} worker threads, {tasks} tasks of {ITERATIONS} iterations per round, {rounds} rounds (medians)");
        println!("| path | tasks/s |");
        println!("|---|---|");
        println!("| raw SHA-256 loop (`Digest` API) on {threads} threads | {raw_digest:.0} |");
        println!("| raw SHA-256 loop (`work::compute`, compression function) on {threads} threads | {raw_compute:.0} |");
        println!("| raw SHA-256 loop (`work::compute_pair`, two tasks interleaved) on {threads} threads | {raw_pair:.0} |");
        println!("| TaskQueue submit + wait_result | {through:.0} |");
        println!("| TaskQueue submit_many + wait_results, batches of {BATCH}, {BATCHES_IN_FLIGHT} in flight | {batched:.0} |");
        println!("| TaskQueue submit_many_and_wait, batches of {BATCH}, {BATCHES_IN_FLIGHT} in flight | {combined:.0} |");
        println!("raw = the fastest raw loop: {raw:.0} tasks/s");
        println!("ratio TaskQueue / raw: {:.2}", through / raw);
        println!("ratio TaskQueue batched / raw: {:.2}", batched / raw);
        println!("ratio TaskQueue submit_many_and_wait / raw: {:.2}", combined / raw);
        println!(
            "against the one-task loops: submit_many_and_wait / `Digest` loop {:.2}, / `work::compute` loop {:.2}",
            combined / raw_digest,
            combined / raw_compute
        );
        // The ratios above are wall-clock figures on a shared machine; the
        // CPU per task is steadier for comparing two builds: what the
        // queue adds to the hash is its excess over the raw loop's.
        println!(
            "process CPU per task: raw (the fastest loop) {raw_cpu:.1} us, TaskQueue {through_cpu:.1} us (+{:.1}), batched {batched_cpu:.1} us (+{:.1}), submit_many_and_wait {combined_cpu:.1} us (+{:.1})",
            through_cpu - raw_cpu,
            batched_cpu - raw_cpu,
            combined_cpu - raw_cpu
        );
        // Where it goes: the pool's threads against the raw loop's CPU,
        // the runtime's thread(s) (the region's actor and, since they run
        // as tasks there, the clients), and the other threads.
        for (name, [pool, runtime, other]) in
            ["TaskQueue", "batched", "submit_many_and_wait"].iter().zip(splits)
        {
            println!(
                "thread CPU per task, {name}: pool {pool:.1} us (raw loop {raw_cpu:.1}), runtime (region and client) {runtime:.1} us, other threads {other:.1} us"
            );
        }
        stop.cancel();
    });
}
