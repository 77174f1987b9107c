//! Jobs of a `Lanes` type on a region's pool: two run together on one
//! thread when more jobs wait than there are threads, one at a time when
//! fewer do, and every job's output reaches its entity.

use std::marker::PhantomData;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sharding::{
    Context, Entity, Handled, Lanes, MemberMap, Region, RegionConfig, RegionHandle, WorkerPool,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::TransportConfig;

/// The largest group a pool thread ran together, and the jobs run.
static LARGEST_GROUP: AtomicUsize = AtomicUsize::new(0);
static JOBS_RUN: AtomicUsize = AtomicUsize::new(0);
/// The inputs of each group run together.
static GROUPS: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

/// Inputs from this up take [`LONG`] to run; the others 2 ms.
const LONG_FROM: u64 = 1_000_000;
const LONG: Duration = Duration::from_millis(150);

/// A square computed on the pool by a job of type `J`: `Start(n)` queues
/// the job, its output `Done(n * n)` is stored, `Get` waits for it.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Square<J>(Option<u64>, #[serde(skip)] PhantomData<fn() -> J>);

impl<J> Clone for Square<J> {
    fn clone(&self) -> Self {
        Square(self.0, PhantomData)
    }
}

/// A job type of [`Square`]: made from the number to square, and naming
/// its entity type.
trait SquareLanes: Lanes<Output = SquareMsg> {
    const TYPE_NAME: &'static str;
    fn new(n: u64) -> Self;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum SquareMsg {
    Start(u64),
    Done(u64),
    Get,
}

struct SquareJob(u64);

impl Lanes for SquareJob {
    type Output = SquareMsg;

    fn run_together(jobs: Vec<SquareJob>, done: &mut dyn FnMut(usize, SquareMsg)) {
        LARGEST_GROUP.fetch_max(jobs.len(), Ordering::SeqCst);
        GROUPS
            .lock()
            .unwrap()
            .push(jobs.iter().map(|j| j.0).collect());
        // Long enough that a burst of starts queues up behind the threads.
        let long = jobs.iter().any(|j| j.0 >= LONG_FROM);
        std::thread::sleep(if long { LONG } else { Duration::from_millis(2) });
        for (i, SquareJob(n)) in jobs.into_iter().enumerate() {
            JOBS_RUN.fetch_add(1, Ordering::SeqCst);
            done(i, SquareMsg::Done(n.wrapping_mul(n)));
        }
    }
}

impl SquareLanes for SquareJob {
    const TYPE_NAME: &'static str = "square";
    fn new(n: u64) -> Self {
        SquareJob(n)
    }
}

impl<J: SquareLanes> Entity for Square<J> {
    type Msg = SquareMsg;
    type Reply = u64;
    const TYPE_NAME: &'static str = J::TYPE_NAME;

    fn handle(
        ctx: &mut Context<SquareMsg>,
        _: &str,
        state: &mut Option<Self>,
        msg: SquareMsg,
    ) -> Handled<u64> {
        match msg {
            SquareMsg::Start(n) => {
                if state.is_none() {
                    *state = Some(Square(None, PhantomData));
                    ctx.run_lanes(J::new(n));
                }
                Handled::Reply(0)
            }
            SquareMsg::Done(v) => {
                *state = Some(Square(Some(v), PhantomData));
                Handled::Reply(v)
            }
            SquareMsg::Get => match state {
                Some(Square(Some(v), _)) => Handled::Reply(*v),
                _ => Handled::Wait,
            },
        }
    }

    fn reads_only(msg: &SquareMsg) -> bool {
        matches!(msg, SquareMsg::Get)
    }

    fn may_wait(msg: &SquareMsg) -> bool {
        matches!(msg, SquareMsg::Get)
    }
}

/// One node alone (no replicas) with a region of [`Square`]s of job `J`,
/// its pool of `threads` threads.
async fn alone<J: SquareLanes>(
    threads: usize,
) -> (
    RegionHandle<Square<J>>,
    watch::Sender<MemberMap>,
    CancellationToken,
) {
    let stop = CancellationToken::new();
    let transport = crate::bind(J::TYPE_NAME, TransportConfig::default(), &stop).await;
    let (view, rx) = watch::channel(MemberMap::new());
    let region = Region::start::<Square<J>>(
        &transport,
        10,
        RegionConfig::default(),
        rx,
        WorkerPool::new(threads, 0),
        stop.clone(),
    )
    .unwrap();
    let identity = transport.identity().clone();
    view.send_replace(MemberMap::from([(identity.name.clone(), identity)]));
    (region, view, stop)
}

const T: Duration = Duration::from_secs(20);

/// Starts a square of each of `inputs` (ids `<tag>-<n>`, in one batch)
/// and checks each one's result.
async fn squares<J: SquareLanes>(region: &RegionHandle<Square<J>>, tag: &str, inputs: &[u64]) {
    let starts = inputs
        .iter()
        .map(|&n| (format!("{tag}-{n}"), SquareMsg::Start(n)))
        .collect();
    for answer in region.ask_batch(starts, T).await {
        answer.unwrap();
    }
    let gets = inputs
        .iter()
        .map(|&n| (format!("{tag}-{n}"), SquareMsg::Get))
        .collect();
    for (answer, n) in region.ask_batch(gets, T).await.into_iter().zip(inputs) {
        assert_eq!(answer.unwrap(), n.wrapping_mul(*n), "{tag}-{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_jobs_pair_up_only_when_every_thread_has_work() {
    let (region, _view, stop) = alone::<SquareJob>(2).await;

    // Two jobs at a time on two threads: never paired (a pair would leave
    // a thread idle).
    for round in 0..3u64 {
        let ids: Vec<String> = (0..2).map(|k| format!("two-{round}-{k}")).collect();
        let starts = ids
            .iter()
            .map(|id| (id.clone(), SquareMsg::Start(round)))
            .collect();
        for answer in region.ask_batch(starts, T).await {
            answer.unwrap();
        }
        for id in &ids {
            assert_eq!(
                region.ask(id, SquareMsg::Get, T).await.unwrap(),
                round * round
            );
        }
    }
    assert_eq!(
        LARGEST_GROUP.load(Ordering::SeqCst),
        1,
        "jobs were paired with a thread idle"
    );
    assert_eq!(JOBS_RUN.load(Ordering::SeqCst), 6);

    // A burst of 64: the backlog is deep, so jobs go two at a time, and
    // every output still reaches its entity.
    let starts: Vec<(String, SquareMsg)> = (0..64u64)
        .map(|i| (format!("many-{i}"), SquareMsg::Start(i)))
        .collect();
    for answer in region.ask_batch(starts, T).await {
        answer.unwrap();
    }
    let gets: Vec<(String, SquareMsg)> = (0..64u64)
        .map(|i| (format!("many-{i}"), SquareMsg::Get))
        .collect();
    for (i, answer) in region.ask_batch(gets, T).await.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), (i * i) as u64, "many-{i}");
    }
    assert_eq!(
        LARGEST_GROUP.load(Ordering::SeqCst),
        2,
        "no pair in a burst of 64"
    );
    assert_eq!(JOBS_RUN.load(Ordering::SeqCst), 70);

    // Two short jobs queued ahead of two long ones: the long ones never
    // share a thread (which would leave the other idle once the short ones
    // are done, and take about 1.4 times as long).
    for round in 0..3u64 {
        GROUPS.lock().unwrap().clear();
        let inputs = [round, round + 10, LONG_FROM + round, LONG_FROM + 10 + round];
        squares(&region, "mixed", &inputs).await;
        let groups = GROUPS.lock().unwrap().clone();
        assert!(
            groups
                .iter()
                .all(|g| g.iter().filter(|&&n| n >= LONG_FROM).count() < 2),
            "the two long jobs ran on one thread: {groups:?}"
        );
    }
    stop.cancel();
}

/// A job that panics for input 13: a region's batch of lane jobs loses
/// only the outputs of the pair the panic hit, and the pool thread goes on.
struct Fragile(u64);

impl Lanes for Fragile {
    type Output = SquareMsg;

    fn run_together(jobs: Vec<Fragile>, done: &mut dyn FnMut(usize, SquareMsg)) {
        assert!(jobs.iter().all(|j| j.0 != 13), "input 13 panics");
        for (i, Fragile(n)) in jobs.into_iter().enumerate() {
            done(i, SquareMsg::Done(n * n));
        }
    }
}

impl SquareLanes for Fragile {
    const TYPE_NAME: &'static str = "fragile-square";
    fn new(n: u64) -> Self {
        Fragile(n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_batch_of_lane_jobs_loses_only_its_pair() {
    let (region, _view, stop) = alone::<Fragile>(1).await;

    // 64 jobs at once on one thread: they go in batches of several pairs.
    let starts: Vec<(String, SquareMsg)> = (0..64u64)
        .map(|i| (format!("f-{i}"), SquareMsg::Start(i)))
        .collect();
    for answer in region.ask_batch(starts, T).await {
        answer.unwrap();
    }
    // 13 ran in a pair with 12 (jobs pair in queue order): those two are
    // lost; every other job's output reached its entity.
    let kept: Vec<u64> = (0..64u64).filter(|i| !(12..=13).contains(i)).collect();
    let gets = kept
        .iter()
        .map(|i| (format!("f-{i}"), SquareMsg::Get))
        .collect();
    for (answer, i) in region.ask_batch(gets, T).await.into_iter().zip(&kept) {
        assert_eq!(answer.unwrap(), i * i, "f-{i}");
    }
    let lost = region
        .ask("f-12", SquareMsg::Get, Duration::from_millis(300))
        .await;
    assert!(
        lost.is_err(),
        "the pair of the panic lost its outputs: {lost:?}"
    );
    stop.cancel();
}

/// The pool threads that ran each group of [`Spread`] jobs, with the
/// group's inputs.
static SPREAD_GROUPS: Mutex<Vec<(String, Vec<u64>)>> = Mutex::new(Vec::new());

/// A job of [`LONG`] from input [`LONG_FROM`] up (2 ms below) that notes
/// the thread that ran it.
struct Spread(u64);

impl Lanes for Spread {
    type Output = SquareMsg;

    fn run_together(jobs: Vec<Spread>, done: &mut dyn FnMut(usize, SquareMsg)) {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        SPREAD_GROUPS
            .lock()
            .unwrap()
            .push((thread, jobs.iter().map(|j| j.0).collect()));
        let long = jobs.iter().any(|j| j.0 >= LONG_FROM);
        std::thread::sleep(if long { LONG } else { Duration::from_millis(2) });
        for (i, Spread(n)) in jobs.into_iter().enumerate() {
            done(i, SquareMsg::Done(n.wrapping_mul(n)));
        }
    }
}

impl SquareLanes for Spread {
    const TYPE_NAME: &'static str = "spread-square";
    fn new(n: u64) -> Self {
        Spread(n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_jobs_batched_together_still_spread_over_the_threads() {
    let (region, _view, stop) = alone::<Spread>(2).await;

    // Four long jobs ahead of 60 short ones: the backlog is deep, so the
    // four go to the pool as one batch. Two threads: each should run one
    // pair of long jobs (one thread running both pairs, one after the
    // other, takes twice as long while the other idles).
    let inputs: Vec<u64> = (0..4).map(|k| LONG_FROM + k).chain(0..60).collect();
    squares(&region, "s", &inputs).await;
    let groups = SPREAD_GROUPS.lock().unwrap().clone();
    let long_threads: std::collections::BTreeSet<&str> = groups
        .iter()
        .filter(|(_, g)| g.iter().any(|&n| n >= LONG_FROM))
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        long_threads.len(),
        2,
        "the long jobs ran on one thread while the other idled: {groups:?}"
    );
    let ran: usize = groups.iter().map(|(_, g)| g.len()).sum();
    assert_eq!(
        ran,
        inputs.len(),
        "a job ran twice or not at all: {groups:?}"
    );
    stop.cancel();
}
