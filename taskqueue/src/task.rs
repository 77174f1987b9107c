//! The task entity: `pending -> completed`, never back.
//!
//! A task is created by its first submit, on the node that owns its shard.
//! The submit stores the input (pending) and hands the hash to the region's
//! worker pool ([`Context::run_blocking`]); the job's output comes back as
//! [`TaskMsg::Computed`], which stores the result and the name of the node
//! that computed it (completed). A task never leaves `completed`.
//!
//! - A resubmit with the same payload and iterations is idempotent: the same
//!   answer, no second computation. Different input is a conflict, and the
//!   task is left as it was.
//! - A query of an unknown id answers "not found" and creates nothing.
//! - When a node becomes the owner of a pending task (handoff, or a replica
//!   promoted after its owner failed), [`Entity::on_activate`] restarts the
//!   job; the computation is deterministic, so a recomputation gives the
//!   same result, and a result arriving for a task already completed is
//!   ignored (the first one wins).
//!
//! # Size
//! A completed task keeps no payload: only a 16-byte digest of its input (to
//! tell an idempotent resubmit from a conflict), the 8-byte result and a
//! shared, interned node name: [`TaskEntity`] is 40 bytes in memory with no
//! heap block of its own.

use std::fmt;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sharding::{Context, Entity, Handled, Lanes};

use crate::error::{Error, Result, ValidationError};
use crate::node_name::NodeName;
use crate::work::{self, ShortDigest};

/// Messages to a task (the task id is the entity id).
///
/// A wire type (postcard): variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskMsg {
    /// Creates the task and starts its computation; idempotent for the same
    /// input. Answers [`TaskReply::Accepted`] (new task or same input
    /// again), [`TaskReply::Conflict`] (the task exists with another input)
    /// or [`TaskReply::Invalid`] (empty id, or `iterations` is 0; the
    /// configured limits are checked by the sender, see
    /// [`TasksConfig::validate_submit`](crate::TasksConfig::validate_submit)).
    Submit {
        /// The text hashed (its UTF-8 bytes).
        payload: String,
        /// How many times SHA-256 is applied, at least 1.
        iterations: u32,
    },
    /// Reads the task: [`TaskReply::Status`] or [`TaskReply::NotFound`].
    /// Never creates it.
    Get,
    /// Waits for the result: [`TaskReply::Status`] once completed,
    /// [`TaskReply::NotFound`] at once for an unknown id; while the task is
    /// pending the handler returns [`Handled::Wait`] and the region asks
    /// again after each change. Never creates the task.
    WaitResult,
    /// The output of the task's job, delivered by the region from its worker
    /// pool: completes a pending task. Ignored for a completed task (the
    /// first result wins), an unknown task, or a `result` that is not 16 hex
    /// characters. Answers [`TaskReply::Accepted`] ([`TaskReply::NotFound`]
    /// for an unknown task); the region delivers it as a tell and drops the
    /// answer, so it carries no status (until session 5 it was a
    /// [`TaskReply::Status`], three strings built per task for nobody).
    Completed {
        /// The result, 16 lowercase hex characters.
        result: String,
        /// The name of the node that computed it.
        processed_by: String,
    },
    /// A submit and a wait in one message: creates the task as
    /// [`TaskMsg::Submit`] does (idempotent for the same input), then
    /// waits as [`TaskMsg::WaitResult`] does. Answers
    /// [`TaskReply::Status`] once the task is completed (and its result
    /// held by the replicas), [`TaskReply::Conflict`] or
    /// [`TaskReply::Invalid`] at once; while the task is pending the
    /// handler returns [`Handled::Wait`]. Saves the second round trip of a
    /// submit followed by a wait.
    SubmitAndWait {
        /// The text hashed (its UTF-8 bytes).
        payload: String,
        /// How many times SHA-256 is applied, at least 1.
        iterations: u32,
    },
    /// The output of the task's job as this node's worker pool hands it
    /// over: as [`TaskMsg::Completed`], with the result as its 8 bytes and
    /// the node name shared, where `Completed` formats the result as hex
    /// text and copies the name on the hashing thread only for the task to
    /// parse and intern them again (since session 11: four allocations,
    /// the parse and a lock fewer per task). `Completed` is still handled.
    Computed(JobOutput),
}

/// What a task's job computed ([`TaskMsg::Computed`]): the result, the
/// name of the node that computed it and the digest of the input it was
/// computed from (which the completed task keeps). Built by the job;
/// opaque elsewhere.
///
/// Serialized (postcard) as the 8 result bytes, the name as a string and
/// the 16 bytes of the input digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutput {
    result: ShortDigest,
    processed_by: NodeName,
    input: InputDigest,
}

impl JobOutput {
    /// The output `result` of the task with input `payload` and
    /// `iterations`, computed by node `processed_by` (as a job builds it;
    /// for tests and tools that feed a task by hand). Hashes `payload`
    /// once, on the calling thread, for the input digest.
    pub fn new(
        payload: &str,
        iterations: u32,
        result: ShortDigest,
        processed_by: &str,
    ) -> JobOutput {
        JobOutput {
            result,
            processed_by: NodeName::intern(processed_by),
            input: InputDigest::of(payload, iterations),
        }
    }
}

/// Answers of a task.
///
/// A wire type (postcard): variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskReply {
    /// The submit is held: the task exists with this input (pending or
    /// completed). The same answer for a first submit and an idempotent
    /// resubmit.
    Accepted,
    /// The task as it is now.
    Status(TaskStatus),
    /// No task has this id.
    NotFound,
    /// The task exists with a different payload or iteration count and was
    /// left unchanged.
    Conflict {
        /// The existing task's state.
        existing: TaskState,
    },
    /// The request is malformed (see [`TaskMsg::Submit`]).
    Invalid(ValidationError),
}

impl TaskReply {
    /// Turns an answer about task `id` into the task API's result:
    /// `Accepted` is `Ok(None)`, `Status` is `Ok(Some(status))`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Conflict`] or [`Error::Invalid`] for the
    /// answers of those names.
    pub fn into_result(self, id: &str) -> Result<Option<TaskStatus>> {
        match self {
            TaskReply::Accepted => Ok(None),
            TaskReply::Status(status) => Ok(Some(status)),
            TaskReply::NotFound => Err(Error::NotFound { id: id.to_owned() }),
            TaskReply::Conflict { existing } => Err(Error::Conflict {
                id: id.to_owned(),
                existing,
            }),
            TaskReply::Invalid(e) => Err(Error::Invalid(e)),
        }
    }
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Submitted, result not computed yet.
    Pending,
    /// The result is stored; final.
    Completed,
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskState::Pending => "pending",
            TaskState::Completed => "completed",
        })
    }
}

/// What a query reports about a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The task id.
    pub id: String,
    /// Pending or completed.
    pub status: TaskState,
    /// The result, 16 lowercase hex characters; `Some` once completed.
    pub result: Option<String>,
    /// The name of the node that computed the result; `Some` once completed.
    pub processed_by: Option<String>,
}

/// A digest of a task's input (payload and iterations), kept instead of the
/// payload once the task is completed so a resubmit can still be told apart
/// from a conflict: the first 16 bytes of SHA-256 over the iteration count
/// (4 bytes, little-endian) followed by the SHA-256 of the payload.
///
/// Made from the payload's SHA-256, the chain's first iteration
/// ([`work::first_digest`]), so the job that computes the task makes it on
/// the worker pool for one more compression, however long the payload:
/// the region never hashes a payload to complete a task. (Until protocol
/// version 3 it hashed the payload itself, on the region's thread, at each
/// completion.)
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct InputDigest([u8; 16]);

impl InputDigest {
    /// The digest of `payload` and `iterations` (hashes the payload: for
    /// a resubmit, a test, or a result given as text).
    fn of(payload: &str, iterations: u32) -> InputDigest {
        InputDigest::from_first(&work::first_digest(payload.as_bytes()), iterations)
    }

    /// The digest of a payload whose SHA-256 is `first`, and `iterations`.
    fn from_first(first: &[u8; 32], iterations: u32) -> InputDigest {
        let mut hasher = Sha256::new();
        hasher.update(iterations.to_le_bytes());
        hasher.update(first);
        let digest = hasher.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        InputDigest(out)
    }
}

impl fmt::Debug for InputDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InputDigest(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A task: the state the region holds, replicates and hands off.
///
/// Built only by its handler ([`Entity::handle`]); read with its accessors.
/// Serialized (postcard) as its phase: pending with payload and iterations,
/// or completed with input digest, result bytes and node name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskEntity {
    phase: Phase,
}

/// The two phases of a task and what each keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    /// Waiting for its result; keeps the input to (re)start the job.
    Pending {
        payload: Box<str>,
        iterations: NonZeroU32,
    },
    /// Final.
    Completed {
        input: InputDigest,
        result: ShortDigest,
        processed_by: NodeName,
    },
}

impl TaskEntity {
    /// Pending or completed.
    pub fn state(&self) -> TaskState {
        match self.phase {
            Phase::Pending { .. } => TaskState::Pending,
            Phase::Completed { .. } => TaskState::Completed,
        }
    }

    /// Whether the result is stored.
    pub fn is_completed(&self) -> bool {
        self.state() == TaskState::Completed
    }

    /// The result, once completed.
    pub fn result(&self) -> Option<ShortDigest> {
        match &self.phase {
            Phase::Pending { .. } => None,
            Phase::Completed { result, .. } => Some(*result),
        }
    }

    /// The name of the node that computed the result, once completed.
    pub fn processed_by(&self) -> Option<&str> {
        match &self.phase {
            Phase::Pending { .. } => None,
            Phase::Completed { processed_by, .. } => Some(processed_by.as_str()),
        }
    }

    /// Whether this task was submitted with exactly this payload and
    /// iteration count (for a completed task: whether the digests of the two
    /// inputs match).
    pub fn has_input(&self, payload: &str, iterations: u32) -> bool {
        match &self.phase {
            Phase::Pending {
                payload: p,
                iterations: n,
            } => n.get() == iterations && **p == *payload,
            Phase::Completed { input, .. } => *input == InputDigest::of(payload, iterations),
        }
    }

    /// The task as a query reports it, under id `id`.
    pub fn status(&self, id: &str) -> TaskStatus {
        TaskStatus {
            id: id.to_owned(),
            status: self.state(),
            result: self.result().map(|r| r.to_hex()),
            processed_by: self.processed_by().map(str::to_owned),
        }
    }

    /// A submit: create and start, or check the input of the existing task.
    fn submit(
        ctx: &mut Context<TaskMsg>,
        id: &str,
        state: &mut Option<TaskEntity>,
        payload: String,
        iterations: u32,
    ) -> TaskReply {
        if id.is_empty() {
            return TaskReply::Invalid(ValidationError::EmptyTaskId);
        }
        let Some(iterations) = NonZeroU32::new(iterations) else {
            return TaskReply::Invalid(ValidationError::IterationsOutOfRange {
                iterations,
                max: u32::MAX,
            });
        };
        if let Some(task) = state {
            return if task.has_input(&payload, iterations.get()) {
                TaskReply::Accepted
            } else {
                TaskReply::Conflict {
                    existing: task.state(),
                }
            };
        }
        let stored: Box<str> = Box::from(payload.as_str());
        start_job(ctx, payload, iterations);
        *state = Some(TaskEntity {
            phase: Phase::Pending {
                payload: stored,
                iterations,
            },
        });
        TaskReply::Accepted
    }

    /// A job's output as text ([`TaskMsg::Completed`]): complete a pending
    /// task. Answers `Accepted`, or `NotFound` for an unknown task. Unlike
    /// [`TaskMsg::Computed`], this hashes a pending task's payload here,
    /// for its input digest.
    fn complete(
        id: &str,
        state: &mut Option<TaskEntity>,
        result: &str,
        processed_by: &str,
    ) -> TaskReply {
        let Some(task) = state.as_ref() else {
            tracing::warn!(task = %id, "result for an unknown task ignored");
            return TaskReply::NotFound;
        };
        let Some(result) = ShortDigest::from_hex(result) else {
            tracing::warn!(task = %id, result, "malformed result ignored");
            return TaskReply::Accepted;
        };
        let input = match &task.phase {
            Phase::Pending {
                payload,
                iterations,
            } => InputDigest::of(payload, iterations.get()),
            // Completed: the first result wins.
            Phase::Completed { .. } => return TaskReply::Accepted,
        };
        let output = JobOutput {
            result,
            processed_by: NodeName::intern(processed_by),
            input,
        };
        Self::computed(id, state, output)
    }

    /// A job's output ([`TaskMsg::Computed`]): complete a pending task
    /// (the first result wins). Answers `Accepted`, or `NotFound` for an
    /// unknown task.
    fn computed(id: &str, state: &mut Option<TaskEntity>, output: JobOutput) -> TaskReply {
        let Some(task) = state else {
            tracing::warn!(task = %id, "result for an unknown task ignored");
            return TaskReply::NotFound;
        };
        if let Phase::Pending { .. } = &task.phase {
            task.phase = Phase::Completed {
                input: output.input,
                result: output.result,
                processed_by: output.processed_by,
            };
        }
        TaskReply::Accepted
    }
}

/// Queues the computation of `payload` on the region's worker pool; its
/// output comes back as [`TaskMsg::Computed`] naming this node. A pool
/// thread may compute two tasks at once ([`HashJob`]).
fn start_job(ctx: &mut Context<TaskMsg>, payload: String, iterations: NonZeroU32) {
    let node = NodeName::intern(ctx.node_name());
    ctx.run_lanes(HashJob {
        payload,
        iterations,
        node,
    });
}

/// A task's computation on the worker pool: two of them run interleaved on
/// one thread ([`work::Chain::run_pair`]), each output given as soon as its
/// chain is done.
struct HashJob {
    payload: String,
    iterations: NonZeroU32,
    node: NodeName,
}

impl HashJob {
    /// Starts the job's chain: its first iteration, the one that reads the
    /// payload, also gives the input digest.
    fn start(&self) -> (work::Chain, InputDigest) {
        let first = work::first_digest(self.payload.as_bytes());
        let input = InputDigest::from_first(&first, self.iterations.get());
        (work::Chain::from_first(first, self.iterations), input)
    }

    fn output(self, chain: &work::Chain, input: InputDigest) -> TaskMsg {
        TaskMsg::Computed(JobOutput {
            result: chain.result(),
            processed_by: self.node,
            input,
        })
    }
}

impl Lanes for HashJob {
    type Output = TaskMsg;

    fn run_together(jobs: Vec<HashJob>, done: &mut dyn FnMut(usize, TaskMsg)) {
        let mut jobs = jobs.into_iter().enumerate();
        while let Some((i, a)) = jobs.next() {
            let (mut first, first_input) = a.start();
            let Some((k, b)) = jobs.next() else {
                first.run();
                done(i, a.output(&first, first_input));
                return;
            };
            let (mut second, second_input) = b.start();
            work::Chain::run_pair(&mut first, &mut second);
            // One of them is done: give its output before finishing the other.
            let (mut shorter, mut longer) =
                ((i, a, first, first_input), (k, b, second, second_input));
            if shorter.2.left() > 0 {
                std::mem::swap(&mut shorter, &mut longer);
            }
            done(shorter.0, shorter.1.output(&shorter.2, shorter.3));
            longer.2.run();
            done(longer.0, longer.1.output(&longer.2, longer.3));
        }
    }
}

impl Entity for TaskEntity {
    type Msg = TaskMsg;
    type Reply = TaskReply;

    const TYPE_NAME: &'static str = "task";

    fn handle(
        ctx: &mut Context<TaskMsg>,
        id: &str,
        state: &mut Option<Self>,
        msg: TaskMsg,
    ) -> Handled<TaskReply> {
        match msg {
            TaskMsg::Submit {
                payload,
                iterations,
            } => Handled::Reply(Self::submit(ctx, id, state, payload, iterations)),
            TaskMsg::Get => Handled::Reply(match state {
                Some(task) => TaskReply::Status(task.status(id)),
                None => TaskReply::NotFound,
            }),
            TaskMsg::WaitResult => match state {
                Some(task) if task.is_completed() => {
                    Handled::Reply(TaskReply::Status(task.status(id)))
                }
                Some(_) => Handled::Wait,
                None => Handled::Reply(TaskReply::NotFound),
            },
            TaskMsg::Completed {
                result,
                processed_by,
            } => Handled::Reply(Self::complete(id, state, &result, &processed_by)),
            TaskMsg::Computed(output) => Handled::Reply(Self::computed(id, state, output)),
            TaskMsg::SubmitAndWait {
                payload,
                iterations,
            } => match Self::submit(ctx, id, state, payload, iterations) {
                TaskReply::Accepted => match state {
                    Some(task) if task.is_completed() => {
                        Handled::Reply(TaskReply::Status(task.status(id)))
                    }
                    _ => Handled::Wait,
                },
                other => Handled::Reply(other),
            },
        }
    }

    fn reads_only(msg: &TaskMsg) -> bool {
        matches!(msg, TaskMsg::Get | TaskMsg::WaitResult)
    }

    /// Every task message: a resubmit of the same input is accepted
    /// without a second computation, reads change nothing, and a job's
    /// output completes a pending task once.
    fn idempotent(_msg: &TaskMsg) -> bool {
        true
    }

    fn may_wait(msg: &TaskMsg) -> bool {
        matches!(msg, TaskMsg::WaitResult | TaskMsg::SubmitAndWait { .. })
    }

    /// A submit-and-wait kept waiting is delivered again as a result wait:
    /// its submit is done by then (the task exists with its input), and
    /// the copy of the payload is spared.
    fn kept_while_waiting(msg: &TaskMsg) -> TaskMsg {
        match msg {
            TaskMsg::SubmitAndWait { .. } => TaskMsg::WaitResult,
            other => other.clone(),
        }
    }

    fn on_activate(&mut self, ctx: &mut Context<TaskMsg>, _id: &str) {
        if let Phase::Pending {
            payload,
            iterations,
        } = &self.phase
        {
            start_job(ctx, payload.to_string(), *iterations);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_task_is_40_bytes() {
        // The pending phase's fields fit beside the completed phase's node
        // name, whose null pointer niche tells the phases apart.
        assert_eq!(std::mem::size_of::<TaskEntity>(), 40);
    }

    #[test]
    fn input_digest_separates_iterations_from_payload() {
        assert_ne!(InputDigest::of("a", 1), InputDigest::of("a", 2));
        assert_ne!(InputDigest::of("a", 1), InputDigest::of("b", 1));
        assert_eq!(InputDigest::of("a", 1), InputDigest::of("a", 1));
    }

    #[test]
    fn the_job_makes_the_input_digest_and_the_handler_keeps_it() {
        let mut ctx = Context::new("n1");
        let submit = |payload: &str| TaskMsg::Submit {
            payload: payload.into(),
            iterations: 3,
        };
        // The job's digest is the one a resubmit is checked against.
        let mut state = None;
        TaskEntity::handle(&mut ctx, "t", &mut state, submit("a"));
        for job in ctx.take_jobs() {
            TaskEntity::handle(&mut ctx, "t", &mut state, job.run());
        }
        match &state.as_ref().unwrap().phase {
            Phase::Completed { input, .. } => assert_eq!(*input, InputDigest::of("a", 3)),
            Phase::Pending { .. } => panic!("pending"),
        }
        // The handler does not hash the payload again: it keeps what the
        // output says (here an output made for another payload).
        let mut state = None;
        TaskEntity::handle(&mut ctx, "t", &mut state, submit("a"));
        ctx.take_jobs();
        let output = JobOutput::new("b", 3, ShortDigest([0; 8]), "n1");
        TaskEntity::handle(&mut ctx, "t", &mut state, TaskMsg::Computed(output));
        let task = state.unwrap();
        assert!(task.is_completed());
        assert!(task.has_input("b", 3));
        assert!(!task.has_input("a", 3));
    }

    #[test]
    fn replicas_share_the_node_name_of_completed_tasks() {
        let mut ctx = Context::new("node-share");
        let mut a = None;
        let mut b = None;
        for (id, state) in [("a", &mut a), ("b", &mut b)] {
            TaskEntity::handle(
                &mut ctx,
                id,
                state,
                TaskMsg::Submit {
                    payload: id.into(),
                    iterations: 1,
                },
            );
            for job in ctx.take_jobs() {
                TaskEntity::handle(&mut ctx, id, state, job.run());
            }
        }
        let copy = |t: &Option<TaskEntity>| -> TaskEntity {
            postcard::from_bytes(&postcard::to_allocvec(t.as_ref().unwrap()).unwrap()).unwrap()
        };
        let (ra, rb) = (copy(&a), copy(&b));
        let name = |t: &TaskEntity| match &t.phase {
            Phase::Completed { processed_by, .. } => processed_by.clone(),
            Phase::Pending { .. } => panic!("pending"),
        };
        assert!(name(&ra).shares_with(&name(&rb)));
        assert!(name(&ra).shares_with(&name(a.as_ref().unwrap())));
        assert_eq!(ra, *a.as_ref().unwrap());
    }
}
