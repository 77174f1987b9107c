//! The task domain of the casty queue: the entities a sharding region runs.
//!
//! - [`TaskEntity`] (`"task"`): a task, `pending -> completed`, computed once
//!   on the node that owns its shard. Messages [`TaskMsg`], answers
//!   [`TaskReply`].
//! - [`ReportEntity`] (`"report"`): each node's task counts, merged into the
//!   final report. Messages [`ReportMsg`], answers [`ReportReply`].
//! - [`BarrierEntity`] (`"barrier"`): releases once `n` distinct nodes have
//!   arrived. Messages [`BarrierMsg`], answers [`BarrierReply`].
//! - [`work`]: the computation, SHA-256 iterated over its own digest.
//! - [`TasksConfig`]: the `[tasks]` section (limits, workers, timeouts).
//!
//! The entities are plain state machines over [`sharding::Entity`]: they do
//! no I/O, and hashing goes to the region's worker pool through
//! [`sharding::Context::run_blocking`], so tests drive them directly.

pub mod barrier;
pub mod config;
pub mod error;
mod node_name;
pub mod queue;
pub mod report;
pub mod task;
pub mod work;

pub use barrier::{BarrierEntity, BarrierMsg, BarrierReply};
pub use config::TasksConfig;
pub use error::{ConfigError, Error, Result, ValidationError};
pub use queue::{BARRIER_CHANNEL, NewTask, QueueError, REPORT_CHANNEL, TASK_CHANNEL, TaskQueue};
pub use report::{FinalReport, NodeReport, ReportEntity, ReportMsg, ReportReply};
pub use task::{JobOutput, TaskEntity, TaskMsg, TaskReply, TaskState, TaskStatus};
pub use work::ShortDigest;
