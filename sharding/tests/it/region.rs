//! Regions over the real transport on loopback: routing, replication,
//! handoff on graceful leave, failover to a replica.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sharding::wire::{Record, Wire, WireReply};
use sharding::{
    Allocation, Context, Entity, HandOff, Handled, MailboxStrategy, MemberMap, Region,
    RegionConfig, RegionError, RegionHandle, RegionStats, ShardId, WorkerPool,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::{Channel, Lane, NodeId, Received, Transport, TransportConfig};

/// A counter: `Add(n)` returns the new value, `Get` the value (absent = 0,
/// without creating it), `Remove` removes it and returns its last value,
/// `Set(n)` sets it (the one idempotent message).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counter(u64);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum CounterMsg {
    Add(u64),
    Get,
    /// Answers the value once it is at least this (parks until then).
    WaitAtLeast(u64),
    /// Like `WaitAtLeast`, but `may_wait` wrongly says it never waits.
    WaitUndeclared(u64),
    /// Removes the counter; answers its value before (0 if absent).
    Remove,
    /// Sets the counter to this value and answers it: idempotent.
    Set(u64),
}

impl Entity for Counter {
    type Msg = CounterMsg;
    type Reply = u64;
    const TYPE_NAME: &'static str = "counter";

    fn handle(
        _: &mut Context<CounterMsg>,
        _: &str,
        state: &mut Option<Self>,
        msg: CounterMsg,
    ) -> Handled<u64> {
        match msg {
            CounterMsg::Add(n) => {
                let c = state.get_or_insert(Counter(0));
                c.0 += n;
                Handled::Reply(c.0)
            }
            CounterMsg::Get => Handled::Reply(state.as_ref().map_or(0, |c| c.0)),
            CounterMsg::Remove => Handled::Reply(state.take().map_or(0, |c| c.0)),
            CounterMsg::Set(n) => {
                *state = Some(Counter(n));
                Handled::Reply(n)
            }
            CounterMsg::WaitAtLeast(n) | CounterMsg::WaitUndeclared(n) => {
                match state.as_ref().map_or(0, |c| c.0) {
                    v if v >= n => Handled::Reply(v),
                    _ => Handled::Wait,
                }
            }
        }
    }

    fn reads_only(msg: &CounterMsg) -> bool {
        !matches!(
            msg,
            CounterMsg::Add(_) | CounterMsg::Remove | CounterMsg::Set(_)
        )
    }

    fn idempotent(msg: &CounterMsg) -> bool {
        matches!(msg, CounterMsg::Set(_))
    }

    fn may_wait(msg: &CounterMsg) -> bool {
        matches!(msg, CounterMsg::WaitAtLeast(_))
    }
}

struct TestNode {
    transport: Transport,
    region: RegionHandle<Counter>,
    view: watch::Sender<MemberMap>,
    stop: CancellationToken,
}

async fn start(name: &str) -> TestNode {
    start_with(name, RegionConfig::default()).await
}

struct BareNode {
    transport: Transport,
    stop: CancellationToken,
}

/// A transport without a region.
async fn start_bare(name: &str) -> BareNode {
    let stop = CancellationToken::new();
    let transport = crate::bind(name, TransportConfig::default(), &stop).await;
    BareNode { transport, stop }
}

async fn start_with(name: &str, config: RegionConfig) -> TestNode {
    start_full(name, config, TransportConfig::default()).await
}

async fn start_full(
    name: &str,
    config: RegionConfig,
    transport_config: TransportConfig,
) -> TestNode {
    let stop = CancellationToken::new();
    let transport = crate::bind(name, transport_config, &stop).await;
    let (view, rx) = watch::channel(MemberMap::new());
    let region = Region::start::<Counter>(
        &transport,
        20,
        config,
        rx,
        WorkerPool::new(1, 0),
        stop.clone(),
    )
    .unwrap();
    TestNode {
        transport,
        region,
        view,
        stop,
    }
}

fn members(nodes: &[&TestNode]) -> MemberMap {
    nodes
        .iter()
        .map(|n| {
            (
                n.transport.identity().name.clone(),
                n.transport.identity().clone(),
            )
        })
        .collect()
}

fn set_view(nodes: &[&TestNode], view: &MemberMap) {
    for n in nodes {
        n.view.send_replace(view.clone());
    }
}

const T: Duration = Duration::from_secs(10);

async fn add_all(
    nodes: &[&TestNode],
    ids: usize,
    rounds: usize,
    expected: &mut BTreeMap<String, u64>,
) {
    for round in 0..rounds {
        for i in 0..ids {
            let id = format!("counter-{i}");
            let node = nodes[(i + round) % nodes.len()];
            node.region.ask(&id, CounterMsg::Add(1), T).await.unwrap();
            *expected.entry(id).or_default() += 1;
        }
    }
}

/// Nodes a, b and c sharing one view, with `ids` counters added to
/// `rounds` times ([`add_all`]); the counts expected.
async fn three_with_counters(
    ids: usize,
    rounds: usize,
) -> (TestNode, TestNode, TestNode, BTreeMap<String, u64>) {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let mut expected = BTreeMap::new();
    let view = members(&[&a, &b, &c]);
    set_view(&[&a, &b, &c], &view);
    add_all(&[&a, &b, &c], ids, rounds, &mut expected).await;
    (a, b, c, expected)
}

async fn check_all(nodes: &[&TestNode], expected: &BTreeMap<String, u64>) {
    for n in nodes {
        for (id, want) in expected {
            let got = n.region.ask(id, CounterMsg::Get, T).await.unwrap();
            assert_eq!(got, *want, "{id} read from {}", n.transport.identity().name);
        }
    }
}

/// A graceful leave whose next holder is down (still in the leaving
/// node's view) says so: each shard's copy to it is counted unconfirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_counts_the_copies_a_dead_holder_did_not_confirm() {
    // Enough counters that every shard holds some (an empty shard sends
    // nothing to confirm).
    let (a, b, c, _) = three_with_counters(1000, 1).await;
    // b stops; c's view still holds it.
    b.stop.cancel();
    b.transport.shutdown().await;
    let handed = c.region.hand_off_all(T).await.unwrap();
    // Without c, a and b hold every shard (two copies each): each shard c
    // hands off has one copy for b, which fails, and one for a.
    assert!(handed.shards > 0, "{handed:?}");
    assert_eq!(handed.failed_copies, handed.shards, "{handed:?}");
    a.stop.cancel();
    c.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_survive_join_graceful_leave_and_owner_crash() {
    let (a, b, c, mut expected) = three_with_counters(100, 3).await;
    check_all(&[&a, &b, &c], &expected).await;

    // A fourth node joins: shards move to it by fetch.
    let d = start("d").await;
    let view = members(&[&a, &b, &c, &d]);
    set_view(&[&a, &b, &c, &d], &view);
    add_all(&[&a, &b, &c, &d], 100, 2, &mut expected).await;
    check_all(&[&a, &b, &c, &d], &expected).await;
    assert!(d.region.stats().shards_recovered > 0, "d took over shards");

    // c leaves gracefully: hands its shards off, then leaves the views.
    let handed = c.region.hand_off_all(T).await;
    assert!(
        handed.is_some_and(|h| h.shards > 0 && h.failed_copies == 0),
        "{handed:?}"
    );
    // A second call has nothing left to hand off (it counts this call's
    // shards, not the node's whole life's).
    assert_eq!(c.region.hand_off_all(T).await, Some(HandOff::default()));
    let view = members(&[&a, &b, &d]);
    set_view(&[&a, &b, &d], &view);
    c.stop.cancel();
    add_all(&[&a, &b, &d], 100, 1, &mut expected).await;
    check_all(&[&a, &b, &d], &expected).await;

    // b crashes without handoff (R = 2): replicas serve its shards.
    b.stop.cancel();
    b.transport.shutdown().await;
    let view = members(&[&a, &d]);
    set_view(&[&a, &d], &view);
    check_all(&[&a, &d], &expected).await;
    add_all(&[&a, &d], 100, 1, &mut expected).await;
    check_all(&[&a, &d], &expected).await;
}

#[tokio::test]
async fn unreachable_owner_is_a_typed_error_within_the_timeout() {
    let a = start("a").await;
    let b = start("b").await;
    let view = members(&[&a, &b]);
    a.view.send_replace(view.clone());
    b.stop.cancel();
    b.transport.shutdown().await;
    // Find an id owned by b in a's view.
    let routing = a.region.routing();
    let id = (0..1000)
        .map(|i| format!("x{i}"))
        .find(|id| routing.owner_of(id).map(|n| n.name.as_str()) == Some("b"))
        .unwrap();
    let started = std::time::Instant::now();
    let err = a
        .region
        .ask(&id, CounterMsg::Add(1), Duration::from_millis(800))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegionError::Unreachable { .. } | RegionError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Issue 4: increments (asks) from every node while a fourth node joins
/// and then one node leaves gracefully, then tells: every counter ends at
/// exactly its number of acknowledged increments, read from every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_through_join_and_graceful_leave() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let view = members(&[&a, &b, &c]);
    set_view(&[&a, &b, &c], &view);
    let d = start("d").await;
    const IDS: usize = 500;
    let stop_load = CancellationToken::new();
    // a and b send until told to stop; c sends until it leaves.
    // Each sender goes on until stopped and until it sent at least `min`.
    let spawn_load = |r: RegionHandle<Counter>, k: usize, stop: CancellationToken, min: usize| {
        tokio::spawn(async move {
            let mut acked: BTreeMap<String, u64> = BTreeMap::new();
            let mut failed = 0u32;
            let mut i = k;
            let mut sent = 0;
            while !stop.is_cancelled() || sent < min {
                sent += 1;
                let id = format!("counter-{}", i % IDS);
                match r.ask(&id, CounterMsg::Add(1), T).await {
                    Ok(_) => *acked.entry(id).or_default() += 1,
                    Err(_) => failed += 1,
                }
                i += 7;
            }
            (acked, failed)
        })
    };
    let stop_c = CancellationToken::new();
    let load_a = spawn_load(a.region.clone(), 0, stop_load.clone(), 4_000);
    let load_b = spawn_load(b.region.clone(), 1, stop_load.clone(), 4_000);
    let load_c = spawn_load(c.region.clone(), 2, stop_c.clone(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // d joins.
    let view = members(&[&a, &b, &c, &d]);
    set_view(&[&a, &b, &c, &d], &view);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // c stops its own sends, hands its shards off and leaves.
    stop_c.cancel();
    let mut results = vec![load_c.await.unwrap()];
    assert!(c.region.hand_off_all(T).await.is_some());
    let view = members(&[&a, &b, &d]);
    set_view(&[&a, &b, &d], &view);
    // A leaving node stays up until the messages it is forwarding are
    // answered (as node-cli's leave does): an ask cut in flight fails with
    // `Unreachable`, which the handle retries and could apply twice.
    let mut last = c.region.stats().forwarded;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = c.region.stats().forwarded;
        if now == last {
            break;
        }
        last = now;
    }
    c.stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_load.cancel();
    results.push(load_a.await.unwrap());
    results.push(load_b.await.unwrap());
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = 0;
    for (acked, f) in results {
        failed += f;
        for (id, n) in acked {
            *expected.entry(id).or_default() += n;
        }
    }
    let total: u64 = expected.values().sum();
    assert_eq!(failed, 0, "asks failed during the churn");
    assert!(total >= 8_000, "too little load to mean anything: {total}");
    check_all(&[&a, &b, &d], &expected).await;

    // Tells lose none: 2,000 tells from d, then read until they all landed.
    for i in 0..2000 {
        let id = format!("counter-{}", i % IDS);
        d.region.tell(&id, CounterMsg::Add(1)).unwrap();
        *expected.entry(id).or_default() += 1;
    }
    let deadline = std::time::Instant::now() + T;
    loop {
        let mut all = true;
        for (id, want) in &expected {
            if a.region.ask(id, CounterMsg::Get, T).await.unwrap() != *want {
                all = false;
                break;
            }
        }
        if all {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "tells were lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_all(&[&a, &b, &d], &expected).await;
}

/// A node whose view wrongly made it an owner for a while must not leave
/// the real owners forwarding to it forever (found by deploy/test.sh as
/// "message forwarded 3 times without reaching the owner").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_view_elsewhere_does_not_strand_shards() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let ab = members(&[&a, &b]);
    set_view(&[&a, &b], &ab);
    let mut expected = BTreeMap::new();
    add_all(&[&a, &b], 100, 1, &mut expected).await;
    // c alone believes it is a member (a and b never admit it): it fetches
    // the shards it thinks it owns from a and b.
    c.view.send_replace(members(&[&a, &b, &c]));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Then c learns the truth.
    c.view.send_replace(ab.clone());
    // Every counter is still reachable from a and b, and writable.
    add_all(&[&a, &b], 100, 1, &mut expected).await;
    check_all(&[&a, &b], &expected).await;
}

/// A new owner fetches each gained shard from every member; a member that
/// accepts connections but never answers (a stopped process) must not hold
/// the shard's messages for the whole fetch timeout once the view drops it
/// (RELIABILITY.md, finding 2). The fetch timeout here (60 s) is far above
/// the asks' (10 s): they can only succeed if recovery stops waiting for
/// the departed member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_stops_waiting_for_a_holder_that_leaves_the_view() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_test_writer()
        .try_init();
    let mut slow = RegionConfig::default();
    slow.sharding.replicate_timeout_ms = 60_000;
    let a = start_with("a", slow.clone()).await;
    let b = start_with("b", slow.clone()).await;
    let c = start_with("c", slow).await;
    let ab = members(&[&a, &b]);
    set_view(&[&a, &b], &ab);
    let mut expected = BTreeMap::new();
    add_all(&[&a, &b], 100, 2, &mut expected).await;

    // `z` completes the handshake and then never answers on the region's
    // channel: like a SIGSTOPped node whose links were already up.
    let z_node = start_bare("z").await;
    let _unread = z_node.transport.register(20).unwrap();
    let z = z_node.transport.identity().clone();
    let mut with_z = members(&[&a, &b, &c]);
    with_z.insert("z".into(), z);
    set_view(&[&a, &b, &c], &with_z);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // z is declared dead: recovery finishes from a and b alone.
    let abc = members(&[&a, &b, &c]);
    set_view(&[&a, &b, &c], &abc);
    // Wait until every region routes by the new view (an ask routed by the
    // old one goes to z and times out: that is not what this test is about).
    for n in [&a, &b, &c] {
        while n.region.routing().members.contains_key("z") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    check_all(&[&c, &a, &b], &expected).await;
    z_node.stop.cancel();
}

/// An owner that stalls (SIGSTOP: its connections stay up, it answers
/// nothing) and is then declared dead: asks in flight to it from a and b
/// must be retried at the new owner and answered long before their
/// deadline (DESIGN.md: an ask is answered or gets a typed error). The
/// membership driver forgets the links of a member declared dead; before
/// the fix, asks already sent on a forgotten link were never failed, so
/// each waited out its whole timeout (RELIABILITY.md: a 5 s SIGSTOP left
/// `wait_result` asks unanswered for 60 s). `z` is a bare transport that
/// reads its channel's frames and never handles them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_in_flight_to_a_stalled_owner_declared_dead_are_retried_at_the_new_owner() {
    let a = start("a").await;
    let b = start("b").await;
    let z_node = start_bare("z").await;
    let _unread = z_node.transport.register(20).unwrap();
    let z_addr = z_node.transport.identity().addr.clone();
    let ab = members(&[&a, &b]);
    let mut abz = ab.clone();
    abz.insert("z".into(), z_node.transport.identity().clone());
    let id = id_owned_by(&abz, "z", &ab, "a");
    set_view(&[&a, &b], &ab);
    for n in [&a, &b] {
        wait_routing(n, 2).await;
    }
    set_view(&[&a, &b], &abz);
    for n in [&a, &b] {
        wait_routing(n, 3).await;
    }
    let timeout = Duration::from_secs(20);
    let asks: Vec<_> = [&a, &b]
        .iter()
        .map(|n| spawn_add(&n.region, &id, timeout))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        asks.iter().all(|t| !t.is_finished()),
        "z answers nothing: the asks wait"
    );
    // z is declared dead: views without it, its links forgotten.
    let declared_dead = std::time::Instant::now();
    set_view(&[&a, &b], &ab);
    for n in [&a, &b] {
        n.transport.forget(&z_addr);
    }
    let mut values = Vec::new();
    for t in asks {
        let r = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("answered within 10 s of the verdict, not at the 20 s deadline")
            .unwrap();
        values.push(r.unwrap());
    }
    values.sort_unstable();
    assert_eq!(values, vec![1, 2], "each increment applied once, at a");
    assert!(
        declared_dead.elapsed() < Duration::from_secs(5),
        "answered {:?} after the verdict",
        declared_dead.elapsed()
    );
    check_all(&[&a, &b], &BTreeMap::from([(id, 2)])).await;
    z_node.stop.cancel();
}

/// Waits until `n`'s region routes by a view of `count` members.
/// `region`'s counters once `done` holds of them, or as they are after
/// about a second: they are published after the actor's turn, so a test
/// polls them briefly.
async fn stats_when(
    region: &RegionHandle<Counter>,
    done: impl Fn(&RegionStats) -> bool,
) -> RegionStats {
    for _ in 0..100 {
        let stats = region.stats();
        if done(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    region.stats()
}

async fn wait_routing(n: &TestNode, count: usize) {
    while n.region.routing().members.len() != count {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An entity id whose shard is owned by `first` in the allocation of
/// `view_1` and by `second` in that of `view_2`.
fn id_owned_by(view_1: &MemberMap, first: &str, view_2: &MemberMap, second: &str) -> String {
    let config = RegionConfig::default();
    let s = config.defaults.num_shards;
    let r = config.sharding.replication_factor;
    let alloc_1 = sharding::allocate(&view_1.keys().cloned().collect(), s, r);
    let alloc_2 = sharding::allocate(&view_2.keys().cloned().collect(), s, r);
    (0..10_000)
        .map(|i| format!("x{i}"))
        .find(|id| {
            let shard = sharding::shard_id(id, s);
            alloc_1.owner(shard) == Some(first) && alloc_2.owner(shard) == Some(second)
        })
        .unwrap()
}

/// A new owner does not serve a shard while a member of its view that
/// holds the shard has not handed it over: `b` holds a counter alone (its
/// view is {b}, so the write was confirmed with no replica) when `c`
/// joins with the view {b, c}, in which `c` owns the counter's shard. `b`
/// answers `c`'s fetches `Moved` (its view does not make `c` the owner)
/// for longer than one fetch's patience (5 s). Before the fix `c` then
/// stopped waiting for `b` and served the shard without `b`'s copy: an
/// add at `c` answered 1, and `b`'s push of its own 1 later lost the
/// update. Now `c` asks `b` again while `b` is in its view, and the add
/// waits for `b`'s copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_waits_for_a_holder_in_its_view_whose_fetch_failed() {
    let b = start("b").await;
    let c = start("c").await;
    let only_b = members(&[&b]);
    let bc = members(&[&b, &c]);
    let id = id_owned_by(&only_b, "b", &bc, "c");
    b.view.send_replace(only_b);
    wait_routing(&b, 1).await;
    assert_eq!(b.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    c.view.send_replace(bc.clone());
    wait_routing(&c, 2).await;
    // Past one fetch's patience while b's view lags.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let add = spawn_add(&c.region, &id, T);
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.view.send_replace(bc);
    assert_eq!(add.await.unwrap(), Ok(2), "the add applies on b's copy");
    check_all(&[&b, &c], &BTreeMap::from([(id, 2)])).await;
}

/// A copy pushed to a node that is not the shard's owner in its own view
/// reaches the owner: `a` holds a counter at 1 alone, then its view
/// {a, x} makes `x` the owner, so `a` pushes its copy to `x`; but `x`'s
/// view is {x, y}, where `y` owns the shard (and already serves it).
/// Before the fix `x` kept the copy as a non-owner and `y` never saw it:
/// once every view was {a, x, y} (still `y`'s), reads answered 0. Now
/// `x` passes the copy on to `y`, which adopts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_pushed_to_a_non_owner_reaches_the_owner() {
    let a = start("a").await;
    let x = start("x").await;
    let y = start("y").await;
    let (ax, xy, axy) = (
        members(&[&a, &x]),
        members(&[&x, &y]),
        members(&[&a, &x, &y]),
    );
    let id = id_held_by(&[(&ax, &["x"]), (&xy, &["y"]), (&axy, &["y"])]);
    set_view(&[&x, &y], &xy);
    wait_routing(&y, 2).await;
    assert_eq!(y.region.ask(&id, CounterMsg::Get, T).await, Ok(0));
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    // a loses the shard to x in its view and pushes its copy there.
    a.view.send_replace(ax);
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_view(&[&a, &x, &y], &axy);
    for n in [&a, &x, &y] {
        wait_routing(n, 3).await;
    }
    check_all(&[&y, &a, &x], &BTreeMap::from([(id, 1)])).await;
    for n in [&a, &x, &y] {
        n.stop.cancel();
    }
}

/// Concurrent joins (issue 8, scenario 2's "not found" for an acknowledged
/// submit): `b` becomes owner of a shard in the view {a, b, c} while `c`
/// has not joined (its view is empty); then `c` joins with a view that
/// lacks `b`, {a, c}, in which `c` owns the same shard. Neither may serve
/// the shard on copies from members whose views name another owner:
/// otherwise both are active owners, `c` acknowledges a write that `b`
/// (the owner everybody else routes to) answers without. Every write
/// acknowledged before a read was sent must be visible to that read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_with_a_partial_view_does_not_serve_a_shard_owned_elsewhere() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let abc = members(&[&a, &b, &c]);
    let ac = members(&[&a, &c]);
    let id = id_owned_by(&abc, "b", &ac, "c");
    // a alone, then a and b see all three; c has not joined yet.
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    set_view(&[&a, &b], &abc);
    wait_routing(&a, 3).await;
    wait_routing(&b, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // c joins seeing only a.
    c.view.send_replace(ac.clone());
    wait_routing(&c, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A write through c (the owner in c's view) ...
    let write = {
        let r = c.region.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let v = r.ask(&id, CounterMsg::Add(1), T).await;
            (v, std::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and a read through a (whose view names b) sent after it.
    let read_sent = std::time::Instant::now();
    let read = {
        let r = a.region.clone();
        let id = id.clone();
        tokio::spawn(async move { r.ask(&id, CounterMsg::Get, T).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // c learns of b.
    c.view.send_replace(abc.clone());
    let (written, acked_at) = write.await.unwrap();
    let written = written.unwrap();
    let read = read.await.unwrap().unwrap();
    assert_eq!(written, 1);
    if acked_at < read_sent {
        assert_eq!(
            read, written,
            "a write acknowledged by c before the read was sent is missing at b"
        );
    }
    let expected = BTreeMap::from([(id, 1)]);
    check_all(&[&a, &b, &c], &expected).await;
}

/// A region reset (this node's life was declared dead while it ran) while
/// a local idempotent ask waits for a replica's confirmation: the ask is
/// answered `Moved` and retried at the owner, it does not fail with
/// `Shutdown` (a dropped answer) while the region runs. Here the replica
/// `z` never answers; once it leaves the view the retried `Set` is applied
/// and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_ask_waiting_for_replicas_survives_a_reset() {
    let (value, read) = reset_while_an_ask_waits_for_its_replica(false, CounterMsg::Set(5)).await;

    assert_eq!(value, Ok(5), "the ask is retried after the reset");
    assert_eq!(read, Ok(5));
}

/// The same with an `Add`, which is not idempotent: a replica may hold
/// the change the reset took back (`a_reset_does_not_apply_twice_an_add_a_replica_holds`),
/// so the ask is answered `ReplicationFailed`, not sent again, and the
/// counter created unconfirmed is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_idempotent_ask_waiting_for_replicas_fails_at_a_reset() {
    let (value, read) = reset_while_an_ask_waits_for_its_replica(false, CounterMsg::Add(1)).await;

    assert!(
        matches!(value, Err(RegionError::ReplicationFailed { .. })),
        "{value:?}"
    );
    assert_eq!(read, Ok(0));
}

/// A reset discards only what the replicas never confirmed: an entity with
/// a confirmed state and a newer unconfirmed change goes back to the
/// confirmed state, not away. Before the fix the reset removed the entity
/// (the partition fault test's minority side lost tasks whose completion
/// was still replicating when it learned it had been declared dead), so
/// the counter read 0 here instead of 1 (then, when the reset still sent
/// every waiting ask again, the retried add read 1 instead of 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_keeps_the_confirmed_state_under_an_unconfirmed_change() {
    let (value, read) = reset_while_an_ask_waits_for_its_replica(true, CounterMsg::Add(1)).await;

    assert!(
        matches!(value, Err(RegionError::ReplicationFailed { .. })),
        "{value:?}"
    );
    assert_eq!(
        read,
        Ok(1),
        "the confirmed 1 survives, the unconfirmed add goes"
    );
}

/// Owner a, then z (a transport that never reads) as its replica (a stays
/// the owner of the counter's shard, so nothing is fetched from z); `msg`
/// is applied at a and waits for z's confirmation while a resets; then z
/// is declared dead and a owns everything alone. With `confirmed_first`,
/// the counter got an `Add(1)` confirmed at once before z joined. Returns
/// the waiting ask's answer (an idempotent one is retried after the reset)
/// and a read of the counter afterwards.
async fn reset_while_an_ask_waits_for_its_replica(
    confirmed_first: bool,
    msg: CounterMsg,
) -> (Result<u64, RegionError>, Result<u64, RegionError>) {
    let a = start("a").await;
    let z_node = start_bare("z").await;
    let _unread = z_node.transport.register(20).unwrap();
    let mut az = members(&[&a]);
    az.insert("z".into(), z_node.transport.identity().clone());
    let id = id_owned_by(&az, "a", &members(&[&a]), "a");
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    if confirmed_first {
        // Confirmed at once: a has no replica yet.
        assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    }
    a.view.send_replace(az);
    wait_routing(&a, 2).await;
    let (region, ask_id) = (a.region.clone(), id.clone());
    let ask = tokio::spawn(async move { region.ask(&ask_id, msg, T).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ask.is_finished(), "z never confirms: the ask must wait");
    a.region.reset().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.view.send_replace(members(&[&a]));
    let value = ask.await.unwrap();
    let read = a.region.ask(&id, CounterMsg::Get, T).await;
    z_node.stop.cancel();
    (value, read)
}

/// A reset does not apply twice an ask whose change a replica holds.
/// `x` asks `Add(10)` of the counter's owner `a` (views {a, s, x}, `s` its
/// replica: a stand-in that keeps what it is sent and confirms only after
/// a minute). `a` applies it and waits for `s`. Then the views of `x` and
/// of the new owner `c` become {c, s, x}: `c` recovers the shard and
/// fetches `s`'s copy (10); then {c, x}. When `a` resets, the change `s`
/// holds is one `a` can neither confirm nor take back. Before the fix `a`
/// answered the ask `Moved`, `x` sent it again to `c`, and `c` added 10
/// once more: answered `Ok(20)` for one ask. Now a non-idempotent ask
/// waiting for its replicas at a reset is answered `ReplicationFailed`
/// (applied or not, unknown), and an idempotent one `Moved`, as at a
/// hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_does_not_apply_twice_an_add_a_replica_holds() {
    let mut slow = RegionConfig::default();
    slow.sharding.replicate_timeout_ms = 60_000;
    // The new owner's name: one that owns a shard in {c, s, x} and in
    // {c, x}, where `a` owns it with `s` its replica in {a, s, x}.
    let config = RegionConfig::default();
    let (shards, r) = (
        config.defaults.num_shards,
        config.sharding.replication_factor,
    );
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect();
    let before = sharding::allocate(&names(&["a", "s", "x"]), shards, r);
    let (c_name, shard) = (b'b'..=b'w')
        .map(|b| (b as char).to_string())
        .filter(|c| !["s", "x"].contains(&c.as_str()))
        .find_map(|c| {
            let with_s = sharding::allocate(&names(&[&c, "s", "x"]), shards, r);
            let without_s = sharding::allocate(&names(&[&c, "x"]), shards, r);
            (0..shards.get())
                .map(ShardId)
                .find(|&sh| {
                    before.holders(sh) == ["a", "s"]
                        && with_s.owner(sh) == Some(c.as_str())
                        && without_s.owner(sh) == Some(c.as_str())
                })
                .map(|sh| (c.clone(), sh))
        })
        .expect("a name for the new owner");
    let id = (0..10_000)
        .map(|i| format!("x{i}"))
        .find(|id| sharding::shard_id(id, shards) == shard)
        .expect("an id of that shard");
    let a = start_with("a", slow).await;
    let c = start(&c_name).await;
    let x = start("x").await;
    let s = start_slow_replica("s", Duration::from_secs(60)).await;
    let mut asx = members(&[&a, &x]);
    asx.insert("s".into(), s.identity());
    let mut csx = members(&[&c, &x]);
    csx.insert("s".into(), s.identity());
    set_view(&[&a, &x], &asx);
    wait_routing(&a, 3).await;
    wait_routing(&x, 3).await;
    let (region, add_id) = (x.region.clone(), id.clone());
    let add = tokio::spawn(async move { region.ask(&add_id, CounterMsg::Add(10), T).await });
    until(|| a.region.stats().delivered > 0, "a applied the add").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !add.is_finished(),
        "s confirms after a minute: the add waits"
    );
    set_view(&[&c, &x], &csx);
    wait_routing(&x, 3).await;
    wait_routing(&c, 3).await;
    assert_eq!(
        c.region.ask(&id, CounterMsg::Get, T).await,
        Ok(10),
        "c recovered the shard with the copy s holds"
    );
    // Now s is gone for c and x, and x is c's replica.
    let cx = members(&[&c, &x]);
    set_view(&[&c, &x], &cx);
    wait_routing(&x, 2).await;
    wait_routing(&c, 2).await;
    assert_eq!(
        c.region.ask(&id, CounterMsg::Get, T).await,
        Ok(10),
        "c serves the copy s held"
    );
    a.region.reset().await.unwrap();
    let answered = tokio::time::timeout(T, add).await.unwrap().unwrap();
    let read = c.region.ask(&id, CounterMsg::Get, T).await;
    assert_eq!(
        read,
        Ok(10),
        "one Add(10) was asked (answered {answered:?}), but the counter reads {read:?}"
    );
    assert!(
        matches!(answered, Err(RegionError::ReplicationFailed { .. })),
        "applied or not, unknown: {answered:?}"
    );
}

/// An entity that waits on a message its `may_wait` says never waits gets
/// its asker a typed protocol error at once, not a silent drop or a hang
/// until the timeout (the region kept no copy to deliver again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_the_entity_did_not_declare_is_an_error_not_a_hang() {
    let a = start("a").await;
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    let t0 = std::time::Instant::now();
    let r = a
        .region
        .ask("undeclared", CounterMsg::WaitUndeclared(5), T)
        .await;

    assert!(
        matches!(&r, Err(RegionError::Protocol { reason, .. }) if reason.contains("may_wait")),
        "{r:?}"
    );
    assert!(t0.elapsed() < T, "answered before the ask's timeout");
    assert_eq!(
        a.region
            .ask("undeclared", CounterMsg::WaitAtLeast(0), T)
            .await,
        Ok(0)
    );
}

/// Asks kept waiting are bounded (`[sharding] max_parked_asks`): one over
/// the limit is refused with a typed error instead of held, which the
/// handle retries until the ask's deadline; the waiting ones are still
/// answered, and a refused wait gets in once a slot is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_kept_waiting_are_bounded() {
    let mut config = RegionConfig::default();
    config.sharding.max_parked_asks = 2;
    let a = start_with("a", config).await;
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    let wait = |id: &'static str| {
        let r = a.region.clone();
        tokio::spawn(async move { r.ask(id, CounterMsg::WaitAtLeast(1), T).await })
    };
    let (w1, w2) = (wait("x"), wait("y"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!w1.is_finished() && !w2.is_finished(), "two asks wait");

    let short = Duration::from_millis(400);
    let third = a.region.ask("z", CounterMsg::WaitAtLeast(1), short).await;
    assert!(
        matches!(third, Err(RegionError::TooManyWaiting { limit: 2, .. })),
        "{third:?}"
    );
    let w3 = wait("z");
    let stats = stats_when(&a.region, |s| s.refused_waits >= 2).await;
    assert!(stats.refused_waits >= 2, "{stats:?}");

    assert_eq!(a.region.ask("x", CounterMsg::Add(1), T).await, Ok(1));
    assert_eq!(w1.await.unwrap(), Ok(1));
    // x's slot is free: the wait on z, refused so far, is held at its next
    // retry (or finds z at 1 if it retries after the add).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.region.ask("z", CounterMsg::Add(1), T).await, Ok(1));
    assert_eq!(w3.await.unwrap(), Ok(1));
    assert_eq!(a.region.ask("y", CounterMsg::Add(1), T).await, Ok(1));
    assert_eq!(w2.await.unwrap(), Ok(1));
}

/// A burst of asks that overflows a small `drop_new` mailbox: the mailbox
/// drops what does not fit (counted in the stats), and each asker backs
/// off and sends again, so every ask is answered within its timeout and
/// applied once. Before session 11 the overflow answered `Dropped` to the
/// asker, which gave up.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_over_a_full_drop_new_mailbox_is_shed_then_served() {
    let mut config = RegionConfig::default();
    config.mailbox.capacity = 4;
    config.mailbox.strategy = MailboxStrategy::DropNew;
    let a = start_with("a", config).await;
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    // Spawned on this one thread, the asks all try the mailbox before
    // the actor takes anything from it: all but the first four are dropped.
    let asks: Vec<_> = (0..40)
        .map(|i| {
            let r = a.region.clone();
            tokio::spawn(async move { r.ask(&format!("c{i}"), CounterMsg::Add(1), T).await })
        })
        .collect();
    for (i, ask) in asks.into_iter().enumerate() {
        assert_eq!(ask.await.unwrap(), Ok(1), "ask {i}");
    }
    let stats = stats_when(&a.region, |s| s.dropped >= 36).await;
    assert!(
        stats.dropped >= 36,
        "the burst overflowed the mailbox: {stats:?}"
    );
}

/// A reset restores the confirmed state under a new, higher version: a
/// replica may hold the later change whose confirmation the owner had not
/// processed yet, and a write after the reset must not reuse that change's
/// version number (the replica would keep its copy and lose the write).
/// Found by a tester: before, the acknowledged `Add(100)` was lost after
/// the owner's crash (b read 11). The interleaving depends on timing: the
/// old code failed this test in 1 of 3 runs here (5 of 5 in the tester's
/// variant with more output between the steps); the fixed code passes it
/// whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_reset_never_reuses_a_version() {
    // The tell's change must reach b at once, not be held back.
    let a = start_with("a", with_delay_ms(0)).await;
    let b = start_with("b", with_delay_ms(0)).await;
    let ab = members(&[&a, &b]);
    set_view(&[&a, &b], &ab);
    let id = id_owned_by(&ab, "a", &members(&[&b]), "b");
    assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    // b's actor busy with its own counter: its confirmation of the next
    // change reaches a only after a's reset.
    let busy = id_owned_by(&ab, "b", &members(&[&b]), "b");
    for _ in 0..20_000 {
        let _ = b.region.tell(&busy, CounterMsg::Add(1));
    }
    a.region.tell(&id, CounterMsg::Add(10)).unwrap();
    // Long enough for a to apply the tell and send its replication, short
    // against b's backlog.
    tokio::time::sleep(Duration::from_millis(3)).await;
    a.view.send_replace(members(&[&a]));
    a.region.reset().await.unwrap();
    wait_routing(&a, 1).await;
    let acked = a.region.ask(&id, CounterMsg::Add(100), T).await;
    assert!(matches!(acked, Ok(v) if v >= 101), "{acked:?}");
    // b becomes a's replica again (a pushes the shard), then a crashes.
    a.view.send_replace(ab.clone());
    wait_routing(&a, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.stop.cancel();
    a.transport.shutdown().await;
    b.view.send_replace(members(&[&b]));
    wait_routing(&b, 1).await;

    let got = b.region.ask(&id, CounterMsg::Get, T).await;
    assert_eq!(
        got, acked,
        "the acknowledged Add(100) survives on the replica"
    );
}

/// A partition's minority side (a, b) acknowledged writes the majority (c)
/// never saw; both are then told they were declared dead and reset. The
/// writes must survive the resets and reach the majority's owners once the
/// views heal: a reset recovers anew (merging its own copy) instead of
/// dropping what it held (issue 8, scenario 3: every acknowledged task
/// present once). With the copies dropped, c's shards read 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_by_a_minority_survive_its_reset() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let ab = members(&[&a, &b]);
    set_view(&[&a, &b], &ab);
    c.view.send_replace(members(&[&c]));
    let mut expected = BTreeMap::new();
    add_all(&[&a, &b], 100, 2, &mut expected).await;

    a.region.reset().await.unwrap();
    b.region.reset().await.unwrap();
    let abc = members(&[&a, &b, &c]);
    set_view(&[&a, &b, &c], &abc);
    for n in [&a, &b, &c] {
        wait_routing(n, 3).await;
    }
    check_all(&[&c, &a, &b], &expected).await;
}

/// `ask_batch` from every node while a fourth node joins: every item is
/// answered in item order (an id repeated in one batch sees its counter
/// climb in item order), and every counter ends at exactly its number of
/// acknowledged increments, read from every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_asks_apply_once_in_item_order_through_a_join() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    set_view(&[&a, &b, &c], &members(&[&a, &b, &c]));
    let d = start("d").await;
    const IDS: usize = 300;
    let batches = |r: RegionHandle<Counter>, k: usize| {
        tokio::spawn(async move {
            let mut acked: BTreeMap<String, u64> = BTreeMap::new();
            for round in 0..20 {
                // Each id of the batch twice, the second right after the first.
                let items: Vec<(String, CounterMsg)> = (0..IDS / 3)
                    .map(|i| format!("counter-{}", (i * 3 + k + round) % IDS))
                    .flat_map(|id| [(id.clone(), CounterMsg::Add(1)), (id, CounterMsg::Add(1))])
                    .collect();
                let answers = r.ask_batch(items.clone(), T).await;
                assert_eq!(answers.len(), items.len());
                for (pair, got) in items.chunks(2).zip(answers.chunks(2)) {
                    let (first, second) = (got[0].clone().unwrap(), got[1].clone().unwrap());
                    assert!(second > first, "{}: {first} then {second}", pair[0].0);
                    *acked.entry(pair[0].0.clone()).or_default() += 2;
                }
            }
            acked
        })
    };
    let loads = [
        batches(a.region.clone(), 0),
        batches(b.region.clone(), 1),
        batches(c.region.clone(), 2),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    set_view(&[&a, &b, &c, &d], &members(&[&a, &b, &c, &d]));
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for load in loads {
        for (id, n) in load.await.unwrap() {
            *expected.entry(id).or_default() += n;
        }
    }
    assert_eq!(
        expected.values().sum::<u64>(),
        3 * 20 * 2 * (IDS / 3) as u64
    );
    check_all(&[&a, &b, &c, &d], &expected).await;
    // Reads in one batch give the same values as single asks.
    let ids: Vec<String> = expected.keys().cloned().collect();
    let reads = d
        .region
        .ask_batch(
            ids.iter().map(|id| (id.clone(), CounterMsg::Get)).collect(),
            T,
        )
        .await;
    for (id, got) in ids.iter().zip(reads) {
        assert_eq!(got.unwrap(), expected[id], "{id}");
    }
    assert!(d.region.stats().shards_recovered > 0, "d took over shards");
}

/// A batch whose owner is gone: every item of it fails with a typed error
/// within the timeout, and the items owned by a live node still succeed
/// (reads: a write would wait for the dead node as replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_to_an_unreachable_owner_fails_its_items_within_the_timeout() {
    let a = start("a").await;
    let b = start("b").await;
    set_view(&[&a, &b], &members(&[&a, &b]));
    wait_routing(&a, 2).await;
    let routing = a.region.routing();
    let ids: Vec<String> = (0..200).map(|i| format!("x{i}")).collect();
    let on_b = |id: &str| routing.owner_of(id).map(|n| n.name.as_str()) == Some("b");
    assert!(ids.iter().any(|id| on_b(id)) && ids.iter().any(|id| !on_b(id)));
    // a's own shards first finish their recovery (fetched from b while b
    // is up: a new owner waits for every holder in its view); then b
    // stops, still in a's view (not declared dead yet).
    let live: Vec<(String, CounterMsg)> = ids
        .iter()
        .filter(|id| !on_b(id))
        .map(|id| (id.clone(), CounterMsg::Get))
        .collect();
    for got in a.region.ask_batch(live, T).await {
        assert_eq!(got, Ok(0));
    }
    b.stop.cancel();
    b.transport.shutdown().await;
    let started = std::time::Instant::now();
    let answers = a
        .region
        .ask_batch(
            ids.iter().map(|id| (id.clone(), CounterMsg::Get)).collect(),
            Duration::from_millis(800),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for (id, got) in ids.iter().zip(answers) {
        if on_b(id) {
            assert!(
                matches!(
                    got,
                    Err(RegionError::Unreachable { .. } | RegionError::Timeout { .. })
                ),
                "{id}: {got:?}"
            );
        } else {
            assert_eq!(got, Ok(0), "{id}");
        }
    }
}

/// A frame that fails fast (its owner is gone) is retried at once, not
/// after the batch's other frames: here the other frame holds parked items
/// until the deadline, and the dead owner's items must still land at the
/// new owner as soon as the view drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_frame_is_retried_while_another_frame_waits() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    set_view(&[&a, &b, &c], &members(&[&a, &b, &c]));
    wait_routing(&a, 3).await;
    let routing = a.region.routing();
    let owned_by = |who: &str, n: usize| -> Vec<String> {
        (0..10_000)
            .map(|i| format!("k{i}"))
            .filter(|id| routing.owner_of(id).map(|o| o.name.as_str()) == Some(who))
            .take(n)
            .collect()
    };
    let (on_b, on_c) = (owned_by("b", 10), owned_by("c", 10));
    c.stop.cancel();
    c.transport.shutdown().await;
    let mut items: Vec<(String, CounterMsg)> = on_b
        .iter()
        .map(|id| (id.clone(), CounterMsg::WaitAtLeast(1_000)))
        .collect();
    items.extend(on_c.iter().map(|id| (id.clone(), CounterMsg::Add(1))));
    let view_ab = members(&[&a, &b]);
    let (a_view, b_view) = (a.view.clone(), b.view.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a_view.send_replace(view_ab.clone());
        b_view.send_replace(view_ab);
    });
    let answers = a.region.ask_batch(items, Duration::from_secs(3)).await;
    for (id, got) in on_b.iter().zip(&answers) {
        assert!(
            matches!(got, Err(RegionError::Timeout { .. })),
            "{id}: {got:?}"
        );
    }
    for (id, got) in on_c.iter().zip(&answers[on_b.len()..]) {
        assert_eq!(got, &Ok(1), "{id} (owner c died)");
    }
}

/// Frames are cut to fit `[transport] max_frame_bytes` even when it is
/// smaller than `[sharding] snapshot_page_bytes`: a batch of 2,000 items
/// with long ids (about 130 KB) to a peer that takes 16 KiB frames lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_frames_fit_a_small_frame_limit() {
    let small = TransportConfig {
        max_frame_bytes: 16 * 1024,
        ..TransportConfig::default()
    };
    let a = start_full("a", RegionConfig::default(), small.clone()).await;
    let b = start_full("b", RegionConfig::default(), small).await;
    set_view(&[&a, &b], &members(&[&a, &b]));
    wait_routing(&a, 2).await;
    let ids: Vec<String> = (0..2_000).map(|i| format!("{i:0>60}")).collect();
    let answers = a
        .region
        .ask_batch(
            ids.iter()
                .map(|id| (id.clone(), CounterMsg::Add(1)))
                .collect(),
            T,
        )
        .await;
    for (id, got) in ids.iter().zip(answers) {
        assert_eq!(got, Ok(1), "{id}");
    }
    check_all(&[&a, &b], &ids.iter().map(|id| (id.clone(), 1)).collect()).await;
}

/// Items with no owner yet (the view not applied) wait and are sent once a
/// view gives their shards an owner, like single asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_items_without_an_owner_wait_for_one() {
    let a = start("a").await;
    let view = members(&[&a]);
    let a_view = a.view.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        a_view.send_replace(view);
    });
    let ids: Vec<String> = (0..50).map(|i| format!("early-{i}")).collect();
    let answers = a
        .region
        .ask_batch(
            ids.iter()
                .map(|id| (id.clone(), CounterMsg::Add(1)))
                .collect(),
            T,
        )
        .await;
    for (id, got) in ids.iter().zip(answers) {
        assert_eq!(got, Ok(1), "{id}");
    }
}

/// A region config whose owners hold back a change nobody waits for at
/// most `ms` ms (`[sharding] replicate_delay_ms`).
fn with_delay_ms(ms: u64) -> RegionConfig {
    let mut config = RegionConfig::default();
    config.sharding.replicate_delay_ms = ms;
    config
}

/// Two nodes with `[sharding] replicate_delay_ms = delay_ms` and an id `a`
/// owns with `b` as its replica (and `b` owns without `a`). Returns once
/// `a` serves the id's shard and has had time to push it to `b` (a
/// background push sends the current state, held changes included, so a
/// test of holding must start after it).
async fn owner_and_replica(delay_ms: u64) -> (TestNode, TestNode, String) {
    let a = start_with("a", with_delay_ms(delay_ms)).await;
    let b = start_with("b", with_delay_ms(delay_ms)).await;
    let ab = members(&[&a, &b]);
    set_view(&[&a, &b], &ab);
    wait_routing(&a, 2).await;
    wait_routing(&b, 2).await;
    let id = id_owned_by(&ab, "a", &members(&[&b]), "b");
    assert_eq!(a.region.ask(&id, CounterMsg::Get, T).await, Ok(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    (a, b, id)
}

/// a owns `id`, b is its replica; a crashes, b takes over; returns what b
/// then holds for `id`.
async fn crash_owner_and_read(a: TestNode, b: &TestNode, id: &str) -> u64 {
    a.stop.cancel();
    a.transport.shutdown().await;
    b.view.send_replace(members(&[b]));
    wait_routing(b, 1).await;
    b.region.ask(id, CounterMsg::Get, T).await.unwrap()
}

/// `[sharding] replicate_delay_ms`: a change nobody waits for (a tell's) is
/// held back, and reaches the replica once the delay has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_nobody_waits_for_is_held_at_most_the_delay() {
    let (a, b, id) = owner_and_replica(200).await;
    a.region.tell(&id, CounterMsg::Add(5)).unwrap();
    // Well past the delay (and a's 100 ms tick).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(crash_owner_and_read(a, &b, &id).await, 5);
}

/// The other side of the same setting: within the delay, a tell's change
/// is on the owner only (a crash loses it; a tell was never acknowledged).
/// This is what lets a later change of the entity replace it unsent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_change_is_not_sent_before_the_delay() {
    let (a, b, id) = owner_and_replica(60_000).await;
    let before = a.region.stats().delivered;
    a.region.tell(&id, CounterMsg::Add(5)).unwrap();
    // Time for a to apply it (no read through a: a read waits for b's
    // copy, which would send it).
    while a.region.stats().delivered == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(crash_owner_and_read(a, &b, &id).await, 0);
}

/// A change some answer waits for is sent at once, whatever the delay: an
/// ask's own change, and a tell's change that answers an ask kept waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_an_answer_waits_for_is_sent_at_once() {
    let (a, b, id) = owner_and_replica(60_000).await;
    let started = std::time::Instant::now();
    assert_eq!(a.region.ask(&id, CounterMsg::Add(3), T).await, Ok(3));
    let before = a.region.stats().delivered;
    // Asked from b, kept waiting on a, answered by a tell's change.
    let waiting = {
        let region = b.region.clone();
        let id = id.clone();
        tokio::spawn(async move { region.ask(&id, CounterMsg::WaitAtLeast(10), T).await })
    };
    while a.region.stats().delivered == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.region.tell(&id, CounterMsg::Add(7)).unwrap();
    assert_eq!(waiting.await.unwrap(), Ok(10));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an answer waited for a held change: {:?}",
        started.elapsed()
    );
    assert_eq!(crash_owner_and_read(a, &b, &id).await, 10);
}

/// A view change sends every held change (to the replicas it was held
/// for) before the shards move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_change_sends_the_held_changes() {
    let (a, b, id) = owner_and_replica(60_000).await;
    let c = start_bare("c").await;
    let before = a.region.stats().delivered;
    a.region.tell(&id, CounterMsg::Add(4)).unwrap();
    while a.region.stats().delivered == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // c (a transport without a region) joins a's view only: a sends what
    // it held; b's view is unchanged.
    let mut abc = members(&[&a, &b]);
    let c_id = c.transport.identity().clone();
    abc.insert(c_id.name.clone(), c_id);
    a.view.send_replace(abc);
    wait_routing(&a, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(crash_owner_and_read(a, &b, &id).await, 4);
    c.stop.cancel();
}

// ----- adversarial scenarios: views that differ, handoffs, resets ---------

/// An entity id whose shard, in the allocation of each `view`, has holders
/// starting with `holders` (owner first, then replicas in order).
fn id_held_by(cases: &[(&MemberMap, &[&str])]) -> String {
    id_held_by_with(&RegionConfig::default(), cases)
}

/// [`id_held_by`] under `config`'s shard count and replication factor.
fn id_held_by_with(config: &RegionConfig, cases: &[(&MemberMap, &[&str])]) -> String {
    let (s, r) = (
        config.defaults.num_shards,
        config.sharding.replication_factor,
    );
    let allocs: Vec<_> = cases
        .iter()
        .map(|(view, holders)| {
            (
                sharding::allocate(&view.keys().cloned().collect(), s, r),
                *holders,
            )
        })
        .collect();
    (0..10_000)
        .map(|i| format!("x{i}"))
        .find(|id| {
            let shard = sharding::shard_id(id, s);
            allocs.iter().all(|(alloc, holders)| {
                let got = alloc.holders(shard);
                got.len() >= holders.len() && got.iter().zip(holders.iter()).all(|(g, h)| g == h)
            })
        })
        .expect("an id with these holders")
}

/// An ask applied by an owner whose replication failed is not applied a
/// second time by the new owner. `a` owns the counter with replica `b`
/// ({a, b}); `b` crashes (not yet declared dead), so `a` applies `Add(1)`
/// and keeps retrying its replication. Then the views become {a, c},
/// where `c` owns the counter: `c` fetches `a`'s copy (counter 1). Before
/// the fix, `a` answered the waiting ask `Moved` at its next replication
/// retry, the handle sent it to `c`, and `c` added 1 again (counter 2 for
/// one acknowledged add). Now `a` hands the change over to `c`, which
/// holds it, and answers the ask `Ok(1)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_whose_replication_failed_is_not_applied_again_by_the_new_owner() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let (ab, ac) = (members(&[&a, &b]), members(&[&a, &c]));
    let id = id_owned_by(&ab, "a", &ac, "c");
    set_view(&[&a, &b], &ab);
    wait_routing(&a, 2).await;
    wait_routing(&b, 2).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Get, T).await, Ok(0));
    // b crashes, still in a's view: a's replication of the add fails.
    b.stop.cancel();
    b.transport.shutdown().await;
    let add = spawn_add(&a.region, &id, T);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!add.is_finished(), "the add waits for its replica");
    // b is declared dead and c joins, owning the counter's shard.
    set_view(&[&a, &c], &ac);
    let answered = add.await.unwrap();
    let read = c.region.ask(&id, CounterMsg::Get, T).await;
    assert_eq!(
        read,
        Ok(1),
        "one Add(1) was acknowledged (answered {answered:?}), but the counter reads {read:?}: \
         the ask answered Moved after a applied it was applied again at c"
    );
    check_all(&[&a, &c], &BTreeMap::from([(id, 1)])).await;
}

/// The same double application through a reset: `a` applied `Add(1)`,
/// its replica `z` never answers (a stalled node, replication timeout
/// 60 s), and the views become {a, c} where `c` owns the counter; `c`
/// fetches `a`'s copy (counter 1) and activates. Before the fix the add
/// kept waiting for `z`, and when `a` learned it was declared dead
/// (`reset`) every ask waiting for replicas was answered `Moved`: the
/// handle retried at `c`, counter 2 for one acknowledged `Add(1)`. Now
/// `a` hands the add over to `c` when it loses the shard (answered
/// `Ok(1)`, `c` holding it), and the reset after it applies nothing
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_of_the_old_owner_does_not_apply_a_handed_off_add_twice() {
    let mut slow = RegionConfig::default();
    slow.sharding.replicate_timeout_ms = 60_000;
    let a = start_with("a", slow.clone()).await;
    let c = start_with("c", slow).await;
    let z_node = start_bare("z").await;
    let _unread = z_node.transport.register(20).unwrap();
    let mut az = members(&[&a]);
    az.insert("z".into(), z_node.transport.identity().clone());
    let ac = members(&[&a, &c]);
    let id = id_held_by(&[(&members(&[&a]), &["a"]), (&az, &["a"]), (&ac, &["c"])]);
    // a alone serves the shard, then z becomes its replica.
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Get, T).await, Ok(0));
    a.view.send_replace(az);
    wait_routing(&a, 2).await;
    let add = spawn_add(&a.region, &id, T);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!add.is_finished(), "z never confirms: the add waits");
    // z is declared dead, c joins and takes the shard over from a.
    set_view(&[&a, &c], &ac);
    wait_routing(&c, 2).await;
    // c serves the counter with a's change in it.
    assert_eq!(c.region.ask(&id, CounterMsg::Get, T).await, Ok(1));
    // a handed the waiting add over to c, which holds it.
    let answered = tokio::time::timeout(T, add).await.unwrap().unwrap();
    assert_eq!(answered, Ok(1), "the add is answered by the hand-over");
    a.region.reset().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = c.region.ask(&id, CounterMsg::Get, T).await;
    assert_eq!(
        read,
        Ok(1),
        "one Add(1) was acknowledged, but the counter reads {read:?} after a's reset"
    );
    z_node.stop.cancel();
}

/// A reset's restored state does not undo the new owner's change. Views
/// {a, b}: `a` owns the counter, `b` is its replica, `Add(1)` confirmed
/// (version 1 on both). Then `b` sees {b} (`a` declared dead; `b` owns
/// the counter, its copy at version 1), and `a` sees {a}, then {a, z}
/// with `z` a replica that never answers (replication timeout 60 s). `a`
/// applies a tell's `Add(10)` (version 2, never confirmed); `b` applies
/// `Add(10)` too, as the new owner applies an ask that `a`'s reset
/// answers `Moved` and its sender sends again (version 2, numbered by
/// `b`: 11). `a`, its view back to {a}, resets (the counter back to 1 at
/// version 3; every shard recovers at once, which shows the reset ran),
/// then sees {a, b, z}, where `b` owns the counter: `a` pushes its copy to
/// `b`. Before the fix `b` took the restored 1 (version 3 above its 2)
/// and the acknowledged add was gone; now a restore loses to a change
/// another life made over the confirmed state, and `b` reads 11. A
/// counter `w` of the same shard that only `a` held (created in {a})
/// shows when the push has been merged (it comes in the same page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_does_not_undo_the_new_owners_change_over_the_confirmed_state() {
    let mut slow = with_delay_ms(0);
    slow.sharding.replicate_timeout_ms = 60_000;
    let a = start_with("a", slow).await;
    let b = start("b").await;
    let z_node = start_bare("z").await;
    let _unread = z_node.transport.register(20).unwrap();
    let ab = members(&[&a, &b]);
    let mut az = members(&[&a]);
    az.insert("z".into(), z_node.transport.identity().clone());
    let mut abz = ab.clone();
    abz.insert("z".into(), z_node.transport.identity().clone());
    let id = id_held_by(&[(&ab, &["a", "b"]), (&az, &["a"]), (&abz, &["b"])]);
    let shards = RegionConfig::default().defaults.num_shards;
    let shard = sharding::shard_id(&id, shards);
    let w = (0..10_000)
        .map(|i| format!("w{i}"))
        .find(|w| sharding::shard_id(w, shards) == shard)
        .expect("an id of the same shard");
    set_view(&[&a, &b], &ab);
    wait_routing(&a, 2).await;
    wait_routing(&b, 2).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    b.view.send_replace(members(&[&b]));
    wait_routing(&b, 1).await;
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    assert_eq!(a.region.ask(&w, CounterMsg::Add(1), T).await, Ok(1));
    a.view.send_replace(az);
    wait_routing(&a, 2).await;
    let delivered = a.region.stats().delivered;
    a.region.tell(&id, CounterMsg::Add(10)).unwrap();
    until(
        || a.region.stats().delivered > delivered,
        "a applied the tell",
    )
    .await;
    assert_eq!(b.region.ask(&id, CounterMsg::Add(10), T).await, Ok(11));
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    let recovered = a.region.stats().shards_recovered;
    a.region.reset().await.unwrap();
    until(
        || a.region.stats().shards_recovered > recovered,
        "a's reset ran",
    )
    .await;
    a.view.send_replace(abz);
    // The push reached b once w is there.
    let deadline = tokio::time::Instant::now() + T;
    while b.region.ask(&w, CounterMsg::Get, T).await != Ok(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's push never reached b"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read = b.region.ask(&id, CounterMsg::Get, T).await;
    assert_eq!(
        read,
        Ok(11),
        "b acknowledged Add(10) over the confirmed 1, but reads {read:?} after a's restored copy"
    );
    z_node.stop.cancel();
}

/// The nodes of [`a_replica_holds_the_new_owners_change_over_the_old_owners_at_its_version`]:
/// the old owner `a`, the new owner `b`, the replica `r`, the stand-in
/// `z` and the counter's id.
struct TieOfTwoLives {
    a: TestNode,
    b: TestNode,
    r: TestNode,
    z: BareNode,
    id: String,
}

/// Sets up a replica holding an old owner's change at the version the new
/// owner numbers next. Three copies of each shard (replication factor
/// 3). Views {a, b, r}: `a` owns the counter, `Add(1)` confirmed (version
/// 1 everywhere). `b` sees {b} (it owns the counter, from its own copy);
/// `a` and `r` see {a, r, z}, where `a` still owns it with replicas `r`
/// and `z`, a stand-in that refuses every replication. `a` applies a
/// tell's `Add(10)` (11, version 2, `a`'s stamp): `r` applies and
/// confirms it, `z` refuses, so `a` never counts it confirmed (a reset
/// would revert it) and sends it again every 200 ms. Returns once `r` has
/// merged it; views: `a` and `r` {a, r, z}, `b` {b}.
async fn tie_of_two_lives() -> TieOfTwoLives {
    let mut three = with_delay_ms(0);
    three.sharding.replication_factor = std::num::NonZeroU32::new(3).unwrap();
    let a = start_with("a", three.clone()).await;
    let b = start_with("b", three.clone()).await;
    let r = start_with("r", three.clone()).await;
    let z = start_stand_in("z", |msg, responder| {
        let answer = match msg {
            Wire::Replicate { shard, .. } => refused(shard),
            Wire::ReplicateBatch { ref records } => {
                refused(records.first().map_or(0, |(shard, _)| *shard))
            }
            _ => stand_in_answer(&msg),
        };
        if let Some(resp) = responder {
            let _ = resp.reply_msg(&answer);
        }
    })
    .await;
    let abr = members(&[&a, &b, &r]);
    let mut arz = members(&[&a, &r]);
    arz.insert("z".into(), z.transport.identity().clone());
    let br = members(&[&b, &r]);
    let id = id_held_by_with(&three, &[(&abr, &["a"]), (&arz, &["a"]), (&br, &["b"])]);
    set_view(&[&a, &b, &r], &abr);
    for n in [&a, &b, &r] {
        wait_routing(n, 3).await;
    }
    assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    b.view.send_replace(members(&[&b]));
    wait_routing(&b, 1).await;
    assert_eq!(b.region.ask(&id, CounterMsg::Get, T).await, Ok(1));
    set_view(&[&a, &r], &arz);
    wait_routing(&a, 3).await;
    wait_routing(&r, 3).await;
    let sent = a.region.stats().replication_batches;
    a.region.tell(&id, CounterMsg::Add(10)).unwrap();
    // A second batch goes once the first one's answers are all in: r has
    // merged a's version 2 by then.
    until(
        || a.region.stats().replication_batches >= sent + 2,
        "a's change answered by its replicas and sent again",
    )
    .await;
    TieOfTwoLives { a, b, r, z, id }
}

/// A replica holds the new owner's change, not the old owner's at the
/// same version ([`tie_of_two_lives`]). Then `b` and `r` see {b, r}: `b`,
/// the owner in both views, applies `Add(100)` over the confirmed 1 (101,
/// version 2, `b`'s stamp), confirmed by `r`. Before the fix `r` kept
/// `a`'s version 2 (equal versions of two lives kept the held copy) and
/// confirmed `b`'s all the same: once `b` crashed, `r` served 11, a change
/// nobody was answered about, and the acknowledged `Add(100)` was gone.
/// Now the owner in `r`'s view wins the tie, and `a`'s copies that keep
/// coming (`a` is no longer the owner in `r`'s view) do not take it back:
/// `r` serves 101, with no further change of the counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_holds_the_new_owners_change_over_the_old_owners_at_its_version() {
    let TieOfTwoLives { a, b, r, z, id } = tie_of_two_lives().await;
    set_view(&[&b, &r], &members(&[&b, &r]));
    wait_routing(&b, 2).await;
    wait_routing(&r, 2).await;
    assert_eq!(b.region.ask(&id, CounterMsg::Add(100), T).await, Ok(101));
    let read = crash_owner_and_read(b, &r, &id).await;
    assert_eq!(
        read, 101,
        "b acknowledged Add(100) over the confirmed 1, confirmed by r, but r reads {read} \
         after b's crash"
    );
    a.stop.cancel();
    z.stop.cancel();
}

/// The same tie while the replica's view lags ([`tie_of_two_lives`]): `b`
/// sees {b, r} and applies `Add(100)` (version 2) while `r`'s view still
/// makes `a` the owner. `r` keeps `a`'s version 2 (a tie from a node that
/// is not the owner in its view) and refuses to confirm `b`'s, so `b`
/// keeps the ask waiting and sends the change again every 200 ms; once
/// `r` sees {b, r} it takes `b`'s record and confirms it, and the ask is
/// answered. Before the fix `r` confirmed at once, holding `a`'s 11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_view_lags_confirms_the_new_owners_change_only_once_it_holds_it() {
    let TieOfTwoLives { a, b, r, z, id } = tie_of_two_lives().await;
    let br = members(&[&b, &r]);
    b.view.send_replace(br.clone());
    wait_routing(&b, 2).await;
    let add = {
        let (region, id) = (b.region.clone(), id.clone());
        tokio::spawn(async move { region.ask(&id, CounterMsg::Add(100), T).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !add.is_finished(),
        "r, holding a's version 2, confirmed b's: {:?}",
        add.await
    );
    r.view.send_replace(br);
    wait_routing(&r, 2).await;
    let answered = tokio::time::timeout(T, add).await.unwrap().unwrap();
    assert_eq!(answered, Ok(101), "confirmed once r's view names b");
    let read = crash_owner_and_read(b, &r, &id).await;
    assert_eq!(read, 101, "r reads {read} after b's crash");
    a.stop.cancel();
    z.stop.cancel();
}

/// A replica's refusal of a replication of `shard`.
fn refused(shard: u32) -> WireReply<Counter> {
    WireReply::Error(RegionError::ReplicationFailed {
        shard,
        reason: "refused by a test stand-in".into(),
    })
}

/// Waits until `done`, polling every 10 ms, for at most [`T`]; panics
/// with `what` after it.
async fn until(done: impl Fn() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + T;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {T:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A replica acknowledges the replication of a node its own view no
/// longer names as owner, and the write is lost when that node crashes,
/// although its replica holds it (R = 2 should survive one failure). All
/// views are {a, x, y}, where `a` owns the counter and `x` is its replica.
/// Then `x` and `y` see {x, y} (a declared dead by them), where `y` owns
/// the counter: `y` fetches from `x` and serves the shard. `a`, whose view
/// has not changed, applies `Add(1)`, replicates it to `x`, which merges it
/// as a non-owner copy and acknowledges; `a` answers Ok(1). Then `a`
/// crashes. The views {x, y} have converged and `y` is active and never
/// fetches again: before the fix `x` did not pass the record on (only a
/// `Sync` new to a non-owner was) and the acknowledged add read 0; now `x`
/// pushes it on to `y`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_replicated_to_a_replica_whose_view_moved_on_survives_the_owners_crash() {
    let a = start("a").await;
    let x = start("x").await;
    let y = start("y").await;
    let (axy, xy) = (members(&[&a, &x, &y]), members(&[&x, &y]));
    let id = id_held_by(&[(&axy, &["a", "x"]), (&xy, &["y"])]);
    set_view(&[&a, &x, &y], &axy);
    for n in [&a, &x, &y] {
        wait_routing(n, 3).await;
    }
    assert_eq!(a.region.ask(&id, CounterMsg::Get, T).await, Ok(0));
    // x and y declare a dead; y takes the shard over (x answers its fetch).
    set_view(&[&x, &y], &xy);
    wait_routing(&x, 2).await;
    wait_routing(&y, 2).await;
    assert_eq!(y.region.ask(&id, CounterMsg::Get, T).await, Ok(0));
    // a, still alive and with the old view, acknowledges a write that x
    // confirms as a's replica.
    assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    a.stop.cancel();
    a.transport.shutdown().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = y.region.ask(&id, CounterMsg::Get, T).await;
    assert_eq!(
        read,
        Ok(1),
        "Add(1) acknowledged by a after x confirmed it; after a's crash the owner y reads \
         {read:?} (the write sits on x as a non-owner copy)"
    );
}

/// Sets up a new owner whose fetch from a replica came too early: `a` owns
/// the counter in {a, b} with `b` as replica and serves it; `b` and `c`
/// then see {a, b, c} (c joined) while `a`'s view lags, still {a, b}. `c`
/// owns the counter in {a, b, c} (and in {b, c}): it fetches from `b`,
/// which answers at once (its view names c), and from `a`, which answers
/// `Moved`, so `c` keeps waiting for `a`. Then `a` acknowledges `Add(1)`,
/// confirmed by `b` (which merges a replication from a node its view no
/// longer names as owner). Returns the three nodes and the counter's id.
async fn lagging_owner_acknowledges_after_the_new_owner_read_its_replica()
-> (TestNode, TestNode, TestNode, String) {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let (ab, abc, bc) = (
        members(&[&a, &b]),
        members(&[&a, &b, &c]),
        members(&[&b, &c]),
    );
    let id = id_held_by(&[(&ab, &["a", "b"]), (&abc, &["c"]), (&bc, &["c"])]);
    set_view(&[&a, &b], &ab);
    wait_routing(&a, 2).await;
    wait_routing(&b, 2).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Get, T).await, Ok(0));
    // c joins; b learns of it, a not yet.
    set_view(&[&b, &c], &abc);
    wait_routing(&b, 3).await;
    wait_routing(&c, 3).await;
    // b's (empty) page reaches c; c keeps asking a.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    (a, b, c, id)
}

/// A write acknowledged by an owner whose view lags a join is lost when
/// that owner crashes, although its replica confirmed it (R = 2 must
/// survive one failure), and with no partition and no false suspicion:
/// see [`lagging_owner_acknowledges_after_the_new_owner_read_its_replica`].
/// Then `a` crashes before its view catches up and is declared dead: `c`
/// stops waiting for `a` (it left the view) and activates with the page
/// `b` gave before the write. Before the fix `b` held the write and `c`
/// served 0; now `b` pushes the write on to `c` when it confirms it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_confirmed_by_a_replica_after_the_new_owner_read_it_survives_the_owners_crash() {
    let (a, b, c, id) = lagging_owner_acknowledges_after_the_new_owner_read_its_replica().await;
    a.stop.cancel();
    a.transport.shutdown().await;
    set_view(&[&b, &c], &members(&[&b, &c]));
    wait_routing(&b, 2).await;
    wait_routing(&c, 2).await;
    let read = c.region.ask(&id, CounterMsg::Get, T).await;
    assert_eq!(
        read,
        Ok(1),
        "Add(1) acknowledged by a and confirmed by its replica b; after a's crash the new \
         owner c reads {read:?}"
    );
}

/// The same without any failure: `a` leaves gracefully while its view
/// still lags the join. `hand_off_all` computes the allocation without `a`
/// from `a`'s view, {b}, and syncs the shard to `b` only; `b` already has
/// the records (it confirmed them as replica), so nothing is new to it and
/// nothing is passed on to `c`, the owner in `b`'s view. Then `a` leaves
/// the views: `c` stops waiting for it and activates with `b`'s early,
/// empty page. Before the fix the acknowledged `Add(1)` read 0 at `c`;
/// now `b` pushed it on to `c` when it confirmed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_with_a_lagging_view_hands_off_every_acknowledged_write() {
    let (a, b, c, id) = lagging_owner_acknowledges_after_the_new_owner_read_its_replica().await;
    assert!(a.region.hand_off_all(T).await.is_some());
    set_view(&[&b, &c], &members(&[&b, &c]));
    wait_routing(&b, 2).await;
    wait_routing(&c, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.stop.cancel();
    a.transport.shutdown().await;
    let read = c.region.ask(&id, CounterMsg::Get, T).await;
    assert_eq!(
        read,
        Ok(1),
        "Add(1) acknowledged by a before its graceful leave; the new owner c reads {read:?}"
    );
}

/// Passes: a new owner that resets while its recovery waits for a holder
/// whose view lags. `a` owns a counter at 1 in {a, b}; `c` joins ({a, b, c}
/// at b and c, where c owns it) and waits for `a`; an `Add(1)` sent to `c`
/// is held; `c` resets (held messages are held again, the recovery starts
/// over); then `a`'s view catches up. The held add is answered once and
/// every node reads 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_while_recovering_keeps_held_asks_and_the_holders_writes() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let (ab, abc) = (members(&[&a, &b]), members(&[&a, &b, &c]));
    let id = id_owned_by(&ab, "a", &abc, "c");
    set_view(&[&a, &b], &ab);
    wait_routing(&a, 2).await;
    wait_routing(&b, 2).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    set_view(&[&b, &c], &abc);
    wait_routing(&c, 3).await;
    let add = spawn_add(&c.region, &id, T);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!add.is_finished(), "held while c waits for a");
    c.region.reset().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!add.is_finished(), "held again after the reset");
    a.view.send_replace(abc);
    assert_eq!(add.await.unwrap(), Ok(2));
    check_all(&[&a, &b, &c], &BTreeMap::from([(id, 2)])).await;
}

/// Passes (liveness): two nodes that each believe they own a shard, each
/// waiting for the other's agreement, serve it once the views converge.
/// `a` holds a counter at 5 alone; then `b` sees {a, b, c} (b owns it) and
/// `c` sees {b, c} (c owns it); `a` moves to {a, b, c} and answers `b`.
/// Adds sent to `b` and `c` meanwhile are held. Once `c` sees {a, b, c}
/// too, every add is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_would_be_owners_of_a_shard_serve_it_once_views_converge() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let (abc, bc) = (members(&[&a, &b, &c]), members(&[&b, &c]));
    let id = id_held_by(&[(&members(&[&a]), &["a"]), (&abc, &["b"]), (&bc, &["c"])]);
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(5), T).await, Ok(5));
    b.view.send_replace(abc.clone());
    c.view.send_replace(bc);
    a.view.send_replace(abc.clone());
    wait_routing(&a, 3).await;
    wait_routing(&b, 3).await;
    wait_routing(&c, 2).await;
    let adds: Vec<_> = [&b, &c]
        .iter()
        .map(|n| spawn_add(&n.region, &id, T))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        adds.iter().all(|t| !t.is_finished()),
        "neither b nor c may serve while the other claims the shard"
    );
    c.view.send_replace(abc);
    let mut answers = Vec::new();
    for t in adds {
        answers.push(t.await.unwrap().unwrap());
    }
    answers.sort_unstable();
    assert_eq!(answers, vec![6, 7]);
    check_all(&[&a, &b, &c], &BTreeMap::from([(id, 7)])).await;
}

/// Passes: the old owner resets right after its view names the new owner
/// (its handoff to the new owner in flight): the new owner gets the old
/// owner's writes, by fetch or by the reset's push, and serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_owner_reset_during_the_handoff_loses_nothing() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let (ab, abc) = (members(&[&a, &b]), members(&[&a, &b, &c]));
    let id = id_owned_by(&ab, "a", &abc, "c");
    set_view(&[&a, &b], &ab);
    wait_routing(&a, 2).await;
    wait_routing(&b, 2).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(3), T).await, Ok(3));
    set_view(&[&b, &c], &abc);
    wait_routing(&c, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.view.send_replace(abc);
    a.region.reset().await.unwrap();
    assert_eq!(c.region.ask(&id, CounterMsg::Add(1), T).await, Ok(4));
    check_all(&[&a, &b, &c], &BTreeMap::from([(id, 4)])).await;
}

/// Passes: a graceful leave whose view holds a member the others declared
/// dead (`z`, a transport that never answers): shards whose next owner
/// in the leaver's view is `z` are synced to a dead node, but every write
/// the leaver acknowledged is also on its replicas, and the remaining
/// nodes serve all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_towards_a_dead_member_loses_nothing() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let z_node = start_bare("z").await;
    let _unread = z_node.transport.register(20).unwrap();
    let abc = members(&[&a, &b, &c]);
    set_view(&[&a, &b, &c], &abc);
    let mut expected = BTreeMap::new();
    add_all(&[&a, &b, &c], 60, 2, &mut expected).await;
    let mut abcz = abc.clone();
    abcz.insert("z".into(), z_node.transport.identity().clone());
    a.view.send_replace(abcz);
    wait_routing(&a, 4).await;
    assert!(a.region.hand_off_all(T).await.is_some());
    set_view(&[&b, &c], &members(&[&b, &c]));
    wait_routing(&b, 2).await;
    wait_routing(&c, 2).await;
    a.stop.cancel();
    a.transport.shutdown().await;
    check_all(&[&b, &c], &expected).await;
    z_node.stop.cancel();
}

// ----- hand-over of applied, unconfirmed asks (Wire::HandOver) -------------

/// The allocation every node computes from `view` (default config).
fn alloc_of(view: &MemberMap) -> Allocation {
    let config = RegionConfig::default();
    sharding::allocate(
        &view.keys().cloned().collect(),
        config.defaults.num_shards,
        config.sharding.replication_factor,
    )
}

/// `count` entity ids (`h0`, `h1`, ...) whose shard satisfies `keep`.
fn ids_where(count: usize, keep: impl Fn(ShardId) -> bool) -> Vec<String> {
    let s = RegionConfig::default().defaults.num_shards;
    let ids: Vec<String> = (0..1_000_000)
        .map(|i| format!("h{i}"))
        .filter(|id| keep(sharding::shard_id(id, s)))
        .take(count)
        .collect();
    assert_eq!(ids.len(), count, "not enough ids with these holders");
    ids
}

/// Waits until `n`'s region routes by a view that names member `name`
/// (`present`) or does not.
async fn wait_member(n: &TestNode, name: &str, present: bool) {
    while n.region.routing().members.contains_key(name) != present {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A member whose region is a stand-in on the counter's channel: it keeps
/// what it is sent (the higher version wins, as in a region) and serves
/// fetches from it at once, but confirms each replication only `ack_after`
/// after it arrived (a replica on a slow disk or a congested link). It
/// answers deliveries and hand-overs `Moved`: tests give it no shard they
/// send to as owner.
struct SlowReplica {
    node: BareNode,
}

impl SlowReplica {
    fn identity(&self) -> NodeId {
        self.node.transport.identity().clone()
    }
}

async fn start_slow_replica(name: &str, ack_after: Duration) -> SlowReplica {
    let node = start_bare(name).await;
    let (chan, mut inbox) =
        Channel::<Wire<Counter>>::register(&node.transport, 20, Lane::Bulk).unwrap();
    tokio::spawn(async move {
        let _chan = chan;
        let mut kept: BTreeMap<u32, BTreeMap<String, Record<Counter>>> = BTreeMap::new();
        let keep = |kept: &mut BTreeMap<u32, BTreeMap<String, Record<Counter>>>,
                    shard: u32,
                    r: Record<Counter>| {
            let slot = kept.entry(shard).or_default();
            if slot.get(&r.id).is_none_or(|k| r.version > k.version) {
                slot.insert(r.id.clone(), r);
            }
        };
        while let Some(Received { msg, responder, .. }) = inbox.recv().await {
            let (answer, delay) = match msg {
                Wire::Replicate { shard, record } => {
                    keep(&mut kept, shard, record);
                    (WireReply::Ack, ack_after)
                }
                Wire::ReplicateBatch { records } => {
                    for (shard, record) in records {
                        keep(&mut kept, shard, record);
                    }
                    (WireReply::Ack, ack_after)
                }
                Wire::Sync { shard, records } => {
                    for record in records {
                        keep(&mut kept, shard, record);
                    }
                    (WireReply::Ack, Duration::ZERO)
                }
                Wire::Fetch { shard, after } => {
                    let records = kept
                        .get(&shard)
                        .into_iter()
                        .flatten()
                        .filter(|(id, _)| after.as_ref().is_none_or(|a| *id > a))
                        .map(|(_, r)| r.clone())
                        .collect();
                    (
                        WireReply::Page {
                            records,
                            more: false,
                        },
                        Duration::ZERO,
                    )
                }
                Wire::HandOver { shard, .. } => (
                    WireReply::Error(RegionError::Moved { shard }),
                    Duration::ZERO,
                ),
                Wire::Deliver { .. } | Wire::DeliverBatch { .. } => (
                    WireReply::Error(RegionError::Moved { shard: 0 }),
                    Duration::ZERO,
                ),
            };
            let Some(resp) = responder else { continue };
            if delay.is_zero() {
                let _ = resp.reply_msg(&answer);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = resp.reply_msg(&answer);
                });
            }
        }
    });
    SlowReplica { node }
}

/// A member that accepts connections and never answers on the region's
/// channel (a stalled process whose links were up).
struct StalledNode {
    node: BareNode,
    _unread: tokio::sync::mpsc::Receiver<transport::Inbound>,
}

/// Two owners number version 2 of one counter each their own way, and the
/// first one's waiting add is then handed over to the second. `a` owns
/// the counter with replica `b` ({a, b}) and applies `Add(1)` (confirmed
/// by `b`). Then `b` and `c` see {b, c}, where `c` owns it: `c` recovers
/// from `b` (1 at version 1) and applies `Add(c_adds)` (confirmed by `b`,
/// its replica), version 2. `a`, whose view is now {a, z} (still the
/// owner; `z` a replica that never answers), applies `Add(1)` (2 at
/// version 2), which waits for `z`. Then `a` sees {a, b, c}, where `c`
/// owns the counter, and hands its version 2 over to `c`. Returns the
/// nodes, the id and the answer to `a`'s waiting add; every view is then
/// {a, b, c}.
async fn two_owners_number_one_version(
    c_adds: u64,
) -> ([TestNode; 3], StalledNode, String, Result<u64, RegionError>) {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let z = start_bare("z").await;
    let unread = z.transport.register(20).unwrap();
    let z = StalledNode {
        node: z,
        _unread: unread,
    };
    let mut az = members(&[&a]);
    az.insert("z".into(), z.node.transport.identity().clone());
    let (ab, bc, abc) = (
        members(&[&a, &b]),
        members(&[&b, &c]),
        members(&[&a, &b, &c]),
    );
    let id = id_held_by(&[
        (&ab, &["a", "b"]),
        (&az, &["a"]),
        (&bc, &["c", "b"]),
        (&abc, &["c"]),
    ]);
    set_view(&[&a, &b], &ab);
    wait_routing(&a, 2).await;
    wait_routing(&b, 2).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    // b and c declare a dead; c takes the counter over from b.
    set_view(&[&b, &c], &bc);
    wait_member(&b, "a", false).await;
    wait_routing(&c, 2).await;
    assert_eq!(
        c.region.ask(&id, CounterMsg::Add(c_adds), T).await,
        Ok(1 + c_adds)
    );
    // a, cut off from b, sees {a, z}: still the owner, z its replica.
    a.view.send_replace(az);
    wait_member(&a, "z", true).await;
    let add = spawn_add(&a.region, &id, T);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!add.is_finished(), "z never confirms: the add waits");
    // a learns of c, the owner: it hands its version 2 over.
    a.view.send_replace(abc.clone());
    let answered = tokio::time::timeout(T + Duration::from_secs(2), add)
        .await
        .expect("the handed-over add is answered")
        .unwrap();
    set_view(&[&a, &b, &c], &abc);
    for n in [&a, &b, &c] {
        wait_routing(n, 3).await;
    }
    ([a, b, c], z, id, answered)
}

/// The `Other` path of a hand-over: the new owner holds another state at
/// the version handed over (see [`two_owners_number_one_version`]: `c`
/// holds 11 at version 2 after its `Add(10)`, `a` hands over 2 at version
/// 2). `c` answers `Other`, so `a` answers its add `Moved`; the handle
/// sends it again, to `c`, which applies it once: answered `Ok(12)`, and
/// every node reads 12 (1 + 10 + 1, three acknowledged adds). Were the add
/// answered an error, it might or might not be applied (11 or 12); here
/// nothing fails, so it must be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_add_the_new_owner_numbered_otherwise_is_applied_once() {
    let ([a, b, c], z, id, answered) = two_owners_number_one_version(10).await;
    assert_eq!(
        answered,
        Ok(12),
        "Other: answered Moved, sent again to c, applied once there"
    );
    check_all(&[&a, &b, &c], &BTreeMap::from([(id, 12)])).await;
    z.node.stop.cancel();
}

/// Two owners reach an equal state at the same version by different
/// histories. As [`two_owners_number_one_version`] with `c` applying
/// `Add(1)` instead of `Add(10)`: `c` holds 2 at version 2 (1 from `b`,
/// plus its own add) and `a` hands over 2 at version 2 (1 plus `a`'s add).
/// Decided on (version, encoded state) alone, `c` answered `Held`, `a`
/// answered its add `Ok(2)` although `c`'s history lacks it, and the
/// counter read 2 on every node after three acknowledged `Add(1)`s (failed
/// 22 of 22 runs). Each version now carries the stamp of the owner life
/// that numbered it: `c`'s version 2 is stamped `c`, the handed-over one
/// `a`, so `c` answers `Other`, `a` answers `Moved`, and the add is sent
/// again and applied once at `c`: answered `Ok(3)`, and every node reads
/// 3, as with `Add(10)` in the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_add_is_not_held_by_an_equal_state_of_another_history() {
    let ([a, b, c], z, id, answered) = two_owners_number_one_version(1).await;
    let read = c.region.ask(&id, CounterMsg::Get, T).await;
    assert_eq!(
        (&answered, &read),
        (&Ok(3), &Ok(3)),
        "three Add(1) sent, a's handed-over add answered {answered:?}, the counter reads \
         {read:?}: Ok(2) and 2 if c answered Held for an equal state of its own history"
    );
    check_all(&[&a, &b, &c], &BTreeMap::from([(id, 3)])).await;
    z.node.stop.cancel();
}

/// `a` owns a counter with replica `b` ({a, b}); `b` crashes (not yet
/// declared dead), so `a` applies `Add(1)` and its answer waits. Then `a`
/// sees {a, c}, where `c` owns the counter, but `c` is down: stopped
/// (`stalled == false`: its port refuses) or stalled (a transport that
/// never answers on the region's channel). The hand-over cannot be
/// confirmed. Returns the add's answer, how long after the view change it
/// came, and what `a` reads once {a} is its view (b and c declared dead,
/// `a` owns the counter again with its own copy).
async fn hand_over_to_an_owner_that_is_down(
    stalled: bool,
    ask_timeout: Duration,
) -> (Result<u64, RegionError>, Duration, Result<u64, RegionError>) {
    let a = start("a").await;
    let b = start("b").await;
    let c = start_bare("c").await;
    let _unread = c.transport.register(20).unwrap();
    let mut ac = members(&[&a]);
    ac.insert("c".into(), c.transport.identity().clone());
    let ab = members(&[&a, &b]);
    let id = id_held_by(&[(&ab, &["a", "b"]), (&ac, &["c"])]);
    set_view(&[&a, &b], &ab);
    wait_routing(&a, 2).await;
    wait_routing(&b, 2).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Get, T).await, Ok(0));
    b.stop.cancel();
    b.transport.shutdown().await;
    if !stalled {
        c.stop.cancel();
        c.transport.shutdown().await;
    }
    let add = spawn_add(&a.region, &id, ask_timeout);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!add.is_finished(), "the add waits for its replica");
    let moved_at = std::time::Instant::now();
    a.view.send_replace(ac);
    wait_member(&a, "c", true).await;
    let answered = tokio::time::timeout(ask_timeout + Duration::from_secs(2), add)
        .await
        .expect("answered by its deadline")
        .unwrap();
    let after = moved_at.elapsed();
    a.view.send_replace(members(&[&a]));
    wait_routing(&a, 1).await;
    let read = a.region.ask(&id, CounterMsg::Get, T).await;
    c.stop.cancel();
    (answered, after, read)
}

/// A hand-over whose new owner is stopped (connections refused): the
/// waiting add ends with `ReplicationFailed` after the hand-over's 4
/// refused attempts (100, 200, 400 ms apart: about 1.2 s), well before the
/// ask's 10 s deadline, and is not applied a
/// second time: once `a` owns the counter again it reads 1 (the error
/// says the change may be applied; here it was, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_to_a_stopped_owner_fails_the_ask_once_applied() {
    let (answered, after, read) = hand_over_to_an_owner_that_is_down(false, T).await;
    assert!(
        matches!(answered, Err(RegionError::ReplicationFailed { .. })),
        "{answered:?}"
    );
    assert!(
        after < Duration::from_secs(3),
        "answered {after:?} after the view change"
    );
    assert_eq!(read, Ok(1), "applied once at a, not sent again");
}

/// The same with a new owner that accepts connections and answers
/// nothing (each hand-over attempt waits out `replicate_timeout_ms`, 2 s,
/// so the 4 attempts outlast the ask): the ask gets an error by its own
/// 3 s deadline, not later, and the add is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_to_a_stalled_owner_ends_the_ask_by_its_deadline() {
    let ask_timeout = Duration::from_secs(3);
    let (answered, after, read) = hand_over_to_an_owner_that_is_down(true, ask_timeout).await;
    assert!(
        matches!(
            answered,
            Err(RegionError::Timeout { .. } | RegionError::ReplicationFailed { .. })
        ),
        "{answered:?}"
    );
    assert!(
        after < ask_timeout + Duration::from_millis(500),
        "answered {after:?} after the view change"
    );
    assert_eq!(read, Ok(1), "applied once at a, not sent again");
}

/// What one load task got: acknowledged adds and failed ones per id, and
/// the first few errors.
#[derive(Default)]
struct Tally {
    acked: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    errors: Vec<String>,
}

impl Tally {
    fn record(&mut self, id: &str, r: Result<u64, RegionError>) {
        match r {
            Ok(_) => *self.acked.entry(id.to_owned()).or_default() += 1,
            Err(e) => {
                *self.failed.entry(id.to_owned()).or_default() += 1;
                if self.errors.len() < 5 {
                    self.errors.push(format!("{id}: {e}"));
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        for (id, n) in other.acked {
            *self.acked.entry(id).or_default() += n;
        }
        for (id, n) in other.failed {
            *self.failed.entry(id).or_default() += n;
        }
        self.errors.extend(other.errors);
    }

    /// Reads every id the tally names from every node in `nodes`: each
    /// reads the same value, at least its acknowledged adds and at most
    /// those plus its failed ones (an add answered an error may be
    /// applied). With no failure, exactly the acknowledged adds.
    async fn check(&self, nodes: &[&TestNode]) {
        let failed: u64 = self.failed.values().sum();
        if failed == 0 {
            check_all(nodes, &self.acked).await;
            return;
        }
        let ids: std::collections::BTreeSet<&String> =
            self.acked.keys().chain(self.failed.keys()).collect();
        for id in ids {
            let acked = self.acked.get(id).copied().unwrap_or(0);
            let most = acked + self.failed.get(id).copied().unwrap_or(0);
            let mut seen = None;
            for n in nodes {
                let got = n.region.ask(id, CounterMsg::Get, T).await.unwrap();
                let name = &n.transport.identity().name;
                assert!(
                    (acked..=most).contains(&got),
                    "{id} read {got} from {name}: {acked} acknowledged, {most} at most"
                );
                assert!(seen.is_none_or(|s| s == got), "{id}: nodes disagree");
                seen = Some(got);
            }
        }
    }
}

/// Many adds in flight when a fourth node joins, their shards' replica
/// slow: `z` (a [`SlowReplica`]) confirms each replication 300 ms late.
/// Views {a, b, c, z}, then {a, b, c, d, z}. Half of the load goes to ids
/// whose shard has `z` as replica before the join and moves to `d` (their
/// adds wait for `z` when the owner loses the shard: handed over to `d`);
/// half to ids on other shards (owned by a, b, c or d, never by `z`).
/// Eight senders per node, each one add at a time. Afterwards every id
/// reads the same on every node: exactly its acknowledged adds when
/// nothing failed, and otherwise at least those and at most those plus
/// its failed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_in_flight_through_a_join_with_a_slow_replica_are_counted_once() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let d = start("d").await;
    let z = start_slow_replica("z", Duration::from_millis(300)).await;
    let mut before = members(&[&a, &b, &c]);
    before.insert("z".into(), z.identity());
    let mut after = members(&[&a, &b, &c, &d]);
    after.insert("z".into(), z.identity());
    let (v1, v2) = (alloc_of(&before), alloc_of(&after));
    let never_z = |s: ShardId| v1.owner(s) != Some("z") && v2.owner(s) != Some("z");
    let waits_and_moves = |s: ShardId| v1.replicas(s) == ["z"] && v2.owner(s) == Some("d");
    let moving = ids_where(40, |s| never_z(s) && waits_and_moves(s));
    let staying = ids_where(200, |s| never_z(s) && !waits_and_moves(s));
    set_view(&[&a, &b, &c], &before);
    for n in [&a, &b, &c] {
        wait_routing(n, 4).await;
    }
    let stop = CancellationToken::new();
    let loads = spawn_adds(&[&a, &b, &c], 8, &stop, |w| {
        if w % 2 == 0 {
            moving.clone()
        } else {
            staying.clone()
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    set_view(&[&a, &b, &c, &d], &after);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.cancel();
    let tally = tally_of(loads).await;
    let moved: u64 = moving.iter().filter_map(|id| tally.acked.get(id)).sum();
    assert!(moved >= 40, "too few adds on the moving shards: {moved}");
    let failed: u64 = tally.failed.values().sum();
    if failed > 0 {
        eprintln!("{failed} adds failed, e.g. {:?}", tally.errors);
    }
    tally.check(&[&a, &b, &c, &d]).await;
    assert!(d.region.stats().shards_recovered > 0, "d took over shards");
    z.node.stop.cancel();
}

/// Sends `Add(1)` to counter `id` through `region` in a task of its own;
/// the handle gives the ask's answer (the counter after the add).
fn spawn_add(
    region: &RegionHandle<Counter>,
    id: &str,
    timeout: Duration,
) -> tokio::task::JoinHandle<Result<u64, RegionError>> {
    let (r, id) = (region.clone(), id.to_owned());
    tokio::spawn(async move { r.ask(&id, CounterMsg::Add(1), timeout).await })
}

/// Starts `per_node` senders on each of `nodes`. Sender `w` of the `k`-th
/// node adds 1 at a time to the ids `ids_of(w)` gives, starting at index
/// `k * per_node + w` and going on in steps of 5, until `stop`; each
/// returns its [`Tally`].
fn spawn_adds(
    nodes: &[&TestNode],
    per_node: usize,
    stop: &CancellationToken,
    ids_of: impl Fn(usize) -> Vec<String>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    let mut loads = Vec::new();
    for (k, n) in nodes.iter().enumerate() {
        for w in 0..per_node {
            let r = n.region.clone();
            let stop = stop.clone();
            let ids = ids_of(w);
            loads.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut i = k * per_node + w;
                while !stop.is_cancelled() {
                    let id = &ids[i % ids.len()];
                    tally.record(id, r.ask(id, CounterMsg::Add(1), T).await);
                    i += 5;
                }
                tally
            }));
        }
    }
    loads
}

/// The senders' tallies of [`spawn_adds`], merged once they stopped.
async fn tally_of(loads: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut tally = Tally::default();
    for load in loads {
        tally.merge(load.await.unwrap());
    }
    tally
}

/// A view that flaps while adds wait for a slow replica: views {a, b, z}
/// (`z` a [`SlowReplica`] confirming 1 s late, the replica of every id
/// used here), then {a, b, c, z} (`c` owns each id's shard: the waiting
/// adds are handed over to it), then {a, b, z} again (the shards come
/// back, `c`'s waiting adds handed over to the old owners while theirs to
/// `c` may still be in flight), and so on: `flaps` view changes `every`
/// apart, ending at `c` when `flaps` is odd. Four senders on `a` and four
/// on `b` add one at a time to 12 ids all along, and 300 ms past the last
/// change. Every id then reads the same on every member: exactly its
/// acknowledged adds when nothing failed, otherwise at least those and at
/// most those plus its failed ones.
async fn adds_through_a_flapping_view(flaps: usize, every: Duration) {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let z = start_slow_replica("z", Duration::from_secs(1)).await;
    let mut abz = members(&[&a, &b]);
    abz.insert("z".into(), z.identity());
    let mut abcz = members(&[&a, &b, &c]);
    abcz.insert("z".into(), z.identity());
    let (v1, v2) = (alloc_of(&abz), alloc_of(&abcz));
    let ids = ids_where(12, |s| {
        v1.replicas(s) == ["z"] && v1.owner(s) != Some("z") && v2.owner(s) == Some("c")
    });
    set_view(&[&a, &b, &c], &abz);
    for n in [&a, &b, &c] {
        wait_routing(n, 3).await;
    }
    let stop = CancellationToken::new();
    let loads = spawn_adds(&[&a, &b], 4, &stop, |_| ids.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for flap in 0..flaps {
        let view = if flap % 2 == 0 { &abcz } else { &abz };
        set_view(&[&a, &b, &c], view);
        tokio::time::sleep(every).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let tally = tally_of(loads).await;
    let acked: u64 = tally.acked.values().sum();
    let failed: u64 = tally.failed.values().sum();
    assert!(acked >= 24, "too few adds acknowledged: {acked}");
    if failed > 0 {
        eprintln!("{failed} adds failed, e.g. {:?}", tally.errors);
    }
    if flaps % 2 == 1 {
        tally.check(&[&a, &b, &c]).await;
    } else {
        tally.check(&[&a, &b]).await;
    }
    z.node.stop.cancel();
}

/// [`adds_through_a_flapping_view`]: the shards move to `c` and back to
/// their old owners 150 ms later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_waiting_while_the_shard_moves_away_and_back_are_counted_once() {
    adds_through_a_flapping_view(2, Duration::from_millis(150)).await;
}

/// [`adds_through_a_flapping_view`]: seven moves 60 ms apart, ending at
/// `c` (hand-overs in both directions in flight at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_waiting_while_the_shard_flaps_between_owners_are_counted_once() {
    adds_through_a_flapping_view(7, Duration::from_millis(60)).await;
}

/// A removal is replicated like any change: an ask that removes a counter
/// with replicas is answered (before, its answer waited for a replica
/// confirmation that never came, and it timed out), and every node then
/// reads it absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_with_replicas_is_answered_and_read_nowhere() {
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;
    let abc = members(&[&a, &b, &c]);
    set_view(&[&a, &b, &c], &abc);
    for n in [&a, &b, &c] {
        wait_routing(n, 3).await;
    }
    let ids: Vec<String> = (0..20).map(|i| format!("gone-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(a.region.ask(id, CounterMsg::Add(3), T).await, Ok(3));
        let asker = [&a, &b, &c][i % 3];
        let removed = asker
            .region
            .ask(id, CounterMsg::Remove, Duration::from_secs(5))
            .await;
        assert_eq!(removed, Ok(3), "{id}: the removal is answered");
    }
    for n in [&a, &b, &c] {
        for id in &ids {
            assert_eq!(n.region.ask(id, CounterMsg::Get, T).await, Ok(0), "{id}");
        }
    }
}

/// An acknowledged removal survives the owner's crash: the replica that
/// takes over holds the tombstone and does not serve the counter again
/// (before, it served the removed counter's last value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_entity_is_not_served_again_after_the_owners_crash() {
    let (a, b, id) = owner_and_replica(500).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(5), T).await, Ok(5));
    assert_eq!(a.region.ask(&id, CounterMsg::Remove, T).await, Ok(5));
    assert_eq!(crash_owner_and_read(a, &b, &id).await, 0);
}

/// A stand-in for a region on the counter's channel: `on` gets each
/// message and its responder (answer it with [`stand_in_answer`], later,
/// or not at all).
async fn start_stand_in(
    name: &str,
    mut on: impl FnMut(Wire<Counter>, Option<transport::Responder>) + Send + 'static,
) -> BareNode {
    let node = start_bare(name).await;
    let (chan, mut inbox) =
        Channel::<Wire<Counter>>::register(&node.transport, 20, Lane::Bulk).unwrap();
    tokio::spawn(async move {
        let _chan = chan;
        while let Some(Received { msg, responder, .. }) = inbox.recv().await {
            on(msg, responder);
        }
    });
    node
}

/// A stand-in replica's answer: it confirms every copy, has nothing to
/// fetch, and owns nothing (deliveries and hand-overs are `Moved`).
fn stand_in_answer(msg: &Wire<Counter>) -> WireReply<Counter> {
    match msg {
        Wire::Replicate { .. } | Wire::ReplicateBatch { .. } | Wire::Sync { .. } => WireReply::Ack,
        Wire::Fetch { .. } => WireReply::Page {
            records: Vec::new(),
            more: false,
        },
        Wire::HandOver { shard, .. } => WireReply::Error(RegionError::Moved { shard: *shard }),
        Wire::Deliver { .. } | Wire::DeliverBatch { .. } => {
            WireReply::Error(RegionError::Moved { shard: 0 })
        }
    }
}

/// A replica on the counter's channel that confirms everything at once and
/// sends each record it is given to the test (otherwise as
/// [`stand_in_answer`]).
async fn start_recording_replica(
    name: &str,
) -> (
    BareNode,
    tokio::sync::mpsc::UnboundedReceiver<Record<Counter>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let node = start_stand_in(name, move |msg, responder| {
        let answer = stand_in_answer(&msg);
        let records: Vec<Record<Counter>> = match msg {
            Wire::Replicate { record, .. } => vec![record],
            Wire::ReplicateBatch { records } => records.into_iter().map(|(_, r)| r).collect(),
            Wire::Sync { records, .. } => records,
            _ => Vec::new(),
        };
        for record in records {
            let _ = tx.send(record);
        }
        if let Some(resp) = responder {
            let _ = resp.reply_msg(&answer);
        }
    })
    .await;
    (node, rx)
}

/// Re-creating a removed counter: the removal reaches the replica as a
/// tombstone (no state) at the next version, the re-creation at a version
/// above it, each confirmed before its ask is answered; and the replica
/// that takes over after the owner's crash serves the re-created counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_entity_numbers_above_its_tombstone_and_replicates() {
    let a = start_with("a", with_delay_ms(0)).await;
    let (x, mut records) = start_recording_replica("x").await;
    let mut ax = members(&[&a]);
    ax.insert("x".into(), x.transport.identity().clone());
    let id = id_owned_by(&ax, "a", &members(&[&a]), "a");
    a.view.send_replace(ax);
    wait_routing(&a, 2).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(2), T).await, Ok(2));
    assert_eq!(a.region.ask(&id, CounterMsg::Remove, T).await, Ok(2));
    assert_eq!(a.region.ask(&id, CounterMsg::Get, T).await, Ok(0));
    assert_eq!(a.region.ask(&id, CounterMsg::Add(4), T).await, Ok(4));
    // Every answer above waited for x's confirmation: x has the records.
    let mut seen = Vec::new();
    while let Ok(r) = records.try_recv() {
        if r.id == id {
            seen.push((r.version, r.state.map(|c| c.0)));
        }
    }
    seen.dedup();
    assert_eq!(seen, [(1, Some(2)), (2, None), (3, Some(4))]);

    // With a real replica: the re-created counter survives the crash.
    let b = start("b").await;
    let ab = members(&[&a, &b]);
    let alloc = alloc_of(&ab);
    let s = RegionConfig::default().defaults.num_shards;
    let id = (0..)
        .map(|i| format!("again-{i}"))
        .find(|id| alloc.owner(sharding::shard_id(id, s)) == Some("a"))
        .unwrap();
    set_view(&[&a, &b], &ab);
    wait_routing(&a, 2).await;
    wait_routing(&b, 2).await;
    assert_eq!(a.region.ask(&id, CounterMsg::Add(1), T).await, Ok(1));
    assert_eq!(a.region.ask(&id, CounterMsg::Remove, T).await, Ok(1));
    assert_eq!(a.region.ask(&id, CounterMsg::Add(6), T).await, Ok(6));
    assert_eq!(crash_owner_and_read(a, &b, &id).await, 6);
    x.stop.cancel();
}

/// A replica on the counter's channel that hands each `ReplicateBatch`
/// (its records' ids, and the responder to confirm it with) to the test,
/// so the test decides when a batch is confirmed; otherwise as
/// [`stand_in_answer`].
async fn start_gated_replica(
    name: &str,
) -> (
    BareNode,
    tokio::sync::mpsc::UnboundedReceiver<(Vec<String>, transport::Responder)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let node = start_stand_in(name, move |msg, responder| {
        let Some(resp) = responder else { return };
        match msg {
            Wire::ReplicateBatch { records } => {
                let ids = records.into_iter().map(|(_, r)| r.id).collect();
                let _ = tx.send((ids, resp));
            }
            other => {
                let _ = resp.reply_msg(&stand_in_answer(&other));
            }
        }
    })
    .await;
    (node, rx)
}

/// The next batch a gated replica was sent, within [`T`].
async fn next_gated(
    batches: &mut tokio::sync::mpsc::UnboundedReceiver<(Vec<String>, transport::Responder)>,
) -> (Vec<String>, transport::Responder) {
    tokio::time::timeout(T, batches.recv())
        .await
        .unwrap()
        .unwrap()
}

/// `[sharding] replicate_linger_ms`: after a batch of 8 changes or more to
/// a replica set, the set's next batch waits until the linger has passed
/// since it; after a smaller one (one client asking one thing at a time)
/// the next goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replica_set_gets_its_next_batch_after_the_linger() {
    const LINGER: Duration = Duration::from_millis(1_000);
    let mut config = with_delay_ms(0);
    config.sharding.replicate_linger_ms = LINGER.as_millis() as u64;
    let a = start_with("a", config).await;
    let (x, mut batches) = start_gated_replica("x").await;
    let mut ax = members(&[&a]);
    ax.insert("x".into(), x.transport.identity().clone());
    let alloc = alloc_of(&ax);
    let ids = ids_where(11, |s| alloc.owner(s) == Some("a"));
    a.view.send_replace(ax);
    wait_routing(&a, 2).await;
    let add = |id: &String| {
        let region = a.region.clone();
        let id = id.clone();
        tokio::spawn(async move { region.ask(&id, CounterMsg::Add(1), T).await })
    };
    // Eight changes in one delivery: one batch of eight, sent at once.
    let eight: Vec<(String, CounterMsg)> = ids[..8]
        .iter()
        .map(|id| (id.clone(), CounterMsg::Add(1)))
        .collect();
    let first = {
        let region = a.region.clone();
        tokio::spawn(async move { region.ask_batch(eight, T).await })
    };
    let (sent, confirm) = next_gated(&mut batches).await;
    assert_eq!(sent.len(), 8);
    let sent_at = std::time::Instant::now();
    confirm.reply_msg(&WireReply::<Counter>::Ack).unwrap();
    assert!(first.await.unwrap().iter().all(|r| r == &Ok(1)));
    // The ninth change lingers: not sent until the linger has passed.
    let ninth = add(&ids[8]);
    let (sent, confirm) = next_gated(&mut batches).await;
    assert_eq!(sent, [ids[8].clone()]);
    assert!(
        sent_at.elapsed() >= LINGER,
        "sent {:?} after the batch of eight",
        sent_at.elapsed()
    );
    confirm.reply_msg(&WireReply::<Counter>::Ack).unwrap();
    assert_eq!(ninth.await.unwrap(), Ok(1));
    // After a batch of one, the next change goes at once.
    let tenth = add(&ids[9]);
    let asked_at = std::time::Instant::now();
    let (sent, confirm) = next_gated(&mut batches).await;
    assert_eq!(sent, [ids[9].clone()]);
    assert!(
        asked_at.elapsed() < LINGER,
        "a change after a batch of one lingered {:?}",
        asked_at.elapsed()
    );
    confirm.reply_msg(&WireReply::<Counter>::Ack).unwrap();
    assert_eq!(tenth.await.unwrap(), Ok(1));
    assert!(batches.try_recv().is_err());
    x.stop.cancel();
}
