//! The `[tasks]` section of `casty.toml`: request limits, the worker pool's
//! size and the task API's timeouts.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ValidationError};

/// The largest `max_payload_bytes` accepted (256 MiB).
pub const PAYLOAD_BYTES_CEILING: u64 = 256 * 1024 * 1024;
/// The largest `max_task_id_bytes` accepted (64 KiB).
pub const TASK_ID_BYTES_CEILING: u64 = 64 * 1024;
/// Bytes a frame holds besides a task's id and payload, at most: the
/// frame's header, the region's envelope of a submit (entity id, hops,
/// deadline) or of a pending task's copy to a replica (shard, version,
/// stamp) and the message's own fields. A generous budget, not a
/// measure: a submit's envelope is 15 bytes, and both paths carried tasks
/// with a 16-byte budget (session 17; `tests/it/limits.rs` sends the
/// largest task a frame holds).
pub const ENVELOPE_BYTES: u64 = 4096;
/// The largest `workers` accepted.
pub const WORKERS_CEILING: u32 = 1024;

/// Settings of the task domain (`[tasks]` in `casty.toml`).
///
/// Every field has a default (see [`TasksConfig::default`]); unknown keys are
/// rejected. Call [`TasksConfig::validate`] after loading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    /// The largest payload accepted, in bytes of UTF-8. Default 1 MiB
    /// (1,048,576); from 1 to [`PAYLOAD_BYTES_CEILING`].
    pub max_payload_bytes: u64,
    /// The largest iteration count accepted; a submit must ask for 1 to this
    /// many. Default 10,000,000; at least 1.
    pub max_iterations: u32,
    /// The longest task id accepted, in bytes of UTF-8. Default 256; from 1 to
    /// [`TASK_ID_BYTES_CEILING`]. Ids may hold any UTF-8 (spaces, `:`, `/`,
    /// non-ASCII) but never be empty.
    pub max_task_id_bytes: u64,
    /// Threads of the worker pool that hashes. 0 (the default) means one per
    /// core ([`std::thread::available_parallelism`]); at most
    /// [`WORKERS_CEILING`].
    pub workers: u32,
    /// How long a submit, a get, a report or a final report waits for its
    /// answer, in milliseconds. Default 10,000; at least 1.
    pub ask_timeout_ms: u64,
    /// How long waiting for a task's result waits by default, in
    /// milliseconds. Default 60,000; at least 1.
    pub result_timeout_ms: u64,
    /// How long a barrier waits for the other nodes by default, in
    /// milliseconds. Default 300,000; at least 1.
    pub barrier_timeout_ms: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            max_payload_bytes: 1024 * 1024,
            max_iterations: 10_000_000,
            max_task_id_bytes: 256,
            workers: 0,
            ask_timeout_ms: 10_000,
            result_timeout_ms: 60_000,
            barrier_timeout_ms: 300_000,
        }
    }
}

impl TasksConfig {
    /// Checks every setting's range.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first key out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range(
            "max_payload_bytes",
            self.max_payload_bytes,
            1,
            PAYLOAD_BYTES_CEILING,
        )?;
        in_range(
            "max_iterations",
            u64::from(self.max_iterations),
            1,
            u64::from(u32::MAX),
        )?;
        in_range(
            "max_task_id_bytes",
            self.max_task_id_bytes,
            1,
            TASK_ID_BYTES_CEILING,
        )?;
        in_range(
            "workers",
            u64::from(self.workers),
            0,
            u64::from(WORKERS_CEILING),
        )?;
        in_range("ask_timeout_ms", self.ask_timeout_ms, 1, u64::MAX)?;
        in_range("result_timeout_ms", self.result_timeout_ms, 1, u64::MAX)?;
        in_range("barrier_timeout_ms", self.barrier_timeout_ms, 1, u64::MAX)?;
        Ok(())
    }

    /// Checks that the largest task fits one frame of `max_frame_bytes`
    /// (`[transport] max_frame_bytes`): a submit travels in one frame, and
    /// so does a pending task's copy to its replicas and a handoff's copy
    /// of it, so a task larger than a frame could be accepted by the
    /// checks above and then never reach its owner or replicas.
    ///
    /// # Errors
    /// [`ConfigError`] for `max_payload_bytes` when `max_payload_bytes +
    /// max_task_id_bytes + ENVELOPE_BYTES` is more than `max_frame_bytes`.
    pub fn check_frame_limit(&self, max_frame_bytes: u64) -> Result<(), ConfigError> {
        let needed = self
            .max_payload_bytes
            .saturating_add(self.max_task_id_bytes)
            .saturating_add(ENVELOPE_BYTES);
        if needed > max_frame_bytes {
            let fits = max_frame_bytes
                .saturating_sub(self.max_task_id_bytes)
                .saturating_sub(ENVELOPE_BYTES);
            // Lowering the payload limit is a remedy only while it leaves
            // a payload of at least a byte.
            let remedy = if fits >= 1 {
                format!("lower it to {fits} or raise transport.max_frame_bytes to {needed}")
            } else {
                format!("raise transport.max_frame_bytes to {needed}")
            };
            return Err(ConfigError {
                key: "max_payload_bytes",
                reason: format!(
                    "{} bytes, with tasks.max_task_id_bytes ({}) and {ENVELOPE_BYTES} bytes of envelope, is more than one frame carries (transport.max_frame_bytes = {max_frame_bytes}): a submit and a task's copies to replicas travel in one frame; {remedy}",
                    self.max_payload_bytes, self.max_task_id_bytes,
                ),
            });
        }
        Ok(())
    }

    /// The worker pool's size: `workers`, or the number of cores when it is
    /// 0 (1 if that number cannot be read).
    pub fn worker_count(&self) -> NonZeroUsize {
        // `workers` is at most WORKERS_CEILING once validated, so it fits.
        match NonZeroUsize::new(self.workers as usize) {
            Some(n) => n,
            None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// [`TasksConfig::ask_timeout_ms`] as a `Duration`.
    pub fn ask_timeout(&self) -> Duration {
        Duration::from_millis(self.ask_timeout_ms)
    }

    /// [`TasksConfig::result_timeout_ms`] as a `Duration`.
    pub fn result_timeout(&self) -> Duration {
        Duration::from_millis(self.result_timeout_ms)
    }

    /// [`TasksConfig::barrier_timeout_ms`] as a `Duration`.
    pub fn barrier_timeout(&self) -> Duration {
        Duration::from_millis(self.barrier_timeout_ms)
    }

    /// Checks a task id: not empty, at most `max_task_id_bytes` long. Any
    /// UTF-8 is allowed.
    ///
    /// # Errors
    /// [`ValidationError::EmptyTaskId`] or [`ValidationError::TaskIdTooLong`].
    pub fn validate_task_id(&self, id: &str) -> Result<(), ValidationError> {
        if id.is_empty() {
            return Err(ValidationError::EmptyTaskId);
        }
        let len_bytes = id.len() as u64;
        if len_bytes > self.max_task_id_bytes {
            return Err(ValidationError::TaskIdTooLong {
                len_bytes,
                max_bytes: self.max_task_id_bytes,
            });
        }
        Ok(())
    }

    /// Checks a submit: the id (as [`TasksConfig::validate_task_id`]), the
    /// payload's size and the iteration count, in that order. Returns the
    /// iteration count as the non-zero number the computation takes.
    ///
    /// # Errors
    /// The first [`ValidationError`] found.
    pub fn validate_submit(
        &self,
        id: &str,
        payload: &str,
        iterations: u32,
    ) -> Result<NonZeroU32, ValidationError> {
        self.validate_task_id(id)?;
        let len_bytes = payload.len() as u64;
        if len_bytes > self.max_payload_bytes {
            return Err(ValidationError::PayloadTooLarge {
                len_bytes,
                max_bytes: self.max_payload_bytes,
            });
        }
        match NonZeroU32::new(iterations) {
            Some(n) if iterations <= self.max_iterations => Ok(n),
            _ => Err(ValidationError::IterationsOutOfRange {
                iterations,
                max: self.max_iterations,
            }),
        }
    }
}

/// Checks `min <= value <= max` for the key `key`.
fn in_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else if max == u64::MAX {
        Err(ConfigError {
            key,
            reason: format!("must be at least {min}, got {value}"),
        })
    } else {
        Err(ConfigError {
            key,
            reason: format!("must be from {min} to {max}, got {value}"),
        })
    }
}
