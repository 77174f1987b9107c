//! Errors of the task domain.
//!
//! - [`ValidationError`]: a request breaks a limit (a bad id, payload or
//!   iteration count). It is also a wire type: the task entity answers
//!   [`TaskReply::Invalid`](crate::TaskReply::Invalid) with it.
//! - [`Error`]: what a caller of the task API gets: a validation error, a
//!   conflicting resubmit, an unknown task.
//! - [`ConfigError`]: a `[tasks]` setting is out of range.

use serde::{Deserialize, Serialize};

use crate::task::TaskState;

/// A task request that breaks a limit of [`TasksConfig`](crate::TasksConfig).
///
/// Lengths are in bytes of UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ValidationError {
    /// The task id is the empty string.
    #[error("the task id is empty")]
    EmptyTaskId,
    /// The task id is longer than `tasks.max_task_id_bytes`.
    #[error(
        "the task id is {len_bytes} bytes long, more than the maximum of {max_bytes} (tasks.max_task_id_bytes)"
    )]
    TaskIdTooLong {
        /// The id's length in bytes.
        len_bytes: u64,
        /// The configured maximum in bytes.
        max_bytes: u64,
    },
    /// The payload is larger than `tasks.max_payload_bytes`.
    #[error(
        "the payload is {len_bytes} bytes long, more than the maximum of {max_bytes} (tasks.max_payload_bytes)"
    )]
    PayloadTooLarge {
        /// The payload's length in bytes.
        len_bytes: u64,
        /// The configured maximum in bytes.
        max_bytes: u64,
    },
    /// `iterations` is 0 or more than `tasks.max_iterations`.
    #[error("iterations must be from 1 to {max} (tasks.max_iterations), got {iterations}")]
    IterationsOutOfRange {
        /// The requested iteration count.
        iterations: u32,
        /// The largest count allowed.
        max: u32,
    },
}

/// An error of the task API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request breaks a limit; nothing was sent or changed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A task with this id already exists with a different payload or
    /// iteration count; it was left unchanged.
    #[error("task {id:?} already exists ({existing}) with a different payload or iteration count")]
    Conflict {
        /// The task id.
        id: String,
        /// The existing task's state.
        existing: TaskState,
    },
    /// No task with this id exists (it was never submitted). Querying does
    /// not create it.
    #[error("task {id:?} not found")]
    NotFound {
        /// The task id.
        id: String,
    },
}

/// `Result` with the task API's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A `[tasks]` setting out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tasks.{key}: {reason}")]
pub struct ConfigError {
    /// The key's name inside `[tasks]`.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}
