//! The seed's workload: meet the other members at a start barrier, submit
//! this node's tasks, wait for every result, report, wait for the
//! cluster's final report, meet the others at the shutdown barrier.
//!
//! "The other members" are the *workload members*: active members whose
//! membership metadata is [`WORKLOAD_MARKER`] (every node-cli node
//! publishes it from its join on), this node included. A member built on
//! the crates without the workload (a custom worker) owns shards and
//! processes tasks like any member, but node-cli neither counts it for
//! `--nodes` nor waits for it at the barriers or the final report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;

use crate::node::Node;

/// What to run.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Tasks this node submits.
    pub tasks: u32,
    /// SHA-256 iterations per task.
    pub iterations: u32,
    /// Workload members (node-cli nodes, this one included) to wait for;
    /// `None` = wait for the view to settle.
    pub nodes: Option<u32>,
    /// Settle period.
    pub settle: Duration,
    /// `[cluster.membership] join_deadline_ms`: membership gives up joining
    /// after it (`JoinFailed`); the workload waits that long and
    /// [`JOIN_GRACE`] more.
    pub join_deadline: Duration,
}

/// Beyond `join_deadline_ms`, how long the workload waits for membership to
/// report its join's outcome before it gives up itself (a guard against a
/// driver that never answers, not a second deadline).
const JOIN_GRACE: Duration = Duration::from_secs(5);

/// Most tasks one node submits in a run (`--tasks`). Ids are built a batch
/// at a time, but each task costs about 180 bytes on its owner and replica
/// once completed (`taskqueue/README.md`), so the bound keeps a typo from
/// exhausting the cluster's memory.
pub const MAX_TASKS: u32 = 10_000_000;

/// `--tasks` and `--iterations` as given (any `u64`) checked against their
/// limits, [`MAX_TASKS`] and `1..=max_iterations`, as the `u32`s the
/// workload runs with.
///
/// # Errors
/// A message naming the flag, its value and its limit.
pub fn checked_counts(
    tasks: u64,
    iterations: u64,
    max_iterations: u32,
) -> Result<(u32, u32), String> {
    let Some(checked_tasks) = u32::try_from(tasks).ok().filter(|t| *t <= MAX_TASKS) else {
        return Err(format!(
            "--tasks {tasks} is above the limit of {MAX_TASKS} per node"
        ));
    };
    let Some(checked_iterations) = u32::try_from(iterations)
        .ok()
        .filter(|n| (1..=max_iterations).contains(n))
    else {
        return Err(format!(
            "--iterations {iterations} is outside 1..=tasks.max_iterations = {max_iterations}"
        ));
    };
    Ok((checked_tasks, checked_iterations))
}

impl Workload {
    /// Checks the flags against the limits the cluster would enforce later,
    /// so a bad value is a configuration error (exit 2) before joining.
    ///
    /// # Errors
    /// A message naming the flag or key: `--tasks` above [`MAX_TASKS`],
    /// `--iterations` outside `1..=max_iterations`, `--nodes 0`,
    /// `--settle-ms` not below `barrier_timeout_ms` (the settle wait would
    /// always time out), task ids (`job-<name>-<i>`) or payloads
    /// (`doc-<id>`) longer than `max_task_id_bytes` or `max_payload_bytes`
    /// allow (every submit would be refused).
    pub fn check(&self, name: &str, tasks: &taskqueue::TasksConfig) -> Result<(), String> {
        checked_counts(
            self.tasks.into(),
            self.iterations.into(),
            tasks.max_iterations,
        )?;
        if self.nodes == Some(0) {
            return Err("--nodes must be at least 1".into());
        }
        let barrier = tasks.barrier_timeout_ms;
        if self.nodes.is_none() && self.settle.as_millis() >= u128::from(barrier) {
            return Err(format!(
                "--settle-ms {} is not below tasks.barrier_timeout_ms = {barrier}: the wait for a settled membership would always time out",
                self.settle.as_millis()
            ));
        }
        if let Some(last) = self.tasks.checked_sub(1) {
            let id = task_id(name, last);
            let payload = payload_of(&id);
            if id.len() as u64 > tasks.max_task_id_bytes {
                return Err(format!(
                    "tasks.max_task_id_bytes = {} is below this node's longest task id ({id:?}, {} bytes): every submit would be refused",
                    tasks.max_task_id_bytes,
                    id.len()
                ));
            }
            if payload.len() as u64 > tasks.max_payload_bytes {
                return Err(format!(
                    "tasks.max_payload_bytes = {} is below this node's longest payload ({payload:?}, {} bytes): every submit would be refused",
                    tasks.max_payload_bytes,
                    payload.len()
                ));
            }
        }
        Ok(())
    }
}

/// The id of this node's task `i`: `job-<name>-<i>`.
fn task_id(name: &str, i: u32) -> String {
    format!("job-{name}-{i}")
}

/// The payload of task `id`: `doc-<id>`.
fn payload_of(id: &str) -> String {
    format!("doc-{id}")
}

/// The membership metadata of a member that runs this workload: every
/// node-cli node publishes it from the start (its `Join` carries it), and
/// the workload waits only for members that carry it. The version after
/// the `/` names the workload's protocol (the report entity, the barriers
/// and their ids): a change that nodes of the previous version could not
/// meet raises it, and members of different versions then run without
/// waiting for each other. Membership's `max_metadata_bytes` must take
/// its length (`Config::validate` checks it).
pub const WORKLOAD_MARKER: &[u8] = b"node-cli-workload/1";

/// Whether `m` runs this workload: it carries [`WORKLOAD_MARKER`].
fn runs_workload(m: &membership::Member) -> bool {
    m.metadata == WORKLOAD_MARKER
}

/// The names of the workload members active in `view`, sorted: active
/// members that carry [`WORKLOAD_MARKER`], and `me` (this node) always.
fn workload_members(view: &membership::View, me: &str) -> Vec<String> {
    let mut names: Vec<String> = view
        .active()
        .filter(|m| runs_workload(m))
        .map(|m| m.id.name.clone())
        .collect();
    if !names.iter().any(|n| n == me) {
        names.push(me.to_owned());
        names.sort();
    }
    names
}

/// How often a node waiting for `--nodes` members says how many it has.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(10);

/// Report entity id shared by all nodes of a run.
const REPORT: &str = "final-report";
/// Barrier every node meets before leaving.
const SHUTDOWN_BARRIER: &str = "shutdown";
/// Barrier every node meets before submitting.
const START_BARRIER: &str = "start";
/// What the Final Report line lists when no node processed a task.
const NO_TASKS: &str = "none";

/// Most tasks per batch: submitted and awaited in one
/// `submit_many_and_wait` (fewer for long tasks, [`batch_size`]).
const BATCH: usize = 256;
/// Batches in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// SHA-256 rounds this node keeps in flight at most (the tasks of its
/// batches in flight times their iterations): 1,024 tasks of the default
/// 500 iterations. A batch is answered when its last task completes and
/// its wait is bounded by `[tasks] result_timeout_ms`, so the work queued
/// ahead of a batch's last task must fit that timeout whatever
/// `--iterations` is: all 1,024 tasks of 2,500,000 iterations in flight
/// on each of three nodes took the cluster minutes, and every node gave
/// up at 60 s (a tester, 2026-12-07).
const ITERATIONS_IN_FLIGHT: u64 = (BATCH * BATCHES_IN_FLIGHT) as u64 * 500;

/// Tasks per batch for tasks of `iterations` rounds on a node with
/// `workers` hashing threads: [`BATCH`] up to 500 iterations, then fewer
/// so the batches in flight hold at most [`ITERATIONS_IN_FLIGHT`] rounds,
/// but never fewer than keep two tasks a worker in flight (each worker
/// hashes two at once; an owner's workers, with as many per node, stay
/// busy), and one task at least.
fn batch_size(iterations: u32, workers: usize) -> usize {
    let window = ITERATIONS_IN_FLIGHT / u64::from(iterations.max(1));
    let per_batch = usize::try_from(window / BATCHES_IN_FLIGHT as u64).unwrap_or(BATCH);
    let floor = workers.saturating_mul(2).div_ceil(BATCHES_IN_FLIGHT);
    per_batch.max(floor).clamp(1, BATCH)
}

/// How far the workload got, readable while it runs (node-cli logs it when
/// a signal cuts the run short).
#[derive(Debug, Default)]
pub struct Progress {
    /// Results received.
    pub done: AtomicU64,
    /// Tasks that ended without a result (their errors are logged).
    pub failed: AtomicU64,
}

/// Runs the workload; `Ok(true)` when every task completed. Counts results
/// into `progress` as they come.
///
/// # Errors
/// Joining, reporting or the barrier failing.
pub async fn run(node: &Node, w: &Workload, progress: &Progress) -> Result<bool> {
    let cfg = node.queue.config().clone();
    node.members
        .wait_joined(w.join_deadline.saturating_add(JOIN_GRACE))
        .await
        .context("could not join the cluster")?;
    let workload_count = || workload_members(&node.members.view(), &node.name).len();
    match w.nodes {
        // `--nodes` counts workload members: a custom worker in the
        // cluster does not stand in for a node-cli node not yet joined.
        Some(n) => {
            let mut view = node.members.watch_view();
            let wait = tokio::time::timeout(
                cfg.barrier_timeout(),
                view.wait_for(|v| workload_members(v, &node.name).len() >= n as usize),
            );
            tokio::pin!(wait);
            // A node told to wait for more members than come would say
            // nothing until the barrier timeout (5 minutes by default).
            let mut progress = tokio::time::interval(WAITING_LOG_EVERY);
            progress.tick().await;
            loop {
                tokio::select! {
                    r = &mut wait => {
                        let joined = match r {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(_)) => Err(anyhow::anyhow!("membership driver stopped")),
                            Err(_) => Err(anyhow::anyhow!(
                                "timed out after {} ms",
                                cfg.barrier_timeout().as_millis()
                            )),
                        };
                        joined.with_context(|| {
                            format!(
                                "only {} of the {n} members (--nodes) joined",
                                workload_count()
                            )
                        })?;
                        break;
                    }
                    _ = progress.tick() => tracing::info!(
                        have = workload_count(),
                        need = n,
                        "waiting for members (--nodes)"
                    ),
                }
            }
        }
        // The settle watches every active member, workload or not: any
        // join or leave moves shards, and the start should come on views
        // that stopped changing.
        None => {
            node.members
                .wait_stable(w.settle, cfg.barrier_timeout())
                .await
                .context("membership did not settle")?;
        }
    }
    // Every live workload member arrives before anyone submits: nodes
    // whose views settled at different moments start together, once every
    // member's view holds the others (a node that starts while another is still
    // learning of a member sends to shards whose owners disagree, and
    // its tasks wait for the views to converge).
    let deadline = tokio::time::Instant::now() + cfg.barrier_timeout();
    // The members that started together: a report missing from one of
    // them at the end is worth saying.
    let mut started_with = Vec::new();
    with_live_members(node, deadline, |members, left| {
        started_with.clone_from(&members);
        node.queue
            .barrier_among(START_BARRIER, &node.name, members, left)
    })
    .await
    .context("start barrier")?;
    tracing::info!(members = started_with.len(), "cluster ready");

    let started = Instant::now();
    // Batches of tasks, each submitted and waited for in one call (frames
    // grouped by owner, one round trip), a few batches in flight so the
    // owners' workers always have queued work. Each batch's ids are built
    // when it is sent: building millions up front held this node's
    // runtime for seconds (its probes unanswered, so the others declared
    // it dead) and its memory for the whole run.
    let result_timeout = cfg.result_timeout();
    let total = w.tasks;
    // Hashing threads beyond the cores run no faster: the floor counts
    // the threads that can run at once (32 workers on 2 cores put 64 long
    // tasks in flight, all past the timeout; a tester, 2026-12-07).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let batch = batch_size(w.iterations, cfg.worker_count().get().min(cores));
    let batches = futures::stream::iter((0..total).step_by(batch))
        .map(|first| async move {
            // `batch` is at most `BATCH`, so it fits a u32.
            let last = first.saturating_add(batch as u32).min(total);
            let chunk: Vec<String> = (first..last).map(|i| task_id(&node.name, i)).collect();
            let tasks = chunk
                .iter()
                .map(|id| taskqueue::NewTask {
                    id: id.clone(),
                    payload: payload_of(id),
                    iterations: w.iterations,
                })
                .collect();
            let results = node.queue.submit_many_and_wait(tasks, result_timeout).await;
            chunk.into_iter().zip(results)
        })
        .buffered(BATCHES_IN_FLIGHT);
    futures::pin_mut!(batches);
    let mut failed = Vec::new();
    let mut timed_out = 0u64;
    let mut distribution: BTreeMap<String, u64> = BTreeMap::new();
    let mut done = 0u64;
    while let Some(outcomes) = batches.next().await {
        // One write per batch's lines, not one per line.
        let _lines = crate::logs::bulk();
        for (id, r) in outcomes {
            match r {
                Ok(status) => {
                    let by = status.processed_by.unwrap_or_default();
                    tracing::info!(
                        "{id}: {} (on {by})",
                        status.result.as_deref().unwrap_or("?")
                    );
                    *distribution.entry(by).or_default() += 1;
                    done += 1;
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if matches!(
                        e,
                        taskqueue::QueueError::Task(taskqueue::Error::Conflict { .. })
                    ) {
                        // Another run left it with other input (an earlier
                        // run's --iterations, under the same node name).
                        tracing::error!(task = %id, error = %e, "refused: the task exists with another input");
                    } else if matches!(
                        e,
                        taskqueue::QueueError::Region(sharding::RegionError::Timeout { .. })
                    ) {
                        timed_out += 1;
                        tracing::error!(task = %id, error = %e, "no result");
                    } else {
                        tracing::error!(task = %id, error = %e, "no result");
                    }
                    failed.push(id.clone());
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    tracing::info!(
        "{done}/{total} completed in {:.3}s",
        started.elapsed().as_secs_f64()
    );
    if timed_out > 0 {
        // Said once: the cluster may be overloaded, down a member, or
        // slower per task than the timeout allows.
        tracing::warn!(
            timed_out,
            result_timeout_ms = cfg.result_timeout_ms,
            "tasks timed out waiting for their result; if the cluster was only slow (long tasks, few cores, many nodes), raise [tasks] result_timeout_ms (CASTY_TASKS__RESULT_TIMEOUT_MS)"
        );
    }

    // Every workload member reports; the set comes from membership *at
    // that moment* and is re-read whenever the view changes, so a member
    // that dies meanwhile (declared dead, no longer active) is not waited
    // for.
    node.queue
        .report(REPORT, &node.name, distribution, done)
        .await
        .context("cannot send this node's report")?;
    let deadline = tokio::time::Instant::now() + cfg.barrier_timeout();
    let report = with_live_members(node, deadline, |members, left| {
        node.queue.final_report_from(REPORT, members, left)
    })
    .await
    .context("reports from the live members did not arrive")?;
    let parts: Vec<String> = report
        .distribution
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    // No node processed a task (every one ran `--tasks 0`): say so rather
    // than end the line at its colon.
    let parts = if parts.is_empty() {
        NO_TASKS.to_owned()
    } else {
        parts.join(", ")
    };
    tracing::info!("Final Report ({} tasks): {parts}", report.total);
    let missing: Vec<&String> = started_with
        .iter()
        .filter(|n| !report.reporters.contains(n))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            missing = ?missing,
            "members that started with this run sent no report (they left or failed before reporting): the tasks they submitted are not in this Final Report"
        );
    }
    let stats = node.queue.task_region().stats();
    tracing::info!(
        delivered = stats.delivered,
        forwarded = stats.forwarded,
        dropped = stats.dropped,
        replication_batches = stats.replication_batches,
        replicated_records = stats.replicated_records,
        "task region counters"
    );
    if let Some(cpu) = crate::cpu::ThreadCpu::now() {
        tracing::info!(
            pool_ms = format_args!("{:.1}", cpu.pool_ms),
            runtime_ms = format_args!("{:.1}", cpu.runtime_ms),
            other_ms = format_args!("{:.1}", cpu.other_ms),
            "CPU time so far by thread kind"
        );
    }

    let deadline = tokio::time::Instant::now() + cfg.barrier_timeout();
    with_live_members(node, deadline, |members, left| {
        node.queue
            .barrier_among(SHUTDOWN_BARRIER, &node.name, members, left)
    })
    .await
    .context("shutdown barrier")?;
    if !failed.is_empty() {
        // Each one was logged by id as it failed; the summary names the
        // first few, not thousands of ids on one line.
        let shown = &failed[..failed.len().min(FAILED_LISTED)];
        if failed.len() > shown.len() {
            tracing::error!(
                count = failed.len(),
                first = ?shown,
                "tasks without a result: refused or timed out ({} more not listed here; each is logged above)",
                failed.len() - shown.len()
            );
        } else {
            tracing::error!(
                count = failed.len(),
                tasks = ?shown,
                "tasks without a result: refused or timed out (each is logged above)"
            );
        }
        bail!(
            "{} tasks without a result (refused or timed out)",
            failed.len()
        );
    }
    Ok(true)
}

/// Failed tasks the closing summary names by id at most.
const FAILED_LISTED: usize = 20;

/// Runs `ask(members, time_left)` with `members` = the names of the
/// workload members active in the view now ([`workload_members`]: those
/// carrying [`WORKLOAD_MARKER`], this node included), until it answers or
/// `deadline` passes. When that set changes meanwhile (a member declared
/// dead, gone, or joined), the ask is dropped and sent again with the new
/// set; members without the marker never hold it. Waiting on named
/// members, not a count, keeps a member that reported (or arrived) and
/// then died from standing in for a live one that has not. Report and
/// barrier asks are idempotent, so a repeated ask only parks once more at
/// the owner, until its own deadline at most.
///
/// # Errors
/// The last ask's error (a timeout at `deadline`).
async fn with_live_members<T, F, Fut>(
    node: &Node,
    deadline: tokio::time::Instant,
    mut ask: F,
) -> Result<T, taskqueue::QueueError>
where
    F: FnMut(Vec<String>, Duration) -> Fut,
    Fut: std::future::Future<Output = Result<T, taskqueue::QueueError>>,
{
    let mut view = node.members.watch_view();
    let live = |v: &membership::View| workload_members(v, &node.name);
    loop {
        let members = live(&view.borrow_and_update());
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let pending = ask(members.clone(), left.max(Duration::from_millis(1)));
        futures::pin_mut!(pending);
        loop {
            tokio::select! {
                r = &mut pending => return r,
                changed = view.changed() => {
                    if changed.is_err() {
                        // Membership stopped: this set stays to the end.
                        return pending.await;
                    }
                    if live(&view.borrow_and_update()) != members {
                        tracing::info!(was = members.len(), "active members changed while waiting; asking again");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use membership::{Member, MemberId, MemberState, View};

    use super::*;

    #[test]
    fn long_tasks_go_in_smaller_batches() {
        // Up to 500 iterations, full batches (the default run and the
        // benchmark are unchanged).
        assert_eq!(batch_size(1, 2), BATCH);
        assert_eq!(batch_size(500, 2), BATCH);
        // Above, the batches in flight hold at most the same rounds, while
        // a batch holds one task or more (up to 128,000 iterations).
        assert_eq!(batch_size(1_000, 2), 128);
        assert_eq!(batch_size(5_000, 2), 25);
        for iterations in [501, 1_000, 5_000, 100_000, 128_000] {
            let rounds =
                (batch_size(iterations, 2) * BATCHES_IN_FLIGHT) as u64 * u64::from(iterations);
            assert!(rounds <= ITERATIONS_IN_FLIGHT, "{iterations}: {rounds}");
        }
        // One task per batch at least, whatever the task's length.
        for iterations in [128_001, 512_000, 2_500_000, u32::MAX] {
            assert_eq!(batch_size(iterations, 1), 1, "{iterations}");
            assert_eq!(batch_size(iterations, 2), 1, "{iterations}");
        }
        // Two tasks a worker in flight at least: 16 workers, 32 tasks.
        assert_eq!(batch_size(2_500_000, 16), 8);
        assert_eq!(batch_size(5_000, 16), 25);
        assert_eq!(batch_size(1, 1024), BATCH);
        // 0 is refused before (`--iterations` is 1 or more), and safe here.
        assert_eq!(batch_size(0, 2), BATCH);
    }

    fn member(name: &str, state: MemberState, metadata: &[u8]) -> (String, Member) {
        let member = Member {
            id: MemberId::new(name, format!("{name}:1"), 1),
            incarnation: 0,
            state,
            metadata: metadata.to_vec(),
        };
        (name.to_owned(), member)
    }

    #[test]
    fn workload_members_are_the_active_members_with_the_marker_and_this_node() {
        let view = View {
            local: "me".into(),
            members: BTreeMap::from([
                member("me", MemberState::Alive, WORKLOAD_MARKER),
                member("b", MemberState::Suspect, WORKLOAD_MARKER),
                member("a", MemberState::Alive, WORKLOAD_MARKER),
                member("worker", MemberState::Alive, b""),
                member("tagged", MemberState::Alive, b"role=other"),
                member("old", MemberState::Alive, b"node-cli-workload/0"),
                member("dead", MemberState::Dead, WORKLOAD_MARKER),
                member("gone", MemberState::Left, WORKLOAD_MARKER),
            ]),
        };
        assert_eq!(workload_members(&view, "me"), ["a", "b", "me"]);
        // This node counts even before its own record shows (an empty view).
        let empty = View {
            local: "me".into(),
            members: BTreeMap::new(),
        };
        assert_eq!(workload_members(&empty, "me"), ["me"]);
    }
}
