//! The `TaskQueue` over regions with hand-set views (no membership): how
//! reports and barriers survive shards moving while views disagree.

use std::time::Duration;

use sharding::{MemberMap, RegionConfig};
use taskqueue::{TaskQueue, TasksConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

struct Node {
    transport: Transport,
    queue: TaskQueue,
    view: watch::Sender<MemberMap>,
    stop: CancellationToken,
}

async fn node(name: &str) -> Node {
    let stop = CancellationToken::new();
    let transport = Transport::bind(
        LocalNode {
            cluster: "handoff-test".into(),
            settings: String::new(),
            name: name.into(),
            generation: 1,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig::default(),
        stop.clone(),
    )
    .await
    .unwrap();
    let (view, rx) = watch::channel(MemberMap::new());
    let queue = TaskQueue::start(
        &transport,
        RegionConfig::default(),
        TasksConfig {
            workers: 1,
            ..TasksConfig::default()
        },
        rx,
        stop.clone(),
    )
    .unwrap();
    Node {
        transport,
        queue,
        view,
        stop,
    }
}

fn members(nodes: &[&Node]) -> MemberMap {
    nodes
        .iter()
        .map(|n| {
            let id = n.transport.identity().clone();
            (id.name.clone(), id)
        })
        .collect()
}

/// Waits until `n`'s task region routes by a view of `count` members (the
/// three regions follow the same view).
async fn wait_routing(n: &Node, count: usize) {
    while n.queue.task_region().routing().members.len() != count {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// An entity id whose shard `first` owns in `view_1` and `second` in `view_2`.
fn id_owned_by(view_1: &MemberMap, first: &str, view_2: &MemberMap, second: &str) -> String {
    let config = RegionConfig::default();
    let s = config.defaults.num_shards;
    let r = config.sharding.replication_factor;
    let alloc_1 = sharding::allocate(&view_1.keys().cloned().collect(), s, r);
    let alloc_2 = sharding::allocate(&view_2.keys().cloned().collect(), s, r);
    (0..10_000)
        .map(|i| format!("run-{i}"))
        .find(|id| {
            let shard = sharding::shard_id(id, s);
            alloc_1.owner(shard) == Some(first) && alloc_2.owner(shard) == Some(second)
        })
        .unwrap()
}

/// RELIABILITY.md, finding 2's barrier that never completed (scenario 2):
/// while the cluster forms, `c` joins seeing only `a` and so believes it
/// owns the report's shard, which `b` owns in everybody else's view. `a`
/// reports (routed to `b`) and `c` reports (to itself). If both served the
/// shard, each would store its report as version 1 of the entity, and when
/// the views agree the copies would meet with equal versions: one report
/// lost, and a wait for every report hangs forever. Every report must
/// count once the views agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_sent_while_views_disagree_are_all_counted() {
    let a = node("a").await;
    let b = node("b").await;
    let c = node("c").await;
    let abc = members(&[&a, &b, &c]);
    let ac = members(&[&a, &c]);
    let run = id_owned_by(&abc, "b", &ac, "c");
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    a.view.send_replace(abc.clone());
    b.view.send_replace(abc.clone());
    wait_routing(&a, 3).await;
    wait_routing(&b, 3).await;
    c.view.send_replace(ac);
    wait_routing(&c, 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = |n: &Node, name: &str| {
        let q = n.queue.clone();
        let (run, name) = (run.clone(), name.to_owned());
        tokio::spawn(async move { q.report(&run, &name, Default::default(), 0).await })
    };
    let from_a = report(&a, "a");
    let from_c = report(&c, "c");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // c learns of b: the views agree.
    c.view.send_replace(abc);
    from_a.await.unwrap().unwrap();
    from_c.await.unwrap().unwrap();
    for n in [&a, &b, &c] {
        let merged = n
            .queue
            .final_report(&run, 2, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("both reports: {e}"));
        assert_eq!(merged.reporters, vec!["a".to_owned(), "c".to_owned()]);
    }
    for n in [a, b, c] {
        n.stop.cancel();
    }
}
