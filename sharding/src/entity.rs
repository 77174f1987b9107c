//! The [`Entity`] trait: what a sharded type gives the region.
//!
//! An entity is plain data plus a message handler. The region owns every
//! entity of a shard, delivers each entity's messages one at a time and in
//! order, copies the entity's state to the shard's replicas after each
//! change, and moves it by handoff when the shard's owner changes. The handler
//! never does I/O: it changes the state, answers, and may ask the region to
//! run CPU-heavy work on its bounded worker pool (see [`Context::run_blocking`]
//! and, for work that runs faster two at a time, [`Context::run_lanes`]).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A sharded entity type: its state is `Self`, serialized with postcard for
/// replication and handoff.
///
/// An entity that does not exist is `None`: [`Entity::handle`] decides whether
/// a message creates it (a submit does, a query does not).
pub trait Entity: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Messages to the entity (tells and asks). Sent over the wire with postcard.
    type Msg: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// Replies to asks. Sent over the wire with postcard.
    type Reply: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The entity type's name, the same on every node; it keys the region on
    /// the wire, so two entity types in one cluster must differ.
    const TYPE_NAME: &'static str;

    /// Handles one message for entity `id`. `state` is `None` while the entity
    /// does not exist; setting it to `Some` creates the entity, and setting it
    /// back to `None` removes it. A removal is a change like any other: the
    /// owner numbers it and replicates it (as a tombstone, kept for
    /// `[sharding] retire_after_ms` once every replica confirmed it) before
    /// it answers, and a later creation of the same id numbers above it.
    ///
    /// The returned [`Handled`] tells the region what to answer. The region
    /// replicates a changed state before it sends the answer, so an answer
    /// never reports a state the replicas do not hold.
    fn handle(
        ctx: &mut Context<Self::Msg>,
        id: &str,
        state: &mut Option<Self>,
        msg: Self::Msg,
    ) -> Handled<Self::Reply>;

    /// Whether `msg` only reads the state: it never creates, changes or
    /// removes the entity. The region then skips detecting a change for
    /// it (two postcard encodings of the state per message). The default,
    /// `false`, is always correct; answering `true` for a message that does
    /// change the state would leave the change unreplicated (debug builds
    /// check it and panic).
    fn reads_only(msg: &Self::Msg) -> bool {
        let _ = msg;
        false
    }

    /// Whether handling `msg` again after it was handled changes nothing
    /// more (a resubmit of the same input, an arrival counted by name).
    /// It matters when an ask's change was applied but the shard moved
    /// before the replicas confirmed it, and the new owner cannot say
    /// whether it holds the change (it holds a newer version, or does not
    /// answer; `sharding/PROTOCOL.md`, Handoff), and when the owner resets
    /// (its life was declared dead) before the replicas confirmed it (a
    /// replica may hold the change all the same; Reset): an idempotent ask
    /// is then answered [`RegionError::Moved`](crate::RegionError) and sent
    /// again, any other
    /// [`RegionError::ReplicationFailed`](crate::RegionError) (applied or
    /// not, unknown). The default, `false`, never applies a message twice.
    fn idempotent(msg: &Self::Msg) -> bool {
        let _ = msg;
        false
    }

    /// Whether [`Entity::handle`] may return [`Handled::Wait`] for `msg`.
    /// The region keeps a copy of each asked message for which this is
    /// `true`, to deliver again after the next change; `false` spares the
    /// copy. The default, `true`, is always correct; answering `false` for
    /// a message that does wait drops its asker with an error
    /// ([`RegionError::Protocol`](crate::RegionError)) instead of parking it.
    fn may_wait(msg: &Self::Msg) -> bool {
        let _ = msg;
        true
    }

    /// The message the region keeps for an ask of `msg` that
    /// [`Entity::handle`] may keep waiting ([`Entity::may_wait`]), to
    /// deliver again after the entity's next change. The default, a copy of
    /// `msg`, is always correct. An entity may keep a cheaper message that
    /// its handler answers alike once `msg` itself was handled (the task
    /// entity keeps a result wait for a submit-and-wait: the submit is done
    /// by then), sparing a copy of `msg` per wait.
    fn kept_while_waiting(msg: &Self::Msg) -> Self::Msg {
        msg.clone()
    }

    /// Called when this node becomes the owner of an existing entity it did
    /// not own before (a handoff, or a replica promoted after its owner
    /// failed), so unfinished work can be restarted through `ctx`.
    /// The default does nothing.
    fn on_activate(&mut self, ctx: &mut Context<Self::Msg>, id: &str) {
        let _ = (ctx, id);
    }
}

/// What the region does with the asker after [`Entity::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled<R> {
    /// Answer the asker with this value (ignored for tells).
    Reply(R),
    /// Keep the asker waiting: the region delivers the same message again
    /// after the entity's next state change, until a call returns `Reply`
    /// or the asker's timeout passes. Only return this for messages whose
    /// handling is idempotent (a query, an arrival at a barrier). A tell
    /// answered `Wait` is not kept (nobody waits for it): it is dropped
    /// and counted in [`RegionStats::dropped`](crate::RegionStats).
    Wait,
}

/// CPU-bound work the entity asked for: run on the region's worker pool, its
/// output delivered back to the same entity as a message.
pub enum Job<M> {
    /// A closure, run start to end on one pool thread
    /// ([`Context::run_blocking`]).
    Once(Box<dyn FnOnce() -> M + Send + 'static>),
    /// A job of a [`Lanes`] type, which a pool thread may run together with
    /// another job of the same type ([`Context::run_lanes`]).
    Lanes(LaneJob<M>),
}

impl<M> Job<M> {
    /// Runs the job alone on the calling thread and returns its output (what
    /// tests that drive an entity directly do; a region runs jobs on its
    /// pool).
    ///
    /// # Panics
    /// When a [`Lanes::run_together`] gives no output for its one job (it
    /// must give each job's exactly once).
    pub fn run(self) -> M {
        match self {
            Job::Once(f) => f(),
            Job::Lanes(job) => {
                let mut output = None;
                (job.run)(vec![job.input], &mut |_, m| output = Some(m));
                output.expect("Lanes::run_together gives every job's output")
            }
        }
    }
}

impl<M> std::fmt::Debug for Job<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Once(_) => f.write_str("Job::Once"),
            Job::Lanes(_) => f.write_str("Job::Lanes"),
        }
    }
}

/// CPU-bound work of which one thread runs two at once faster than one after
/// the other: a loop whose every step needs the result of the step before
/// (an iterated hash) keeps a core's execution units waiting on each step's
/// latency, and a second, independent loop interleaved with it, step for
/// step, fills that wait. (`taskqueue`'s task hash is one: its README gives
/// the measured gain. In an unoptimized build the gain may be none.)
///
/// A region hands its `Lanes` jobs to the pool in batches of consecutive
/// jobs of one type (up to 16, fewer when few wait: a quarter of its
/// backlog per pool thread at most), which the thread that takes one runs
/// two at a time, shared with a thread out of other work (the batch queues
/// a ticket for its pairs not yet started); a single job is paired with
/// another waiting one when at least as many wait as the pool has
/// threads, so every other thread has one to take as well, else it runs
/// alone. See [`Context::run_lanes`].
pub trait Lanes: Send + Sized + 'static {
    /// What a job gives: delivered to its entity as a message.
    type Output;

    /// Runs `jobs` (one or two) on the calling thread, calling `done(i,
    /// output)` as soon as `jobs[i]` has finished, once for each job. A
    /// second output for the same `i`, or an `i` out of range, is ignored.
    /// An output not given is lost: the region logs an error, and the
    /// entity's work restarts only when its shard is next activated
    /// somewhere.
    ///
    /// # Panics
    /// Should not. A panic is caught on the pool's thread (which goes on)
    /// and logged; the outputs not given before it are lost as above.
    fn run_together(jobs: Vec<Self>, done: &mut dyn FnMut(usize, Self::Output));
}

/// A job of some [`Lanes`] type, its type erased so a region's queue holds
/// jobs of several types; [`LaneJob::kind`] tells which may run together.
pub struct LaneJob<M> {
    kind: std::any::TypeId,
    input: Box<dyn std::any::Any + Send>,
    run: LaneRunner<M>,
}

/// Runs erased jobs, all of one [`Lanes`] type, giving each output by index.
type LaneRunner<M> = fn(Vec<Box<dyn std::any::Any + Send>>, &mut dyn FnMut(usize, M));

impl<M> LaneJob<M> {
    /// Wraps `job` (boxed: one allocation), with its type as its kind.
    pub fn new<L: Lanes<Output = M>>(job: L) -> Self {
        LaneJob {
            kind: std::any::TypeId::of::<L>(),
            input: Box::new(job),
            run: run_erased::<L>,
        }
    }

    /// The job's type: jobs of equal kinds may run together.
    pub fn kind(&self) -> std::any::TypeId {
        self.kind
    }

    /// Runs `jobs` together on the calling thread (see
    /// [`Lanes::run_together`]); a job whose kind differs from the first's
    /// runs on its own after them, so every job's output is given.
    pub fn run_together(jobs: Vec<LaneJob<M>>, done: &mut dyn FnMut(usize, M)) {
        let Some(first) = jobs.first() else {
            return;
        };
        let (kind, run) = (first.kind, first.run);
        let mut alike = Vec::with_capacity(jobs.len());
        let mut index = Vec::with_capacity(jobs.len());
        let mut others = Vec::new();
        for (i, job) in jobs.into_iter().enumerate() {
            if job.kind == kind {
                alike.push(job.input);
                index.push(i);
            } else {
                others.push((i, job));
            }
        }
        run(alike, &mut |k, m| {
            if let Some(&i) = index.get(k) {
                done(i, m);
            }
        });
        for (i, job) in others {
            (job.run)(vec![job.input], &mut |_, m| done(i, m));
        }
    }
}

fn run_erased<L: Lanes>(
    inputs: Vec<Box<dyn std::any::Any + Send>>,
    done: &mut dyn FnMut(usize, L::Output),
) {
    let jobs = inputs
        .into_iter()
        .map(|input| {
            *input
                .downcast::<L>()
                .expect("jobs run together share the TypeId of their Lanes type")
        })
        .collect();
    L::run_together(jobs, done);
}

/// What a handler may ask of the region besides its answer.
pub struct Context<M> {
    node_name: Arc<str>,
    jobs: Vec<Job<M>>,
}

impl<M> Context<M> {
    /// A context for a handler running on node `node_name`. Regions build one
    /// per delivery; tests build their own to drive an entity directly.
    pub fn new(node_name: impl Into<String>) -> Self {
        Context::shared(Arc::from(node_name.into()))
    }

    /// A context sharing an already allocated node name (what a region
    /// does on every delivery: no allocation).
    pub fn shared(node_name: Arc<str>) -> Self {
        Context {
            node_name,
            jobs: Vec::new(),
        }
    }

    /// The name of the node running this handler (for `processed_by`).
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Runs `job` on the region's bounded worker pool, never on the async
    /// runtime's threads; its return value is delivered to this entity as a
    /// message, in order with the entity's other messages (outputs of jobs
    /// shorter than 200 µs may wait for a few more before the region takes
    /// them, about 2.4 ms at most with the default pool). If the shard has
    /// moved away by then, the output is discarded: the new owner restarts
    /// the work from [`Entity::on_activate`].
    pub fn run_blocking(&mut self, job: impl FnOnce() -> M + Send + 'static) {
        self.jobs.push(Job::Once(Box::new(job)));
    }

    /// Runs `job` on the region's worker pool as [`Context::run_blocking`]
    /// does, but a pool thread may run it together with another job of the
    /// same [`Lanes`] type (see [`Lanes`] for when), which gives
    /// more jobs per second on each core for latency-bound work. Its output
    /// is handed to the region as soon as it is done, not when its
    /// partner is, and then delivered to this entity as a message, batched
    /// with other outputs as [`Context::run_blocking`] says.
    pub fn run_lanes<L: Lanes<Output = M>>(&mut self, job: L) {
        self.jobs.push(Job::Lanes(LaneJob::new(job)));
    }

    /// Removes and returns the jobs queued by the handler so far.
    pub fn take_jobs(&mut self) -> Vec<Job<M>> {
        std::mem::take(&mut self.jobs)
    }
}

impl<M> std::fmt::Debug for Context<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("node_name", &self.node_name)
            .field("jobs", &self.jobs.len())
            .finish()
    }
}
