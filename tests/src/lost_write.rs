//! The lost-write checker: nothing acknowledged is lost, nothing is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sha2::{Digest, Sha256};

/// The expected result of a task, computed independently of `taskqueue`:
/// SHA-256 of `payload`, then SHA-256 of the previous 32-byte digest,
/// `iterations` times in all, shown as the first 16 lowercase hex
/// characters (8 bytes) of the final digest: the seed's work function.
///
/// Uses the plain `sha2` `Digest` API (FIPS 180-4), one call per round.
///
/// # Panics
/// When `iterations` is 0 (a task always hashes at least once).
pub fn expected_result(payload: &[u8], iterations: u32) -> String {
    assert!(iterations >= 1, "a task hashes its payload at least once");
    let mut digest = Sha256::digest(payload);
    for _ in 1..iterations {
        digest = Sha256::digest(digest);
    }
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What the checker knows about one task.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Submission {
    payload: Vec<u8>,
    iterations: u32,
    /// `true` once acknowledged; attempted-only tasks may lack a result.
    acknowledged: bool,
}

/// One broken guarantee found by [`LostWriteChecker::violations`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged task has no observed result: a lost write.
    Missing {
        /// The task id.
        task: String,
    },
    /// A task was observed with more than one distinct result.
    Conflicting {
        /// The task id.
        task: String,
        /// Every distinct value observed, sorted.
        values: Vec<String>,
    },
    /// A task's one observed result differs from the independent value.
    Wrong {
        /// The task id.
        task: String,
        /// The observed value.
        got: String,
        /// The value [`expected_result`] computed.
        expected: String,
    },
    /// A result was observed for a task never recorded as submitted (the
    /// test missed a submission, or results are attributed to wrong ids).
    Unknown {
        /// The task id.
        task: String,
        /// Every distinct value observed, sorted.
        values: Vec<String>,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Missing { task } => write!(f, "{task}: acknowledged, no result (lost)"),
            Violation::Conflicting { task, values } => {
                write!(f, "{task}: several results {values:?}")
            }
            Violation::Wrong {
                task,
                got,
                expected,
            } => write!(f, "{task}: result {got}, expected {expected}"),
            Violation::Unknown { task, values } => {
                write!(f, "{task}: results {values:?} for a task never submitted")
            }
        }
    }
}

/// Records submissions and observed results per task id and checks, at the
/// end of a run, that:
///
/// - every acknowledged task has exactly one distinct observed result
///   (observing the same value several times, e.g. from several nodes, is
///   fine), and none is missing;
/// - that result equals [`expected_result`] of the task's payload and
///   iterations, computed here, independently of the code under test;
/// - a task only attempted (its submission was not acknowledged, e.g. it
///   timed out) may have no result, but one it has must be right;
/// - no result belongs to a task never recorded.
///
/// Expected values are computed lazily in [`LostWriteChecker::violations`].
#[derive(Debug, Clone, Default)]
pub struct LostWriteChecker {
    submissions: BTreeMap<String, Submission>,
    observed: BTreeMap<String, BTreeSet<String>>,
}

impl LostWriteChecker {
    /// An empty checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the submission of `task` (`payload`, `iterations`) was
    /// acknowledged: from now on its result must exist and be right.
    /// Recording it again (e.g. after [`LostWriteChecker::attempted`])
    /// replaces the payload and iterations.
    pub fn acknowledged(&mut self, task: &str, payload: &[u8], iterations: u32) {
        self.record(task, payload, iterations, true);
    }

    /// Records a submission that was sent but not acknowledged (timed out,
    /// connection lost): it may or may not have been applied. Does not
    /// downgrade a task already acknowledged.
    pub fn attempted(&mut self, task: &str, payload: &[u8], iterations: u32) {
        let acknowledged = self.submissions.get(task).is_some_and(|s| s.acknowledged);
        self.record(task, payload, iterations, acknowledged);
    }

    fn record(&mut self, task: &str, payload: &[u8], iterations: u32, acknowledged: bool) {
        self.submissions.insert(
            task.to_owned(),
            Submission {
                payload: payload.to_vec(),
                iterations,
                acknowledged,
            },
        );
    }

    /// Records that `result` was observed for `task` (a query reply, a log
    /// line), in any order relative to the submission records.
    pub fn observed(&mut self, task: &str, result: &str) {
        self.observed
            .entry(task.to_owned())
            .or_default()
            .insert(result.to_owned());
    }

    /// Tasks recorded as acknowledged.
    pub fn acknowledged_count(&self) -> usize {
        self.submissions.values().filter(|s| s.acknowledged).count()
    }

    /// Tasks with at least one observed result.
    pub fn observed_count(&self) -> usize {
        self.observed.len()
    }

    /// Every broken guarantee, sorted by task id (empty when all is well).
    ///
    /// # Panics
    /// When a recorded submission has 0 iterations (see [`expected_result`]).
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for (task, sub) in &self.submissions {
            let values = self.observed.get(task);
            match values.map(|v| v.iter().collect::<Vec<_>>()).as_deref() {
                None | Some([]) => {
                    if sub.acknowledged {
                        out.push(Violation::Missing { task: task.clone() });
                    }
                }
                Some([got]) => {
                    let expected = expected_result(&sub.payload, sub.iterations);
                    if **got != expected {
                        out.push(Violation::Wrong {
                            task: task.clone(),
                            got: (*got).clone(),
                            expected,
                        });
                    }
                }
                Some(many) => out.push(Violation::Conflicting {
                    task: task.clone(),
                    values: many.iter().map(|v| (*v).clone()).collect(),
                }),
            }
        }
        for (task, values) in &self.observed {
            if !self.submissions.contains_key(task) {
                out.push(Violation::Unknown {
                    task: task.clone(),
                    values: values.iter().cloned().collect(),
                });
            }
        }
        out.sort_by(|a, b| task_of(a).cmp(task_of(b)));
        out
    }

    /// Panics listing the violations (the first 20, and their count) if
    /// there are any.
    ///
    /// # Panics
    /// When [`LostWriteChecker::violations`] is not empty.
    pub fn assert_no_lost_writes(&self) {
        let v = self.violations();
        if v.is_empty() {
            return;
        }
        let shown: Vec<String> = v.iter().take(20).map(|v| format!("  {v}")).collect();
        panic!(
            "{} violations over {} acknowledged tasks ({} observed):\n{}",
            v.len(),
            self.acknowledged_count(),
            self.observed_count(),
            shown.join("\n")
        );
    }
}

fn task_of(v: &Violation) -> &str {
    match v {
        Violation::Missing { task }
        | Violation::Conflicting { task, .. }
        | Violation::Wrong { task, .. }
        | Violation::Unknown { task, .. } => task,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn expected_result_matches_known_digests() {
        // SHA-256("abc") = ba7816bf8f01cfea... (FIPS 180-4 example).
        assert_eq!(expected_result(b"abc", 1), "ba7816bf8f01cfea");
        // SHA-256 of those 32 bytes, by the same definition.
        let once = Sha256::digest(b"abc");
        let twice = Sha256::digest(once);
        let hex: String = twice[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(expected_result(b"abc", 2), hex);
        // A result a three-node run of node-cli logged.
        assert_eq!(
            expected_result(b"doc-job-node-27520-0", 500),
            "189ccab2f75a5570"
        );
    }

    #[test]
    fn a_clean_run_has_no_violations() {
        let mut c = LostWriteChecker::new();
        c.acknowledged("t1", b"doc-t1", 3);
        c.observed("t1", &expected_result(b"doc-t1", 3));
        c.observed("t1", &expected_result(b"doc-t1", 3));
        c.attempted("t2", b"doc-t2", 3);
        assert_eq!(c.violations(), []);
        c.assert_no_lost_writes();
    }

    #[test]
    fn finds_every_kind_of_violation() {
        let mut c = LostWriteChecker::new();
        c.acknowledged("lost", b"p", 1);
        c.acknowledged("twice", b"p", 1);
        c.observed("twice", "aaaaaaaaaaaaaaaa");
        c.observed("twice", "bbbbbbbbbbbbbbbb");
        c.acknowledged("wrong", b"p", 1);
        c.observed("wrong", "0000000000000000");
        c.observed("stray", "1111111111111111");
        c.attempted("maybe", b"p", 1);
        c.observed("maybe", "2222222222222222");
        let v = c.violations();
        assert_eq!(v.len(), 5, "{v:?}");
        assert!(matches!(&v[0], Violation::Missing { task } if task == "lost"));
        assert!(matches!(&v[1], Violation::Wrong { task, .. } if task == "maybe"));
        assert!(matches!(&v[2], Violation::Unknown { task, .. } if task == "stray"));
        assert!(
            matches!(&v[3], Violation::Conflicting { task, values } if task == "twice" && values.len() == 2)
        );
        assert!(
            matches!(&v[4], Violation::Wrong { task, expected, .. } if task == "wrong" && *expected == expected_result(b"p", 1))
        );
    }

    #[test]
    fn attempted_does_not_downgrade_an_acknowledgement() {
        let mut c = LostWriteChecker::new();
        c.acknowledged("t", b"p", 1);
        c.attempted("t", b"p", 1);
        assert_eq!(c.violations(), [Violation::Missing { task: "t".into() }]);
    }

    #[test]
    #[should_panic(expected = "acknowledged, no result")]
    fn assert_panics_on_a_lost_write() {
        let mut c = LostWriteChecker::new();
        c.acknowledged("t", b"p", 1);
        c.assert_no_lost_writes();
    }
}
