//! Command-line flags (clap). Flags override `casty.toml` and `CASTY_*`.

use std::path::PathBuf;

use clap::Parser;

/// A node of the casty distributed task queue: joins the cluster, submits
/// its tasks, processes the shards it owns, prints each result and the
/// cluster's final report, then leaves.
#[derive(Debug, Clone, Parser)]
#[command(name = "node-cli", version, long_about = None)]
pub struct Cli {
    /// TCP port to listen on (0 picks a free one; the node logs `listening on <addr>`).
    /// Default: `[cluster] port` (25520).
    #[arg(long)]
    pub port: Option<u16>,

    /// Identity host peers dial; `auto` = this machine's address resolved
    /// from its hostname (for containers). Default: `[cluster] host` (127.0.0.1).
    #[arg(long)]
    pub host: Option<String>,

    /// Address to bind the listener to. Default: same as --host.
    #[arg(long = "bind-host")]
    pub bind_host: Option<String>,

    /// Seed node `host:port` to join through (repeatable; DNS names allowed).
    /// Default: `[cluster] seed_nodes`; none at all means this node starts the cluster.
    #[arg(long = "seed")]
    pub seeds: Vec<String>,

    /// Tasks this node submits, at most 10,000,000. (Read as any whole
    /// number up to 2^64 - 1, so a value past the limit gets the limit's
    /// message, not a range of the integer type.)
    #[arg(long, default_value_t = 5)]
    pub tasks: u64,

    /// SHA-256 iterations per task, from 1 to `[tasks] max_iterations`.
    #[arg(long, default_value_t = 500)]
    pub iterations: u64,

    /// Node name, unique in the cluster. Default: the hostname with
    /// `--host auto`, else `node-<port>` (`node-<pid>` with `--port 0`).
    #[arg(long)]
    pub name: Option<String>,

    /// Wait for this many node-cli members (this one included) before
    /// submitting, instead of waiting for the membership to settle.
    /// Members built on the crates without node-cli's workload do not
    /// count.
    #[arg(long)]
    pub nodes: Option<u32>,

    /// Settle period: membership must be unchanged this long before the
    /// workload starts, in ms.
    #[arg(long = "settle-ms", default_value_t = 1500)]
    pub settle_ms: u64,

    /// Configuration file. Default: ./casty.toml when present.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (TOML) and exit.
    #[arg(long = "print-config")]
    pub print_config: bool,
}
