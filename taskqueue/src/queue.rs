//! [`TaskQueue`]: the task API over three sharding regions (tasks, reports,
//! barriers).

use std::collections::BTreeMap;
use std::time::Duration;

use sharding::{HandOff, MemberMap, Region, RegionConfig, RegionError, RegionHandle, WorkerPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::Transport;

use crate::barrier::{BarrierEntity, BarrierMsg, BarrierReply};
use crate::config::TasksConfig;
use crate::error::{ConfigError, Error, ValidationError};
use crate::report::{FinalReport, ReportEntity, ReportMsg, ReportReply};
use crate::task::{TaskEntity, TaskMsg, TaskReply, TaskStatus};

/// Transport channel of the task region (the same on every node).
pub const TASK_CHANNEL: u8 = 10;
/// Transport channel of the report region.
pub const REPORT_CHANNEL: u8 = 11;
/// Transport channel of the barrier region.
pub const BARRIER_CHANNEL: u8 = 12;

/// An error of the [`TaskQueue`] API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The task layer's answer: invalid input, conflict, not found.
    #[error(transparent)]
    Task(#[from] Error),
    /// Routing or delivery failed: timeout, unreachable owner, overload.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The entity answered something this API does not expect (a version
    /// mismatch between nodes).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A `[tasks]` setting is invalid, or does not fit the transport's
    /// frames ([`TaskQueue::start`]): nothing was started.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
}

/// One task for [`TaskQueue::submit_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// The task id (any UTF-8, at most `[tasks] max_task_id_bytes`).
    pub id: String,
    /// The text hashed (at most `[tasks] max_payload_bytes`).
    pub payload: String,
    /// SHA-256 applications, `1..=[tasks] max_iterations`.
    pub iterations: u32,
}

/// A cloneable handle to the task queue on this node: submit from here,
/// processed on the shard's owner, queried from anywhere.
#[derive(Clone, Debug)]
pub struct TaskQueue {
    tasks: RegionHandle<TaskEntity>,
    reports: RegionHandle<ReportEntity>,
    barriers: RegionHandle<BarrierEntity>,
    config: TasksConfig,
}

impl TaskQueue {
    /// Starts the task, report and barrier regions on `transport`, following
    /// `view` (the members that hold shards), with a worker pool of
    /// `[tasks] workers` threads for the hashing.
    ///
    /// # Errors
    /// [`QueueError::Region`] ([`RegionError::Config`]) when a region
    /// cannot start (invalid `region`, channel taken), [`QueueError::Config`]
    /// for an invalid `config` or one whose largest task does not fit the
    /// transport's frames ([`TasksConfig::check_frame_limit`]).
    pub fn start(
        transport: &Transport,
        region: RegionConfig,
        config: TasksConfig,
        view: watch::Receiver<MemberMap>,
        shutdown: CancellationToken,
    ) -> Result<TaskQueue, QueueError> {
        config.validate()?;
        config.check_frame_limit(transport.config().max_frame_bytes as u64)?;
        let pool = WorkerPool::new(config.worker_count().get(), 0);
        let tasks = Region::start::<TaskEntity>(
            transport,
            TASK_CHANNEL,
            region.clone(),
            view.clone(),
            pool.clone(),
            shutdown.clone(),
        )?;
        let reports = Region::start::<ReportEntity>(
            transport,
            REPORT_CHANNEL,
            region.clone(),
            view.clone(),
            pool.clone(),
            shutdown.clone(),
        )?;
        let barriers = Region::start::<BarrierEntity>(
            transport,
            BARRIER_CHANNEL,
            region,
            view,
            pool,
            shutdown,
        )?;
        Ok(TaskQueue {
            tasks,
            reports,
            barriers,
            config,
        })
    }

    /// The `[tasks]` settings in force.
    pub fn config(&self) -> &TasksConfig {
        &self.config
    }

    /// The task region (routing, counters).
    pub fn task_region(&self) -> &RegionHandle<TaskEntity> {
        &self.tasks
    }

    /// Submits task `id`: SHA-256 applied `iterations` times to `payload`.
    /// Returns once the task is held by its shard's owner and replicas.
    /// Idempotent: the same id with the same input again is accepted and
    /// computed once.
    ///
    /// # Errors
    /// [`Error::Invalid`] past a `[tasks]` limit (nothing is sent),
    /// [`Error::Conflict`] when `id` exists with another input,
    /// [`QueueError::Region`] on timeout (`[tasks] ask_timeout_ms`) or overload.
    pub async fn submit(&self, id: &str, payload: &str, iterations: u32) -> Result<(), QueueError> {
        self.config
            .validate_submit(id, payload, iterations)
            .map_err(Error::Invalid)?;
        let msg = TaskMsg::Submit {
            payload: payload.to_owned(),
            iterations,
        };
        let reply = self.tasks.ask(id, msg, self.config.ask_timeout()).await?;
        match reply.into_result(id)? {
            None => Ok(()),
            Some(_) => Err(QueueError::Unexpected("status answered to a submit".into())),
        }
    }

    /// Submits many tasks at once, as [`Self::submit`] would one by one,
    /// and returns each one's outcome in the same order. Tasks are sent in
    /// frames grouped by owner ([`RegionHandle::ask_batch`]), which costs
    /// a fraction of the CPU of separate submits per task; all within
    /// `[tasks] ask_timeout_ms`.
    ///
    /// # Errors
    /// Per task, those of [`Self::submit`]; a task past a limit fails
    /// alone (the others are sent).
    pub async fn submit_many(&self, tasks: Vec<NewTask>) -> Vec<Result<(), QueueError>> {
        let items = tasks.into_iter().map(|t| {
            let checked = self.config.validate_submit(&t.id, &t.payload, t.iterations);
            let msg = TaskMsg::Submit {
                payload: t.payload,
                iterations: t.iterations,
            };
            (t.id, checked.map(|_| msg))
        });
        self.ask_checked(items, self.config.ask_timeout(), |id, reply| {
            match reply.into_result(id)? {
                None => Ok(()),
                Some(_) => Err(QueueError::Unexpected("status answered to a submit".into())),
            }
        })
        .await
    }

    /// Submits task `id` as [`Self::submit`] does and waits for its result
    /// as [`Self::wait_result`] does, in one message to the owner: one
    /// round trip instead of two (in process, with no round trip to save,
    /// the CPU per task is about the same as the two calls': `cargo bench -p
    /// taskqueue --bench queue`). With `[sharding] replicate_delay_ms` the
    /// pending task is usually not replicated at all: its completion
    /// replaces it. Returns the completed task, at most `timeout` after the
    /// call.
    ///
    /// # Errors
    /// [`Error::Invalid`] past a `[tasks]` limit (nothing is sent),
    /// [`Error::Conflict`] when `id` exists with another input,
    /// [`RegionError::Timeout`] when no result is held by the deadline (the
    /// task may exist then: calling again with the same input is safe and
    /// computes it once).
    pub async fn submit_and_wait(
        &self,
        id: &str,
        payload: &str,
        iterations: u32,
        timeout: Duration,
    ) -> Result<TaskStatus, QueueError> {
        self.config
            .validate_submit(id, payload, iterations)
            .map_err(Error::Invalid)?;
        let msg = TaskMsg::SubmitAndWait {
            payload: payload.to_owned(),
            iterations,
        };
        let reply = self.tasks.ask(id, msg, timeout).await?;
        status(id, reply)
    }

    /// [`Self::submit_and_wait`] for many tasks: sent in frames grouped by
    /// owner ([`RegionHandle::ask_batch`]), each task's outcome returned in
    /// the same order, all within `timeout`. A frame is answered when its
    /// last task completes, so batch tasks that should finish together.
    ///
    /// # Errors
    /// Per task, those of [`Self::submit_and_wait`]; a task past a limit
    /// fails alone (the others are sent).
    pub async fn submit_many_and_wait(
        &self,
        tasks: Vec<NewTask>,
        timeout: Duration,
    ) -> Vec<Result<TaskStatus, QueueError>> {
        let items = tasks.into_iter().map(|t| {
            let checked = self.config.validate_submit(&t.id, &t.payload, t.iterations);
            let msg = TaskMsg::SubmitAndWait {
                payload: t.payload,
                iterations: t.iterations,
            };
            (t.id, checked.map(|_| msg))
        });
        self.ask_checked(items, timeout, status).await
    }

    /// Waits for many tasks as [`Self::wait_result`] does for one, and
    /// returns each one's outcome in the same order, all within `timeout`.
    /// Sent in frames grouped by owner ([`RegionHandle::ask_batch`]); a
    /// frame is answered when its last task completes, so wait for tasks
    /// submitted together (for the first results as soon as they exist,
    /// wait for fewer at a time).
    ///
    /// # Errors
    /// Per task, those of [`Self::wait_result`].
    pub async fn wait_results(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> Vec<Result<TaskStatus, QueueError>> {
        let items = ids.iter().map(|id| {
            let checked = self.config.validate_task_id(id);
            (id.clone(), checked.map(|()| TaskMsg::WaitResult))
        });
        self.ask_checked(items, timeout, status).await
    }

    /// Asks the task region every item whose check passed, in one
    /// [`RegionHandle::ask_batch`], and returns each item's outcome in
    /// input order: `answer(id, reply)` for a sent item, the check's
    /// error ([`Error::Invalid`]) for an item not sent.
    async fn ask_checked<T>(
        &self,
        items: impl Iterator<Item = (String, Result<TaskMsg, ValidationError>)>,
        timeout: Duration,
        answer: impl Fn(&str, TaskReply) -> Result<T, QueueError>,
    ) -> Vec<Result<T, QueueError>> {
        let mut out: Vec<Option<Result<T, QueueError>>> = Vec::new();
        let mut sent = Vec::new();
        let mut batch = Vec::new();
        for (id, checked) in items {
            match checked {
                Ok(msg) => {
                    out.push(None);
                    sent.push(id.clone());
                    batch.push((id, msg));
                }
                Err(e) => out.push(Some(Err(Error::Invalid(e).into()))),
            }
        }
        let answers = self.tasks.ask_batch(batch, timeout).await;
        let mut answers = sent.iter().zip(answers).map(|(id, r)| answer(id, r?));
        out.into_iter()
            .map(|o| {
                o.or_else(|| answers.next())
                    .unwrap_or_else(|| Err(QueueError::Unexpected("a task got no answer".into())))
            })
            .collect()
    }

    /// Reads task `id` now (pending or completed). Never creates it.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an id never submitted, [`QueueError::Region`]
    /// on timeout (`[tasks] ask_timeout_ms`).
    pub async fn get(&self, id: &str) -> Result<TaskStatus, QueueError> {
        self.config.validate_task_id(id).map_err(Error::Invalid)?;
        let reply = self
            .tasks
            .ask(id, TaskMsg::Get, self.config.ask_timeout())
            .await?;
        status(id, reply)
    }

    /// Waits until task `id` is completed and returns it, at most `timeout`;
    /// answers as soon as the result exists (no polling interval).
    ///
    /// # Errors
    /// [`Error::NotFound`] at once for an id never submitted,
    /// [`RegionError::Timeout`] when it is still pending at the deadline.
    pub async fn wait_result(&self, id: &str, timeout: Duration) -> Result<TaskStatus, QueueError> {
        self.config.validate_task_id(id).map_err(Error::Invalid)?;
        let reply = self.tasks.ask(id, TaskMsg::WaitResult, timeout).await?;
        status(id, reply)
    }

    /// Records `node`'s report in report `run` (replacing an earlier one of
    /// the same node). Returns how many nodes have reported.
    ///
    /// # Errors
    /// [`QueueError::Region`] on timeout.
    pub async fn report(
        &self,
        run: &str,
        node: &str,
        distribution: BTreeMap<String, u64>,
        total: u64,
    ) -> Result<u32, QueueError> {
        let msg = ReportMsg::Report {
            node: node.to_owned(),
            distribution,
            total,
        };
        match self
            .reports
            .ask(run, msg, self.config.ask_timeout())
            .await?
        {
            ReportReply::Recorded { nodes_reported } => Ok(nodes_reported),
            other => Err(QueueError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Waits until `n` distinct nodes have reported in `run`, at most
    /// `timeout`, and returns the merged report.
    ///
    /// # Errors
    /// [`RegionError::Timeout`] when fewer reported by the deadline.
    pub async fn final_report(
        &self,
        run: &str,
        n: u32,
        timeout: Duration,
    ) -> Result<FinalReport, QueueError> {
        match self
            .reports
            .ask(run, ReportMsg::WaitForReports { n }, timeout)
            .await?
        {
            ReportReply::Final(report) => Ok(report),
            other => Err(QueueError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Waits until every node in `members` (the live members) has reported
    /// in `run`, at most `timeout`, and returns the merged report of every
    /// node that reported (a node that reported and then died included).
    ///
    /// # Errors
    /// [`RegionError::Timeout`] when a member had not reported by the
    /// deadline.
    pub async fn final_report_from(
        &self,
        run: &str,
        members: Vec<String>,
        timeout: Duration,
    ) -> Result<FinalReport, QueueError> {
        match self
            .reports
            .ask(run, ReportMsg::WaitForReportsFrom { members }, timeout)
            .await?
        {
            ReportReply::Final(report) => Ok(report),
            other => Err(QueueError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Arrives at barrier `name` as `node` and waits until every node in
    /// `members` (the live members) has arrived, at most `timeout`. Returns
    /// the arrival count.
    ///
    /// # Errors
    /// [`RegionError::Timeout`] when a member had not arrived by the
    /// deadline.
    pub async fn barrier_among(
        &self,
        name: &str,
        node: &str,
        members: Vec<String>,
        timeout: Duration,
    ) -> Result<u32, QueueError> {
        let msg = BarrierMsg::ArriveAmong {
            node: node.to_owned(),
            members,
        };
        match self.barriers.ask(name, msg, timeout).await? {
            BarrierReply::Released { arrived } => Ok(arrived),
        }
    }

    /// Arrives at barrier `name` as `node` and waits until `n` distinct
    /// nodes have arrived (at most `timeout`). Returns the arrival count.
    ///
    /// # Errors
    /// [`RegionError::Timeout`] when fewer arrived by the deadline.
    pub async fn barrier(
        &self,
        name: &str,
        node: &str,
        n: u32,
        timeout: Duration,
    ) -> Result<u32, QueueError> {
        let msg = BarrierMsg::Arrive {
            node: node.to_owned(),
            n,
        };
        match self.barriers.ask(name, msg, timeout).await? {
            BarrierReply::Released { arrived } => Ok(arrived),
        }
    }

    /// Graceful leave: hands every shard of the three regions to its next
    /// owner. Returns what the three handed off together (shards, and
    /// copies their next holders did not confirm), or `None` if any region
    /// did not finish within `timeout`.
    pub async fn hand_off_all(&self, timeout: Duration) -> Option<HandOff> {
        let (a, b, c) = tokio::join!(
            self.tasks.hand_off_all(timeout),
            self.reports.hand_off_all(timeout),
            self.barriers.hand_off_all(timeout)
        );
        Some(a? + b? + c?)
    }

    /// This node's life was declared dead while it ran: drop all shard
    /// state and fetch current state before serving again.
    ///
    /// # Errors
    /// [`RegionError::Shutdown`] when the regions have stopped.
    pub async fn reset(&self) -> Result<(), QueueError> {
        self.tasks.reset().await?;
        self.reports.reset().await?;
        self.barriers.reset().await?;
        Ok(())
    }
}

fn status(id: &str, reply: TaskReply) -> Result<TaskStatus, QueueError> {
    match reply.into_result(id)? {
        Some(status) => Ok(status),
        None => Err(QueueError::Unexpected(
            "accepted answered to a query".into(),
        )),
    }
}
