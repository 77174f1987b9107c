//! [`Member`]: an in-process member of a task-queue cluster, wired from
//! the library crates (transport, membership, sharding, taskqueue) the way
//! node-cli wires a node, with node-cli's built-in defaults (its nodes run
//! without a `casty.toml` in the tests). The faults tests' probe and
//! node-cli's custom-worker test start theirs here.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use membership::{MembershipConfig, MembershipHandle, SeedTimings};
use sharding::RegionConfig;
use taskqueue::{TaskQueue, TasksConfig};
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

/// The cluster name node-cli uses by default (`[system] name`).
const CLUSTER: &str = "task-queue";

/// How long [`Member::start`] waits for the member to join, in ms.
const JOIN_TIMEOUT_MS: u64 = 20_000;

/// An in-process member with its own tokio runtime. Dropped, it cancels
/// its stop token (its transport, membership and regions stop), then its
/// runtime shuts down.
pub struct Member {
    /// The member's name.
    pub name: String,
    /// Its listening address (a seed for nodes that join later).
    pub addr: SocketAddr,
    /// Its runtime: `rt.block_on` runs the member's calls from a test.
    pub rt: tokio::runtime::Runtime,
    /// Its membership driver.
    pub members: MembershipHandle,
    /// Its task queue.
    pub queue: TaskQueue,
    /// Cancelled on drop.
    pub stop: CancellationToken,
}

impl Member {
    /// Starts member `name` listening on `host` (port chosen by the OS,
    /// advertised as `host`), publishing `metadata` from its join on
    /// (`membership::start_with_metadata`), with `worker_threads` runtime
    /// threads; it joins through `seeds`, or starts a cluster of its own
    /// when `seeds` is empty (its own address as the seed). Returns once
    /// it has joined.
    ///
    /// # Panics
    /// When the runtime, transport, membership or queue cannot start, or
    /// the member has not joined within `JOIN_TIMEOUT_MS` (20 s).
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    pub fn start(
        name: &str,
        host: &str,
        seeds: Vec<String>,
        metadata: Vec<u8>,
        worker_threads: usize,
    ) -> Member {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .enable_all()
            .build()
            .expect("a tokio runtime for the member");
        let stop = CancellationToken::new();
        let (members, queue, addr) = rt.block_on(async {
            let transport = Transport::bind(
                LocalNode {
                    cluster: CLUSTER.into(),
                    // As node-cli's with its defaults.
                    settings: RegionConfig::default().cluster_settings(),
                    name: name.into(),
                    generation: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64,
                    listen: format!("{host}:0"),
                    advertise_host: host.into(),
                },
                TransportConfig::default(),
                stop.clone(),
            )
            .await
            .unwrap();
            let config = MembershipConfig::default()
                .with_seed(&SeedTimings::default())
                .unwrap();
            let seeds = if seeds.is_empty() {
                vec![transport.identity().addr.clone()]
            } else {
                seeds
            };
            let members =
                membership::start_with_metadata(&transport, config, seeds, metadata, stop.clone())
                    .unwrap();
            let view = sharding::follow_membership(&members, stop.clone());
            let queue = TaskQueue::start(
                &transport,
                RegionConfig::default(),
                TasksConfig::default(),
                view,
                stop.clone(),
            )
            .unwrap();
            members
                .wait_joined(Duration::from_millis(JOIN_TIMEOUT_MS))
                .await
                .unwrap();
            (members, queue, transport.local_addr())
        });
        Member {
            name: name.into(),
            addr,
            rt,
            members,
            queue,
            stop,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
