//! The shard region: the actor that hosts one entity type on one node.
//!
//! Every node runs one region per entity type. It computes the allocation
//! from its view of the members, applies messages to the entities of the
//! shards it owns (one at a time, in order), replicates each state change to
//! the shard's replicas before answering, forwards messages for shards it
//! does not own, and moves shards when owners change:
//!
//! - **Handoff by fetch.** A node that becomes owner of a shard asks every
//!   other node that held it (the previous owner and replicas, in the old
//!   and the new allocation) for its data, page by page, merges by version,
//!   and only then serves the shard. Messages that arrive meanwhile are
//!   held and delivered afterwards in order. The previous owner, on the
//!   first fetch page, stops applying messages for the shard and forwards
//!   them to the new owner.
//! - **Replicas.** After a state change the owner sends the new record to
//!   the shard's replicas and answers the asker only once all have
//!   confirmed; a reply that reads state waits for the same confirmation.
//!   A node that becomes a replica gets the whole shard pushed by the owner.
//! - **Restarts.** A node starting (or told it lost its shards) holds
//!   nothing and fetches every shard it owns before serving it.
//!
//! See `PROTOCOL.md` for the messages and invariants.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use transport::{Channel, Inbox, Lane, NodeId, Received, Responder, Transport};

use crate::alloc::{Allocation, allocate};
use crate::config::{MailboxStrategy, RegionConfig};
use crate::entities::{EntityMap, IdHash, IdHasher, IdKey};
use crate::entity::{Context, Entity, Handled, Job, LaneJob};
use crate::error::{RegionError, Result};
use crate::handle::{RegionHandle, Routing};
use crate::pool::{Item, Offer, PoolLane, WorkerPool};
use crate::shard::{ShardId, ShardMap, shard_id};
use crate::wire::{Holding, MAX_BATCH_ITEMS, Record, Wire, WireReply, life_stamp};

/// How long a fetch keeps asking while the holder's view does not yet make
/// the fetcher the owner, retrying after 10 ms, then twice as long each
/// time up to [`FETCH_VIEW_RETRY_MAX`]. Views usually agree within tens of
/// ms after a join, so the retries come soon: a fixed 200 ms wait held every
/// message of a shard that long after each join.
const FETCH_VIEW_PATIENCE: Duration = Duration::from_secs(5);
/// The longest wait between two fetch attempts while views disagree: short,
/// since a fetch answered `Moved` costs the holder one lookup, while every
/// message of the shard waits for the next attempt.
const FETCH_VIEW_RETRY_MAX: Duration = Duration::from_millis(50);

/// The pause before a failed handoff fetch from a member still in the
/// view is asked again (a fetch reports failure after 3 transport errors,
/// or after [`FETCH_VIEW_PATIENCE`] of `Moved`; the shard keeps waiting).
const FETCH_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// Attempts of each page of a background shard push ([`Actor::push_sync`]):
/// about 10 s of retries with the backoff there.
const SYNC_ATTEMPTS: u32 = 8;

/// Attempts of one hand-over ([`Wire::HandOver`]) before its asks are
/// answered [`RegionError::ReplicationFailed`]; by then their askers have
/// mostly given up (the pauses between attempts double from 100 ms).
const HAND_OVER_ATTEMPTS: u32 = 4;

/// Mailbox messages handled per wake-up before replication is flushed.
const BURST: usize = 512;

/// A job that ran at least this long wakes the actor at once with its
/// output; shorter ones may wait for the next few (see [`JobOutputs`]).
const LONG_JOB: Duration = Duration::from_micros(200);

/// An actor turn (a burst of messages and what follows it) this long or
/// longer ends its burst early and yields to the other tasks of its
/// thread. Merging the shard syncs of two leaving peers with a million
/// entities each held one node's runtime 0.6 s (the membership warned of
/// late timers) when a burst ran to its 512 messages regardless.
const LONG_TURN: Duration = Duration::from_millis(10);

/// Job outputs on their way from the worker pool to the actor.
///
/// Waking the actor for every short job costs about as much CPU as the
/// job itself on a busy machine (a futex wake and two context switches),
/// so a worker wakes it only when this region has few jobs left in the
/// pool (`in_flight <= low_water`: the actor must refill the queue soon),
/// when a job ran for [`LONG_JOB`] or more (its output must not wait for
/// other long jobs), or when [`MAX_WAITING_OUTPUTS`] outputs are waiting.
/// Outputs that did not wake the actor are taken at its next wake-up for
/// any reason; the job that brings `in_flight` down to `low_water` always
/// causes one. So a short job's output waits at most for the jobs ahead of
/// that one, each shorter than [`LONG_JOB`] or waking the actor itself:
/// about `(queue capacity + threads - low_water) / threads * LONG_JOB`
/// (9.6 ms with the default queue of 64 jobs per thread on 2 threads), and
/// the actor's 100 ms tick bounds it in any case.
struct JobOutputs<M> {
    done: std::sync::Mutex<Vec<(ShardId, String, M)>>,
    /// This region's jobs queued on or running in the pool.
    in_flight: AtomicUsize,
    low_water: usize,
    wake: tokio::sync::Notify,
}

/// Outputs waiting beyond which a worker wakes the actor regardless.
const MAX_WAITING_OUTPUTS: usize = 256;

impl<M> JobOutputs<M> {
    fn new(pool: &WorkerPool) -> Self {
        JobOutputs {
            done: std::sync::Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            low_water: pool.threads() + pool.queue_capacity() / 4,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Called on a worker thread when a job of this region finished.
    fn finish(&self, shard: ShardId, id: String, msg: M, long: bool) {
        let waiting = {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            done.push((shard, id, msg));
            done.len()
        };
        let left = self
            .in_flight
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        if left <= self.low_water || long || waiting >= MAX_WAITING_OUTPUTS {
            self.wake.notify_one();
        }
    }

    /// Called on a worker thread for a job that gave no output: it is no
    /// longer in flight.
    fn lost(&self) {
        let left = self
            .in_flight
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        if left <= self.low_water {
            self.wake.notify_one();
        }
    }
}

/// A job of this region on its way to the pool.
enum Backlog<M> {
    /// Not yet given to the pool.
    Job {
        shard: ShardId,
        id: String,
        job: Job<M>,
    },
    /// Made into the pool's item (of this many jobs), which the pool's
    /// full queue refused: it goes first when there is room.
    Item(Item, usize),
}

/// Lane jobs of one region on the pool, taken by one pool thread as one
/// item: it runs them two at a time, interleaved, and gives each output
/// to its region as soon as that job is done. A batch holds up to
/// [`MAX_LANE_BATCH`] jobs (see [`Actor::pump_jobs`] for its size): one
/// queue hand-over, one allocation and one count of the region's jobs for
/// all of them, where a job apiece cost about 0.4 us per job of the pool
/// thread's and the actor's time in cross-thread traffic
/// (`BENCHMARKS.md`, session 18). When the pool gives it a partner (an
/// item of the same kind), the partner's jobs join the batch. A batch of
/// more than one pair queues a [`BatchTicket`] when it starts, so a
/// thread out of other work shares its pairs.
struct RegionLane<M> {
    jobs: Vec<(ShardId, String, LaneJob<M>)>,
    kind: std::any::TypeId,
    outputs: Arc<JobOutputs<M>>,
}

/// Most lane jobs in one pool item ([`RegionLane`]).
const MAX_LANE_BATCH: usize = 16;

/// The jobs of a [`RegionLane`] (and its partner) a pool thread is
/// running, shared with the threads that take its [`BatchTicket`]: each
/// takes the next pair until none is left.
struct SharedBatch<M> {
    /// Jobs not yet started, each with the index of its region's outputs
    /// in `regions`.
    jobs: std::sync::Mutex<VecDeque<BatchedJob<M>>>,
    regions: Vec<Arc<JobOutputs<M>>>,
}

/// A lane job of a [`SharedBatch`]: its shard, entity id, job, and the
/// index of its region's outputs in the batch's `regions`.
type BatchedJob<M> = (ShardId, String, LaneJob<M>, usize);

impl<M> SharedBatch<M> {
    /// Runs the next pair (or last job) until no job is left; a panic
    /// loses the outputs of its pair only.
    fn run_pairs(&self) {
        loop {
            let pair: Vec<_> = {
                let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
                let n = jobs.len().min(2);
                jobs.drain(..n).collect()
            };
            if pair.is_empty() {
                return;
            }
            let started = std::time::Instant::now();
            let mut owners = Vec::with_capacity(2);
            let mut lanes = Vec::with_capacity(2);
            for (shard, id, job, r) in pair {
                owners.push(Some((shard, id, r)));
                lanes.push(job);
            }
            let regions = &self.regions;
            let ran = catch_unwind(AssertUnwindSafe(|| {
                LaneJob::run_together(lanes, &mut |i, msg| {
                    if let Some((shard, id, r)) = owners.get_mut(i).and_then(Option::take) {
                        regions[r].finish(shard, id, msg, started.elapsed() >= LONG_JOB);
                    }
                });
            }));
            for (shard, id, r) in owners.into_iter().flatten() {
                if ran.is_err() {
                    tracing::error!(shard = shard.0, id = %id, "a lane job panicked: its output is lost, and the entity's work restarts when its shard is next activated");
                } else {
                    tracing::error!(shard = shard.0, id = %id, "a lane job gave no output (its Lanes::run_together skipped it); the entity's work restarts when its shard is next activated");
                }
                self.regions[r].lost();
            }
        }
    }
}

/// A queue item that lets the pool thread taking it share the work of a
/// [`SharedBatch`] another thread runs (nothing once that one is done).
/// Its kind is its own, so it never pairs with a lane job.
struct BatchTicket<M>(Arc<SharedBatch<M>>);

impl<M: Send + 'static> PoolLane for BatchTicket<M> {
    fn kind(&self) -> std::any::TypeId {
        std::any::TypeId::of::<BatchTicket<M>>()
    }

    fn wants_partner(&self) -> bool {
        false
    }

    fn run(self: Box<Self>, _partner: Option<Box<dyn PoolLane>>, _offer: &Offer) {
        self.0.run_pairs();
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

impl<M: Send + 'static> PoolLane for RegionLane<M> {
    fn kind(&self) -> std::any::TypeId {
        self.kind
    }

    fn wants_partner(&self) -> bool {
        self.jobs.len() % 2 == 1
    }

    fn run(self: Box<Self>, partner: Option<Box<dyn PoolLane>>, offer: &Offer) {
        let RegionLane {
            jobs,
            kind: _,
            outputs,
        } = *self;
        // Each job with the index of its region's outputs in `regions`.
        let mut regions = vec![outputs];
        let mut queue: VecDeque<BatchedJob<M>> = jobs
            .into_iter()
            .map(|(s, id, job)| (s, id, job, 0))
            .collect();
        if let Some(partner) = partner {
            // A kind is the job's `Lanes` type, whose `Output` is `M`: a
            // partner of the same kind is a `RegionLane<M>`.
            let partner = partner
                .into_any()
                .downcast::<RegionLane<M>>()
                .expect("lane jobs of one kind have one output type");
            let partner = *partner;
            let r = if Arc::ptr_eq(&partner.outputs, &regions[0]) {
                0
            } else {
                regions.push(partner.outputs);
                1
            };
            queue.extend(partner.jobs.into_iter().map(|(s, id, job)| (s, id, job, r)));
        }
        let more_than_a_pair = queue.len() > 2;
        let batch = Arc::new(SharedBatch {
            jobs: std::sync::Mutex::new(queue),
            regions,
        });
        if more_than_a_pair {
            // Another thread out of work takes the pairs not yet started
            // (long jobs queued together would otherwise run here one
            // pair after another while that thread idles).
            offer.offer(Box::new(BatchTicket(Arc::clone(&batch))));
        }
        batch.run_pairs();
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// Failures in a row by peer name: how often in a row each peer failed,
/// so a failing peer's warnings thin out (1st, 2nd, 4th, ...) however
/// many batches to healthy peers come in between.
#[derive(Debug, Default)]
struct FailuresInARow {
    by_peer: HashMap<String, u64>,
}

impl FailuresInARow {
    /// Records one outcome for `peer`: returns its failures in a row now
    /// (0 after a success, which ends the run).
    fn record(&mut self, peer: &str, failed: bool) -> u64 {
        if !failed {
            self.by_peer.remove(peer);
            return 0;
        }
        let n = self.by_peer.entry(peer.to_owned()).or_default();
        *n += 1;
        *n
    }

    /// Forgets the peers that are not in `members`.
    fn keep_only(&mut self, members: &MemberMap) {
        self.by_peer.retain(|name, _| members.contains_key(name));
    }
}

/// The members that hold shards (alive and suspect), by name.
pub type MemberMap = BTreeMap<String, NodeId>;

/// Where the answer to a delivered message goes.
pub(crate) enum ReplyTo<E: Entity> {
    Local(oneshot::Sender<Result<E::Reply>>),
    Remote(Responder),
    /// One item of a batch: the answer fills its slot.
    Slot(Slot<E>),
    Nobody,
}

/// Where a whole batch's answers go once every item has one.
pub(crate) enum BatchDone<E: Entity> {
    Local(oneshot::Sender<Vec<Result<E::Reply>>>),
    /// The responder, the largest body the link takes (`[transport]
    /// max_frame_bytes`) and this node's name (for errors).
    Remote(Responder, usize, String),
}

/// Room left in a frame for the header around a reply body, in bytes.
const FRAME_HEADER_ROOM: usize = 64;

/// The answers of one batch (`DeliverBatch` or a local batch ask) while
/// its items are handled, each on its own path (applied here, parked,
/// waiting for replicas, forwarded). Shared by the items' [`Slot`]s; the
/// item answered last sends them all.
pub(crate) struct BatchSlots<E: Entity> {
    inner: std::sync::Mutex<BatchInner<E>>,
}

struct BatchInner<E: Entity> {
    answers: Vec<Option<Result<E::Reply>>>,
    left: usize,
    done: Option<BatchDone<E>>,
}

impl<E: Entity> BatchSlots<E> {
    /// A batch of `len` items answering to `done`; an empty batch is
    /// answered at once.
    pub(crate) fn new(len: usize, done: BatchDone<E>) -> Arc<Self> {
        let slots = Arc::new(BatchSlots {
            inner: std::sync::Mutex::new(BatchInner {
                answers: (0..len).map(|_| None).collect(),
                left: len,
                done: Some(done),
            }),
        });
        if len == 0 {
            slots.finish(Vec::new());
        }
        slots
    }

    fn fill(&self, index: usize, r: Result<E::Reply>) {
        let all = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let Some(cell) = inner.answers.get_mut(index) else {
                return;
            };
            if cell.is_some() {
                return;
            }
            *cell = Some(r);
            inner.left -= 1;
            if inner.left > 0 {
                return;
            }
            std::mem::take(&mut inner.answers)
        };
        self.finish(all.into_iter().flatten().collect());
    }

    fn finish(&self, answers: Vec<Result<E::Reply>>) {
        let done = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .done
            .take();
        match done {
            Some(BatchDone::Local(tx)) => {
                let _ = tx.send(answers);
            }
            Some(BatchDone::Remote(resp, max_bytes, node)) => {
                let n = answers.len();
                let reply = WireReply::<E>::Replies(answers);
                let size = postcard::experimental::serialized_size(&reply).unwrap_or(usize::MAX);
                let reply = if size > max_bytes.saturating_sub(FRAME_HEADER_ROOM) {
                    // Every item was handled, but the answers do not fit
                    // one frame: say so instead of leaving the asker to
                    // its timeout.
                    WireReply::Error(RegionError::Protocol {
                        node,
                        reason: format!(
                            "the answers to a batch of {n} items take {size} bytes, above \
                             transport.max_frame_bytes = {max_bytes}: ask fewer at once"
                        ),
                    })
                } else {
                    reply
                };
                if let Err(e) = resp.reply_msg(&reply) {
                    tracing::debug!(items = n, error = %e, "cannot send a batch's answers");
                }
            }
            None => {}
        }
    }
}

/// One item's place in a [`BatchSlots`]. Dropped without an answer (the
/// region let go of the item, e.g. its shard moved), it answers `Moved`,
/// which the asker retries, like a dropped single ask.
pub(crate) struct Slot<E: Entity> {
    batch: Arc<BatchSlots<E>>,
    index: usize,
    shard: ShardId,
    answered: bool,
}

impl<E: Entity> Slot<E> {
    pub(crate) fn new(batch: &Arc<BatchSlots<E>>, index: usize, shard: ShardId) -> Self {
        Slot {
            batch: Arc::clone(batch),
            index,
            shard,
            answered: false,
        }
    }

    fn answer(mut self, r: Result<E::Reply>) {
        self.answered = true;
        self.batch.fill(self.index, r);
    }
}

impl<E: Entity> Drop for Slot<E> {
    fn drop(&mut self) {
        if !self.answered {
            self.batch.fill(
                self.index,
                Err(RegionError::Moved {
                    shard: self.shard.0,
                }),
            );
        }
    }
}

impl<E: Entity> ReplyTo<E> {
    fn send(self, r: Result<E::Reply>) {
        match self {
            ReplyTo::Local(tx) => {
                let _ = tx.send(r);
            }
            ReplyTo::Remote(resp) => {
                let reply = match r {
                    Ok(v) => WireReply::<E>::Reply(v),
                    Err(e) => WireReply::Error(e),
                };
                if let Err(e) = resp.reply_msg(&reply) {
                    tracing::debug!(error = %e, "cannot send reply");
                }
            }
            ReplyTo::Slot(slot) => slot.answer(r),
            ReplyTo::Nobody => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "tell failed");
                }
            }
        }
    }
}

/// Commands from the local handle.
pub(crate) enum Cmd<E: Entity> {
    Deliver {
        id: String,
        msg: E::Msg,
        reply: ReplyTo<E>,
        deadline: Option<Instant>,
        hops: u8,
    },
    /// Several asks from the local handle, answered together.
    DeliverBatch {
        items: Vec<(String, E::Msg)>,
        reply: oneshot::Sender<Vec<Result<E::Reply>>>,
        deadline: Instant,
    },
    Wire(Received<Wire<E>>),
    /// This node's life was declared dead: drop everything, fetch again.
    Reset,
    /// Graceful leave: hand every owned shard to its next owner (computed
    /// without this node), answer with what was handed off.
    HandOffAll(oneshot::Sender<HandOff>),
}

/// What a graceful leave's hand-off did ([`RegionHandle::hand_off_all`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandOff {
    /// Shards this node owned and handed off (this call's, not the
    /// node's whole life's).
    pub shards: usize,
    /// Copies of a shard to one of its next holders (owner or replica)
    /// that the holder did not confirm while it was still a member (it
    /// did not answer, or the copy was refused, e.g. an entity larger than
    /// a frame). Each is logged. The shard's other holders, if any, have
    /// it; with none, its entities that this node alone held are lost.
    pub failed_copies: usize,
}

impl std::ops::Add for HandOff {
    type Output = HandOff;

    fn add(self, other: HandOff) -> HandOff {
        HandOff {
            shards: self.shards + other.shards,
            failed_copies: self.failed_copies + other.failed_copies,
        }
    }
}

enum Internal<E: Entity> {
    ReplicatedBatch {
        entries: Vec<(ShardId, String, u64)>,
        result: Result<()>,
        /// Each replica's outcome: its name, and why it failed (`None`:
        /// it confirmed).
        replicas: Vec<(String, Option<String>)>,
    },
    Fetched {
        shard: ShardId,
        epoch: u64,
        from: NodeId,
        result: Result<Vec<Record<E>>>,
    },
    /// A sync task asks for a copy of this node's records of `shard`
    /// ([`Actor::shard_records`]), made in an actor turn of its own.
    Records {
        shard: ShardId,
        reply: oneshot::Sender<Arc<Vec<Record<E>>>>,
    },
}

enum Status<E: Entity> {
    /// Fetching from `waiting`; messages held in `held`. `asked` is every
    /// member (life) a fetch was sent to in this recovery.
    Recovering {
        epoch: u64,
        waiting: BTreeSet<NodeId>,
        asked: BTreeSet<NodeId>,
        held: VecDeque<Cmd<E>>,
    },
    Active,
    /// Gave the shard to `to` on its fetch; forwards there.
    HandedOff {
        to: NodeId,
    },
}

struct Entry<E> {
    /// The entity's state; `None` for a tombstone: the entity was removed
    /// at `version` (its id is then in [`ShardData::removed`]).
    state: Option<E>,
    version: u64,
    /// Which owner life numbered `version` ([`life_stamp`]): this node's
    /// own when it applied the change or restored the state, the record's
    /// when it took a copy from elsewhere.
    stamp: u64,
    /// Highest version all replicas confirmed.
    acked: u64,
}

struct Parked<E: Entity> {
    msg: E::Msg,
    reply: ReplyTo<E>,
    deadline: Option<Instant>,
    /// Counts this ask toward `[sharding] max_parked_asks` while it lives.
    _slot: ParkedSlot,
}

/// One parked ask's share of the region's count of parked asks: taken when
/// an ask is parked, given back when it is dropped (answered, expired,
/// moved away or delivered again), whichever path drops it.
struct ParkedSlot(Arc<AtomicUsize>);

impl ParkedSlot {
    /// A slot, or `None` when `limit` asks are parked already.
    fn take(count: &Arc<AtomicUsize>, limit: usize) -> Option<ParkedSlot> {
        if count.load(Ordering::Relaxed) >= limit {
            return None;
        }
        count.fetch_add(1, Ordering::Relaxed);
        Some(ParkedSlot(Arc::clone(count)))
    }
}

impl Drop for ParkedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Replications of this burst, by entity id (an id names its shard): the
/// shard, the entity's latest version, its stamp and its state (`None`:
/// removed). A table by the region's id hash, not a tree by `(shard, id)`
/// whose insert compared ids at every level: 8 % fewer instructions per
/// task beside the hash in the in-process cluster, 13 % with the queues
/// kept across bursts (`Actor::spare_queues`; `BENCHMARKS.md`, session
/// 14). A batch is put in shard order when it is sent.
type Outgoing<E> = EntityMap<Queued<E>>;

/// One queued change (see [`Outgoing`]): shard, version, stamp, state.
type Queued<E> = (ShardId, u64, u64, Option<E>);

/// A change held back (`[sharding] replicate_delay_ms`): the shard, the
/// entity's latest state (with its version and stamp) and when its
/// earliest unsent change was held.
struct Held<E: Entity> {
    shard: ShardId,
    version: u64,
    stamp: u64,
    state: Option<E>,
    since: Instant,
}

/// A sync task's request for a copy of a shard's records, and where the
/// copy goes ([`Internal::Records`]).
type RecordRequest<E> = (ShardId, oneshot::Sender<Arc<Vec<Record<E>>>>);

/// Changes queued for one replica set beyond which they go out although
/// its linger has not passed (see [`Actor::flush_replication`]).
const REPLICATION_QUEUE_MAX: usize = 256;

/// Emptied replication queues kept for reuse (`Actor::spare_queues`), each
/// with room for at most `2 * REPLICATION_QUEUE_MAX` changes.
const SPARE_QUEUES: usize = 8;

/// Changes in a replica set's last batch from which its next one lingers
/// (`[sharding] replicate_linger_ms`, see [`Actor::flush_replication`]):
/// fewer come from a client asking one thing at a time, which a linger
/// would only slow down.
const LINGER_MIN_BATCH: usize = 8;

/// Changes held back at most (see `[sharding] replicate_delay_ms`): beyond
/// it a change is sent at once, so a burst of changes nobody waits for does
/// not pile up copies of states in memory.
const MAX_HELD_REPLICATIONS: usize = 16_384;

/// An answer held until its entity's `acked` version reaches the first
/// field; the last says whether its message is idempotent
/// ([`Entity::idempotent`]).
type HeldReply<E> = (u64, ReplyTo<E>, Result<<E as Entity>::Reply>, bool);

struct ShardData<E: Entity> {
    entities: EntityMap<Entry<E>>,
    /// Replies waiting until their entity's `acked` reaches a version.
    waiting_acks: EntityMap<Vec<HeldReply<E>>>,
    parked: EntityMap<Vec<Parked<E>>>,
    /// Of each entity with changes its replicas have not all confirmed:
    /// its states from the last confirmed one on (see [`Unconfirmed`]).
    unconfirmed: EntityMap<Unconfirmed>,
    /// The ids whose entry in `entities` is a tombstone (removed, `state`
    /// `None`), with when this node made or learned it. A tombstone is
    /// dropped once every replica confirmed it (on the owner) and it is
    /// older than `[sharding] retire_after_ms` ([`ShardData::expire_tombstones`]).
    removed: EntityMap<Instant>,
    /// The ids whose entry is a state a reset restored (this node's or
    /// another's, [`Record::restored_from`]), with the confirmed version
    /// it restores. Empty but for the few entities a reset went back on;
    /// an entry leaves it when it changes or a merge replaces it.
    restored: EntityMap<u64>,
    /// The highest version of an entry this node dropped or replaced by a
    /// lower one while a copy of it may live elsewhere: an unconfirmed
    /// creation a reset removed, an expired tombstone, a restored state
    /// that another owner's change replaced ([`merge_record`]). An id
    /// created here without an entry starts above it, and a change of an
    /// entity numbers above it, so no version number is issued twice for
    /// one id by one life and a replica still holding such an entry takes
    /// the new one (it would keep its copy over a lower version, and
    /// confirm).
    version_floor: u64,
    /// When this node stopped holding the shard (data kept a while).
    retired_at: Option<Instant>,
}

/// One entity's states since the last one every replica confirmed, oldest
/// first: `(version, postcard encoding)`, `None` for "absent". The last
/// one is the entity's current state, which the entity itself holds: its
/// bytes stay empty until the next change needs them. The first is
/// the confirmed state; a reset restores it under a new version above
/// every one issued (a replica may hold a later change it confirmed too
/// late: the restored state must win over it, and no version number is
/// issued twice), marked as restored from the confirmed version
/// ([`Record::restored_from`]): the retried ask, applied by the new owner
/// over the confirmed state at a version of its own (perhaps lower), wins
/// over the restore ([`supersedes`]). So a reset discards what the
/// replicas had not all confirmed when it ran (the idempotent asks that
/// produced it are answered `Moved` and retried by their senders, any
/// other `ReplicationFailed`) and keeps the confirmed state even when
/// every replica resets too. Entries exist only
/// while a change is unconfirmed, one per change in flight, at most
/// [`MAX_UNCONFIRMED`] (the oldest unconfirmed ones are dropped beyond: a
/// reset then goes back to the confirmed state all the same).
///
/// A change some replica applied and the owner's reset reverted comes
/// back if that replica's copy is fetched before the restored one reaches
/// it; only an idempotent ask is sent again after a reset, so applying it
/// over that copy changes nothing more. A replica that holds the reverted
/// change takes the new owner's change of the same version from the owner
/// of its view, and confirms it only once it holds it ([`takes`]).
type Unconfirmed = VecDeque<(u64, Option<Vec<u8>>)>;

/// Entity `id` changed from version `from` (encoded `before`, `None` when
/// it was absent: a tombstone) to `version`, and its replicas have not
/// confirmed it yet (see [`Unconfirmed`]).
fn unconfirmed_change(
    unconfirmed: &mut EntityMap<Unconfirmed>,
    id: &IdKey<'_>,
    from: u64,
    before: Option<&[u8]>,
    version: u64,
) {
    let states = unconfirmed.get_or_insert_with(id, Unconfirmed::new);
    let before = before.map(<[u8]>::to_vec);
    match states.back_mut() {
        // The state the previous change made is needed now.
        Some(last) => last.1 = before,
        None => states.push_back((from, before)),
    }
    states.push_back((version, Some(Vec::new())));
    if states.len() > MAX_UNCONFIRMED {
        states.remove(1);
    }
}

/// Entity `id` changed from version `from` to `version` while `from`'s
/// replication is held back (`[sharding] replicate_delay_ms`): either it
/// was never sent, or it is a retry whose earlier send already failed. No
/// confirmation of `from` can arrive (the held record is replaced by this
/// change's), so the history's last entry becomes `version` instead of
/// keeping `from`'s bytes. False (nothing done) when the history does not
/// end at `from`.
fn supersede_unsent(
    unconfirmed: &mut EntityMap<Unconfirmed>,
    id: &IdKey<'_>,
    from: u64,
    version: u64,
) -> bool {
    // The first entry is the confirmed state: only a later one is replaced.
    let Some(states) = unconfirmed
        .get_mut_key(id)
        .filter(|states| states.len() >= 2)
    else {
        return false;
    };
    match states.back_mut() {
        Some(last) if last.0 == from => {
            last.0 = version;
            true
        }
        _ => false,
    }
}

/// Entity `id` was created at `version`, not confirmed yet.
fn unconfirmed_creation(unconfirmed: &mut EntityMap<Unconfirmed>, id: &IdKey<'_>, version: u64) {
    let states = unconfirmed.get_or_insert_with(id, Unconfirmed::new);
    // Versions restart with a new entity: so does its list.
    states.clear();
    states.push_back((0, None));
    states.push_back((version, Some(Vec::new())));
}

/// Most states kept per entity while its changes replicate (see
/// [`Unconfirmed`]): bounds the list of an entity whose replication keeps
/// failing while it keeps changing.
const MAX_UNCONFIRMED: usize = 16;

#[cfg(test)]
impl<E: Entity> Default for ShardData<E> {
    fn default() -> Self {
        ShardData::new(&IdHasher::new())
    }
}

impl<E: Entity> ShardData<E> {
    /// Empty data whose maps hash ids with `ids` (the region's: one
    /// [`IdKey`] serves every map of every shard).
    fn new(ids: &IdHasher) -> Self {
        ShardData {
            entities: EntityMap::with_hasher(ids),
            waiting_acks: EntityMap::with_hasher(ids),
            parked: EntityMap::with_hasher(ids),
            unconfirmed: EntityMap::with_hasher(ids),
            removed: EntityMap::with_hasher(ids),
            restored: EntityMap::with_hasher(ids),
            version_floor: 0,
            retired_at: None,
        }
    }

    /// Every replica confirmed `version` of entity `id`: forgets its states
    /// older than that, and all of them once its current one is confirmed.
    fn confirmed(&mut self, id: &IdKey<'_>, version: u64) {
        let Some(states) = self.unconfirmed.get_mut_key(id) else {
            return;
        };
        while states.get(1).is_some_and(|(v, _)| *v <= version) {
            states.pop_front();
        }
        // The last state is the entity's current one: with it confirmed,
        // nothing is left to restore.
        let done = states.len() <= 1;
        if done {
            self.unconfirmed.remove_key(id);
        }
    }

    /// Puts every entity with unconfirmed changes back to its last confirmed
    /// state, under a version above every one issued for it (a reset: the
    /// changes' asks are retried by their senders). This node numbers that
    /// version, so it carries this node's `stamp`, and the entry is marked
    /// restored from the confirmed version ([`ShardData::restored`]): it
    /// wins a merge over this life's reverted versions and anything at or
    /// below the confirmed one, not over a change another owner life made
    /// above the confirmed state (the retried ask, applied by the new
    /// owner: [`supersedes`]). A removal not confirmed
    /// is undone like any change. An entity absent in its confirmed state
    /// (created, or re-created after a confirmed removal, and not
    /// confirmed) is dropped, tombstone and all, and the shard's
    /// [`ShardData::version_floor`] rises to the versions issued: not a
    /// tombstone, which would win over the creation its retried ask makes
    /// at the new owner and lose an acknowledged write.
    fn restore_confirmed(&mut self, stamp: u64) {
        let unconfirmed: Vec<(String, Unconfirmed)> = self.unconfirmed.drain().collect();
        for (id, states) in unconfirmed {
            let issued = states
                .iter()
                .map(|(v, _)| *v)
                .chain(self.entities.get(&id).map(|e| e.version))
                .max()
                .unwrap_or(0);
            let version = issued + 1;
            let Some((confirmed, bytes)) = states.into_iter().next() else {
                continue;
            };
            let Some(bytes) = bytes else {
                // Absent when confirmed: dropped here, and a re-creation
                // numbers its versions from above the ones issued.
                self.entities.remove(&id);
                self.removed.remove(&id);
                self.restored.remove(&id);
                self.version_floor = self.version_floor.max(issued);
                continue;
            };
            match postcard::from_bytes::<E>(&bytes) {
                Ok(state) => {
                    if !self.removed.is_empty() {
                        self.removed.remove(&id);
                    }
                    self.restored.insert(id.clone(), confirmed);
                    self.entities.insert(
                        id,
                        Entry {
                            state: Some(state),
                            version,
                            stamp,
                            acked: version,
                        },
                    );
                }
                // Encoded by this process a moment ago: cannot fail unless
                // the entity's own serde code is asymmetric. Keep the newer
                // state rather than lose the entity.
                Err(e) => {
                    tracing::error!(id = %id, error = %e, "cannot decode a confirmed state; keeping the unconfirmed one")
                }
            }
        }
    }

    /// The confirmed version entity `id`'s entry restores, when a reset
    /// restored it ([`ShardData::restored`]).
    fn restored_from(&self, id: &str) -> Option<u64> {
        if self.restored.is_empty() {
            None
        } else {
            self.restored.get(id).copied()
        }
    }

    /// Entity `id`'s entry `e` as a record for another node.
    fn record(&self, id: &str, e: &Entry<E>) -> Record<E> {
        Record {
            id: id.to_owned(),
            version: e.version,
            stamp: e.stamp,
            state: e.state.clone(),
            restored_from: self.restored_from(id),
        }
    }

    /// Drops the tombstones older than `retention` at `now` that are
    /// confirmed: by every replica (`acked` at their version) where this
    /// node `owns` the shard; anywhere else the owner keeps its own until
    /// it is confirmed, so age alone decides. Returns how many it dropped.
    fn expire_tombstones(&mut self, now: Instant, retention: Duration, owns: bool) -> usize {
        if self.removed.is_empty() {
            return 0;
        }
        let entities = &mut self.entities;
        let floor = &mut self.version_floor;
        let before = self.removed.len();
        self.removed.retain(|id, at| {
            if now.saturating_duration_since(*at) < retention {
                return true;
            }
            match entities.get(id) {
                Some(e) if e.state.is_none() => {
                    if owns && e.acked < e.version {
                        return true;
                    }
                    *floor = (*floor).max(e.version);
                    entities.remove(id);
                    false
                }
                // Not a tombstone (any more): nothing to drop.
                _ => false,
            }
        });
        before - self.removed.len()
    }
}

/// Counters of one region, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionStats {
    /// Messages applied to local entities.
    pub delivered: u64,
    /// Messages forwarded to another owner.
    pub forwarded: u64,
    /// Messages dropped by a full mailbox (strategy `drop_new`), for
    /// having no route, or tells an entity answered
    /// [`Handled::Wait`] (only asks are kept
    /// waiting); each is also logged (the last at debug level).
    pub dropped: u64,
    /// Shards fetched from other nodes (takeovers).
    pub shards_recovered: u64,
    /// Shards handed to a new owner.
    pub shards_handed_off: u64,
    /// Asks refused instead of kept waiting, `[sharding] max_parked_asks`
    /// being reached (each answered [`RegionError::TooManyWaiting`]).
    pub refused_waits: u64,
    /// Replication frames sent (one `ReplicateBatch` per replica set and
    /// page, each to every replica of the set).
    pub replication_batches: u64,
    /// Records those frames carried: `replicated_records /
    /// replication_batches` is the mean batch size.
    pub replicated_records: u64,
}

/// Starts one entity type's region on this node.
pub struct Region;

impl Region {
    /// Starts the region of entity type `E`: registers transport channel
    /// `channel` (the same id on every node), follows `view` (the members
    /// holding shards, keyed by name; this node must appear in it to own
    /// shards) and runs entity jobs on `pool`. Stops with `shutdown`.
    ///
    /// # Errors
    /// [`RegionError::Config`] when the config is invalid or the channel
    /// is taken.
    pub fn start<E: Entity>(
        transport: &Transport,
        channel: u8,
        config: RegionConfig,
        view: watch::Receiver<MemberMap>,
        pool: WorkerPool,
        shutdown: CancellationToken,
    ) -> Result<RegionHandle<E>> {
        config
            .validate()
            .map_err(|reason| RegionError::Config { reason })?;
        let (chan, inbox) =
            Channel::<Wire<E>>::register(transport, channel, Lane::Bulk).map_err(|e| {
                RegionError::Config {
                    reason: e.to_string(),
                }
            })?;
        let capacity = config.mailbox.capacity;
        let (mbox_tx, mbox_rx) = mpsc::channel(capacity);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let ids = IdHasher::new();
        let me = transport.identity().clone();
        let me_name = me.name.clone();
        let stamp = life_stamp(&me.name, me.generation);
        let num_shards = config.defaults.num_shards;
        let replication = config.sharding.replication_factor;
        let (routing_tx, routing_rx) = watch::channel(Arc::new(Routing::new(
            MemberMap::new(),
            allocate(&BTreeSet::new(), num_shards, replication),
            num_shards,
        )));
        let (stats_tx, stats_rx) = watch::channel(RegionStats::default());
        let intake_dropped = Arc::new(AtomicU64::new(0));
        let handle = RegionHandle::new(
            me.clone(),
            chan.clone(),
            mbox_tx.clone(),
            routing_rx,
            stats_rx,
            config.clone(),
            Arc::clone(&intake_dropped),
        );
        tokio::spawn(intake(
            inbox,
            mbox_tx,
            config.mailbox.clone(),
            me.name.clone(),
            Arc::clone(&intake_dropped),
            shutdown.clone(),
        ));
        let actor = Actor::<E> {
            me,
            stamp,
            config,
            num_shards,
            replication,
            channel: chan,
            members: MemberMap::new(),
            alloc: allocate(&BTreeSet::new(), num_shards, replication),
            status: ShardMap::default(),
            data: ShardMap::default(),
            epoch: 0,
            outputs: Arc::new(JobOutputs::new(&pool)),
            pool,
            backlog: VecDeque::new(),
            internal_tx,
            routing_tx,
            stats: RegionStats::default(),
            stats_tx,
            retry_replicate: Vec::new(),
            outbox: BTreeMap::new(),
            spare_queues: Vec::new(),
            last_batch: HashMap::new(),
            linger_due: None,
            held: EntityMap::with_hasher(&ids),
            ids,
            held_oldest: None,
            node_name: Arc::from(me_name.as_str()),
            replica_sets: vec![Arc::from(Vec::new())],
            shard_replicas: Vec::new(),
            encoded_before: Vec::new(),
            parked_asks: Arc::default(),
            replication_failures: FailuresInARow::default(),
            fetch_failures: FailuresInARow::default(),
            held_refused: 0,
            record_requests: VecDeque::new(),
            encoded_after: Vec::new(),
            view_now: view.clone(),
            sync_failures: Arc::default(),
            hand_over_failures: Arc::default(),
            intake_dropped,
        };
        tokio::spawn(actor.run(mbox_rx, internal_rx, view, shutdown));
        Ok(handle)
    }
}

/// Moves remote requests into the mailbox, applying the mailbox strategy.
async fn intake<E: Entity>(
    mut inbox: Inbox<Wire<E>>,
    mbox: mpsc::Sender<Cmd<E>>,
    config: crate::config::MailboxConfig,
    me: String,
    dropped_total: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = inbox.recv() => match r { Some(r) => r, None => return },
        };
        match config.strategy {
            MailboxStrategy::Backpressure => {
                // Waiting here stops this connection's reads: the sender's
                // queue fills and it gets `QueueFull`.
                if mbox.send(Cmd::Wire(received)).await.is_err() {
                    return;
                }
            }
            MailboxStrategy::DropNew => match mbox.try_send(Cmd::Wire(received)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(Cmd::Wire(r))) => {
                    // Counted with the local handle's drops, so the two
                    // warn on one sequence. A full mailbox drops in
                    // bursts: warned at the 1st, 2nd, 4th, ... drop, the
                    // rest at debug level.
                    let dropped = dropped_total.fetch_add(1, Ordering::Relaxed) + 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(entity = E::TYPE_NAME, from = %r.from, dropped, capacity = config.capacity, "mailbox full: message dropped (drop_new; warned at the 1st, 2nd, 4th, ... drop)");
                    } else {
                        tracing::debug!(entity = E::TYPE_NAME, from = %r.from, dropped, capacity = config.capacity, "mailbox full: message dropped (drop_new)");
                    }
                    if let Some(resp) = r.responder {
                        let _ = resp.reply_msg(&WireReply::<E>::Error(RegionError::Dropped {
                            node: me.clone(),
                        }));
                    }
                }
                Err(_) => return,
            },
        }
    }
}

struct Actor<E: Entity> {
    me: NodeId,
    /// This life's stamp ([`life_stamp`]), put on every version it numbers.
    stamp: u64,
    config: RegionConfig,
    num_shards: NonZeroU32,
    replication: NonZeroU32,
    channel: Channel<Wire<E>>,
    members: MemberMap,
    alloc: Allocation,
    /// Status of the shards this node owns (or handed off).
    status: ShardMap<Status<E>>,
    /// Data of the shards this node holds, owns or recently held.
    data: ShardMap<ShardData<E>>,
    epoch: u64,
    pool: WorkerPool,
    /// Jobs waiting for room in the pool's queue.
    backlog: VecDeque<Backlog<E::Msg>>,
    /// Outputs of jobs that ran on the pool, waiting for this actor.
    outputs: Arc<JobOutputs<E::Msg>>,
    internal_tx: mpsc::UnboundedSender<Internal<E>>,
    routing_tx: watch::Sender<Arc<Routing>>,
    stats: RegionStats,
    stats_tx: watch::Sender<RegionStats>,
    retry_replicate: Vec<(Instant, ShardId, String)>,
    /// Replications queued by this burst of input, by replica set (an
    /// index into `replica_sets`, with the set itself).
    outbox: BTreeMap<usize, (Arc<[NodeId]>, Outgoing<E>)>,
    /// Emptied queues of `outbox`, kept for the next bursts: a new table
    /// for every batch grew (and hashed every id again) at each doubling.
    spare_queues: Vec<Outgoing<E>>,
    /// When the last batch to each replica set (the set itself, so a view
    /// change's renumbering does not mix them up) went out, and how many
    /// changes it carried (`[sharding] replicate_linger_ms`; cleared on a
    /// view change).
    last_batch: HashMap<Arc<[NodeId]>, (Instant, usize)>,
    /// When the earliest lingering queue in `outbox` is due.
    linger_due: Option<Instant>,
    /// Changes nobody waits for, held back by entity id
    /// (`[sharding] replicate_delay_ms`): moved to `outbox` when an answer
    /// comes to wait for them, when they are due, or on a view change.
    held: EntityMap<Held<E>>,
    /// The hash of entity ids for every map by id of this region (`held`
    /// and each shard's data): a message's id is hashed once.
    ids: IdHasher,
    /// When the oldest change in `held` was held (or earlier, once that
    /// one was sent): a flush past its delay sends the due ones.
    held_oldest: Option<Instant>,
    /// This node's name, shared by every handler [`Context`].
    node_name: Arc<str>,
    /// The distinct replica sets (holders other than this node) of the
    /// current view; `shard_replicas[shard]` indexes it.
    replica_sets: Vec<Arc<[NodeId]>>,
    shard_replicas: Vec<usize>,
    /// Reused buffers for a state's encoding before and after a handler.
    encoded_before: Vec<u8>,
    encoded_after: Vec<u8>,
    /// Asks parked by this region's entities (see [`ParkedSlot`]).
    parked_asks: Arc<AtomicUsize>,
    /// Replication batches failed in a row, by replica (for the
    /// warning's rate).
    replication_failures: FailuresInARow,
    /// Handoff fetches failed in a row, by holder (for the warning's
    /// rate: one failing holder fails the fetches of many shards).
    fetch_failures: FailuresInARow,
    /// Messages refused because a recovering shard held as many as the
    /// mailbox capacity (for the warning's rate).
    held_refused: u64,
    /// Copies of shards' records asked for by sync tasks
    /// ([`Internal::Records`]), made one per actor turn.
    record_requests: VecDeque<RecordRequest<E>>,
    /// Shard syncs failed in a row, by target (for the warning's rate;
    /// shared with the sync tasks, which outlive a message).
    sync_failures: Arc<std::sync::Mutex<FailuresInARow>>,
    /// Hand-overs of waiting asks failed in a row, by target, as
    /// `sync_failures`.
    hand_over_failures: Arc<std::sync::Mutex<FailuresInARow>>,
    /// Messages from other nodes the intake dropped for a full mailbox
    /// (`drop_new`); published in [`RegionStats::dropped`] with the
    /// actor's own drops.
    intake_dropped: Arc<AtomicU64>,
    /// The membership view as it is now, for tasks of this actor that
    /// outlive a view change (a sync failing because its target left is
    /// not worth a warning).
    view_now: watch::Receiver<MemberMap>,
}

impl<E: Entity> Actor<E> {
    async fn run(
        mut self,
        mut mbox: mpsc::Receiver<Cmd<E>>,
        mut internal: mpsc::UnboundedReceiver<Internal<E>>,
        mut view: watch::Receiver<MemberMap>,
        shutdown: CancellationToken,
    ) {
        let first = view.borrow_and_update().clone();
        self.on_view(first);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let delay = Duration::from_millis(self.config.sharding.replicate_delay_ms);
        loop {
            let held_due = self.held_oldest.map(|since| since + delay);
            let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
            let turn = Instant::now();
            // A burst stops early once the turn is long (big sync pages
            // merged one after another), checked every few messages.
            let long = |i: usize| i % 16 == 15 && turn.elapsed() >= LONG_TURN;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(i) = internal.recv() => {
                    self.on_internal(i);
                    // Job outputs and replica confirmations come in bursts
                    // too: take what is there before flushing.
                    for n in 0..BURST {
                        if long(n) {
                            break;
                        }
                        match internal.try_recv() {
                            Ok(i) => self.on_internal(i),
                            Err(_) => break,
                        }
                    }
                }
                changed = view.changed() => {
                    if changed.is_err() { break; }
                    let members = view.borrow_and_update().clone();
                    self.on_view(members);
                }
                Some(cmd) = mbox.recv() => {
                    self.on_cmd(cmd);
                    // Take the rest of the burst before flushing replication.
                    for n in 0..BURST {
                        if long(n) {
                            break;
                        }
                        match mbox.try_recv() {
                            Ok(cmd) => self.on_cmd(cmd),
                            Err(_) => break,
                        }
                    }
                }
                () = self.outputs.wake.notified() => {}
                _ = tick.tick() => self.on_tick(),
                () = tokio::time::sleep_until(held_due.map_or_else(far, Into::into)), if held_due.is_some() => {}
                () = tokio::time::sleep_until(self.linger_due.map_or_else(far, Into::into)), if self.linger_due.is_some() => {}
                () = std::future::ready(()), if !self.record_requests.is_empty() => {}
            }
            self.take_job_outputs();
            self.flush_replication(false);
            self.pump_jobs();
            if let Some((shard, reply)) = self.record_requests.pop_front() {
                let _ = reply.send(self.shard_records(shard, None));
            }
            let mut stats = self.stats.clone();
            stats.dropped += self.intake_dropped.load(Ordering::Relaxed);
            self.stats_tx.send_if_modified(|s| {
                if *s != stats {
                    *s = stats;
                    true
                } else {
                    false
                }
            });
            // After a long turn the other tasks of this thread run first
            // (the membership's timers above all): with messages always
            // waiting, the mailboxes alone would let the actor run on.
            if turn.elapsed() >= LONG_TURN {
                tokio::task::yield_now().await;
            }
        }
    }

    fn owner_of(&self, shard: ShardId) -> Option<&NodeId> {
        self.alloc
            .owner(shard)
            .and_then(|name| self.members.get(name))
    }

    fn holders_ids(&self, alloc: &Allocation, members: &MemberMap, shard: ShardId) -> Vec<NodeId> {
        alloc
            .holders(shard)
            .iter()
            .filter_map(|n| members.get(n.as_str()).cloned())
            .collect()
    }

    /// The replicas of `shard` in the current view (its holders other than
    /// this node), as an index of its replica set and the set.
    fn replicas_of(&self, shard: ShardId) -> (usize, &Arc<[NodeId]>) {
        let i = self.shard_replicas.get(shard.index()).copied().unwrap_or(0);
        (i, &self.replica_sets[i])
    }

    /// Recomputes every shard's replica set for the current view, once per
    /// view change instead of once per message.
    fn refresh_replicas(&mut self) {
        let mut sets: Vec<Arc<[NodeId]>> = vec![Arc::from(Vec::new())];
        let mut index: BTreeMap<Vec<NodeId>, usize> = BTreeMap::from([(Vec::new(), 0)]);
        self.shard_replicas.clear();
        for s in 0..self.num_shards.get() {
            let replicas: Vec<NodeId> = self
                .holders_ids(&self.alloc, &self.members, ShardId(s))
                .into_iter()
                .filter(|n| n.name != self.me.name)
                .collect();
            let next = sets.len();
            let i = *index.entry(replicas.clone()).or_insert(next);
            if i == next {
                sets.push(Arc::from(replicas));
            }
            self.shard_replicas.push(i);
        }
        self.replica_sets = sets;
    }

    // ----- view changes -------------------------------------------------

    fn on_view(&mut self, members: MemberMap) {
        // Queued replications are grouped by replica-set index, which this
        // change renumbers: send them (held ones too) to the sets they were
        // queued for.
        self.flush_replication(true);
        // The sets are about to change: the lingering ones went out above.
        self.last_batch.clear();
        let names: BTreeSet<String> = members.keys().cloned().collect();
        let alloc = allocate(&names, self.num_shards, self.replication);
        let old_alloc = std::mem::replace(&mut self.alloc, alloc);
        let old_members = std::mem::replace(&mut self.members, members);
        // Failure counts of replicas that are gone go with them.
        self.replication_failures.keep_only(&self.members);
        self.fetch_failures.keep_only(&self.members);
        for failures in [&self.sync_failures, &self.hand_over_failures] {
            failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .keep_only(&self.members);
        }
        // Before anything below delivers (activation, held messages).
        self.refresh_replicas();
        let now = Instant::now();
        let mut without_me = self.members.clone();
        without_me.remove(&self.me.name);
        let alloc_without_me = allocate(
            &without_me.keys().cloned().collect(),
            self.num_shards,
            self.replication,
        );
        let mut gained = 0u32;
        let mut lost = 0u32;
        for s in 0..self.num_shards.get() {
            let shard = ShardId(s);
            let is_owner = self.alloc.owner(shard) == Some(self.me.name.as_str());
            let had = self.status.contains_key(&shard);
            let handed_off = matches!(self.status.get(&shard), Some(Status::HandedOff { .. }));
            if is_owner && (!had || handed_off) {
                gained += 1;
                // Whoever may hold the shard's data: its holders before
                // this change, now, and in the allocation without this
                // node (where it lived before this node joined or restarted).
                // Views differ while members come and go, so the holder
                // sets computed here may miss the node that acknowledged a
                // write under another view: ask every member (a node that
                // holds nothing answers an empty page at once).
                let mut sources: BTreeSet<NodeId> = self
                    .holders_ids(&old_alloc, &old_members, shard)
                    .into_iter()
                    .chain(self.holders_ids(&self.alloc, &self.members, shard))
                    .chain(self.holders_ids(&alloc_without_me, &without_me, shard))
                    .chain(self.members.values().cloned())
                    .filter(|n| n.name != self.me.name && self.members.get(&n.name) == Some(n))
                    .collect();
                if let Some(Status::HandedOff { to }) = self.status.get(&shard) {
                    if self.members.get(&to.name) == Some(to) {
                        sources.insert(to.clone());
                    }
                }
                self.start_recovery(shard, sources);
            } else if is_owner {
                // Still recovering: members that entered the view since the
                // recovery started may hold writes they acknowledged as
                // owner under a view that did not include this node; ask
                // them too (they answer once their view agrees).
                self.fetch_from_new_members(shard);
                // Still the owner: push the shard to replicas that are new
                // (or a new life of an old one).
                if matches!(self.status.get(&shard), Some(Status::Active)) {
                    let old: BTreeSet<NodeId> = self
                        .holders_ids(&old_alloc, &old_members, shard)
                        .into_iter()
                        .collect();
                    for r in self.holders_ids(&self.alloc, &self.members, shard) {
                        if r.name != self.me.name && !old.contains(&r) {
                            self.push_sync(shard, r);
                        }
                    }
                }
            } else if had {
                if handed_off {
                    // The view now names the owner: route by it.
                    self.status.remove(&shard);
                } else {
                    lost += 1;
                    self.lose_ownership(shard);
                    // Asks waiting for our replicas were applied here, so
                    // they must not be sent again: the new owner says
                    // whether it holds their changes.
                    let waiting = self
                        .data
                        .get(&shard)
                        .map(|d| d.waiting_acks.keys().cloned().collect())
                        .unwrap_or_default();
                    self.hand_over(shard, waiting);
                    // Writes this node acknowledged as owner may not have
                    // been fetched by the new owner (views differed): push
                    // them; the higher version wins there.
                    if let Some(owner) = self.owner_of(shard).cloned() {
                        self.push_sync(shard, owner);
                    }
                }
            }
            let holds = self.alloc.is_holder(shard, &self.me.name);
            if let Some(d) = self.data.get_mut(&shard) {
                if holds || is_owner {
                    d.retired_at = None;
                } else if d.retired_at.is_none() {
                    d.retired_at = Some(now);
                }
            }
        }
        // A recovering shard stops waiting for holders that left the view
        // (a stopped or crashed holder would otherwise hold its messages
        // for every retry of its fetch); their data is on the replicas.
        let mut ready = Vec::new();
        for (shard, status) in self.status.iter_mut() {
            if let Status::Recovering { waiting, .. } = status {
                let before = waiting.len();
                waiting.retain(|n| self.members.get(&n.name) == Some(n));
                if waiting.is_empty() && before > 0 {
                    ready.push(*shard);
                }
            }
        }
        for shard in ready {
            self.activate(shard);
        }
        if gained > 0 || lost > 0 {
            tracing::info!(
                gained,
                lost,
                members = self.members.len(),
                entity = E::TYPE_NAME,
                "shards moved"
            );
        }
        let routing = Routing::new(self.members.clone(), self.alloc.clone(), self.num_shards);
        self.routing_tx.send_replace(Arc::new(routing));
    }

    /// Takes over entities merged into an active shard from another node:
    /// restarts their work and replicates them (a tombstone too; a state a
    /// reset restored goes by sync: [`Actor::sync_restored`]).
    fn adopt(&mut self, shard: ShardId, ids: Vec<String>) {
        let no_replicas = self.replicas_of(shard).1.is_empty();
        let mut restored = Vec::new();
        for id in ids {
            let key = self.ids.key(&id);
            let Some(d) = self.data.get_mut(&shard) else {
                continue;
            };
            let is_restored = !d.restored.is_empty() && d.restored.contains(&key);
            let Some(entry) = d.entities.get_mut_key(&key) else {
                continue;
            };
            let mut ctx = Context::shared(Arc::clone(&self.node_name));
            if let Some(state) = entry.state.as_mut() {
                state.on_activate(&mut ctx, &id);
            }
            let (version, stamp, state) = (entry.version, entry.stamp, entry.state.clone());
            if no_replicas {
                entry.acked = version;
            }
            for job in ctx.take_jobs() {
                self.queue_job(shard, id.clone(), job);
            }
            if is_restored && !no_replicas {
                restored.push((id.clone(), version));
            } else if !no_replicas {
                self.replicate(shard, &key, version, stamp, state);
            }
            self.redeliver_parked(shard, key);
        }
        if restored.is_empty() {
            return;
        }
        // A restored state goes to the replicas by sync and counts as
        // confirmed, as a fetched one does.
        let ids: Vec<String> = restored.iter().map(|(id, _)| id.clone()).collect();
        self.sync_restored(shard, &ids);
        for (id, version) in restored {
            self.on_replicated(shard, id, version, true);
        }
    }

    /// Copies the restored states of `shard`'s entities `ids` (a reset's,
    /// [`Record::restored_from`]) to the shard's replicas. A replication
    /// carries changes only: a restored state sent as one would win over
    /// the changes of other lives that it must lose to ([`supersedes`]),
    /// so it goes as a sync, which carries the restore.
    fn sync_restored(&self, shard: ShardId, ids: &[String]) {
        for to in self.replicas_of(shard).1.iter() {
            tokio::spawn(self.sync_task_of(shard, to.clone(), SYNC_ATTEMPTS, Some(ids)));
        }
    }

    fn lose_ownership(&mut self, shard: ShardId) {
        let status = self.status.remove(&shard);
        if let Some(Status::Recovering { held, .. }) = status {
            for cmd in held {
                self.on_cmd(cmd);
            }
        }
        if let Some(d) = self.data.get_mut(&shard) {
            // The new owner takes the current states by fetch or push.
            d.unconfirmed.clear();
            for (_, parked) in d.parked.drain() {
                for p in parked {
                    p.reply.send(Err(RegionError::Moved { shard: shard.0 }));
                }
            }
        }
    }

    /// Answers the asks waiting for the replicas of `shard`'s entities
    /// `ids` now that this node no longer owns the shard. Each change was
    /// applied here, and the new owner may hold it already (it fetched
    /// this copy): answered `Moved`, the ask would be sent there and
    /// applied twice. So each entity's state goes to the owner our view
    /// names (or the node the shard was handed to) in a
    /// [`Wire::HandOver`], merged there as a push is, and its asks are
    /// answered by what the owner then holds ([`Holding`]): `Held`, their
    /// replies; `Other` (the owner's history lacks the change), `Moved`,
    /// sent again and applied once; `Newer`, or no answer after
    /// [`HAND_OVER_ATTEMPTS`], [`RegionError::ReplicationFailed`] (the
    /// change may be applied; not sent again), or `Moved` for an
    /// idempotent message ([`Entity::idempotent`]). An entity changed since
    /// (its version is not the one its last ask waits for) gets the same
    /// at once: its state here may no longer carry the change.
    fn hand_over(&mut self, shard: ShardId, ids: Vec<String>) {
        let to = match self.status.get(&shard) {
            Some(Status::HandedOff { to }) => Some(to.clone()),
            _ => self.owner_of(shard).cloned(),
        }
        .filter(|to| to.name != self.me.name);
        let Some(d) = self.data.get_mut(&shard) else {
            return;
        };
        let mut records = Vec::new();
        let mut asks = Vec::new();
        for id in ids {
            let Some(list) = d.waiting_acks.remove(&id) else {
                continue;
            };
            let need = list.iter().map(|(v, ..)| *v).max().unwrap_or(0);
            let record = d
                .entities
                .get(&id)
                .filter(|e| e.version == need && to.is_some())
                .map(|e| d.record(&id, e));
            match record {
                Some(r) => {
                    records.push(r);
                    asks.push(list);
                }
                None => {
                    let reason = match &to {
                        None => "the shard moved and no other owner is in view".to_owned(),
                        Some(_) => "the entity changed again before the shard moved".to_owned(),
                    };
                    answer_failed(shard, list, &reason);
                }
            }
        }
        let Some(to) = to.filter(|_| !records.is_empty()) else {
            return;
        };
        tracing::debug!(shard = shard.0, to = %to, records = records.len(), entity = E::TYPE_NAME, "handing waiting asks over to the new owner");
        let chan = self.channel.clone();
        let timeout = Duration::from_millis(self.config.sharding.replicate_timeout_ms);
        let failures = Arc::clone(&self.hand_over_failures);
        tokio::spawn(async move {
            let count = records.len();
            let wire = Wire::HandOver {
                shard: shard.0,
                records,
            };
            let outcome =
                ask_with_retries(
                    &chan,
                    &to,
                    &wire,
                    timeout,
                    HAND_OVER_ATTEMPTS,
                    |r| match r {
                        WireReply::Holding(h) if h.len() == count => Ok(h),
                        WireReply::Holding(h) => {
                            Err(format!("{} answers for {count} records", h.len()))
                        }
                        _ => Err("unexpected reply".to_owned()),
                    },
                )
                .await
                .map_err(|reason| format!("{}: {reason}", to.name));
            let in_a_row = failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record(&to.name, outcome.is_err());
            match outcome {
                Ok(holding) => {
                    for (list, h) in asks.into_iter().zip(holding) {
                        match h {
                            Holding::Held => {
                                for (_, reply, r, _) in list {
                                    reply.send(r);
                                }
                            }
                            Holding::Other => {
                                for (_, reply, ..) in list {
                                    reply.send(Err(RegionError::Moved { shard: shard.0 }));
                                }
                            }
                            Holding::Newer => answer_failed(
                                shard,
                                list,
                                &format!(
                                    "the shard moved to {}, which holds a newer version",
                                    to.name
                                ),
                            ),
                        }
                    }
                }
                Err(reason) => {
                    // A node leaving (its transport shut down, or peers
                    // leaving with it) expects these: one per shard.
                    if !chan.transport().is_leaving() && in_a_row.is_power_of_two() {
                        tracing::warn!(shard = shard.0, to = %to, reason = %reason, failures = in_a_row, "hand-over of waiting asks failed (warned at the 1st, 2nd, 4th, ... failure in a row to this node)");
                    } else {
                        tracing::debug!(shard = shard.0, to = %to, reason = %reason, failures = in_a_row, "hand-over of waiting asks failed");
                    }
                    for list in asks {
                        answer_failed(shard, list, &reason);
                    }
                }
            }
        });
    }

    fn start_recovery(&mut self, shard: ShardId, sources: BTreeSet<NodeId>) {
        self.epoch += 1;
        let epoch = self.epoch;
        let held = match self.status.remove(&shard) {
            Some(Status::Recovering { held, .. }) => held,
            _ => VecDeque::new(),
        };
        if sources.is_empty() {
            self.status.insert(
                shard,
                Status::Recovering {
                    epoch,
                    waiting: BTreeSet::new(),
                    asked: BTreeSet::new(),
                    held,
                },
            );
            self.activate(shard);
            return;
        }
        let waiting = sources.clone();
        self.status.insert(
            shard,
            Status::Recovering {
                epoch,
                waiting,
                asked: sources.clone(),
                held,
            },
        );
        for src in sources {
            self.spawn_fetch(shard, epoch, src);
        }
    }

    /// Adds to a recovering shard's fetch every member of the current view
    /// it has not asked yet (a member that joined the view, or a new life).
    fn fetch_from_new_members(&mut self, shard: ShardId) {
        let Some(Status::Recovering {
            epoch,
            waiting,
            asked,
            ..
        }) = self.status.get_mut(&shard)
        else {
            return;
        };
        let epoch = *epoch;
        let new: Vec<NodeId> = self
            .members
            .values()
            .filter(|n| n.name != self.me.name && !asked.contains(*n))
            .cloned()
            .collect();
        for n in &new {
            asked.insert(n.clone());
            waiting.insert(n.clone());
        }
        for n in new {
            self.spawn_fetch(shard, epoch, n);
        }
    }

    fn spawn_fetch(&self, shard: ShardId, epoch: u64, src: NodeId) {
        self.spawn_fetch_after(shard, epoch, src, Duration::ZERO);
    }

    /// [`Actor::spawn_fetch`] after `delay` (a fetch asked again).
    fn spawn_fetch_after(&self, shard: ShardId, epoch: u64, src: NodeId, delay: Duration) {
        let chan = self.channel.clone();
        let tx = self.internal_tx.clone();
        let timeout = Duration::from_millis(self.config.sharding.replicate_timeout_ms);
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = fetch_all(&chan, &src.addr, shard, timeout).await;
            let _ = tx.send(Internal::Fetched {
                shard,
                epoch,
                from: src,
                result,
            });
        });
    }

    fn activate(&mut self, shard: ShardId) {
        let Some(Status::Recovering { held, .. }) = self.status.insert(shard, Status::Active)
        else {
            return;
        };
        self.stats.shards_recovered += 1;
        let data = self
            .data
            .entry(shard)
            .or_insert_with(|| ShardData::new(&self.ids));
        data.retired_at = None;
        data.unconfirmed.clear();
        let mut jobs = Vec::new();
        for (id, entry) in data.entities.iter_mut() {
            // Data from a fetch counts as confirmed by its previous holders.
            entry.acked = entry.version;
            let Some(state) = entry.state.as_mut() else {
                continue;
            };
            let mut ctx = Context::shared(Arc::clone(&self.node_name));
            state.on_activate(&mut ctx, id);
            for job in ctx.take_jobs() {
                jobs.push((id.clone(), job));
            }
        }
        for (id, job) in jobs {
            self.queue_job(shard, id, job);
        }
        let replicas: Vec<NodeId> = self
            .holders_ids(&self.alloc, &self.members, shard)
            .into_iter()
            .filter(|n| n.name != self.me.name)
            .collect();
        for r in replicas {
            self.push_sync(shard, r);
        }
        for cmd in held {
            self.on_cmd(cmd);
        }
    }

    /// Pushes this node's data of `shard` to `to` in the background. A page
    /// that fails is sent again, after 100 ms doubling to 2 s, up to
    /// [`SYNC_ATTEMPTS`] times: such a push may carry the only copy of
    /// writes this node acknowledged under another view (a reset, a lost
    /// shard), and links right after a partition heals fail for a while.
    /// Sends this node's data of `shard` to `to` in a task of its own,
    /// which first asks the actor for a copy of the records: a view change
    /// that pushes many shards copies one per actor turn, not all in one.
    fn push_sync(&self, shard: ShardId, to: NodeId) {
        let sync = self.sync_context();
        tokio::spawn(async move {
            if let Some(records) = sync.records(shard).await {
                sync.send(shard, to, SYNC_ATTEMPTS, records).await;
            }
        });
    }

    /// Sends this node's data of `shard` (the entities `only`, or all of
    /// them) to `to`, page by page, each page tried up to `attempts` times;
    /// the records are copied now.
    fn sync_task_of(
        &self,
        shard: ShardId,
        to: NodeId,
        attempts: u32,
        only: Option<&[String]>,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        self.sync_records(shard, to, attempts, self.shard_records(shard, only))
    }

    /// A copy of this node's records of `shard` (the entities `only`, or
    /// all of them), tombstones too: the receiver learns of the removals.
    /// The one part of a sync the actor does itself; shared by the syncs
    /// of one shard to several holders.
    fn shard_records(&self, shard: ShardId, only: Option<&[String]>) -> Arc<Vec<Record<E>>> {
        Arc::new(match (self.data.get(&shard), only) {
            (Some(d), None) => d.entities.iter().map(|(id, e)| d.record(id, e)).collect(),
            (Some(d), Some(ids)) => ids
                .iter()
                .filter_map(|id| Some(d.record(id, d.entities.get(id)?)))
                .collect(),
            (None, _) => Vec::new(),
        })
    }

    /// Sends `records` of `shard` to `to`, page by page, each page tried
    /// up to `attempts` times ([`SyncContext::send`]).
    fn sync_records(
        &self,
        shard: ShardId,
        to: NodeId,
        attempts: u32,
        records: Arc<Vec<Record<E>>>,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        self.sync_context().send(shard, to, attempts, records)
    }

    /// What a shard sync needs of this region, for a task of its own.
    fn sync_context(&self) -> SyncContext<E> {
        SyncContext {
            budget: frame_budget(&self.config, &self.channel),
            chan: self.channel.clone(),
            timeout: Duration::from_millis(self.config.sharding.replicate_timeout_ms),
            view: self.view_now.clone(),
            failures: Arc::clone(&self.sync_failures),
            internal: self.internal_tx.clone(),
        }
    }

    // ----- commands ------------------------------------------------------

    fn on_cmd(&mut self, cmd: Cmd<E>) {
        match cmd {
            Cmd::Deliver {
                id,
                msg,
                reply,
                deadline,
                hops,
            } => self.route(id, msg, reply, deadline, hops),
            Cmd::DeliverBatch {
                items,
                reply,
                deadline,
            } => {
                let slots = BatchSlots::new(items.len(), BatchDone::Local(reply));
                self.route_batch(items, &slots, Some(deadline), 0);
            }
            Cmd::Wire(r) => self.on_wire(r),
            Cmd::Reset => self.reset(),
            Cmd::HandOffAll(tx) => self.hand_off_all(tx),
        }
    }

    /// This life was declared dead while it kept running: every shard it
    /// owned may have moved and changed meanwhile. Nothing is served from
    /// before: each shard this node owns in its view recovers anew (fetched
    /// from every member, merged by version with the copy held here), and
    /// the copies of other shards are pushed to their owners, where the
    /// higher version wins. Entity states are kept, not dropped: writes this
    /// node acknowledged while it was cut off (a partition's minority side)
    /// would otherwise be lost.
    fn reset(&mut self) {
        tracing::warn!(
            entity = E::TYPE_NAME,
            "this node's life was declared dead: recovering every shard anew"
        );
        // Messages held by recovering shards are routed again once the
        // shards recover anew (below); every ask parked here is answered
        // `Moved`, which its sender retries (dropping it would fail a local
        // asker for good), and so is an idempotent one waiting for the
        // confirmation of a shard it owns (below).
        // Asks of shards this node no longer owns were applied here and
        // may be held by the new owner: handed over, not sent again.
        let unowned: Vec<(ShardId, Vec<String>)> = self
            .data
            .iter()
            .filter(|(s, d)| {
                !d.waiting_acks.is_empty()
                    && !matches!(
                        self.status.get(s),
                        Some(Status::Active | Status::Recovering { .. })
                    )
            })
            .map(|(s, d)| (*s, d.waiting_acks.keys().cloned().collect()))
            .collect();
        for (shard, ids) in unowned {
            self.hand_over(shard, ids);
        }
        let mut held_cmds = Vec::new();
        for (_, status) in self.status.drain() {
            if let Status::Recovering { held, .. } = status {
                held_cmds.extend(held);
            }
        }
        for (shard, d) in self.data.iter_mut() {
            let moved = || Err(RegionError::Moved { shard: shard.0 });
            for (_, parked) in d.parked.drain() {
                for p in parked {
                    p.reply.send(moved());
                }
            }
            // An ask waiting for its replicas: the unconfirmed state it
            // produced here goes (the confirmed state before it stays: its
            // replicas may be gone too, as on a partition's minority side).
            // A replica may hold that change all the same, and a new owner
            // may read it there, so only an idempotent ask is sent again
            // (`Moved`); any other is answered `ReplicationFailed`, applied
            // or not, unknown, as at a hand-over (`answer_failed`).
            let reason = "this node's life was declared dead before the replicas confirmed the change: applied or not, unknown";
            for (_, waiting) in d.waiting_acks.drain() {
                answer_failed(*shard, waiting, reason);
            }
            d.restore_confirmed(self.stamp);
        }
        self.retry_replicate.clear();
        self.outbox.clear();
        self.held.clear();
        self.held_oldest = None;
        self.backlog.clear();
        let members = self.members.clone();
        self.alloc = allocate(&BTreeSet::new(), self.num_shards, self.replication);
        self.members = MemberMap::new();
        self.on_view(members);
        let held_here: Vec<ShardId> = self
            .data
            .iter()
            .filter(|(_, d)| !d.entities.is_empty())
            .map(|(s, _)| *s)
            .collect();
        for shard in held_here {
            if let Some(owner) = self.owner_of(shard).cloned() {
                if owner.name != self.me.name {
                    self.push_sync(shard, owner);
                }
            }
        }
        for cmd in held_cmds {
            self.on_cmd(cmd);
        }
    }

    fn hand_off_all(&mut self, done: oneshot::Sender<HandOff>) {
        self.flush_replication(true);
        let mut others = self.members.clone();
        others.remove(&self.me.name);
        let names: BTreeSet<String> = others.keys().cloned().collect();
        let next = allocate(&names, self.num_shards, self.replication);
        let owned: Vec<ShardId> = self
            .status
            .iter()
            .filter(|(_, s)| matches!(s, Status::Active))
            .map(|(k, _)| *k)
            .collect();
        let mut plan = Vec::new();
        for shard in owned {
            let Some(to) = next.owner(shard).and_then(|n| others.get(n)).cloned() else {
                continue;
            };
            self.lose_ownership(shard);
            self.status
                .insert(shard, Status::HandedOff { to: to.clone() });
            self.stats.shards_handed_off += 1;
            plan.push((shard, self.holders_ids(&next, &others, shard)));
        }
        let handed = plan.len();
        if handed > 0 {
            tracing::info!(
                shards = handed,
                copies = plan.iter().map(|(_, h)| h.len()).sum::<usize>(),
                entity = E::TYPE_NAME,
                "handing shards off before leaving (each to its next owner and replicas)"
            );
        } else {
            tracing::debug!(entity = E::TYPE_NAME, "no shard to hand off before leaving");
        }
        // The records of each shard are copied in an actor turn of their
        // own (one copy for all its holders), so a leave with millions of
        // entities does not hold the runtime thread for all of them at once.
        let sync = self.sync_context();
        tokio::spawn(async move {
            let mut transfers = Vec::new();
            for (shard, holders) in plan {
                let Some(records) = sync.records(shard).await else {
                    break;
                };
                for holder in holders {
                    // Once: a leave does not wait for an unreachable holder
                    // (the others' replicas hold the shard too).
                    transfers.push(tokio::spawn(sync.send(
                        shard,
                        holder,
                        1,
                        Arc::clone(&records),
                    )));
                }
            }
            let failed_copies = futures::future::join_all(transfers)
                .await
                .into_iter()
                .filter(|sent| !matches!(sent, Ok(true)))
                .count();
            let _ = done.send(HandOff {
                shards: handed,
                failed_copies,
            });
        });
    }

    fn route(
        &mut self,
        id: String,
        msg: E::Msg,
        reply: ReplyTo<E>,
        deadline: Option<Instant>,
        hops: u8,
    ) {
        let shard = shard_id(&id, self.num_shards);
        match self.status.get_mut(&shard) {
            Some(Status::Active) => self.deliver(shard, &id, msg, reply, deadline),
            Some(Status::Recovering { held, .. }) => {
                if held.len() >= self.config.mailbox.capacity {
                    self.stats.dropped += 1;
                    self.held_refused += 1;
                    let refused = self.held_refused;
                    if refused.is_power_of_two() {
                        tracing::warn!(
                            shard = shard.0,
                            refused,
                            capacity = self.config.mailbox.capacity,
                            "held messages full during handoff: refused (the asker retries; warned at the 1st, 2nd, 4th, ... refusal)"
                        );
                    } else {
                        tracing::debug!(
                            shard = shard.0,
                            refused,
                            "held messages full during handoff: refused"
                        );
                    }
                    reply.send(Err(RegionError::Overloaded {
                        node: self.me.name.clone(),
                        capacity: self.config.mailbox.capacity,
                    }));
                } else {
                    held.push_back(Cmd::Deliver {
                        id,
                        msg,
                        reply,
                        deadline,
                        hops,
                    });
                }
            }
            Some(Status::HandedOff { to }) => {
                let to = to.clone();
                self.forward(to, shard, id, msg, reply, deadline, hops);
            }
            None => match self.owner_of(shard).cloned() {
                Some(owner) => self.forward(owner, shard, id, msg, reply, deadline, hops),
                None => reply.send(Err(RegionError::NoOwner { shard: shard.0 })),
            },
        }
    }

    /// Routes each item of a batch as its own ask, its answer going to its
    /// slot in `slots`.
    fn route_batch(
        &mut self,
        items: Vec<(String, E::Msg)>,
        slots: &Arc<BatchSlots<E>>,
        deadline: Option<Instant>,
        hops: u8,
    ) {
        for (index, (id, msg)) in items.into_iter().enumerate() {
            let shard = shard_id(&id, self.num_shards);
            let reply = ReplyTo::Slot(Slot::new(slots, index, shard));
            self.route(id, msg, reply, deadline, hops);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        to: NodeId,
        shard: ShardId,
        id: String,
        msg: E::Msg,
        reply: ReplyTo<E>,
        deadline: Option<Instant>,
        hops: u8,
    ) {
        if hops >= self.config.sharding.max_forward_hops || to.name == self.me.name {
            reply.send(Err(RegionError::TooManyHops { hops }));
            return;
        }
        self.stats.forwarded += 1;
        let wire = Wire::Deliver {
            id,
            msg,
            hops: hops + 1,
            timeout_ms: 0,
        };
        let chan = self.channel.clone();
        match reply {
            ReplyTo::Nobody => {
                if let Err(e) = chan.tell(&to.addr, &wire) {
                    self.stats.dropped += 1;
                    tracing::warn!(to = %to, shard = shard.0, error = %e, "forwarded tell dropped");
                }
            }
            reply => {
                let remaining = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(
                        self.config.sharding.replicate_timeout_ms,
                    ));
                let wire = match wire {
                    Wire::Deliver { id, msg, hops, .. } => Wire::Deliver {
                        id,
                        msg,
                        hops,
                        timeout_ms: remaining.as_millis() as u64,
                    },
                    w => w,
                };
                tokio::spawn(async move {
                    let r = match chan.ask::<WireReply<E>>(&to.addr, &wire, remaining).await {
                        Ok(WireReply::Reply(v)) => Ok(v),
                        Ok(WireReply::Error(e)) => Err(e),
                        Ok(_) => Err(RegionError::Protocol {
                            node: to.name.clone(),
                            reason: "unexpected reply to a delivery".into(),
                        }),
                        Err(e) => Err(e.into()),
                    };
                    reply.send(r);
                });
            }
        }
    }

    fn deliver(
        &mut self,
        shard: ShardId,
        id: &str,
        msg: E::Msg,
        reply: ReplyTo<E>,
        deadline: Option<Instant>,
    ) {
        let key = self.ids.key(id);
        self.deliver_key(shard, key, msg, reply, deadline);
    }

    /// [`Actor::deliver`] with the id hashed already: every map by id
    /// takes the one [`IdKey`].
    fn deliver_key(
        &mut self,
        shard: ShardId,
        key: IdKey<'_>,
        msg: E::Msg,
        reply: ReplyTo<E>,
        deadline: Option<Instant>,
    ) {
        let id = key.id();
        self.stats.delivered += 1;
        let keep = match reply {
            ReplyTo::Nobody => None,
            _ if E::may_wait(&msg) => Some(E::kept_while_waiting(&msg)),
            _ => None,
        };
        let reads_only = E::reads_only(&msg);
        let idempotent = E::idempotent(&msg);
        let has_replicas = !self.replicas_of(shard).1.is_empty();
        let mut ctx = Context::shared(Arc::clone(&self.node_name));
        let data = self
            .data
            .entry(shard)
            .or_insert_with(|| ShardData::new(&self.ids));
        let floor = data.version_floor;
        // An existing entity is handled in place (one map lookup); a change
        // is detected by comparing its encodings before and after.
        let (handled, changed, version, acked, snapshot) = match data.entities.get_mut_key(&key) {
            // A read: no change to detect (checked in debug builds).
            Some(entry) if reads_only => {
                let existed = entry.state.is_some();
                #[cfg(debug_assertions)]
                encode_into(entry.state.as_ref(), &mut self.encoded_before);
                let handled = E::handle(&mut ctx, id, &mut entry.state, msg);
                #[cfg(debug_assertions)]
                {
                    encode_into(entry.state.as_ref(), &mut self.encoded_after);
                    assert!(
                        self.encoded_before == self.encoded_after
                            && entry.state.is_some() == existed,
                        "{}: a message its reads_only calls a read changed entity {id:?}",
                        E::TYPE_NAME
                    );
                }
                let acked = if has_replicas {
                    entry.acked
                } else {
                    entry.version
                };
                let version = entry.version;
                if existed && entry.state.is_none() {
                    // A "read" that removed the entity (release builds do
                    // not check reads): a live entry without a state
                    // would pass for a tombstone of this version, which
                    // the replicas hold alive. Removed here, not
                    // replicated.
                    tracing::error!(entity = E::TYPE_NAME, id = %id, "a message reads_only calls a read removed the entity; removed here, not replicated");
                    data.entities.remove_key(&key);
                    if !data.restored.is_empty() {
                        data.restored.remove_key(&key);
                    }
                }
                (handled, false, version, acked, None)
            }
            // A live entity, or a tombstone (`state` is `None`: the handler
            // sees an absent entity, and a re-creation numbers its
            // version above the removal's).
            Some(entry) => {
                let existed = entry.state.is_some();
                encode_into(entry.state.as_ref(), &mut self.encoded_before);
                let handled = E::handle(&mut ctx, id, &mut entry.state, msg);
                encode_into(entry.state.as_ref(), &mut self.encoded_after);
                let exists = entry.state.is_some();
                // Removing or creating the entity is a change even when
                // its state encodes to no bytes.
                let changed = existed != exists || self.encoded_before != self.encoded_after;
                // Above the shard's floor too: a version this life issued
                // may have been replaced by a lower one ([`merge_record`]).
                let version = if changed {
                    entry.version.max(floor) + 1
                } else {
                    entry.version
                };
                let acked = if has_replicas { entry.acked } else { version };
                let snapshot = if changed && has_replicas {
                    // The state this change replaces is held back, not
                    // in flight: no replica can confirm it now, so the
                    // history need not keep it (see `supersede_unsent`).
                    let unsent = self
                        .held
                        .get_key(&key)
                        .is_some_and(|h| h.version == entry.version);
                    if !(unsent
                        && supersede_unsent(&mut data.unconfirmed, &key, entry.version, version))
                    {
                        unconfirmed_change(
                            &mut data.unconfirmed,
                            &key,
                            entry.version,
                            existed.then_some(self.encoded_before.as_slice()),
                            version,
                        );
                    }
                    // A removal is replicated as a tombstone.
                    Some(entry.state.clone())
                } else {
                    None
                };
                if changed {
                    // This life numbered the new version: a change, no
                    // longer a restored state.
                    entry.stamp = self.stamp;
                    if !data.restored.is_empty() {
                        data.restored.remove_key(&key);
                    }
                    if !exists {
                        data.removed.insert_key(&key, Instant::now());
                    } else if !existed {
                        data.removed.remove_key(&key);
                    }
                }
                entry.version = version;
                entry.acked = acked;
                (handled, changed, version, acked, snapshot)
            }
            None => {
                let mut state = None;
                let handled = E::handle(&mut ctx, id, &mut state, msg);
                let changed = state.is_some();
                let version = if changed { data.version_floor + 1 } else { 0 };
                let acked = if has_replicas { 0 } else { version };
                let snapshot = if changed && has_replicas {
                    unconfirmed_creation(&mut data.unconfirmed, &key, version);
                    Some(state.clone())
                } else {
                    None
                };
                if state.is_some() {
                    data.entities.insert_key(
                        &key,
                        Entry {
                            state,
                            version,
                            stamp: self.stamp,
                            acked,
                        },
                    );
                }
                (handled, changed, version, acked, snapshot)
            }
        };
        // Asks parked before this change see it now; one this delivery
        // parks below has seen it already. (Whether any is parked for
        // this id is left to the one lookup that takes them.)
        let parked = changed && !data.parked.is_empty();
        // An answer now waits for the replicas: a held change goes out.
        let mut release = false;
        match handled {
            Handled::Reply(r) => {
                if acked >= version {
                    reply.send(Ok(r));
                } else if matches!(reply, ReplyTo::Nobody) {
                    // A tell: nobody to answer once the replicas confirm,
                    // and nothing to hurry its replication for.
                } else {
                    data.waiting_acks.get_or_insert_with(&key, Vec::new).push((
                        version,
                        reply,
                        Ok(r),
                        idempotent,
                    ));
                    release = !self.held.is_empty();
                }
            }
            Handled::Wait => match keep {
                Some(msg) => {
                    let limit = self.config.sharding.max_parked_asks;
                    match ParkedSlot::take(&self.parked_asks, limit) {
                        Some(slot) => data.parked.get_or_insert_with(&key, Vec::new).push(Parked {
                            msg,
                            reply,
                            deadline,
                            _slot: slot,
                        }),
                        None => {
                            self.stats.refused_waits += 1;
                            let refused = self.stats.refused_waits;
                            if refused.is_power_of_two() {
                                tracing::warn!(
                                    limit,
                                    refused,
                                    entity = E::TYPE_NAME,
                                    "too many asks waiting: refused (logged at the 1st, 2nd, 4th, ... refusal)"
                                );
                            }
                            reply.send(Err(RegionError::TooManyWaiting {
                                node: self.me.name.clone(),
                                limit,
                            }));
                        }
                    }
                }
                // A tell has nobody to answer later: it is not kept.
                None if matches!(reply, ReplyTo::Nobody) => {
                    self.stats.dropped += 1;
                    tracing::debug!(entity = E::TYPE_NAME, id = %id, "a tell the entity kept waiting is dropped (tells are not kept)");
                }
                None => reply.send(Err(RegionError::Protocol {
                    node: self.me.to_string(),
                    reason: format!(
                        "{}: the entity kept an ask waiting that its may_wait says never waits",
                        E::TYPE_NAME
                    ),
                })),
            },
        }
        if changed && !has_replicas && !data.unconfirmed.is_empty() {
            // Confirmed as applied (no replicas now): nothing to restore.
            data.unconfirmed.remove_key(&key);
        }
        if release {
            self.release_held(&key);
        }
        for job in ctx.take_jobs() {
            self.queue_job(shard, id.to_owned(), job);
        }
        if let Some(s) = snapshot {
            // A snapshot is taken of a change applied here.
            self.replicate(shard, &key, version, self.stamp, s);
        }
        if parked {
            self.redeliver_parked(shard, key);
        }
    }

    fn redeliver_parked(&mut self, shard: ShardId, key: IdKey<'_>) {
        let id = key.id();
        let Some(parked) = self
            .data
            .get_mut(&shard)
            .and_then(|d| d.parked.remove_key(&key))
        else {
            return;
        };
        let now = Instant::now();
        for p in parked {
            // Its slot goes back first: delivering again may park it anew.
            let Parked {
                msg,
                reply,
                deadline,
                _slot,
            } = p;
            drop(_slot);
            if deadline.is_some_and(|d| d <= now) {
                reply.send(Err(RegionError::Timeout {
                    entity: id.to_owned(),
                    timeout_ms: 0,
                }));
                continue;
            }
            self.deliver_key(shard, key, msg, reply, deadline);
        }
    }

    /// Queues the new state of one entity for the shard's replicas (in the
    /// current view); sent in batches by [`Actor::flush_replication`] after
    /// each burst of input, or held back a while if no answer waits for it
    /// (`[sharding] replicate_delay_ms`). A change still queued or held is
    /// replaced by this one: the replicas need the latest state only, and
    /// its confirmation confirms the earlier versions.
    fn replicate(
        &mut self,
        shard: ShardId,
        key: &IdKey<'_>,
        version: u64,
        stamp: u64,
        state: Option<E>,
    ) {
        let delay = self.config.sharding.replicate_delay_ms;
        let waited_for = || {
            self.data
                .get(&shard)
                .is_some_and(|d| d.waiting_acks.contains(key))
        };
        if delay > 0 && !waited_for() {
            if let Some(held) = self.held.get_mut_key(key) {
                held.version = version;
                held.stamp = stamp;
                held.state = state;
                return;
            }
            if self.held.len() < MAX_HELD_REPLICATIONS {
                let since = Instant::now();
                self.held_oldest.get_or_insert(since);
                self.held.insert_key(
                    key,
                    Held {
                        shard,
                        version,
                        stamp,
                        state,
                        since,
                    },
                );
                return;
            }
        }
        if !self.held.is_empty() {
            self.held.remove_key(key);
        }
        let hash = key.hash();
        self.queue_replication(
            shard,
            Some(hash),
            key.id().to_owned(),
            version,
            stamp,
            state,
        );
    }

    /// Queues entity `id`'s change for the shard's replica set (`hash`: the
    /// id's [`IdKey::hash`] when the caller has it, else it is hashed here).
    fn queue_replication(
        &mut self,
        shard: ShardId,
        hash: Option<IdHash>,
        id: String,
        version: u64,
        stamp: u64,
        state: Option<E>,
    ) {
        let (set, replicas) = self.replicas_of(shard);
        let replicas = Arc::clone(replicas);
        let ids = &self.ids;
        let spare = &mut self.spare_queues;
        let queue = &mut self
            .outbox
            .entry(set)
            .or_insert_with(|| {
                let queue = spare.pop().unwrap_or_else(|| Outgoing::with_hasher(ids));
                (replicas, queue)
            })
            .1;
        let value = (shard, version, stamp, state);
        match hash {
            Some(hash) => queue.insert_hashed(hash, id, value),
            None => queue.insert(id, value),
        };
    }

    /// An answer now waits for entity `id`'s replicas: send its held
    /// change with this burst's.
    fn release_held(&mut self, key: &IdKey<'_>) {
        if let Some((id, held)) = self.held.remove_entry_key(key) {
            let hash = key.hash();
            self.queue_replication(
                held.shard,
                Some(hash),
                id,
                held.version,
                held.stamp,
                held.state,
            );
        }
    }

    /// Sends the queued replications, with the held ones that are due
    /// (every held one when `all`): one `ReplicateBatch` ask per replica
    /// set and page, each batch's outcome reported back to the actor.
    ///
    /// Under load a set's queue lingers: a set whose last batch carried
    /// [`LINGER_MIN_BATCH`] changes or more gets its next one no sooner
    /// than `[sharding] replicate_linger_ms` after it (a timer wakes the
    /// actor when it is due), as Kafka's producer does with `linger.ms`,
    /// unless the queue holds [`REPLICATION_QUEUE_MAX`] changes or more,
    /// or `all`. A batch never waits for another's answer: at most one
    /// replication page per set in flight ("group commit") was tried and
    /// kept out (`RELIABILITY.md`, the partition finding of 2026-12-05).
    fn flush_replication(&mut self, all: bool) {
        let delay = Duration::from_millis(self.config.sharding.replicate_delay_ms);
        let now = Instant::now();
        let due = self
            .held_oldest
            .is_some_and(|oldest| all || now.duration_since(oldest) >= delay);
        if due {
            // Every change held for three quarters of the delay or more
            // goes now, so a steady stream of held changes costs one pass
            // over them per quarter of the delay, not one per flush.
            let early = delay / 4;
            // Taken out of the map in place: the map keeps its hasher
            // (the region's, whose keys every lookup brings).
            let going: Vec<(String, Held<E>)> = self
                .held
                .extract_if(|_, held| all || now.duration_since(held.since) + early >= delay)
                .collect();
            self.held_oldest = self.held.iter().map(|(_, held)| held.since).min();
            for (id, held) in going {
                self.queue_replication(held.shard, None, id, held.version, held.stamp, held.state);
            }
        }
        // Set again below for the queues that still linger.
        self.linger_due = None;
        if self.outbox.is_empty() {
            return;
        }
        let timeout = Duration::from_millis(self.config.sharding.replicate_timeout_ms);
        let budget = frame_budget(&self.config, &self.channel);
        let linger = Duration::from_millis(self.config.sharding.replicate_linger_ms);
        for (set, (replicas, mut queue)) in std::mem::take(&mut self.outbox) {
            if !all && queue.len() < REPLICATION_QUEUE_MAX {
                let lingering = self
                    .last_batch
                    .get(&replicas)
                    .map(|&(at, len)| (at + linger, len))
                    .filter(|&(due, len)| len >= LINGER_MIN_BATCH && due > now);
                if let Some((due, _)) = lingering {
                    self.linger_due = Some(self.linger_due.map_or(due, |d| d.min(due)));
                    self.outbox.insert(set, (replicas, queue));
                    continue;
                }
            }
            self.last_batch
                .insert(Arc::clone(&replicas), (now, queue.len()));
            let mut pages: Vec<Vec<(u32, Record<E>)>> = vec![Vec::new()];
            let mut used = 0usize;
            // In shard order: a replica then looks each shard up once per
            // run of its records (`merge_replicated`).
            let mut batch: Vec<(String, Queued<E>)> = queue.drain().collect();
            batch.sort_unstable_by_key(|(_, (shard, ..))| *shard);
            // Not one a burst of held changes made large.
            if self.spare_queues.len() < SPARE_QUEUES
                && queue.capacity() <= 2 * REPLICATION_QUEUE_MAX
            {
                self.spare_queues.push(queue);
            }
            for (id, (shard, version, stamp, state)) in batch {
                // A change (a restored state goes by sync: `Actor::adopt`).
                let record = Record {
                    id,
                    version,
                    stamp,
                    state,
                    restored_from: None,
                };
                // Measured, not written (a state that cannot encode counts
                // as empty here and fails when the page is sent).
                let state = postcard::serialize_with_flavor(
                    &record.state,
                    postcard::ser_flavors::Size::default(),
                )
                .unwrap_or(0);
                let size = state + record.id.len() + 35;
                if used + size > budget && pages.last().is_some_and(|p| !p.is_empty()) {
                    pages.push(Vec::new());
                    used = 0;
                }
                used += size;
                if let Some(page) = pages.last_mut() {
                    page.push((shard.0, record));
                }
            }
            for records in pages.into_iter().filter(|p| !p.is_empty()) {
                self.stats.replication_batches += 1;
                self.stats.replicated_records += records.len() as u64;
                let entries: Vec<(ShardId, String, u64)> = records
                    .iter()
                    .map(|(s, r)| (ShardId(*s), r.id.clone(), r.version))
                    .collect();
                let chan = self.channel.clone();
                let tx = self.internal_tx.clone();
                let replicas = Arc::clone(&replicas);
                let wire = Wire::ReplicateBatch { records };
                tokio::spawn(async move {
                    let asks = replicas
                        .iter()
                        .map(|r| chan.ask::<WireReply<E>>(&r.addr, &wire, timeout));
                    let mut result = Ok(());
                    let mut outcomes = Vec::with_capacity(replicas.len());
                    for (r, outcome) in replicas.iter().zip(futures::future::join_all(asks).await) {
                        let reason = match outcome {
                            Ok(WireReply::Ack) => {
                                outcomes.push((r.name.clone(), None));
                                continue;
                            }
                            Ok(WireReply::Error(e)) => e.to_string(),
                            Ok(_) => "unexpected reply".to_owned(),
                            Err(e) => e.to_string(),
                        };
                        result = Err(RegionError::ReplicationFailed {
                            shard: entries.first().map_or(0, |e| e.0.0),
                            reason: format!("{}: {reason}", r.name),
                        });
                        outcomes.push((r.name.clone(), Some(reason)));
                    }
                    let _ = tx.send(Internal::ReplicatedBatch {
                        entries,
                        result,
                        replicas: outcomes,
                    });
                });
            }
        }
    }

    fn queue_job(&mut self, shard: ShardId, id: String, job: Job<E::Msg>) {
        self.backlog.push_back(Backlog::Job { shard, id, job });
    }

    /// Moves jobs from the backlog to the pool until its queue is full or
    /// this region has as many jobs in flight as the queue and the threads
    /// hold (the bound of one job an item, kept for batches of them).
    ///
    /// Consecutive lane jobs of one kind go as one item ([`RegionLane`]) of
    /// up to [`MAX_LANE_BATCH`] jobs, sized so that every pool thread gets
    /// items: a quarter of the backlog per thread at most, so a short
    /// backlog still spreads over the threads (one job an item when it
    /// holds fewer than four per thread).
    fn pump_jobs(&mut self) {
        let threads = self.pool.threads().max(1);
        let most = self.pool.queue_capacity() + threads;
        while self.outputs.in_flight.load(Ordering::Acquire) < most {
            let Some(next) = self.backlog.pop_front() else {
                break;
            };
            let (item, jobs) = match next {
                Backlog::Item(item, jobs) => (item, jobs),
                Backlog::Job {
                    shard,
                    id,
                    job: Job::Lanes(job),
                } => {
                    let size = (self.backlog.len() / (4 * threads) + 1).min(MAX_LANE_BATCH);
                    // Even, so the batch pairs its jobs up itself.
                    let size = if size > 1 { size & !1 } else { size };
                    let kind = job.kind();
                    let mut batch = Vec::with_capacity(size);
                    batch.push((shard, id, job));
                    while batch.len() < size {
                        match self.backlog.pop_front() {
                            Some(Backlog::Job {
                                shard,
                                id,
                                job: Job::Lanes(job),
                            }) if job.kind() == kind => batch.push((shard, id, job)),
                            Some(other) => {
                                self.backlog.push_front(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    let jobs = batch.len();
                    let item = Item::Lane(Box::new(RegionLane {
                        jobs: batch,
                        kind,
                        outputs: Arc::clone(&self.outputs),
                    }));
                    (item, jobs)
                }
                Backlog::Job {
                    shard,
                    id,
                    job: Job::Once(job),
                } => (self.pool_once(shard, id, job), 1),
            };
            self.outputs.in_flight.fetch_add(jobs, Ordering::AcqRel);
            if let Err(item) = self.pool.try_spawn_item(item) {
                self.outputs.in_flight.fetch_sub(jobs, Ordering::AcqRel);
                self.backlog.push_front(Backlog::Item(item, jobs));
                break;
            }
        }
    }

    /// The pool's job for a [`Job::Once`]: it hands the output to
    /// [`JobOutputs`].
    fn pool_once(
        &self,
        shard: ShardId,
        id: String,
        job: Box<dyn FnOnce() -> E::Msg + Send + 'static>,
    ) -> Item {
        let outputs = Arc::clone(&self.outputs);
        Item::Once(Box::new(move || {
            let started = std::time::Instant::now();
            match catch_unwind(AssertUnwindSafe(job)) {
                Ok(msg) => outputs.finish(shard, id, msg, started.elapsed() >= LONG_JOB),
                Err(_) => {
                    tracing::error!(shard = shard.0, id = %id, "a job panicked: its output is lost, and the entity's work restarts when its shard is next activated");
                    outputs.lost();
                }
            }
        }))
    }

    /// Delivers the outputs of finished jobs to their entities, in the
    /// order the jobs finished.
    fn take_job_outputs(&mut self) {
        let done = {
            let mut done = self.outputs.done.lock().unwrap_or_else(|p| p.into_inner());
            if done.is_empty() {
                return;
            }
            std::mem::take(&mut *done)
        };
        for (shard, id, msg) in done {
            if matches!(self.status.get(&shard), Some(Status::Active)) {
                self.deliver(shard, &id, msg, ReplyTo::Nobody, None);
            } else {
                tracing::debug!(shard = shard.0, id = %id, "job output for a shard no longer owned; the new owner redoes it");
            }
        }
    }

    // ----- internal events ---------------------------------------------

    fn on_internal(&mut self, i: Internal<E>) {
        match i {
            // Served one per turn (`serve_record_request`): a view change
            // that pushes many shards asks for all their copies at once.
            Internal::Records { shard, reply } => self.record_requests.push_back((shard, reply)),
            Internal::ReplicatedBatch {
                entries,
                result,
                replicas,
            } => {
                // While a dead replica is not yet declared dead, every
                // batch to it fails: warn at its 1st, 2nd, 4th, ... failure
                // in a row, the rest at debug level. Counted by replica, so
                // batches to healthy replicas in between do not restart
                // the count (and the warnings) of a failing one.
                for (replica, failed) in replicas {
                    if failed.is_some() && !self.members.contains_key(&replica) {
                        // Sent before the replica left the view: its
                        // records go to the new holders (retried below).
                        tracing::debug!(replica = %replica, entities = entries.len(), "replication to a former member failed; retried for the current holders");
                        continue;
                    }
                    let failures = self.replication_failures.record(&replica, failed.is_some());
                    let Some(reason) = failed else {
                        continue;
                    };
                    if failures.is_power_of_two() {
                        tracing::warn!(replica = %replica, entities = entries.len(), failures, error = %reason, "replication failed; will retry (warned at the 1st, 2nd, 4th, ... failure in a row to this replica)");
                    } else {
                        tracing::debug!(replica = %replica, entities = entries.len(), failures, error = %reason, "replication failed; will retry");
                    }
                }
                let ok = result.is_ok();
                for (shard, id, version) in entries {
                    self.on_replicated(shard, id, version, ok);
                }
            }
            Internal::Fetched {
                shard,
                epoch,
                from,
                result,
            } => {
                let Some(Status::Recovering {
                    epoch: current,
                    waiting,
                    ..
                }) = self.status.get_mut(&shard)
                else {
                    return;
                };
                if *current != epoch {
                    return;
                }
                let failures = self.fetch_failures.record(&from.name, result.is_err());
                match result {
                    Ok(records) => {
                        waiting.remove(&from);
                        let d = self
                            .data
                            .entry(shard)
                            .or_insert_with(|| ShardData::new(&self.ids));
                        let _ = merge(d, records, Instant::now());
                    }
                    // A member of the view may hold writes nobody else has
                    // (confirmed under a view without this node, or not
                    // confirmed yet and answered later): serving the shard
                    // without its copy could lose them. Ask it again until
                    // it answers or leaves the view (`on_view` then stops
                    // waiting for it).
                    Err(e) if self.members.get(&from.name) == Some(&from) => {
                        if failures.is_power_of_two() {
                            tracing::warn!(shard = shard.0, from = %from, error = %e, failures, "handoff fetch failed; asking again (the shard waits for every holder in the view; warned at the 1st, 2nd, 4th, ... failure in a row from this holder)");
                        } else {
                            tracing::debug!(shard = shard.0, from = %from, error = %e, failures, "handoff fetch failed; asking again");
                        }
                        self.spawn_fetch_after(shard, epoch, from, FETCH_AGAIN_AFTER);
                        return;
                    }
                    Err(e) => {
                        waiting.remove(&from);
                        tracing::warn!(shard = shard.0, from = %from, error = %e, "handoff fetch failed from a member that left the view; continuing with the other holders' copies");
                    }
                }
                let done = matches!(
                    self.status.get(&shard),
                    Some(Status::Recovering { waiting, .. }) if waiting.is_empty()
                );
                if done {
                    self.activate(shard);
                }
            }
        }
    }

    /// One entity's replication of `version` finished (`ok`: every replica
    /// confirmed). Held answers wait until their version is confirmed. A
    /// failed replication does not fail them: the state is already applied
    /// here, so failing would invite a retry that applies it twice. The
    /// owner retries the replication (to the replicas of its current view)
    /// instead, and the askers' own deadlines bound the wait.
    fn on_replicated(&mut self, shard: ShardId, id: String, version: u64, ok: bool) {
        let Some(d) = self.data.get_mut(&shard) else {
            return;
        };
        // The id hashed once for the maps below.
        let key = self.ids.key(&id);
        let acked = match d.entities.get_mut_key(&key) {
            Some(e) => {
                if ok {
                    e.acked = e.acked.max(version);
                }
                e.acked
            }
            None => u64::MAX,
        };
        if ok && !d.unconfirmed.is_empty() {
            d.confirmed(&key, version);
        }
        let waiting = if d.waiting_acks.is_empty() {
            None
        } else {
            d.waiting_acks.remove_key(&key)
        };
        if let Some(list) = waiting {
            let mut keep = Vec::new();
            for (need, reply, r, idempotent) in list {
                if need <= acked {
                    reply.send(r);
                } else {
                    keep.push((need, reply, r, idempotent));
                }
            }
            if !keep.is_empty() {
                d.waiting_acks.insert_key(&key, keep);
            }
        }
        if !ok {
            let at = Instant::now() + Duration::from_millis(200);
            self.retry_replicate.push((at, shard, id));
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // Expired parked asks.
        for d in self.data.values_mut() {
            d.parked.retain(|id, list| {
                let mut i = 0;
                while i < list.len() {
                    if list[i].deadline.is_some_and(|dl| dl <= now) {
                        let p = list.swap_remove(i);
                        p.reply.send(Err(RegionError::Timeout {
                            entity: id.clone(),
                            timeout_ms: 0,
                        }));
                    } else {
                        i += 1;
                    }
                }
                !list.is_empty()
            });
        }
        // Retired shard data past its grace period.
        let retire = Duration::from_millis(self.config.sharding.retire_after_ms);
        self.data
            .retain(|_, d| d.retired_at.is_none_or(|t| now.duration_since(t) < retire));
        // Tombstones confirmed and as old as retired data: a copy held
        // back in retired data is dropped by then too.
        for (shard, d) in self.data.iter_mut() {
            let owns = matches!(
                self.status.get(shard),
                Some(Status::Active | Status::Recovering { .. })
            );
            d.expire_tombstones(now, retire, owns);
        }
        // Replications to retry.
        let due: Vec<(Instant, ShardId, String)> = {
            let (due, later) = std::mem::take(&mut self.retry_replicate)
                .into_iter()
                .partition(|(t, _, _)| *t <= now);
            self.retry_replicate = later;
            due
        };
        for (_, shard, id) in due {
            match self.status.get(&shard) {
                Some(Status::Active) => {}
                // Ours again, not active yet: try once it is.
                Some(Status::Recovering { .. }) => {
                    let at = now + Duration::from_millis(200);
                    self.retry_replicate.push((at, shard, id));
                    continue;
                }
                // No longer the owner (handed off, or lost meanwhile):
                // the new owner says whether it holds the change.
                _ => {
                    self.hand_over(shard, vec![id]);
                    continue;
                }
            }
            let no_replicas = self.replicas_of(shard).1.is_empty();
            let key = self.ids.key(&id);
            let Some(d) = self.data.get_mut(&shard) else {
                continue;
            };
            let is_restored = !d.restored.is_empty() && d.restored.contains(&key);
            let Some(entry) = d.entities.get_mut_key(&key) else {
                continue;
            };
            if no_replicas || is_restored {
                // A restored state (taken since the change) goes by sync.
                entry.acked = entry.version;
                let version = entry.version;
                if is_restored {
                    self.sync_restored(shard, std::slice::from_ref(&id));
                }
                self.on_replicated(shard, id, version, true);
                continue;
            }
            let (version, stamp, state) = (entry.version, entry.stamp, entry.state.clone());
            self.replicate(shard, &key, version, stamp, state);
        }
    }

    // ----- requests from other regions ----------------------------------

    fn on_wire(&mut self, r: Received<Wire<E>>) {
        let Received {
            from,
            msg,
            responder,
        } = r;
        match msg {
            Wire::Deliver {
                id,
                msg,
                hops,
                timeout_ms,
            } => {
                let (reply, deadline) = match responder {
                    Some(resp) => (
                        ReplyTo::Remote(resp),
                        Some(Instant::now() + Duration::from_millis(timeout_ms.max(1))),
                    ),
                    None => (ReplyTo::Nobody, None),
                };
                self.route(id, msg, reply, deadline, hops);
            }
            Wire::DeliverBatch {
                items,
                hops,
                timeout_ms,
            } => {
                if items.len() > MAX_BATCH_ITEMS {
                    if responder.is_none() {
                        self.stats.dropped += items.len() as u64;
                        tracing::warn!(from = %from, items = items.len(), limit = MAX_BATCH_ITEMS, "batch of tells above the item limit dropped");
                    }
                    if let Some(resp) = responder {
                        let _ = resp.reply_msg(&WireReply::<E>::Error(RegionError::Protocol {
                            node: self.me.name.clone(),
                            reason: format!(
                                "batch of {} items is above the limit of {MAX_BATCH_ITEMS}",
                                items.len()
                            ),
                        }));
                    }
                    return;
                }
                match responder {
                    Some(resp) => {
                        let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(1));
                        let max_bytes = self.channel.transport().config().max_frame_bytes;
                        let slots = BatchSlots::new(
                            items.len(),
                            BatchDone::Remote(resp, max_bytes, self.me.name.clone()),
                        );
                        self.route_batch(items, &slots, Some(deadline), hops);
                    }
                    None => {
                        for (id, msg) in items {
                            self.route(id, msg, ReplyTo::Nobody, None, hops);
                        }
                    }
                }
            }
            // From the owner our view names, a replication is merged and
            // confirmed. From any other node (its view lags ours, or ours
            // moved past it) it is too, but a new owner may already have
            // read this copy and would never see the change: what it
            // changed here is passed on as a pushed copy is (below). A
            // record this node does not hold after the merge (another
            // life's record at the same version stayed: a tie from a node
            // that is not the owner here) is not confirmed: the batch is
            // answered `ReplicationFailed`, so its sender does not count
            // this node as holding it, and retries (an owner whose view
            // is ahead of ours, until ours names it and it wins the tie)
            // or hands the change over (an old owner).
            Wire::Replicate { shard, record } => {
                let missing = self.merge_replicated(vec![(shard, record)], &from);
                confirm::<E>(responder, missing);
            }
            Wire::ReplicateBatch { records } => {
                let missing = self.merge_replicated(records, &from);
                confirm::<E>(responder, missing);
            }
            Wire::Sync { shard, records } => {
                let shard = ShardId(shard);
                // The owner's sync to its holders wins ties as its
                // replication does; a push from anyone else does not.
                let sender = if self.names_owner(shard, &from) {
                    Sender::Owner
                } else {
                    Sender::Other
                };
                let d = self
                    .data
                    .entry(shard)
                    .or_insert_with(|| ShardData::new(&self.ids));
                let changed = merge_from(d, records, sender, Instant::now());
                self.take_foreign_copy(shard, changed, &from);
                ack::<E>(responder);
            }
            Wire::HandOver { shard, records } => {
                let shard = ShardId(shard);
                let sent: Vec<(String, u64, u64, Vec<u8>)> = records
                    .iter()
                    .map(|r| (r.id.clone(), r.version, r.stamp, encode_state(&r.state)))
                    .collect();
                let d = self
                    .data
                    .entry(shard)
                    .or_insert_with(|| ShardData::new(&self.ids));
                let changed = merge(d, records, Instant::now());
                let holding: Vec<Holding> = sent
                    .iter()
                    .map(|(id, version, stamp, bytes)| {
                        holding(d.entities.get(id), *version, *stamp, bytes)
                    })
                    .collect();
                self.take_foreign_copy(shard, changed, &from);
                if let Some(resp) = responder {
                    if let Err(e) = resp.reply_msg(&WireReply::<E>::Holding(holding)) {
                        tracing::debug!(error = %e, "cannot answer a hand-over");
                    }
                }
            }
            Wire::Fetch { shard, after } => {
                let shard = ShardId(shard);
                let active = matches!(self.status.get(&shard), Some(Status::Active));
                let same_life = |n: &NodeId| n.name == from.name && n.generation == from.generation;
                let handed_to_fetcher = matches!(
                    self.status.get(&shard),
                    Some(Status::HandedOff { to }) if same_life(to)
                );
                let fetcher_owns = self.alloc.owner(shard) == Some(from.name.as_str())
                    && self.members.get(&from.name).is_some_and(same_life);
                if !fetcher_owns && !handed_to_fetcher {
                    // Our view does not make the fetcher (this life of it)
                    // the owner: one of the two views is behind. If we own
                    // the shard (active or recovering), handing off now
                    // could leave it with nobody applying its messages, or
                    // with two owners. If another member owns it in our
                    // view, that member may be acknowledging writes the
                    // fetcher cannot see (its view may not even contain
                    // that member), so the fetcher must not become owner
                    // on our copy alone. Either way it retries until the
                    // views agree.
                    if let Some(resp) = responder {
                        let _ = resp.reply_msg(&WireReply::<E>::Error(RegionError::Moved {
                            shard: shard.0,
                        }));
                    }
                    return;
                }
                if after.is_none() && active {
                    tracing::info!(shard = shard.0, to = %from, entity = E::TYPE_NAME, "handing shard off");
                    self.stats.shards_handed_off += 1;
                    if let Some(d) = self.data.get_mut(&shard) {
                        for (_, parked) in d.parked.drain() {
                            for p in parked {
                                p.reply.send(Err(RegionError::Moved { shard: shard.0 }));
                            }
                        }
                    }
                    self.status
                        .insert(shard, Status::HandedOff { to: from.clone() });
                }
                let page = self.page(shard, after.as_deref());
                if let Some(resp) = responder {
                    match resp.reply_msg(&page) {
                        Ok(()) => {}
                        // The asker's connection closed: it left or
                        // failed, and asks the shard's holders again if
                        // it still needs the page.
                        Err(e @ transport::SendError::Shutdown) => {
                            tracing::debug!(shard = shard.0, error = %e, "handoff page not sent: the asker's connection is closed");
                        }
                        Err(e) => {
                            tracing::warn!(shard = shard.0, error = %e, "cannot send handoff page")
                        }
                    }
                }
            }
        }
    }

    /// Whether our view makes `from` (this life of it) the owner of
    /// `shard`.
    fn names_owner(&self, shard: ShardId, from: &NodeId) -> bool {
        self.alloc.owner(shard) == Some(from.name.as_str())
            && self
                .members
                .get(&from.name)
                .is_some_and(|n| n.generation == from.generation)
    }

    /// Merges replicated records from `from`. Records of a shard our view
    /// makes `from` the owner of win ties ([`Sender::Owner`]); for the
    /// others, the records it changed here are handled as a pushed copy
    /// ([`Actor::take_foreign_copy`]); from the owner nothing more is done
    /// (no ids collected on that path). Returns the first record (shard,
    /// id, version) this node does not hold after the merge
    /// ([`merge_record`]), if any: only a tie from a node that is not the
    /// owner here leaves one.
    fn merge_replicated(
        &mut self,
        records: Vec<(u32, Record<E>)>,
        from: &NodeId,
    ) -> Option<(u32, String, u64)> {
        let mut missing = None;
        let mut foreign: Vec<(ShardId, Vec<String>)> = Vec::new();
        let now = Instant::now();
        // Whether `from` is this life of a member (one lookup by name for
        // the batch) and, per shard, whether our view makes it the owner
        // (records come grouped by shard: asked once per run of a shard).
        let from_member = self
            .members
            .get(&from.name)
            .is_some_and(|n| n.generation == from.generation);
        let mut last: Option<(ShardId, bool)> = None;
        for (shard, record) in records {
            let shard = ShardId(shard);
            let from_owner = match last {
                Some((s, owner)) if s == shard => owner,
                _ => {
                    let owner = from_member && self.alloc.owner(shard) == Some(from.name.as_str());
                    last = Some((shard, owner));
                    owner
                }
            };
            let d = self
                .data
                .entry(shard)
                .or_insert_with(|| ShardData::new(&self.ids));
            if from_owner {
                merge_record(d, record, Sender::Owner, None, now);
                continue;
            }
            let at = match foreign.iter().position(|(s, _)| *s == shard) {
                Some(at) => at,
                None => {
                    foreign.push((shard, Vec::new()));
                    foreign.len() - 1
                }
            };
            let what = missing
                .is_none()
                .then(|| (shard.0, record.id.clone(), record.version));
            if !merge_record(d, record, Sender::Other, Some(&mut foreign[at].1), now) {
                missing = missing.or(what);
            }
        }
        for (shard, changed) in foreign {
            self.take_foreign_copy(shard, changed, from);
        }
        missing
    }

    /// Entities of `shard` that a copy from `from` (a push, or a
    /// replication from a node our view does not make the owner) changed
    /// here: adopted if we own the shard (restart their work, copy to our
    /// replicas), kept for the activation if we are recovering it, and
    /// otherwise passed on to the owner our view names (unless that is
    /// `from`). Kept only as a non-owner's copy, they would reach the
    /// owner only if it ever fetched from us, and an active owner does not.
    fn take_foreign_copy(&mut self, shard: ShardId, changed: Vec<String>, from: &NodeId) {
        match self.status.get(&shard) {
            _ if changed.is_empty() => {}
            Some(Status::Active) => self.adopt(shard, changed),
            Some(Status::Recovering { .. }) => {}
            _ => match self.owner_of(shard).cloned() {
                Some(owner) if owner.name != self.me.name && owner.name != from.name => {
                    tracing::debug!(shard = shard.0, from = %from, to = %owner, records = changed.len(), "passing a copy from a non-owner on to the owner");
                    tokio::spawn(self.sync_task_of(shard, owner, SYNC_ATTEMPTS, Some(&changed)));
                }
                _ => {}
            },
        }
    }

    fn page(&self, shard: ShardId, after: Option<&str>) -> WireReply<E> {
        let Some(d) = self.data.get(&shard) else {
            return WireReply::Page {
                records: Vec::new(),
                more: false,
            };
        };
        let budget = frame_budget(&self.config, &self.channel);
        let (records, more) = fill_page(d, after, budget, PAGE_SCAN);
        WireReply::Page { records, more }
    }
}

/// What a shard sync needs of its region ([`Actor::sync_context`]), so it
/// runs as a task of its own.
struct SyncContext<E: Entity> {
    /// Bytes of records per page ([`frame_budget`]).
    budget: usize,
    chan: Channel<Wire<E>>,
    /// Per page and attempt (`[sharding] replicate_timeout_ms`).
    timeout: Duration,
    view: watch::Receiver<MemberMap>,
    failures: Arc<std::sync::Mutex<FailuresInARow>>,
    /// To ask the actor for a shard's records ([`Internal::Records`]).
    internal: mpsc::UnboundedSender<Internal<E>>,
}

impl<E: Entity> SyncContext<E> {
    /// A copy of this node's records of `shard`, made by the actor in a
    /// turn of its own; `None` when the actor stopped.
    async fn records(&self, shard: ShardId) -> Option<Arc<Vec<Record<E>>>> {
        let (reply, records) = oneshot::channel();
        self.internal
            .send(Internal::Records { shard, reply })
            .ok()?;
        records.await.ok()
    }

    /// Sends `records` of `shard` to `to`, page by page, each page tried
    /// up to `attempts` times. Each page is sized and copied when its turn
    /// comes, between the sends: handing off a large shard does not hold
    /// the runtime thread (and with it the membership's timers) for the
    /// whole shard at once. (Until session 15 every page of every shard
    /// was built before the first went out: a leave with 600,000 tasks per
    /// node held it 0.7 s, and the membership warned of late timers.)
    /// Resolves to `true` when `to` acknowledged every page (or, before
    /// or after a failed page, is no longer a member, so needs none), and
    /// to `false` when a page failed while `to` was still a member.
    fn send(
        &self,
        shard: ShardId,
        to: NodeId,
        attempts: u32,
        records: Arc<Vec<Record<E>>>,
    ) -> impl std::future::Future<Output = bool> + Send + 'static + use<E> {
        let budget = self.budget;
        let chan = self.chan.clone();
        let timeout = self.timeout;
        let view = self.view.clone();
        let failures = Arc::clone(&self.failures);
        let to_name = to.name.clone();
        let record_outcome = move |failed: bool| {
            failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record(&to_name, failed)
        };
        async move {
            let mut start = 0;
            while start < records.len() {
                let end = page_end(&records, start, budget);
                let page = records[start..end].to_vec();
                start = end;
                // The other tasks (the membership's above all) run between
                // two pages.
                tokio::task::yield_now().await;
                // A target that left before this page went (a whole cluster
                // stopping: each node hands off to peers leaving too) is
                // not dialled again.
                if !names_life(&view.borrow(), &to) {
                    tracing::debug!(to = %to, shard = shard.0, "shard sync not sent: the target is no longer a member");
                    return true;
                }
                let wire = Wire::Sync {
                    shard: shard.0,
                    records: page,
                };
                let acked = ask_with_retries(&chan, &to, &wire, timeout, attempts, |r| match r {
                    WireReply::Ack => Ok(()),
                    _ => Err("unexpected reply".to_owned()),
                })
                .await;
                if let Err(reason) = acked {
                    // A target that left (or whose life ended) meanwhile
                    // needs nothing from us: its shards have other owners
                    // now, which this node's own view change serves.
                    let still_member = still_member_after(view.clone(), &to, LEFT_GRACE).await;
                    let failures = record_outcome(true);
                    if still_member && failures.is_power_of_two() {
                        tracing::warn!(to = %to, shard = shard.0, attempts, failures, reason = %reason, "shard sync failed (warned at the 1st, 2nd, 4th, ... failure in a row to this node)");
                    } else if still_member {
                        tracing::debug!(to = %to, shard = shard.0, attempts, failures, reason = %reason, "shard sync failed");
                    } else {
                        tracing::debug!(to = %to, shard = shard.0, attempts, reason = %reason, "shard sync failed: the target is no longer a member");
                    }
                    return !still_member;
                }
            }
            record_outcome(false);
            true
        }
    }
}

/// Entities a page takes from the map per scan ([`fill_page`]).
const PAGE_SCAN: usize = 4096;

/// The records of a handoff page: the entities after `after` in map
/// order ([`EntityMap::after`]) while their estimated size fits `budget`
/// bytes (always at least one); true with them if more remain. Each
/// `after` scans the whole map, so entities are taken in runs of `scan`:
/// a page of small records costs a few scans, not one per record.
fn fill_page<E: Entity>(
    d: &ShardData<E>,
    after: Option<&str>,
    budget: usize,
    scan: usize,
) -> (Vec<Record<E>>, bool) {
    let mut used = 0usize;
    let mut records = Vec::new();
    let mut cursor = after.map(str::to_owned);
    loop {
        let run = d.entities.after(cursor.as_deref(), scan);
        let full = run.len() == scan;
        // Tombstones too: a new owner learns of the removals.
        for (id, e) in &run {
            let record = d.record(id, e);
            let size = record_size(id, &e.state, record.restored_from);
            if used + size > budget && !records.is_empty() {
                return (records, true);
            }
            used += size;
            records.push(record);
        }
        match run.last() {
            Some((last, _)) if full => cursor = Some((*last).clone()),
            _ => return (records, false),
        }
    }
}

/// How long a failed push waits for this node's view to learn that its
/// target left before it counts as a failure to a member: when a whole
/// cluster stops, each node's hand-off reaches peers that are leaving too,
/// and a push can fail a moment before the target's leave arrives.
const LEFT_GRACE: Duration = Duration::from_millis(500);

/// Whether `to` (that very life) is still a member of `view`, waiting up
/// to `grace` for a view that drops it. False once the view's sender is
/// gone (the region stopped).
async fn still_member_after(
    mut view: watch::Receiver<MemberMap>,
    to: &NodeId,
    grace: Duration,
) -> bool {
    if !names_life(&view.borrow_and_update(), to) {
        return false;
    }
    let left = tokio::time::timeout(grace, async {
        loop {
            if view.changed().await.is_err() || !names_life(&view.borrow_and_update(), to) {
                return;
            }
        }
    })
    .await;
    left.is_err()
}

/// Whether `view` has `to` as a member, that very life.
fn names_life(view: &MemberMap, to: &NodeId) -> bool {
    view.get(&to.name)
        .is_some_and(|n| n.generation == to.generation)
}

/// Answers a replication: `Ack` when this node holds every record it
/// carried ([`merge_record`]), else `ReplicationFailed` naming the first
/// `missing` one (shard, id, version): its sender must not count this
/// node as holding it.
fn confirm<E: Entity>(responder: Option<Responder>, missing: Option<(u32, String, u64)>) {
    let Some((shard, id, version)) = missing else {
        return ack::<E>(responder);
    };
    tracing::debug!(shard, id = %id, version, "replication not confirmed: another life's record at that version stays");
    if let Some(resp) = responder {
        let reason = format!(
            "holds another owner life's record of {id:?} at version {version}, and its view does not make the sender the owner"
        );
        if let Err(e) = resp.reply_msg(&WireReply::<E>::Error(RegionError::ReplicationFailed {
            shard,
            reason,
        })) {
            tracing::debug!(error = %e, "cannot answer a replication");
        }
    }
}

fn ack<E: Entity>(responder: Option<Responder>) {
    if let Some(resp) = responder {
        let _ = resp.reply_msg(&WireReply::<E>::Ack);
    }
}

/// The bytes of records or messages put in one frame: `[sharding]
/// snapshot_page_bytes`, but at most three quarters of `[transport]
/// max_frame_bytes` (the rest is room for the estimate's error and the
/// frame's header), so a smaller frame limit never makes pages too large
/// to send. A single record larger than that still goes alone (and fails
/// with a typed error if it does not fit).
pub(crate) fn frame_budget<E: Entity>(config: &RegionConfig, channel: &Channel<Wire<E>>) -> usize {
    let max_frame = channel.transport().config().max_frame_bytes;
    config.sharding.snapshot_page_bytes.min(max_frame / 4 * 3)
}

/// Merges records from a node that is not the shard's owner in this
/// node's view (a fetch page, a push, a hand-over) into shard data at
/// `now`, the higher version winning ([`merge_record`]); returns the ids
/// whose state changed.
fn merge<E: Entity>(d: &mut ShardData<E>, records: Vec<Record<E>>, now: Instant) -> Vec<String> {
    merge_from(d, records, Sender::Other, now)
}

/// Merges records from `sender` into shard data at `now`
/// ([`merge_record`]); returns the ids whose state changed.
fn merge_from<E: Entity>(
    d: &mut ShardData<E>,
    records: Vec<Record<E>>,
    sender: Sender,
    now: Instant,
) -> Vec<String> {
    let mut changed = Vec::new();
    for r in records {
        merge_record(d, r, sender, Some(&mut changed), now);
    }
    changed
}

/// Who sent records being merged: the one thing besides the two records
/// that decides a merge, and only where neither record supersedes the
/// other ([`takes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// This life of the member that this node's view makes the shard's
    /// owner: its replication (`Replicate`, `ReplicateBatch`) and its
    /// syncs to the shard's holders.
    Owner,
    /// Any other node, or a life our view does not hold: a fetch page, a
    /// push to the owner, a hand-over, a replication or sync from a node
    /// whose view differs from ours (a late batch of an old owner among
    /// them).
    Other,
}

/// Whether a record numbered `(version, stamp)`, restored from the
/// confirmed version `restored_from` when a reset made it
/// ([`Record::restored_from`]), supersedes the copy held, given alike.
///
/// Between versions one owner life numbered (the same stamp), the higher
/// one: a life numbers its changes in order, and its reset numbers the
/// restored state above every version it issued, so the restore wins over
/// the reverted changes. Between two lives, a restored state counts as the
/// confirmed state it restores (just above that version): it wins over
/// copies at or below it, and loses to any change another life made above
/// it, whatever its own version. That change is the retried ask applied by
/// the new owner over the confirmed state, or a later one; the restore
/// winning there lost it (`RELIABILITY.md`, 2026-12-07). Two records
/// neither of which supersedes the other (equal versions of two lives,
/// two restores of one confirmed version) tie: the sender decides
/// ([`takes`]).
fn supersedes(new: (u64, u64, Option<u64>), held: (u64, u64, Option<u64>)) -> bool {
    if new.1 == held.1 {
        return new.0 > held.0;
    }
    let rank = |(version, _, restored_from): (u64, u64, Option<u64>)| match restored_from {
        // Below its own version (a record that says otherwise is not a
        // reset's: it ranks no higher).
        Some(confirmed) => (confirmed.min(version.saturating_sub(1)), true),
        None => (version, false),
    };
    rank(new) > rank(held)
}

/// Whether a record `new` from `sender` replaces the copy `held` (both
/// as [`supersedes`] takes them): when it supersedes it, and, from the
/// shard's owner in this node's view, when the two tie (neither
/// supersedes the other and two lives numbered them: equal versions of
/// two lives, two lives' restores of one confirmed version).
///
/// A tie comes from two owner lives numbering one version: an old owner
/// whose change a replica applied without the owner seeing the
/// confirmation, then reverted by its reset, and the new owner applying
/// the retried ask over the confirmed state; or two owners at once (split
/// views). The replica must end holding the current owner's record, or it
/// lacks the change it confirmed (`RELIABILITY.md`, the tie of two lives,
/// 2026-12-07). From anyone else the held copy stays, as before: a late
/// batch of the old owner, which our view no longer makes the owner, does
/// not replace the new owner's record. Nor does any record of a lower
/// rank, the owner's included.
fn takes(new: (u64, u64, Option<u64>), held: (u64, u64, Option<u64>), sender: Sender) -> bool {
    supersedes(new, held) || (sender == Sender::Owner && new.1 != held.1 && !supersedes(held, new))
}

/// Merges one record from `sender`: it is taken when it replaces the copy
/// held ([`takes`]: when it supersedes it, [`supersedes`], which for
/// records no reset made means a higher version; at a tie of two lives,
/// when `sender` is the shard's owner in this node's view), live state
/// and tombstone alike (a tombstone above the held copy removes it, a live
/// record at or below a tombstone's version does not bring the entity
/// back; at equal versions of two lives the owner's record replaces the
/// held copy, anyone else's does not). A tombstone taken is dated `now`
/// (for [`ShardData::expire_tombstones`]). A change another life made
/// above a restored state's confirmed version replaces it even at a lower
/// version: the version replaced then raises the shard's
/// [`ShardData::version_floor`], so this node never numbers it again.
/// Pushes the id to `changed` when the record was taken.
///
/// Returns whether this node now holds the record, or one that supersedes
/// it: false only when a copy of another life at the same rank stayed (a
/// tie from a sender that is not the owner). A replica confirms a
/// replication only when it holds every record so ([`Actor::on_wire`]).
fn merge_record<E: Entity>(
    d: &mut ShardData<E>,
    r: Record<E>,
    sender: Sender,
    changed: Option<&mut Vec<String>>,
    now: Instant,
) -> bool {
    let needed = changed.is_some() || !d.unconfirmed.is_empty();
    // The id hashed once for the maps below.
    let key = d.entities.hasher().key(&r.id);
    let hash = key.hash();
    let taken = match d.entities.get_mut_key(&key) {
        Some(e) => {
            let held_from = if d.restored.is_empty() {
                None
            } else {
                d.restored.get_key(&key).copied()
            };
            let new = (r.version, r.stamp, r.restored_from);
            let held = (e.version, e.stamp, held_from);
            if !takes(new, held, sender) {
                // The same record, or one above it; else a tie kept.
                return (new.0 == held.0 && new.1 == held.1) || supersedes(held, new);
            }
            if r.version < e.version {
                // Over a restored state: never numbered again here.
                d.version_floor = d.version_floor.max(e.version);
                e.acked = e.acked.min(r.version);
            } else if r.version == e.version {
                // Another life's record at this version (a tie the owner
                // won): what confirmed the one replaced does not confirm
                // this one.
                e.acked = e.acked.min(r.version.saturating_sub(1));
            }
            if r.state.is_none() {
                d.removed.insert_key(&key, now);
            } else if e.state.is_none() {
                d.removed.remove_key(&key);
            }
            match r.restored_from {
                Some(confirmed) => {
                    d.restored.insert_key(&key, confirmed);
                }
                None if held_from.is_some() => {
                    d.restored.remove_key(&key);
                }
                None => {}
            }
            e.state = r.state;
            e.version = r.version;
            e.stamp = r.stamp;
            needed.then_some(r.id)
        }
        None => {
            if r.state.is_none() {
                d.removed.insert_key(&key, now);
            }
            if let Some(confirmed) = r.restored_from {
                d.restored.insert_key(&key, confirmed);
            }
            let id = needed.then(|| r.id.clone());
            d.entities.insert_hashed(
                hash,
                r.id,
                Entry {
                    state: r.state,
                    version: r.version,
                    stamp: r.stamp,
                    acked: 0,
                },
            );
            id
        }
    };
    if let Some(id) = taken {
        // A newer state from another holder: what this node had not
        // confirmed is superseded, not restorable.
        d.unconfirmed.remove(&id);
        if let Some(changed) = changed {
            changed.push(id);
        }
    }
    true
}

/// What a node holds of a handed-over record (`version`, `stamp`, state
/// encoded as `bytes`) once merged: its entry `entry` at that version with
/// the same stamp and the same encoding, `Held`; another stamp or another
/// state at that version, `Other` (an equal state of another owner's
/// history is not this change); anything else (a newer version; no entry,
/// which a merge does not leave), `Newer`.
fn holding<E: Entity>(entry: Option<&Entry<E>>, version: u64, stamp: u64, bytes: &[u8]) -> Holding {
    match entry {
        Some(e) if e.version == version => {
            let same = e.stamp == stamp && encode_state(&e.state) == bytes;
            if same { Holding::Held } else { Holding::Other }
        }
        _ => Holding::Newer,
    }
}

/// Answers the asks of `list` whose changes were applied here but are not
/// known to be held anywhere else: an idempotent one `Moved` (sent again,
/// applying it twice changes nothing), any other
/// [`RegionError::ReplicationFailed`] (applied or not, unknown).
fn answer_failed<E: Entity>(shard: ShardId, list: Vec<HeldReply<E>>, reason: &str) {
    for (_, reply, _, idempotent) in list {
        reply.send(Err(if idempotent {
            RegionError::Moved { shard: shard.0 }
        } else {
            RegionError::ReplicationFailed {
                shard: shard.0,
                reason: reason.to_owned(),
            }
        }));
    }
}

/// The postcard encoding of a record's state (`None`, a tombstone,
/// encodes apart from every live state).
fn encode_state<E: Entity>(state: &Option<E>) -> Vec<u8> {
    postcard::to_allocvec(state).unwrap_or_default()
}

/// Encodes `state` into `buf` (emptied first; left empty for `None` or an
/// encoding error), reusing its allocation.
fn encode_into<E: Entity>(state: Option<&E>, buf: &mut Vec<u8>) {
    buf.clear();
    if let Some(state) = state {
        if postcard::to_io(state, &mut *buf).is_err() {
            buf.clear();
        }
    }
}

/// The estimated encoded size of a record of `id` with `state` (restored
/// from a confirmed version when `restored_from`), in bytes: the state's
/// postcard size (computed, not encoded) plus the id and room for the
/// version, stamp, restore and framing.
fn record_size<E: Entity>(id: &str, state: &Option<E>, restored_from: Option<u64>) -> usize {
    let restore = if restored_from.is_some() { 11 } else { 1 };
    postcard::experimental::serialized_size(state).unwrap_or(0) + id.len() + 26 + restore
}

/// Where the page of `records` starting at `start` ends: as many records
/// as fit `budget` bytes ([`record_size`]), at least one.
fn page_end<E: Entity>(records: &[Record<E>], start: usize, budget: usize) -> usize {
    let mut used = 0usize;
    let mut end = start;
    for r in &records[start..] {
        let size = record_size(&r.id, &r.state, r.restored_from);
        if used + size > budget && end > start {
            break;
        }
        used += size;
        end += 1;
    }
    end
}

/// Asks `to` with `wire` up to `attempts` times (at least once), each
/// within `timeout`, until `accept` takes the reply; pauses 100 ms before
/// the second attempt, twice as long before each next one, at most 2 s.
///
/// # Errors
/// The last attempt's failure, as text: the transport's error, an
/// `Error` reply, or what `accept` said of the reply.
async fn ask_with_retries<E: Entity, T>(
    chan: &Channel<Wire<E>>,
    to: &NodeId,
    wire: &Wire<E>,
    timeout: Duration,
    attempts: u32,
    accept: impl Fn(WireReply<E>) -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let reason = match chan.ask::<WireReply<E>>(&to.addr, wire, timeout).await {
            Ok(WireReply::Error(e)) => e.to_string(),
            Ok(reply) => match accept(reply) {
                Ok(v) => return Ok(v),
                Err(reason) => reason,
            },
            Err(e) => e.to_string(),
        };
        if attempt >= attempts {
            return Err(reason);
        }
        tracing::debug!(to = %to, attempt, reason = %reason, "ask failed; trying again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        attempt += 1;
    }
}

async fn fetch_all<E: Entity>(
    chan: &Channel<Wire<E>>,
    addr: &str,
    shard: ShardId,
    timeout: Duration,
) -> Result<Vec<Record<E>>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let mut attempts = 0;
    let mut waited = Duration::ZERO;
    let mut backoff = Duration::from_millis(10);
    loop {
        let r = chan
            .ask::<WireReply<E>>(
                addr,
                &Wire::Fetch {
                    shard: shard.0,
                    after: after.clone(),
                },
                timeout,
            )
            .await;
        match r {
            Ok(WireReply::Page { records, more }) => {
                attempts = 0;
                after = records.last().map(|r| r.id.clone()).or(after);
                out.extend(records);
                if !more {
                    return Ok(out);
                }
            }
            Ok(WireReply::Error(RegionError::Moved { .. })) => {
                // The holder's view does not make us the owner (yet, or no
                // longer): once it does, read the shard again from the
                // start, since it may have changed in between.
                after = None;
                out.clear();
                if waited >= FETCH_VIEW_PATIENCE {
                    return Err(RegionError::Moved { shard: shard.0 });
                }
                tokio::time::sleep(backoff).await;
                waited += backoff;
                backoff = (backoff * 2).min(FETCH_VIEW_RETRY_MAX);
            }
            Ok(WireReply::Error(e)) => return Err(e),
            Ok(_) => {
                return Err(RegionError::Protocol {
                    node: addr.to_owned(),
                    reason: "unexpected reply to a fetch".into(),
                });
            }
            Err(e) => {
                attempts += 1;
                if attempts >= 3 {
                    return Err(e.into());
                }
                tokio::time::sleep(Duration::from_millis(100 * attempts)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::Handled;

    fn batch(len: usize) -> (Arc<BatchSlots<Value>>, oneshot::Receiver<Vec<Result<u32>>>) {
        let (tx, rx) = oneshot::channel();
        (BatchSlots::new(len, BatchDone::Local(tx)), rx)
    }

    #[test]
    fn failures_are_counted_in_a_row_by_peer() {
        let mut f = FailuresInARow::default();
        // A failing peer keeps its count while another succeeds in between
        // (the warnings go out at 1, 2, 4, ...: here at its 1st, 2nd, 4th).
        let mut warned = Vec::new();
        for round in 1..=5 {
            let n = f.record("dead", true);
            assert_eq!(n, round);
            if n.is_power_of_two() {
                warned.push(n);
            }
            assert_eq!(f.record("healthy", false), 0);
        }
        assert_eq!(warned, [1, 2, 4]);
        // A success ends the run; the next failure is the 1st again.
        assert_eq!(f.record("dead", false), 0);
        assert_eq!(f.record("dead", true), 1);
        // Peers that left are forgotten.
        f.keep_only(&MemberMap::new());
        assert!(f.by_peer.is_empty());
    }

    #[test]
    fn a_batch_is_answered_in_item_order_once_its_last_item_is() {
        let (slots, mut rx) = batch(3);
        let [first, second, third] = [0, 1, 2].map(|i| Slot::new(&slots, i, ShardId(7)));
        ReplyTo::Slot(third).send(Ok(30));
        ReplyTo::Slot(first).send(Ok(10));
        assert!(rx.try_recv().is_err(), "answered before its last item");
        ReplyTo::Slot(second).send(Err(RegionError::Shutdown));
        assert_eq!(
            rx.try_recv().expect("answered"),
            vec![Ok(10), Err(RegionError::Shutdown), Ok(30)]
        );
    }

    #[test]
    fn an_item_dropped_unanswered_answers_moved() {
        let (slots, mut rx) = batch(2);
        ReplyTo::Slot(Slot::new(&slots, 0, ShardId(3))).send(Ok(1));
        drop(Slot::new(&slots, 1, ShardId(4)));
        assert_eq!(
            rx.try_recv().expect("answered"),
            vec![Ok(1), Err(RegionError::Moved { shard: 4 })]
        );
    }

    /// An entity whose state is the last value sent to it (answered back):
    /// for batch answers and the unconfirmed history.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Value(u32);

    impl Entity for Value {
        type Msg = u32;
        type Reply = u32;
        const TYPE_NAME: &'static str = "value";

        fn handle(_: &mut Context<u32>, _: &str, s: &mut Option<Self>, msg: u32) -> Handled<u32> {
            *s = Some(Value(msg));
            Handled::Reply(msg)
        }
    }

    /// Pages cover the map once, in order, whatever the scan run and the
    /// budget: each resumes after the last id of the one before.
    #[test]
    fn pages_cover_every_entity_once_in_order() {
        let mut d = ShardData::<Value>::default();
        for i in 0..50u32 {
            change(&mut d, &format!("e-{i}"), i, 1);
        }
        let want: Vec<String> = d
            .entities
            .after(None, usize::MAX)
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
        // A record's estimate here: its id (3-4 bytes), 26, its state.
        for (scan, budget) in [(1, 1), (3, 60), (7, 200), (4096, 100_000)] {
            let mut got = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let (records, more) = fill_page(&d, cursor.as_deref(), budget, scan);
                assert!(!records.is_empty() || !more, "an empty page says more");
                got.extend(records.iter().map(|r| r.id.clone()));
                cursor = records.last().map(|r| r.id.clone());
                if !more {
                    break;
                }
            }
            assert_eq!(got, want, "scan {scan}, budget {budget}");
        }
    }

    /// The stamp of the life these tests' changes are applied by.
    const HERE: u64 = 2;
    /// The stamp of another owner life, whose copy was taken.
    const THERE: u64 = 1;
    /// The stamp a reset puts on the states it restores (the region passes
    /// its own life's, [`HERE`] in these tests; distinct so a test sees
    /// which it got).
    const RESTORED: u64 = 3;

    /// Changes `id` to `value` at `version` as the region records it.
    fn change(d: &mut ShardData<Value>, id: &str, value: u32, version: u64) {
        match d.entities.get_mut(id) {
            Some(e) => {
                let mut before = Vec::new();
                encode_into(e.state.as_ref(), &mut before);
                let before = e.state.is_some().then_some(before.as_slice());
                let key = d.unconfirmed.hasher().key(id);
                unconfirmed_change(&mut d.unconfirmed, &key, e.version, before, version);
                e.state = Some(Value(value));
                e.version = version;
                e.stamp = HERE;
                d.removed.remove(id);
            }
            None => {
                let key = d.unconfirmed.hasher().key(id);
                unconfirmed_creation(&mut d.unconfirmed, &key, version);
                d.entities.insert(
                    id.to_owned(),
                    Entry {
                        state: Some(Value(value)),
                        version,
                        stamp: HERE,
                        acked: 0,
                    },
                );
            }
        }
    }

    /// Removes `id` at `version` as the region records it: a tombstone.
    fn remove(d: &mut ShardData<Value>, id: &str, version: u64) {
        let e = d.entities.get_mut(id).expect("a live entity");
        let mut before = Vec::new();
        encode_into(e.state.as_ref(), &mut before);
        let key = d.unconfirmed.hasher().key(id);
        unconfirmed_change(&mut d.unconfirmed, &key, e.version, Some(&before), version);
        e.state = None;
        e.version = version;
        e.stamp = HERE;
        d.removed.insert(id.to_owned(), Instant::now());
    }

    /// `x` set to 10 (confirmed), then 20, 30, 40 unconfirmed; then the
    /// confirmations of `confirm`, then a reset: `x`'s value, version and
    /// stamp, and whether a history was kept.
    fn reset_after(confirm: &[u64]) -> (Option<(u32, u64, u64)>, bool) {
        let mut d = ShardData::<Value>::default();
        change(&mut d, "x", 10, 1);
        d.confirmed(&d.unconfirmed.hasher().key("x"), 1);
        assert!(d.unconfirmed.is_empty(), "confirmed: nothing to keep");
        for (value, version) in [(20, 2), (30, 3), (40, 4)] {
            change(&mut d, "x", value, version);
        }
        for v in confirm {
            d.confirmed(&d.unconfirmed.hasher().key("x"), *v);
        }
        let kept = !d.unconfirmed.is_empty();
        d.restore_confirmed(RESTORED);
        let x = d
            .entities
            .get("x")
            .map(|e| (e.state.as_ref().expect("held").0, e.version, e.stamp));
        (x, kept)
    }

    #[test]
    fn a_reset_restores_the_last_confirmed_state_of_many_in_flight() {
        // Nothing more confirmed: back to 10, above every version issued,
        // numbered by the reset.
        assert_eq!(reset_after(&[]), (Some((10, 5, RESTORED)), true));
        // Version 3 confirmed (its confirmation covers 2): back to 30.
        assert_eq!(reset_after(&[3]), (Some((30, 5, RESTORED)), true));
        assert_eq!(reset_after(&[2]), (Some((20, 5, RESTORED)), true));
        // The current one confirmed: nothing kept, nothing to restore.
        assert_eq!(reset_after(&[2, 4]), (Some((40, 4, HERE)), false));
    }

    /// The state of `id` in `d`: value (`None`, a tombstone) and version.
    fn held(d: &ShardData<Value>, id: &str) -> Option<(Option<u32>, u64)> {
        d.entities
            .get(id)
            .map(|e| (e.state.as_ref().map(|v| v.0), e.version))
    }

    #[test]
    fn a_reset_removes_an_entity_created_unconfirmed() {
        let mut d = ShardData::<Value>::default();
        change(&mut d, "y", 1, 1);
        change(&mut d, "y", 2, 2);
        d.confirmed(&d.unconfirmed.hasher().key("y"), 1);
        change(&mut d, "z", 5, 1);
        d.restore_confirmed(HERE);
        assert_eq!(held(&d, "y"), Some((Some(1), 3)));
        assert_eq!(held(&d, "z"), None);
        assert_eq!(d.version_floor, 1);
    }

    /// A removal is a change like any other: undone by a reset while a
    /// replica has not confirmed it, kept once confirmed; a re-creation
    /// after it numbers above it and is undone back to the tombstone.
    #[test]
    fn a_reset_undoes_an_unconfirmed_removal_and_keeps_a_confirmed_one() {
        let mut d = ShardData::<Value>::default();
        change(&mut d, "x", 10, 1);
        d.confirmed(&d.unconfirmed.hasher().key("x"), 1);
        remove(&mut d, "x", 2);
        d.restore_confirmed(RESTORED);
        assert_eq!(held(&d, "x"), Some((Some(10), 3)), "removal undone");
        assert!(!d.removed.contains_key("x"));

        let mut d = ShardData::<Value>::default();
        change(&mut d, "x", 10, 1);
        remove(&mut d, "x", 2);
        d.confirmed(&d.unconfirmed.hasher().key("x"), 2);
        assert!(d.unconfirmed.is_empty(), "confirmed: nothing to keep");
        change(&mut d, "x", 7, 3);
        d.restore_confirmed(RESTORED);
        // Absent when confirmed: dropped (the replicas hold the confirmed
        // tombstone), and a creation here numbers above what was issued.
        assert_eq!(held(&d, "x"), None);
        assert!(!d.removed.contains_key("x"));
        assert_eq!(d.version_floor, 3);
    }

    /// Old owner `a` (stamp [`HERE`]): `x` confirmed at 10 (version 5),
    /// then set to 20 at version 6, which its replicas did not all confirm
    /// when `a`'s life was declared dead. Returns `a` after its reset (`x`
    /// back at 10, numbered 7 by `a`) and the records it pushes (as a page,
    /// the form of a fetch and of a push alike).
    fn reset_over_an_unconfirmed_change() -> (ShardData<Value>, Vec<Record<Value>>) {
        let mut a = ShardData::<Value>::default();
        change(&mut a, "x", 10, 5);
        a.confirmed(&a.unconfirmed.hasher().key("x"), 5);
        change(&mut a, "x", 20, 6);
        a.restore_confirmed(HERE);
        assert_eq!(held(&a, "x"), Some((Some(10), 7)));
        let (records, more) = fill_page(&a, None, 100_000, 16);
        assert!(!more);
        (a, records)
    }

    /// `x`'s record as another node holds it: value (`None`, a tombstone),
    /// version and the stamp of the life that numbered it.
    fn record(value: Option<u32>, version: u64, stamp: u64) -> Record<Value> {
        Record {
            id: "x".into(),
            version,
            stamp,
            state: value.map(Value),
            restored_from: None,
        }
    }

    /// A node that holds `records` of `x`, merged in order.
    fn holding_records(records: Vec<Record<Value>>) -> ShardData<Value> {
        let mut d = ShardData::<Value>::default();
        let _ = merge(&mut d, records, Instant::now());
        d
    }

    /// The ask that made `a`'s unconfirmed change is answered `Moved` at
    /// `a`'s reset and sent again by its sender. The new owner `b` held the
    /// confirmed state (version 5, its copy was behind `a`'s) and applied
    /// the retried ask over it: version 6, numbered by `b` ([`THERE`]),
    /// acknowledged. The restored state `a` pushes (version 7) must not
    /// win over it, or the acknowledged change is lost (a counter's add
    /// gone); nor over `b`'s next change at version 7, nor over `b`'s
    /// removal. And `a`, holding its restored state, takes `b`'s changes
    /// when they reach it (as `b`'s replica, or by a fetch), so a copy of
    /// `a`'s does not bring the loss back later. The restore still wins
    /// where it was meant to: over a replica's copy of `a`'s own reverted
    /// change (version 6, `a`'s stamp), and over older copies.
    #[test]
    fn a_restore_does_not_undo_a_change_another_owner_made_over_the_confirmed_state() {
        let now = Instant::now();
        let (_, pushed) = reset_over_an_unconfirmed_change();
        let b_changes = [
            vec![record(Some(10), 5, HERE), record(Some(30), 6, THERE)],
            vec![
                record(Some(10), 5, HERE),
                record(Some(30), 6, THERE),
                record(Some(40), 7, THERE),
            ],
            vec![record(Some(10), 5, HERE), record(None, 6, THERE)],
        ];
        for b_records in b_changes {
            let last = b_records.last().cloned().expect("a change");
            let want = (last.state.as_ref().map(|v| v.0), last.version);
            // At the new owner: the push changes nothing.
            let mut b = holding_records(b_records);
            let taken = merge(&mut b, pushed.clone(), now);
            assert_eq!(held(&b, "x"), Some(want), "b keeps its change");
            assert!(taken.is_empty(), "nothing taken from the push");
            // At the restoring node: b's change replaces the restore.
            let (mut a, _) = reset_over_an_unconfirmed_change();
            let taken = merge(&mut a, vec![last], now);
            assert_eq!(held(&a, "x"), Some(want), "a takes b's change");
            assert_eq!(taken, ["x"]);
            assert_eq!(a.restored_from("x"), None, "a change, not a restore");
            // a's next version of x is above every one it issued (7),
            // also where a lower one replaced the restore (the floor).
            assert!(want.1.max(a.version_floor) >= 7, "{want:?}");
        }
        // The push says what it restores.
        let restores: Vec<_> = pushed.iter().map(|r| r.restored_from).collect();
        assert_eq!(restores, [Some(5)]);
        // A replica holding a's reverted change, or an older state, takes
        // the restore, and holds it as one: b's change, when it comes,
        // replaces it there too.
        for copy in [
            record(Some(20), 6, HERE),
            record(Some(10), 5, HERE),
            record(Some(1), 2, THERE),
        ] {
            let mut c = holding_records(vec![copy]);
            assert_eq!(merge(&mut c, pushed.clone(), now), ["x"]);
            assert_eq!(held(&c, "x"), Some((Some(10), 7)));
            let (page, _) = fill_page(&c, None, 100_000, 16);
            assert_eq!(page[0].restored_from, Some(5), "passed on as a restore");
            assert_eq!(merge(&mut c, vec![record(Some(30), 6, THERE)], now), ["x"]);
            assert_eq!(held(&c, "x"), Some((Some(30), 6)));
        }
        // And a late copy of the reverted change does not replace it, nor
        // a copy of another life at or below the confirmed version.
        let (mut a, _) = reset_over_an_unconfirmed_change();
        let stale = vec![
            record(Some(20), 6, HERE),
            record(Some(10), 5, THERE),
            record(Some(1), 4, THERE),
        ];
        assert!(merge(&mut a, stale, now).is_empty());
        assert_eq!(held(&a, "x"), Some((Some(10), 7)));
        assert_eq!(a.version_floor, 0);
    }

    /// Equal versions of two lives. Old owner `a` ([`HERE`]) changed `x`
    /// to 20 at version 6 over the confirmed 10 (version 5); its replica
    /// `r` applied it, but `a` never saw `r` confirm it, and reset. The new
    /// owner `b` ([`THERE`]) applied the retried ask over the confirmed
    /// state: 30, version 6 too. Replicated to `r` by the owner of `r`'s
    /// view, `b`'s record replaces `a`'s (before, `r` kept `a`'s and
    /// confirmed version 6 all the same); from a node `r`'s view does not
    /// make the owner it does not, and `r` says it does not hold it. A
    /// late record of `a`, no longer the owner in `r`'s view, does not
    /// replace `b`'s, nor does `a`'s restore. The tie goes to the owner
    /// only: its record below the held copy's rank does not replace it.
    #[test]
    fn the_owner_wins_a_tie_of_two_lives_and_a_late_record_of_the_old_owner_does_not() {
        let now = Instant::now();
        let a_change = record(Some(20), 6, HERE);
        let b_change = record(Some(30), 6, THERE);
        let stamp = |d: &ShardData<Value>| d.entities.get("x").map(|e| e.stamp);
        // From the owner: taken, and held.
        let mut r = holding_records(vec![record(Some(10), 5, HERE), a_change.clone()]);
        let mut changed = Vec::new();
        let holds = merge_record(
            &mut r,
            b_change.clone(),
            Sender::Owner,
            Some(&mut changed),
            now,
        );
        assert!(holds, "r holds the owner's record");
        assert_eq!(held(&r, "x"), Some((Some(30), 6)), "r takes b's change");
        assert_eq!((stamp(&r), changed), (Some(THERE), vec!["x".to_owned()]));
        // The same record again: held, nothing taken.
        let mut changed = Vec::new();
        assert!(merge_record(
            &mut r,
            b_change.clone(),
            Sender::Owner,
            Some(&mut changed),
            now
        ));
        assert!(changed.is_empty());
        // A late record of the old owner keeps out, and is not held.
        assert!(!merge_record(
            &mut r,
            a_change.clone(),
            Sender::Other,
            None,
            now
        ));
        assert_eq!(
            (held(&r, "x"), stamp(&r)),
            (Some((Some(30), 6)), Some(THERE))
        );
        // So does a's restore (it ranks as version 5).
        let (_, pushed) = reset_over_an_unconfirmed_change();
        assert!(merge(&mut r, pushed, now).is_empty());
        assert_eq!(held(&r, "x"), Some((Some(30), 6)));

        // From a node that is not the owner in r's view (r's view lags):
        // a's record stays, and r does not hold b's.
        let mut r = holding_records(vec![a_change.clone()]);
        assert!(!merge_record(
            &mut r,
            b_change.clone(),
            Sender::Other,
            None,
            now
        ));
        assert_eq!(
            (held(&r, "x"), stamp(&r)),
            (Some((Some(20), 6)), Some(HERE))
        );

        // The owner's record below the held copy's rank: kept out, and
        // the copy above it holds it (as before).
        for above in [record(Some(40), 7, HERE), record(Some(40), 7, THERE)] {
            let mut r = holding_records(vec![above]);
            assert!(merge_record(
                &mut r,
                b_change.clone(),
                Sender::Owner,
                None,
                now
            ));
            assert_eq!(held(&r, "x"), Some((Some(40), 7)));
        }

        // Tombstones tie alike: the owner's removal at version 6 replaces
        // another life's live 6, and its live 6 another life's tombstone.
        let mut r = holding_records(vec![a_change.clone()]);
        assert!(merge_record(
            &mut r,
            record(None, 6, THERE),
            Sender::Owner,
            None,
            now
        ));
        assert_eq!(held(&r, "x"), Some((None, 6)));
        assert!(r.removed.contains_key("x"));
        let mut r = holding_records(vec![record(None, 6, HERE)]);
        assert!(merge_record(
            &mut r,
            b_change.clone(),
            Sender::Owner,
            None,
            now
        ));
        assert_eq!(held(&r, "x"), Some((Some(30), 6)));
        assert!(!r.removed.contains_key("x"));

        // Two lives' restores of one confirmed version (an owner's sync):
        // the owner's wins, and is held as a restore.
        let restore = |value, version, stamp| Record {
            restored_from: Some(5),
            ..record(Some(value), version, stamp)
        };
        let mut r = holding_records(vec![restore(10, 7, HERE)]);
        assert!(merge_record(
            &mut r,
            restore(11, 9, THERE),
            Sender::Owner,
            None,
            now
        ));
        assert_eq!(
            (held(&r, "x"), r.restored_from("x")),
            (Some((Some(11), 9)), Some(5))
        );
        let mut r = holding_records(vec![restore(10, 7, HERE)]);
        assert!(!merge_record(
            &mut r,
            restore(11, 9, THERE),
            Sender::Other,
            None,
            now
        ));
        assert_eq!(held(&r, "x"), Some((Some(10), 7)));

        // The old owner itself, as a replica of b before its reset: b's
        // record replaces its unconfirmed change, whose history goes, so
        // the reset does not bring back the confirmed state over it.
        let mut a = ShardData::<Value>::default();
        change(&mut a, "x", 10, 5);
        a.confirmed(&a.unconfirmed.hasher().key("x"), 5);
        change(&mut a, "x", 20, 6);
        assert!(merge_record(&mut a, b_change, Sender::Owner, None, now));
        assert!(a.unconfirmed.is_empty());
        a.restore_confirmed(HERE);
        assert_eq!(
            (held(&a, "x"), stamp(&a)),
            (Some((Some(30), 6)), Some(THERE))
        );
    }

    /// The order [`merge_record`] merges by: one life's versions in
    /// order; across lives, a restored state ranks as the confirmed
    /// version it restores (just above it), a change as its version.
    #[test]
    fn a_restore_ranks_as_its_confirmed_version_against_other_lives() {
        let change = |version, stamp| (version, stamp, None);
        let restore = |version, stamp, confirmed| (version, stamp, Some(confirmed));
        // The same life: by version, restore or not.
        assert!(supersedes(restore(7, HERE, 5), change(6, HERE)));
        assert!(!supersedes(change(6, HERE), restore(7, HERE, 5)));
        assert!(supersedes(change(8, HERE), restore(7, HERE, 5)));
        // Another life's change above the confirmed version wins both
        // ways, whatever the versions; at or below it, the restore does.
        for v in [6, 7, 8] {
            assert!(supersedes(change(v, THERE), restore(7, HERE, 5)), "{v}");
            assert!(!supersedes(restore(7, HERE, 5), change(v, THERE)), "{v}");
        }
        for v in [4, 5] {
            assert!(supersedes(restore(7, HERE, 5), change(v, THERE)), "{v}");
            assert!(!supersedes(change(v, THERE), restore(7, HERE, 5)), "{v}");
        }
        // Two lives' restores: the later confirmed state; of one, neither.
        assert!(supersedes(restore(9, THERE, 6), restore(7, HERE, 5)));
        assert!(!supersedes(restore(9, THERE, 5), restore(7, HERE, 5)));
        assert!(!supersedes(restore(7, HERE, 5), restore(9, THERE, 5)));
        // Changes alone: the higher version; equal ones keep the held.
        assert!(supersedes(change(3, THERE), change(2, HERE)));
        assert!(!supersedes(change(2, THERE), change(2, HERE)));
        // A record claiming to restore a version at or above its own
        // ranks no higher than its version less one.
        assert!(supersedes(change(7, THERE), restore(7, HERE, 99)));
    }

    /// The merge rules across live states and tombstones: the higher
    /// version wins, whichever kind each is; at equal versions the held
    /// copy stays.
    #[test]
    fn tombstones_and_live_records_merge_by_version() {
        let now = Instant::now();
        let rec = |id: &str, version: u64, state: Option<u32>| Record::<Value> {
            id: id.into(),
            version,
            stamp: THERE,
            state: state.map(Value),
            restored_from: None,
        };
        let mut d = ShardData::<Value>::default();
        // A tombstone above the held copy removes it.
        assert_eq!(merge(&mut d, vec![rec("a", 1, Some(1))], now), ["a"]);
        assert_eq!(merge(&mut d, vec![rec("a", 2, None)], now), ["a"]);
        assert_eq!(held(&d, "a"), Some((None, 2)));
        assert!(d.removed.contains_key("a"));
        // Live copies at or below its version do not bring it back.
        assert!(
            merge(
                &mut d,
                vec![rec("a", 1, Some(5)), rec("a", 2, Some(6))],
                now
            )
            .is_empty()
        );
        assert_eq!(held(&d, "a"), Some((None, 2)));
        // A live record above it does (a re-creation).
        assert_eq!(merge(&mut d, vec![rec("a", 3, Some(7))], now), ["a"]);
        assert_eq!(held(&d, "a"), Some((Some(7), 3)));
        assert!(!d.removed.contains_key("a"));
        // A tombstone at or below a live version changes nothing.
        assert!(merge(&mut d, vec![rec("a", 3, None), rec("a", 2, None)], now).is_empty());
        assert_eq!(held(&d, "a"), Some((Some(7), 3)));
        // A tombstone of an id never seen is kept: a later stale copy
        // must not create it.
        assert_eq!(merge(&mut d, vec![rec("b", 4, None)], now), ["b"]);
        assert!(merge(&mut d, vec![rec("b", 4, Some(1))], now).is_empty());
        assert_eq!(held(&d, "b"), Some((None, 4)));
        // Pages carry tombstones.
        let (page, more) = fill_page(&d, None, 100_000, 16);
        assert!(!more);
        let mut page: Vec<(String, Option<u32>)> = page
            .into_iter()
            .map(|r| (r.id, r.state.map(|v| v.0)))
            .collect();
        page.sort();
        assert_eq!(page, [("a".to_owned(), Some(7)), ("b".to_owned(), None)]);
    }

    /// Tombstones go once old enough and, where this node owns the shard,
    /// confirmed by every replica; live entities stay.
    #[test]
    fn tombstones_expire_once_confirmed_and_old_enough() {
        let start = Instant::now();
        let retention = Duration::from_secs(30);
        let later = start + retention;
        let mut d = ShardData::<Value>::default();
        change(&mut d, "x", 1, 1);
        change(&mut d, "y", 1, 1);
        remove(&mut d, "x", 2);
        for id in ["x", "y"] {
            if let Some(e) = d.entities.get_mut(id) {
                e.acked = 1;
            }
        }
        d.removed.insert("x".into(), start);
        assert_eq!(d.expire_tombstones(start, retention, true), 0, "too young");
        assert_eq!(
            d.expire_tombstones(later, retention, true),
            0,
            "unconfirmed"
        );
        // A non-owner goes by age alone.
        let mut copy = ShardData::<Value>::default();
        let _ = merge(
            &mut copy,
            vec![Record {
                id: "x".into(),
                version: 2,
                stamp: HERE,
                state: None,
                restored_from: None,
            }],
            start,
        );
        assert_eq!(copy.expire_tombstones(later, retention, false), 1);
        assert!(copy.entities.is_empty() && copy.removed.is_empty());
        // A creation there numbers above the dropped tombstone.
        assert_eq!(copy.version_floor, 2);
        // Confirmed on the owner: dropped; the live entity stays.
        if let Some(e) = d.entities.get_mut("x") {
            e.acked = 2;
        }
        assert_eq!(d.expire_tombstones(later, retention, true), 1);
        assert_eq!(held(&d, "x"), None);
        assert_eq!(d.version_floor, 2);
        assert_eq!(held(&d, "y"), Some((Some(1), 1)));
        assert!(d.removed.is_empty());
    }

    #[test]
    fn a_change_over_an_unsent_one_keeps_no_bytes_and_resets_alike() {
        let mut d = ShardData::<Value>::default();
        change(&mut d, "x", 10, 1);
        d.confirmed(&d.unconfirmed.hasher().key("x"), 1);
        change(&mut d, "x", 20, 2);
        // Version 3 replaces version 2, which never left the node.
        assert!(supersede_unsent(
            &mut d.unconfirmed,
            &IdHasher::new().key("x"),
            2,
            3
        ));
        if let Some(e) = d.entities.get_mut("x") {
            e.state = Some(Value(30));
            e.version = 3;
        }
        assert_eq!(
            d.unconfirmed.get("x").map_or(0, |states| states.len()),
            2,
            "confirmed and current only"
        );
        // Not the history's last version, or no history: nothing done.
        assert!(!supersede_unsent(
            &mut d.unconfirmed,
            &IdHasher::new().key("x"),
            2,
            4
        ));
        assert!(!supersede_unsent(
            &mut d.unconfirmed,
            &IdHasher::new().key("w"),
            1,
            2
        ));
        // An entity created unconfirmed, changed over its unsent creation.
        change(&mut d, "y", 1, 1);
        assert!(supersede_unsent(
            &mut d.unconfirmed,
            &IdHasher::new().key("y"),
            1,
            2
        ));
        if let Some(e) = d.entities.get_mut("y") {
            e.state = Some(Value(2));
            e.version = 2;
        }
        d.restore_confirmed(HERE);
        assert_eq!(
            held(&d, "x"),
            Some((Some(10), 4)),
            "back to the confirmed state"
        );
        assert_eq!(held(&d, "y"), None, "created unconfirmed: removed");
        assert_eq!(d.version_floor, 2);
    }

    #[test]
    fn a_hand_over_is_held_only_as_that_very_state_at_that_version() {
        let entry = |value: u32, version: u64, stamp: u64| Entry {
            state: Some(Value(value)),
            version,
            stamp,
            acked: 0,
        };
        let sent = encode_state(&Some(Value(7)));
        let held = |e: Option<&Entry<Value>>| holding(e, 3, THERE, &sent);
        assert_eq!(held(Some(&entry(7, 3, THERE))), Holding::Held);
        assert_eq!(held(Some(&entry(8, 3, THERE))), Holding::Other);
        // An equal state at that version, numbered by another owner life:
        // another history, which need not hold the change.
        assert_eq!(held(Some(&entry(7, 3, HERE))), Holding::Other);
        assert_eq!(held(Some(&entry(7, 4, THERE))), Holding::Newer);
        assert_eq!(held(None), Holding::Newer);
        // A removal handed over is held by that very tombstone only.
        let tomb = |stamp: u64| Entry::<Value> {
            state: None,
            version: 3,
            stamp,
            acked: 0,
        };
        let removal = encode_state::<Value>(&None);
        assert_eq!(
            holding(Some(&tomb(THERE)), 3, THERE, &removal),
            Holding::Held
        );
        assert_eq!(
            holding(Some(&tomb(HERE)), 3, THERE, &removal),
            Holding::Other
        );
        assert_eq!(
            holding(Some(&entry(7, 3, THERE)), 3, THERE, &removal),
            Holding::Other
        );
        assert_eq!(held(Some(&tomb(THERE))), Holding::Other);
    }

    #[test]
    fn an_unconfirmed_ask_is_sent_again_only_when_idempotent() {
        let (tx_once, mut rx_once) = oneshot::channel();
        let (tx_again, mut rx_again) = oneshot::channel();
        let list: Vec<HeldReply<Value>> = vec![
            (3, ReplyTo::Local(tx_once), Ok(1), false),
            (3, ReplyTo::Local(tx_again), Ok(1), true),
        ];
        answer_failed(ShardId(7), list, "no answer");
        assert_eq!(
            rx_once.try_recv().ok(),
            Some(Err(RegionError::ReplicationFailed {
                shard: 7,
                reason: "no answer".into()
            }))
        );
        assert_eq!(
            rx_again.try_recv().ok(),
            Some(Err(RegionError::Moved { shard: 7 }))
        );
    }

    #[test]
    fn an_empty_batch_is_answered_at_once() {
        let (_slots, mut rx) = batch(0);
        assert_eq!(rx.try_recv().expect("answered"), Vec::new());
    }
}
