//! node-cli nodes beside a custom worker: a member built on the crates
//! (transport, membership, sharding, taskqueue) that owns shards and
//! processes tasks but does not run node-cli's workload.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use casty_tests::serial;
use membership::{MembershipConfig, SeedTimings};
use sharding::RegionConfig;
use taskqueue::{TaskQueue, TasksConfig};
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

use crate::{assert_all_succeeded, busy, check_run_among};

/// The nodes' barrier timeout in the test, in ms: short, so that a node
/// held at a barrier by the worker fails the test in seconds (exit 1 at
/// the timeout) rather than after the default 5 minutes.
const BARRIER_TIMEOUT_MS: u64 = 15_000;

/// A custom worker: an in-process member wired as node-cli wires one,
/// with node-cli's built-in defaults, but publishing no metadata (so no
/// workload marker) and never meeting node-cli's barriers or reporting.
/// It starts a cluster of its own; node-cli nodes join through it.
struct Worker {
    addr: SocketAddr,
    // Held for its tasks: dropped, the worker stops.
    _rt: tokio::runtime::Runtime,
    _queue: TaskQueue,
    stop: CancellationToken,
}

impl Worker {
    fn start(name: &str) -> Worker {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let stop = CancellationToken::new();
        let (queue, addr) = rt.block_on(async {
            let transport = Transport::bind(
                LocalNode {
                    cluster: "task-queue".into(),
                    // As node-cli's with its defaults.
                    settings: RegionConfig::default().cluster_settings(),
                    name: name.into(),
                    generation: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64,
                    listen: "127.0.0.1:0".into(),
                    advertise_host: "127.0.0.1".into(),
                },
                TransportConfig::default(),
                stop.clone(),
            )
            .await
            .unwrap();
            let config = MembershipConfig::default()
                .with_seed(&SeedTimings::default())
                .unwrap();
            // Its own address as the seed: it starts the cluster.
            let seeds = vec![transport.identity().addr.clone()];
            let members = membership::start(&transport, config, seeds, stop.clone()).unwrap();
            let view = sharding::follow_membership(&members, stop.clone());
            let queue = TaskQueue::start(
                &transport,
                RegionConfig::default(),
                TasksConfig::default(),
                view,
                stop.clone(),
            )
            .unwrap();
            members.wait_joined(Duration::from_secs(20)).await.unwrap();
            (queue, transport.local_addr())
        });
        Worker {
            addr,
            _rt: rt,
            _queue: queue,
            stop,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Two node-cli nodes (`--nodes 2`) join a cluster started by a custom
/// worker that never arrives at their barriers nor reports. They count
/// only each other: both start together (`cluster ready` with 2
/// members), complete their tasks (some processed on the worker, which
/// owns shards like any member), agree on a Final Report of their own 40
/// tasks and exit 0, well before the barrier timeout. Before the workload
/// marker, `--nodes 2` counted the worker, and the start barrier waited
/// for it by name until the timeout (exit 1).
#[test]
fn a_custom_worker_does_not_hold_the_nodes_at_their_barriers() {
    let _heavy = serial();
    let started = Instant::now();
    let worker = Worker::start("worker");
    let timeout = BARRIER_TIMEOUT_MS.to_string();
    let args = ["--nodes", "2", "--tasks", "20"];
    let spawn = |name: &str| {
        let mut all = vec!["--port", "0", "--seed"];
        let seed = worker.addr.to_string();
        all.push(&seed);
        all.extend_from_slice(&args);
        let mut cmd = crate::node_cmd(name, &all);
        cmd.env("CASTY_TASKS__BARRIER_TIMEOUT_MS", &timeout);
        casty_tests::Process::spawn(name, cmd).unwrap()
    };
    let mut nodes = [spawn("n1"), spawn("n2")];
    // A node that gives up at a barrier exits 1 at BARRIER_TIMEOUT_MS; the
    // margin is for start-up on a loaded machine.
    assert_all_succeeded(
        &mut nodes,
        started + Duration::from_millis(BARRIER_TIMEOUT_MS) + Duration::from_secs(20),
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(BARRIER_TIMEOUT_MS),
        "the run took {took:?}, not below the barrier timeout"
    );
    for node in &nodes {
        let lines = node.stderr().snapshot();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("cluster ready") && l.contains("members=2")),
            "{}: the start counts the two nodes, not the worker: {lines:#?}",
            node.label()
        );
    }
    let report = check_run_among(&[(&nodes[0], 20), (&nodes[1], 20)], 500, &["worker"]);
    assert_eq!(report.total, 40);
    assert!(
        busy(&report).contains_key("worker"),
        "the worker processed its shards' tasks: {report:?}"
    );
    drop(worker);
}
