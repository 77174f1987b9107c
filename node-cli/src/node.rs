//! Wiring: transport, membership and the task queue of one node.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use membership::MembershipHandle;
use taskqueue::TaskQueue;
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport};

use crate::config::Config;

/// A running node.
pub struct Node {
    /// This node's name.
    pub name: String,
    /// The transport.
    pub transport: Transport,
    /// Membership.
    pub members: MembershipHandle,
    /// The task queue.
    pub queue: TaskQueue,
    /// Cancels everything.
    pub shutdown: CancellationToken,
}

/// The host peers should dial: `auto` resolves this machine's hostname.
///
/// # Errors
/// When `auto` cannot be resolved.
pub async fn advertise_host(host: &str) -> Result<String> {
    if host != "auto" {
        return Ok(host.to_owned());
    }
    let name = hostname();
    let addrs = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .with_context(|| format!("--host auto: cannot resolve this machine's hostname {name:?}"))?;
    let addrs: Vec<_> = addrs.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() && !a.ip().is_loopback())
        .or_else(|| addrs.iter().find(|a| !a.ip().is_loopback()))
        .or(addrs.first())
        .map(|a| a.ip().to_string())
        .with_context(|| format!("--host auto: hostname {name:?} has no address"))
}

/// This machine's hostname (Linux `/proc`, then `$HOSTNAME`, then `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// The default node name: the hostname with `--host auto` (one port, many
/// hosts: containers), else `node-<port>` (one host, many ports), or
/// `node-<pid>` for port 0.
pub fn default_name(config: &Config) -> String {
    if !config.node.name.is_empty() {
        return config.node.name.clone();
    }
    if config.cluster.host == "auto" {
        return hostname();
    }
    match config.cluster.port {
        0 => format!("node-{}", std::process::id()),
        p => format!("node-{p}"),
    }
}

/// Binds, starts membership (joining `seed_nodes`, publishing
/// [`crate::workload::WORKLOAD_MARKER`] as this node's metadata) and the
/// task queue.
///
/// # Errors
/// Bind, config and channel errors, with context.
pub async fn start(config: &Config, name: &str) -> Result<Node> {
    let shutdown = CancellationToken::new();
    let host = advertise_host(&config.cluster.host).await?;
    let bind_host = if config.node.bind_host.is_empty() {
        host.clone()
    } else {
        config.node.bind_host.clone()
    };
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let transport = Transport::bind(
        LocalNode {
            cluster: config.system.name.clone(),
            settings: config.region().cluster_settings(),
            name: name.to_owned(),
            generation,
            listen: format!("{bind_host}:{}", config.cluster.port),
            advertise_host: host,
        },
        config.transport.clone(),
        shutdown.clone(),
    )
    .await
    .context("cannot start the transport")?;
    tracing::info!(
        "listening on {} (advertised as {})",
        transport.local_addr(),
        transport.identity().addr
    );
    let mut seeds = config.cluster.seed_nodes.clone();
    if seeds.is_empty() {
        // No seed: this node starts the cluster.
        seeds.push(transport.identity().addr.clone());
    }
    // The marker goes with the join, so no member ever sees this node
    // without it (a later `set_metadata` could reach some after they
    // counted the members of the start barrier).
    let members = membership::start_with_metadata(
        &transport,
        config.membership().context("invalid [cluster] settings")?,
        seeds,
        crate::workload::WORKLOAD_MARKER.to_vec(),
        shutdown.clone(),
    )
    .context("cannot start membership")?;
    let view = sharding::follow_membership(&members, shutdown.clone());
    let queue = TaskQueue::start(
        &transport,
        config.region(),
        config.tasks.clone(),
        view,
        shutdown.clone(),
    )
    .context("cannot start the task queue")?;
    // A life declared dead that kept running must drop what it held.
    let mut events = members.subscribe();
    let q = queue.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = events.recv() => match ev {
                    Ok(membership::Event::RejoinedAfterDeath { .. }) => {
                        let _ = q.reset().await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        // One of the missed events may have been a death:
                        // dropping what we hold is safe (replicas hold it),
                        // serving it stale is not.
                        tracing::warn!(missed, "membership events lagged; dropping shard state to be safe");
                        let _ = q.reset().await;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
            }
        }
    });
    Ok(Node {
        name: name.to_owned(),
        transport,
        members,
        queue,
        shutdown,
    })
}

impl Node {
    /// Graceful leave: hand shards off, leave membership, stop the transport.
    pub async fn leave(&self, timeout: Duration) {
        match self.queue.hand_off_all(timeout).await {
            None => tracing::warn!("shard handoff did not finish in time"),
            Some(h) if h.failed_copies > 0 => tracing::warn!(
                shards = h.shards,
                failed_copies = h.failed_copies,
                "shard handoff: some next holders did not confirm their copy (logged above); the shards' other holders have them"
            ),
            Some(_) => {}
        }
        if let Err(e) = self.members.leave(timeout).await {
            tracing::warn!(error = %e, "leave did not finish cleanly");
        }
        self.shutdown.cancel();
        self.transport.shutdown().await;
    }
}
