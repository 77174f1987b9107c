//! The computation against test vectors computed outside this crate (see
//! the header of `vectors.tsv`).

use std::num::NonZeroU32;

use sharding::Handled;
use taskqueue::{TaskEntity, TaskMsg, TaskReply, TaskState, work};

use crate::deliver;

/// One row of `vectors.tsv`.
struct Vector {
    payload: String,
    iterations: u32,
    result: String,
}

fn vectors() -> Vec<Vector> {
    let rows: Vec<Vector> = include_str!("vectors.tsv")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "malformed row {line:?}");
            Vector {
                payload: fields[0].to_owned(),
                iterations: fields[1].parse().unwrap(),
                result: fields[2].to_owned(),
            }
        })
        .collect();
    assert!(rows.len() >= 16, "vectors.tsv lost rows: {}", rows.len());
    rows
}

#[test]
fn compute_matches_every_vector() {
    for v in vectors() {
        let n = NonZeroU32::new(v.iterations).unwrap();
        let got = work::compute(v.payload.as_bytes(), n);
        assert_eq!(
            got.to_hex(),
            v.result,
            "payload {:?} x{}",
            v.payload,
            v.iterations
        );
        assert_eq!(got.to_string(), v.result);
        // The short result is the head of the full final digest.
        let full = work::iterated_sha256(v.payload.as_bytes(), n);
        assert_eq!(full[..8], got.0);
    }
}

#[test]
fn a_task_computes_every_vector() {
    for v in vectors().into_iter().filter(|v| v.iterations <= 10_000) {
        let mut state = None;
        let id = format!("vector {:?}", v.payload);
        let (handled, jobs) = deliver::<TaskEntity>(
            "node-v",
            &id,
            &mut state,
            TaskMsg::Submit {
                payload: v.payload.clone(),
                iterations: v.iterations,
            },
        );
        assert_eq!(handled, Handled::Reply(TaskReply::Accepted));
        assert_eq!(jobs.len(), 1);
        for job in jobs {
            deliver("node-v", &id, &mut state, job.run());
        }
        let task = state.unwrap();
        assert_eq!(task.state(), TaskState::Completed);
        assert_eq!(task.result().unwrap().to_hex(), v.result);
        assert_eq!(task.processed_by(), Some("node-v"));
    }
}
