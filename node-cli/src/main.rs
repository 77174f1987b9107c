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
mod logs;
mod node;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::Cli;
use crate::config::Config;

/// Time a graceful leave may take.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let name = node::default_name(&config);
    logs::init(&name);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, config, name))
}

async fn run(cli: Cli, config: Config, name: String) -> ExitCode {
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
    let work = workload::Workload {
        tasks: cli.tasks,
        iterations: cli.iterations,
        nodes: cli.nodes,
        settle: Duration::from_millis(cli.settle_ms),
    };
    let outcome = tokio::select! {
        r = workload::run(&node, &work) => Some(r),
        _ = signal() => None,
    };
    let code = match outcome {
        Some(Ok(_)) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        None => {
            tracing::info!("signal received: leaving the cluster");
            ExitCode::SUCCESS
        }
    };
    node.leave(LEAVE_TIMEOUT).await;
    tracing::info!("stopped");
    code
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
