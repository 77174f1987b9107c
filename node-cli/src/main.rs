//! `node-cli`: one node of the casty distributed task queue.
//!
//! Reads flags and `casty.toml`, installs logging, wires transport,
//! membership and the task queue, runs the seed's workload and leaves the
//! cluster gracefully (also on Ctrl-C or SIGTERM).
//!
//! Exit status: 0 after a completed run, 1 when the run failed (a task
//! without a result, no cluster to join), 2 for a configuration error.

mod cli;
mod config;
mod cpu;
mod logs;
mod node;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::Cli;
use crate::config::Config;

/// mimalloc instead of glibc's malloc: the nodes allocate on one thread
/// and free on another (the runtime and the hashing pool), where glibc
/// spent about 350 instructions per allocation and free, a third of the
/// runtime's instructions per task (`BENCHMARKS.md`, session 12).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Time a graceful leave may take.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, sources) = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let name = node::default_name(&config);
    // A name set by a flag, the file or the environment was checked with
    // its source; this checks a default one (a hostname).
    if let Err(e) = config::check_name(&name) {
        eprintln!("error: configuration: {e} (the default name: set --name)");
        return ExitCode::from(2);
    }
    let (tasks, iterations) =
        match workload::checked_counts(cli.tasks, cli.iterations, config.tasks.max_iterations) {
            Ok(counts) => counts,
            Err(e) => {
                eprintln!("error: configuration: {}", sources.annotate(e));
                return ExitCode::from(2);
            }
        };
    let work = workload::Workload {
        tasks,
        iterations,
        nodes: cli.nodes,
        settle: Duration::from_millis(cli.settle_ms),
        join_deadline: config.cluster.membership.join_deadline(),
    };
    if let Err(e) = work.check(&name, &config.tasks) {
        eprintln!("error: configuration: {}", sources.annotate(e));
        return ExitCode::from(2);
    }
    // The runtime's thread count is checked here, before `--print-config`
    // returns, so that it refuses what a run refuses.
    let threads = match runtime_threads() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // After every check a run makes before it starts: what is printed is
    // what a run would accept.
    if cli.print_config {
        // A closed stdout (`--print-config | head`) is not an error here;
        // any other failure to write (a full disk) is.
        let mut out = std::io::stdout();
        let written = std::io::Write::write_all(&mut out, config.to_toml().as_bytes())
            .and_then(|()| std::io::Write::flush(&mut out));
        return match written {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("error: cannot print the configuration: {e}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        };
    }
    logs::init(&name);
    log_open_files_limit(raise_open_files_limit());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            logs::drain(LOG_DRAIN);
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The node runs as a task on the runtime, not in `block_on` on this
    // thread: the regions' answers then wake it on a runtime thread, where
    // a wake-up is a queue push, instead of a parked main thread, where
    // each is a futex call (a quarter of the runtime's CPU per task in
    // `cargo bench -p taskqueue --bench queue` before the bench's clients
    // moved onto the runtime too).
    let code = runtime.block_on(async {
        let code = tokio::spawn(run(cli, config, name, work))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the node's task ended abnormally");
                ExitCode::FAILURE
            });
        // The log's own thread writes the last lines (`logs`): exiting
        // before it did would cut the log short. Ctrl-C or SIGTERM ends
        // the wait (a paused terminal the user gave up on).
        let drained = tokio::task::spawn_blocking(|| logs::drain(LOG_DRAIN));
        tokio::select! {
            _ = drained => {}
            () = signal() => {}
        }
        code
    });
    // Not waiting for the blocking drain (a reader that never resumes).
    runtime.shutdown_background();
    code
}

/// How long the exit waits for the last log lines to be written (the
/// node has left the cluster by then, so waiting harms no one): long
/// enough for a paused pager or terminal to resume, bounded so that a
/// reader gone for good does not hold the process forever.
const LOG_DRAIN: Duration = Duration::from_secs(60);

/// Threads of the async runtime (messaging, membership, the regions'
/// actors): half the cores, at least one. The hashing has its own pool
/// (`[tasks] workers`, the cores by default), and on a small machine every
/// runtime thread beyond what the messaging needs costs wake-ups and
/// context switches (about 15 % of a node's CPU per task measured on 2
/// cores against one thread per core; `BENCHMARKS.md`).
/// `TOKIO_WORKER_THREADS` overrides it.
///
/// # Errors
/// `TOKIO_WORKER_THREADS` set to anything but a whole number from 1 to 1024.
fn runtime_threads() -> Result<usize, String> {
    match std::env::var("TOKIO_WORKER_THREADS") {
        Err(std::env::VarError::NotPresent) => {
            Ok(std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)))
        }
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "TOKIO_WORKER_THREADS={v:?} (environment) must be a whole number of threads from 1 to 1024"
            )),
        },
        Err(std::env::VarError::NotUnicode(v)) => Err(format!(
            "TOKIO_WORKER_THREADS={v:?} (environment) must be a whole number of threads from 1 to 1024"
        )),
    }
}

async fn run(cli: Cli, config: Config, name: String, work: workload::Workload) -> ExitCode {
    if let Some(path) = config::config_path(&cli) {
        tracing::info!(config = %path.display(), "configuration loaded");
    }
    let node = match node::start(&config, &name).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let progress = workload::Progress::default();
    let outcome = tokio::select! {
        r = workload::run(&node, &work, &progress) => Some(r),
        _ = signal() => None,
    };
    let code = match outcome {
        Some(Ok(_)) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        None => {
            let done = progress.done.load(std::sync::atomic::Ordering::Relaxed);
            let failed = progress.failed.load(std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                "signal received: leaving the cluster; {done}/{} results received, {failed} failed (refused, or no result within its timeout), the rest not waited for",
                work.tasks
            );
            // Asked to stop, it stops: a success, unless tasks had
            // already failed (each logged above).
            if failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    };
    node.leave(LEAVE_TIMEOUT).await;
    tracing::info!("stopped");
    code
}

/// The open-files limits (`RLIMIT_NOFILE`) before and after
/// [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpenFiles {
    /// The soft limit at start.
    old: u64,
    /// The soft limit now.
    new: u64,
    /// The hard limit (the most the soft limit may be raised to).
    hard: u64,
}

/// Raises this process's open-files soft limit to its hard limit (on macOS
/// at most `kern.maxfilesperproc`). Every connection is a file descriptor,
/// and the default soft limit (often 1,024) is below what
/// `[transport] max_inbound_connections` (4,096) and a busy node's
/// outbound links need. Only the binary does this: libraries never touch
/// process state.
///
/// # Errors
/// The system's error when the limits cannot be read or set.
#[cfg(unix)]
fn raise_open_files_limit() -> std::io::Result<OpenFiles> {
    let (old, hard) = rlimit::Resource::NOFILE.get()?;
    let new = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(OpenFiles { old, new, hard })
}

/// Other systems have no `RLIMIT_NOFILE`.
#[cfg(not(unix))]
fn raise_open_files_limit() -> std::io::Result<OpenFiles> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no RLIMIT_NOFILE on this system",
    ))
}

/// Logs the outcome of [`raise_open_files_limit`]: old and new soft
/// limits at `info` when it rose (at `debug` when it was at the hard limit
/// already), a failure at `warn` (the node runs on with the limit it has).
fn log_open_files_limit(outcome: std::io::Result<OpenFiles>) {
    match outcome {
        Ok(OpenFiles { old, new, hard }) if new > old => {
            tracing::info!(
                old,
                new,
                hard,
                "open-files soft limit (RLIMIT_NOFILE) raised to the hard limit"
            );
        }
        Ok(OpenFiles { new, hard, .. }) => {
            tracing::debug!(
                soft = new,
                hard,
                "open-files soft limit (RLIMIT_NOFILE) already at the hard limit"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files soft limit (RLIMIT_NOFILE); keeping the current one");
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_open_files_soft_limit_is_raised_to_the_hard_limit() {
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        // Start from a lower soft limit, as under a default `ulimit -n`.
        let lowered = soft.min(hard).min(256);
        rlimit::Resource::NOFILE.set(lowered, hard).unwrap();
        let raised = raise_open_files_limit().unwrap();
        assert_eq!(raised.old, lowered);
        assert_eq!(raised.hard, hard);
        let (now, _) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(raised.new, now);
        // macOS caps the soft limit below an unlimited hard limit.
        if cfg!(target_os = "linux") {
            assert_eq!(now, hard);
        } else {
            assert!(now >= lowered);
        }
    }
}
