//! The task entity's scenarios, one behaviour per test.

use sharding::{Context, Entity, Handled, Job};
use taskqueue::{Error, TaskEntity, TaskMsg, TaskReply, TaskState, TaskStatus, ValidationError};

use crate::deliver;

/// "hello" hashed twice (from `vectors.tsv`).
const HELLO_2: &str = "9595c9df90075148";

fn submit(payload: &str, iterations: u32) -> TaskMsg {
    TaskMsg::Submit {
        payload: payload.to_owned(),
        iterations,
    }
}

/// Runs `jobs` and delivers their outputs to `id` on `node`.
fn run(node: &str, id: &str, state: &mut Option<TaskEntity>, jobs: Vec<Job<TaskMsg>>) {
    for job in jobs {
        let (_, more) = deliver(node, id, state, job.run());
        assert!(more.is_empty(), "a result started another job");
    }
}

fn completed(id: &str, result: &str, node: &str) -> TaskStatus {
    TaskStatus {
        id: id.to_owned(),
        status: TaskState::Completed,
        result: Some(result.to_owned()),
        processed_by: Some(node.to_owned()),
    }
}

#[test]
fn submit_creates_a_pending_task_and_one_job_that_completes_it() {
    let mut state = None;
    let (handled, jobs) = deliver("node-1", "t", &mut state, submit("hello", 2));
    assert_eq!(handled, Handled::Reply(TaskReply::Accepted));
    assert_eq!(jobs.len(), 1);
    let (handled, _) = deliver("node-1", "t", &mut state, TaskMsg::Get);
    assert_eq!(
        handled,
        Handled::Reply(TaskReply::Status(TaskStatus {
            id: "t".into(),
            status: TaskState::Pending,
            result: None,
            processed_by: None,
        }))
    );
    run("node-1", "t", &mut state, jobs);
    let (handled, _) = deliver("node-1", "t", &mut state, TaskMsg::Get);
    assert_eq!(
        handled,
        Handled::Reply(TaskReply::Status(completed("t", HELLO_2, "node-1")))
    );
}

#[test]
fn processed_by_names_the_node_that_queued_the_job() {
    let mut state = None;
    let (_, jobs) = deliver("owner-7", "t", &mut state, submit("hello", 2));
    // The output is delivered by whatever context; the job carries the name.
    run("someone-else", "t", &mut state, jobs);
    assert_eq!(state.unwrap().processed_by(), Some("owner-7"));
}

#[test]
fn resubmitting_the_same_input_is_idempotent_before_and_after_completion() {
    let mut state = None;
    let (_, jobs) = deliver("node-1", "t", &mut state, submit("hello", 2));
    let (handled, again) = deliver("node-1", "t", &mut state, submit("hello", 2));
    assert_eq!(handled, Handled::Reply(TaskReply::Accepted));
    assert!(again.is_empty(), "a pending resubmit started a second job");
    run("node-1", "t", &mut state, jobs);
    let before = state.clone();
    let (handled, again) = deliver("node-2", "t", &mut state, submit("hello", 2));
    assert_eq!(handled, Handled::Reply(TaskReply::Accepted));
    assert!(again.is_empty(), "a completed resubmit started a job");
    assert_eq!(state, before);
}

#[test]
fn resubmitting_different_input_is_a_conflict_that_changes_nothing() {
    let mut state = None;
    let (_, jobs) = deliver("node-1", "t", &mut state, submit("hello", 2));
    for msg in [submit("hello", 3), submit("hellO", 2)] {
        let before = state.clone();
        let (handled, again) = deliver("node-1", "t", &mut state, msg);
        assert_eq!(
            handled,
            Handled::Reply(TaskReply::Conflict {
                existing: TaskState::Pending
            })
        );
        assert!(again.is_empty());
        assert_eq!(state, before);
    }
    run("node-1", "t", &mut state, jobs);
    for msg in [submit("hello", 3), submit("hellO", 2), submit("", 2)] {
        let before = state.clone();
        let (handled, again) = deliver("node-1", "t", &mut state, msg);
        assert_eq!(
            handled,
            Handled::Reply(TaskReply::Conflict {
                existing: TaskState::Completed
            })
        );
        assert!(again.is_empty());
        assert_eq!(state, before);
    }
}

#[test]
fn queries_of_an_unknown_id_answer_not_found_and_create_nothing() {
    for msg in [
        TaskMsg::Get,
        TaskMsg::WaitResult,
        TaskMsg::Completed {
            result: HELLO_2.into(),
            processed_by: "node-1".into(),
        },
    ] {
        let mut state: Option<TaskEntity> = None;
        let (handled, jobs) = deliver("node-1", "typo", &mut state, msg);
        assert_eq!(handled, Handled::Reply(TaskReply::NotFound));
        assert!(state.is_none());
        assert!(jobs.is_empty());
    }
}

#[test]
fn wait_result_waits_while_pending_and_answers_once_completed() {
    let mut state = None;
    let (_, jobs) = deliver("node-1", "t", &mut state, submit("hello", 2));
    let (handled, _) = deliver("node-1", "t", &mut state, TaskMsg::WaitResult);
    assert_eq!(handled, Handled::Wait);
    run("node-1", "t", &mut state, jobs);
    let (handled, _) = deliver("node-1", "t", &mut state, TaskMsg::WaitResult);
    assert_eq!(
        handled,
        Handled::Reply(TaskReply::Status(completed("t", HELLO_2, "node-1")))
    );
}

#[test]
fn the_first_result_wins_and_a_completed_task_never_goes_back() {
    let mut state: Option<TaskEntity> = None;
    let (_, first) = deliver("node-1", "t", &mut state, submit("hello", 2));
    // The shard moves to node-2 while node-1's job runs: node-2 restarts it.
    let mut ctx = Context::new("node-2");
    state.as_mut().unwrap().on_activate(&mut ctx, "t");
    let second = ctx.take_jobs();
    assert_eq!(second.len(), 1);
    run("node-2", "t", &mut state, second);
    let done = state.clone();
    assert_eq!(done.as_ref().unwrap().processed_by(), Some("node-2"));
    // node-1's late output changes nothing.
    run("node-1", "t", &mut state, first);
    assert_eq!(state, done);
    // Neither does a forged or malformed one, nor a reactivation.
    for msg in [
        TaskMsg::Completed {
            result: "0000000000000000".into(),
            processed_by: "node-9".into(),
        },
        TaskMsg::Completed {
            result: "not hex".into(),
            processed_by: "node-9".into(),
        },
    ] {
        let (handled, _) = deliver("node-1", "t", &mut state, msg);
        assert_eq!(handled, Handled::Reply(TaskReply::Accepted));
        assert_eq!(state, done);
    }
    let mut ctx = Context::new("node-3");
    state.as_mut().unwrap().on_activate(&mut ctx, "t");
    assert!(
        ctx.take_jobs().is_empty(),
        "a completed task restarted its job"
    );
    assert_eq!(state, done);
}

#[test]
fn a_malformed_result_leaves_the_task_pending() {
    let mut state: Option<TaskEntity> = None;
    let (_, jobs) = deliver("node-1", "t", &mut state, submit("hello", 2));
    for bad in [
        "",
        "9595c9df9007514",
        "9595c9df900751488",
        "zz95c9df90075148",
    ] {
        let (handled, _) = deliver(
            "node-1",
            "t",
            &mut state,
            TaskMsg::Completed {
                result: bad.into(),
                processed_by: "node-1".into(),
            },
        );
        assert_eq!(handled, Handled::Reply(TaskReply::Accepted));
        let task = state.as_ref().unwrap();
        assert_eq!(task.state(), TaskState::Pending, "{bad:?} was taken");
    }
    run("node-1", "t", &mut state, jobs);
    assert!(state.unwrap().is_completed());
}

#[test]
fn malformed_submits_are_rejected_without_creating_a_task() {
    for (id, msg, err) in [
        ("", submit("p", 1), ValidationError::EmptyTaskId),
        (
            "t",
            submit("p", 0),
            ValidationError::IterationsOutOfRange {
                iterations: 0,
                max: u32::MAX,
            },
        ),
    ] {
        let mut state: Option<TaskEntity> = None;
        let (handled, jobs) = deliver("node-1", id, &mut state, msg);
        assert_eq!(handled, Handled::Reply(TaskReply::Invalid(err)));
        assert!(state.is_none());
        assert!(jobs.is_empty());
    }
}

#[test]
fn task_ids_may_hold_any_utf8() {
    for id in ["job node 1", "a:b/c", "tâche-ü", "任务/7", "🦀", " "] {
        let mut state = None;
        let (_, jobs) = deliver("node-1", id, &mut state, submit("hello", 2));
        run("node-1", id, &mut state, jobs);
        let (handled, _) = deliver("node-1", id, &mut state, TaskMsg::Get);
        assert_eq!(
            handled,
            Handled::Reply(TaskReply::Status(completed(id, HELLO_2, "node-1")))
        );
    }
}

#[test]
fn a_promoted_replica_restarts_a_pending_task_and_keeps_a_completed_one() {
    let mut owner = None;
    let (_, jobs) = deliver("node-1", "t", &mut owner, submit("hello", 2));
    // The replica holds a copy made with the replication format.
    let bytes = postcard::to_allocvec(owner.as_ref().unwrap()).unwrap();
    let mut replica: TaskEntity = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(Some(&replica), owner.as_ref());
    drop(jobs); // node-1 fails before its job ends
    let mut ctx = Context::new("node-2");
    replica.on_activate(&mut ctx, "t");
    let mut replica = Some(replica);
    run("node-2", "t", &mut replica, ctx.take_jobs());
    let completed_copy: TaskEntity =
        postcard::from_bytes(&postcard::to_allocvec(replica.as_ref().unwrap()).unwrap()).unwrap();
    assert_eq!(Some(&completed_copy), replica.as_ref());
    assert_eq!(completed_copy.result().unwrap().to_hex(), HELLO_2);
    assert_eq!(completed_copy.processed_by(), Some("node-2"));
    // A completed copy still tells a resubmit from a conflict.
    assert!(completed_copy.has_input("hello", 2));
    assert!(!completed_copy.has_input("hello", 1));
    assert!(!completed_copy.has_input("hell", 2));
}

#[test]
fn replies_map_to_the_task_api_result() {
    assert_eq!(TaskReply::Accepted.into_result("t"), Ok(None));
    let status = completed("t", HELLO_2, "n");
    assert_eq!(
        TaskReply::Status(status.clone()).into_result("t"),
        Ok(Some(status))
    );
    assert_eq!(
        TaskReply::NotFound.into_result("t"),
        Err(Error::NotFound { id: "t".into() })
    );
    assert_eq!(
        TaskReply::Conflict {
            existing: TaskState::Pending
        }
        .into_result("t"),
        Err(Error::Conflict {
            id: "t".into(),
            existing: TaskState::Pending
        })
    );
    assert_eq!(
        TaskReply::Invalid(ValidationError::EmptyTaskId).into_result(""),
        Err(Error::Invalid(ValidationError::EmptyTaskId))
    );
    let conflict = Error::Conflict {
        id: "t".into(),
        existing: TaskState::Completed,
    };
    assert_eq!(
        conflict.to_string(),
        "task \"t\" already exists (completed) with a different payload or iteration count"
    );
}

#[test]
fn entity_type_names_are_distinct() {
    let names = [
        TaskEntity::TYPE_NAME,
        taskqueue::ReportEntity::TYPE_NAME,
        taskqueue::BarrierEntity::TYPE_NAME,
    ];
    assert_eq!(names, ["task", "report", "barrier"]);
}

/// The message the region keeps for a waiting submit-and-wait (a result
/// wait) answers what the submit-and-wait itself would, once delivered
/// again: pending, then the completed task.
#[test]
fn a_submit_and_wait_kept_waiting_answers_as_itself() {
    let mut state: Option<TaskEntity> = None;
    let msg = TaskMsg::SubmitAndWait {
        payload: "hello".into(),
        iterations: 2,
    };
    let kept = TaskEntity::kept_while_waiting(&msg);
    assert_eq!(kept, TaskMsg::WaitResult);
    let (handled, jobs) = deliver("node-1", "t", &mut state, msg.clone());
    assert_eq!(handled, Handled::Wait);
    assert_eq!(jobs.len(), 1);
    let (again, none) = deliver("node-1", "t", &mut state, kept.clone());
    assert_eq!(again, Handled::Wait);
    assert!(none.is_empty());
    run("node-1", "t", &mut state, jobs);
    let (from_kept, _) = deliver("node-1", "t", &mut state, kept);
    let (from_msg, more) = deliver("node-1", "t", &mut state, msg);
    assert!(more.is_empty(), "a second submit-and-wait started a job");
    assert_eq!(from_kept, from_msg);
    assert_eq!(
        from_kept,
        Handled::Reply(TaskReply::Status(completed("t", HELLO_2, "node-1")))
    );
}
