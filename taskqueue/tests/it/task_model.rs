//! The task entity against a reference model (`proptest-state-machine`).
//!
//! Random submits (new, idempotent and conflicting; alone or with a wait for
//! the result in the same message), gets, result waits,
//! handoffs (`on_activate` on another node), replication round trips, and
//! queued jobs run or dropped in random order, over a few ids. After every
//! step the entities must match the model, and:
//! - a completed task never returns to pending, and keeps its first result;
//! - a query of an unknown id never creates a task;
//! - an idempotent resubmit starts no job.
//!
//! Failures are shrunk and stored in `proptest-regressions/`; replay with
//! `PROPTEST_CASES`/the stored seeds as usual for proptest.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use sha2::{Digest, Sha256};
use sharding::{Context, Entity, Handled, Job};
use taskqueue::{TaskEntity, TaskMsg, TaskReply, TaskState};

const IDS: [&str; 3] = ["a", "job node/1:ü", "任务"];
const PAYLOADS: [&str; 2] = ["p", "ünï"];
const NODES: [&str; 2] = ["node-a", "node-b"];

/// The result the model expects, with the `Digest` API (not the crate's
/// block loop).
fn expected_result(payload: &str, iterations: u32) -> String {
    let mut d: [u8; 32] = Sha256::digest(payload.as_bytes()).into();
    for _ in 1..iterations {
        d = Sha256::digest(d).into();
    }
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelTask {
    payload: &'static str,
    iterations: u32,
    /// `(result, processed_by)` once completed.
    done: Option<(String, &'static str)>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    tasks: BTreeMap<&'static str, ModelTask>,
    /// Queued jobs in order: (task id, node that queued it).
    jobs: Vec<(&'static str, &'static str)>,
}

#[derive(Debug, Clone)]
enum Step {
    Submit {
        id: &'static str,
        node: &'static str,
        payload: &'static str,
        iterations: u32,
        /// `TaskMsg::SubmitAndWait` instead of `TaskMsg::Submit`.
        wait: bool,
    },
    Get {
        id: &'static str,
    },
    WaitResult {
        id: &'static str,
    },
    /// The shard moves to `node`: it activates the task.
    Activate {
        id: &'static str,
        node: &'static str,
    },
    /// The task's state is copied as a replica holds it, and the copy
    /// replaces it (a promoted replica).
    Replicate {
        id: &'static str,
    },
    /// A queued job runs and its output is delivered.
    RunJob(Index),
    /// A queued job's output is discarded (its shard moved away).
    DropJob(Index),
}

struct TaskModel;

impl ReferenceStateMachine for TaskModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let id = proptest::sample::select(&IDS[..]);
        let node = proptest::sample::select(&NODES[..]);
        let base = prop_oneof![
            4 => (id.clone(), node.clone(), proptest::sample::select(&PAYLOADS[..]), 1u32..=3, any::<bool>())
                .prop_map(|(id, node, payload, iterations, wait)| Step::Submit { id, node, payload, iterations, wait }),
            2 => id.clone().prop_map(|id| Step::Get { id }),
            2 => id.clone().prop_map(|id| Step::WaitResult { id }),
            1 => (id.clone(), node).prop_map(|(id, node)| Step::Activate { id, node }),
            1 => id.prop_map(|id| Step::Replicate { id }),
        ];
        if state.jobs.is_empty() {
            base.boxed()
        } else {
            prop_oneof![
                3 => base,
                3 => any::<Index>().prop_map(Step::RunJob),
                1 => any::<Index>().prop_map(Step::DropJob),
            ]
            .boxed()
        }
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        match step {
            Step::RunJob(_) | Step::DropJob(_) => !state.jobs.is_empty(),
            _ => true,
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        match *step {
            Step::Submit {
                id,
                node,
                payload,
                iterations,
                ..
            } => {
                if !state.tasks.contains_key(id) {
                    state.tasks.insert(
                        id,
                        ModelTask {
                            payload,
                            iterations,
                            done: None,
                        },
                    );
                    state.jobs.push((id, node));
                }
            }
            Step::Get { .. } | Step::WaitResult { .. } | Step::Replicate { .. } => {}
            Step::Activate { id, node } => {
                if state.tasks.get(id).is_some_and(|t| t.done.is_none()) {
                    state.jobs.push((id, node));
                }
            }
            Step::RunJob(ix) => {
                let (id, node) = state.jobs.remove(ix.index(state.jobs.len()));
                let task = state.tasks.get_mut(id).expect("a job's task exists");
                if task.done.is_none() {
                    task.done = Some((expected_result(task.payload, task.iterations), node));
                }
            }
            Step::DropJob(ix) => {
                state.jobs.remove(ix.index(state.jobs.len()));
            }
        }
        state
    }
}

/// The system under test: the entities as a region holds them, and the
/// jobs they queued.
struct Sut {
    tasks: BTreeMap<String, TaskEntity>,
    jobs: Vec<(String, Job<TaskMsg>)>,
    /// Ids ever seen completed, with their result and node.
    ever_completed: BTreeMap<String, (String, String)>,
}

impl Sut {
    /// Delivers `msg` to `id` as the region does: take the state out, handle,
    /// put it back; queue the jobs.
    fn deliver(&mut self, node: &str, id: &str, msg: TaskMsg) -> (Handled<TaskReply>, usize) {
        let mut state = self.tasks.remove(id);
        let mut ctx = Context::new(node);
        let handled = TaskEntity::handle(&mut ctx, id, &mut state, msg);
        if let Some(task) = state {
            self.tasks.insert(id.to_owned(), task);
        }
        let jobs = ctx.take_jobs();
        let n = jobs.len();
        self.jobs
            .extend(jobs.into_iter().map(|job| (id.to_owned(), job)));
        (handled, n)
    }
}

impl StateMachineTest for TaskModel {
    type SystemUnderTest = Sut;
    type Reference = TaskModel;

    fn init_test(_: &Model) -> Sut {
        Sut {
            tasks: BTreeMap::new(),
            jobs: Vec::new(),
            ever_completed: BTreeMap::new(),
        }
    }

    fn apply(mut sut: Sut, model: &Model, step: Step) -> Sut {
        match step {
            Step::Submit {
                id,
                node,
                payload,
                iterations,
                wait,
            } => {
                let existed = sut.tasks.get(id).cloned();
                let payload_text = payload.to_owned();
                let msg = if wait {
                    TaskMsg::SubmitAndWait {
                        payload: payload_text,
                        iterations,
                    }
                } else {
                    TaskMsg::Submit {
                        payload: payload_text,
                        iterations,
                    }
                };
                let (handled, new_jobs) = sut.deliver(node, id, msg);
                let task = &model.tasks[id];
                let same = task.payload == payload && task.iterations == iterations;
                match existed {
                    None => {
                        let expected = match wait {
                            true => Handled::Wait,
                            false => Handled::Reply(TaskReply::Accepted),
                        };
                        assert_eq!(handled, expected);
                        assert_eq!(new_jobs, 1);
                    }
                    Some(before) => {
                        let expected = match (same, wait, &task.done) {
                            (false, _, _) => Handled::Reply(TaskReply::Conflict {
                                existing: before.state(),
                            }),
                            (true, false, _) => Handled::Reply(TaskReply::Accepted),
                            (true, true, None) => Handled::Wait,
                            (true, true, Some(_)) => {
                                Handled::Reply(TaskReply::Status(before.status(id)))
                            }
                        };
                        assert_eq!(handled, expected);
                        assert_eq!(new_jobs, 0, "a resubmit started a job");
                        assert_eq!(
                            sut.tasks.get(id),
                            Some(&before),
                            "a resubmit changed the task"
                        );
                    }
                }
            }
            Step::Get { id } => {
                let (handled, new_jobs) = sut.deliver("node-q", id, TaskMsg::Get);
                assert_eq!(new_jobs, 0);
                match model.tasks.get(id) {
                    None => assert_eq!(handled, Handled::Reply(TaskReply::NotFound)),
                    Some(task) => {
                        let Handled::Reply(TaskReply::Status(status)) = handled else {
                            panic!("get answered {handled:?}");
                        };
                        assert_eq!(status.id, id);
                        assert_eq!(
                            status.result.zip(status.processed_by),
                            task.done.clone().map(|(r, n)| (r, n.to_owned()))
                        );
                    }
                }
            }
            Step::WaitResult { id } => {
                let (handled, new_jobs) = sut.deliver("node-q", id, TaskMsg::WaitResult);
                assert_eq!(new_jobs, 0);
                match model.tasks.get(id) {
                    None => assert_eq!(handled, Handled::Reply(TaskReply::NotFound)),
                    Some(ModelTask { done: None, .. }) => assert_eq!(handled, Handled::Wait),
                    Some(ModelTask {
                        done: Some((result, node)),
                        ..
                    }) => {
                        let Handled::Reply(TaskReply::Status(status)) = handled else {
                            panic!("wait answered {handled:?}");
                        };
                        assert_eq!(status.status, TaskState::Completed);
                        assert_eq!(status.result.as_deref(), Some(result.as_str()));
                        assert_eq!(status.processed_by.as_deref(), Some(*node));
                    }
                }
            }
            Step::Activate { id, node } => {
                if let Some(mut task) = sut.tasks.remove(id) {
                    let mut ctx = Context::new(node);
                    task.on_activate(&mut ctx, id);
                    sut.tasks.insert(id.to_owned(), task);
                    let jobs = ctx.take_jobs();
                    sut.jobs
                        .extend(jobs.into_iter().map(|job| (id.to_owned(), job)));
                }
            }
            Step::Replicate { id } => {
                if let Some(task) = sut.tasks.get(id) {
                    let bytes = postcard::to_allocvec(task).unwrap();
                    let copy: TaskEntity = postcard::from_bytes(&bytes).unwrap();
                    assert_eq!(&copy, task);
                    sut.tasks.insert(id.to_owned(), copy);
                }
            }
            Step::RunJob(ix) => {
                let (id, job) = sut.jobs.remove(ix.index(sut.jobs.len()));
                let msg = job.run();
                let (_, new_jobs) = sut.deliver("node-any", &id, msg);
                assert_eq!(new_jobs, 0);
            }
            Step::DropJob(ix) => {
                drop(sut.jobs.remove(ix.index(sut.jobs.len())));
            }
        }
        record_completions(&mut sut);
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        // Exactly the submitted ids exist: queries created nothing.
        let ids: BTreeSet<&str> = sut.tasks.keys().map(String::as_str).collect();
        let model_ids: BTreeSet<&str> = model.tasks.keys().copied().collect();
        assert_eq!(ids, model_ids);
        // The same jobs are queued, in the same order.
        let jobs: Vec<&str> = sut.jobs.iter().map(|(id, _)| id.as_str()).collect();
        let model_jobs: Vec<&str> = model.jobs.iter().map(|(id, _)| *id).collect();
        assert_eq!(jobs, model_jobs);
        for (id, task) in &sut.tasks {
            let expected = &model.tasks[id.as_str()];
            assert!(task.has_input(expected.payload, expected.iterations));
            match &expected.done {
                None => {
                    assert_eq!(task.state(), TaskState::Pending);
                    assert_eq!(task.result(), None);
                    assert_eq!(task.processed_by(), None);
                }
                Some((result, node)) => {
                    assert_eq!(task.state(), TaskState::Completed);
                    assert_eq!(
                        task.result().map(|r| r.to_hex()).as_deref(),
                        Some(result.as_str())
                    );
                    assert_eq!(task.processed_by(), Some(*node));
                }
            }
        }
    }
}

/// Completed never returns to pending nor changes its result: checked on
/// top of the model by remembering every completion seen.
fn record_completions(sut: &mut Sut) {
    for (id, task) in &sut.tasks {
        if let (Some(result), Some(node)) = (task.result(), task.processed_by()) {
            let seen = sut
                .ever_completed
                .entry(id.clone())
                .or_insert_with(|| (result.to_hex(), node.to_owned()));
            assert_eq!(
                seen,
                &(result.to_hex(), node.to_owned()),
                "{id} changed its result"
            );
        }
    }
    for id in sut.ever_completed.keys() {
        assert!(
            sut.tasks.get(id).is_some_and(TaskEntity::is_completed),
            "{id} was completed and is not any more"
        );
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_task_entity_follows_the_model(sequential 1..60 => TaskModel);
}
