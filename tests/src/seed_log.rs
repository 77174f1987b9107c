//! Parsers for the seed's log lines, as `node-cli` writes them (`DESIGN.md`,
//! "Outputs a user sees"). Each parser takes a whole log line (time, level,
//! node and target before the message are skipped) and returns `None` for
//! any other line.

use std::collections::BTreeMap;

/// `job-<node>-<i>: <16 hex chars> (on <node>)`: one task's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    /// The task id (`job-<node>-<i>`).
    pub task: String,
    /// The 16 lowercase hex characters.
    pub result: String,
    /// The node that processed it.
    pub on: String,
}

/// Parses a result line. The message starts at the first ` job-` (or at
/// `job-` at the line's start); the result must be 16 lowercase hex digits.
pub fn task_result(line: &str) -> Option<TaskResult> {
    let start = if line.starts_with("job-") {
        0
    } else {
        line.find(" job-")? + 1
    };
    let (task, rest) = line[start..].split_once(": ")?;
    let (result, rest) = rest.split_once(" (on ")?;
    let on = rest.strip_suffix(')')?;
    let hex = |s: &str| s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if task.contains(char::is_whitespace) || !hex(result) || on.is_empty() {
        return None;
    }
    Some(TaskResult {
        task: task.to_owned(),
        result: result.to_owned(),
        on: on.to_owned(),
    })
}

/// `<done>/<total> completed in <secs>s`: one node's tasks, from its first
/// submit to its last result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completed {
    /// Tasks with a result.
    pub done: u64,
    /// Tasks submitted.
    pub total: u64,
    /// Seconds from the first submit to the last result.
    pub secs: f64,
}

/// Parses a `<done>/<total> completed in <secs>s` line.
pub fn completed(line: &str) -> Option<Completed> {
    let (head, tail) = line.split_once(" completed in ")?;
    let counts = head.rsplit(' ').next()?;
    let (done, total) = counts.split_once('/')?;
    let secs = tail.trim_end().strip_suffix('s')?;
    Some(Completed {
        done: done.parse().ok()?,
        total: total.parse().ok()?,
        secs: secs.parse().ok()?,
    })
}

/// `Final Report (<total> tasks): <node>: <count>, ...`: the cluster's
/// tasks counted by processing node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalReport {
    /// Tasks of all nodes.
    pub total: u64,
    /// Tasks per processing node.
    pub counts: BTreeMap<String, u64>,
}

/// Parses a `Final Report (...)` line; the per-node list may be empty.
pub fn final_report(line: &str) -> Option<FinalReport> {
    let (_, rest) = line.split_once("Final Report (")?;
    let (total, rest) = rest.split_once(" tasks):")?;
    let mut counts = BTreeMap::new();
    // "none": no node processed a task.
    let rest = if rest.trim() == "none" { "" } else { rest };
    for part in rest.split(", ").map(str::trim).filter(|p| !p.is_empty()) {
        let (node, count) = part.rsplit_once(": ")?;
        counts.insert(node.to_owned(), count.parse().ok()?);
    }
    Some(FinalReport {
        total: total.parse().ok()?,
        counts,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PREFIX: &str = "2026-11-29T14:11:33.747215Z  INFO node-1 node_cli::workload: ";

    #[test]
    fn parses_a_result_line() {
        let line = format!("{PREFIX}job-node-1-0: 189ccab2f75a5570 (on node-2)");
        assert_eq!(
            task_result(&line),
            Some(TaskResult {
                task: "job-node-1-0".into(),
                result: "189ccab2f75a5570".into(),
                on: "node-2".into()
            })
        );
        assert!(task_result("job-a-1: 189ccab2f75a5570 (on b)").is_some());
        assert_eq!(task_result(&format!("{PREFIX}job-a-1: xyz (on b)")), None);
        assert_eq!(
            task_result(&format!("{PREFIX}5/5 completed in 0.01s")),
            None
        );
    }

    #[test]
    fn parses_a_completed_line() {
        let c = completed(&format!("{PREFIX}3000/3000 completed in 1.25s")).unwrap();
        assert_eq!((c.done, c.total), (3000, 3000));
        assert!((c.secs - 1.25).abs() < 1e-9);
        assert_eq!(
            completed(&format!("{PREFIX}listening on 127.0.0.1:1")),
            None
        );
    }

    #[test]
    fn parses_a_final_report() {
        let r = final_report(&format!(
            "{PREFIX}Final Report (15 tasks): node-1: 3, node-2: 7, node-3: 5"
        ))
        .unwrap();
        assert_eq!(r.total, 15);
        assert_eq!(
            r.counts.into_iter().collect::<Vec<_>>(),
            [
                ("node-1".into(), 3),
                ("node-2".into(), 7),
                ("node-3".into(), 5)
            ]
        );
        assert_eq!(
            final_report("Final Report (0 tasks): ")
                .unwrap()
                .counts
                .len(),
            0
        );
        let none = final_report(&format!("{PREFIX}Final Report (0 tasks): none")).unwrap();
        assert_eq!((none.total, none.counts.len()), (0, 0));
        assert_eq!(final_report("Final Report (x tasks): a: 1"), None);
    }
}
