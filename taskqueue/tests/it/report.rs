//! The report entity: keyed by reporting node, merged on read.

use std::collections::BTreeMap;

use sharding::Handled;
use taskqueue::{FinalReport, ReportEntity, ReportMsg, ReportReply};

use crate::deliver;

fn report(node: &str, counts: &[(&str, u64)]) -> ReportMsg {
    let distribution: BTreeMap<String, u64> =
        counts.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
    ReportMsg::Report {
        node: node.to_owned(),
        total: distribution.values().sum(),
        distribution,
    }
}

fn final_report(state: &mut Option<ReportEntity>) -> FinalReport {
    match deliver("node-q", "run", state, ReportMsg::FinalReport).0 {
        Handled::Reply(ReportReply::Final(report)) => report,
        other => panic!("final report answered {other:?}"),
    }
}

#[test]
fn reports_merge_across_nodes() {
    let mut state = None;
    deliver(
        "n1",
        "run",
        &mut state,
        report("node-1", &[("node-1", 2), ("node-2", 3)]),
    );
    let (handled, _) = deliver(
        "n2",
        "run",
        &mut state,
        report("node-2", &[("node-2", 1), ("node-3", 4)]),
    );
    assert_eq!(
        handled,
        Handled::Reply(ReportReply::Recorded { nodes_reported: 2 })
    );
    let merged = final_report(&mut state);
    assert_eq!(merged.total, 10);
    assert_eq!(merged.nodes_reported, 2);
    assert_eq!(merged.reporters, ["node-1", "node-2"]);
    assert_eq!(
        merged.distribution,
        BTreeMap::from([
            ("node-1".into(), 2),
            ("node-2".into(), 4),
            ("node-3".into(), 4)
        ])
    );
    assert_eq!(
        merged.to_string(),
        "Final Report (10 tasks): node-1: 2, node-2: 4, node-3: 4"
    );
}

#[test]
fn a_node_reporting_twice_is_counted_once_with_its_latest_report() {
    let mut state = None;
    let first = report("node-1", &[("node-1", 2), ("node-2", 3)]);
    for _ in 0..3 {
        let (handled, _) = deliver("n1", "run", &mut state, first.clone());
        assert_eq!(
            handled,
            Handled::Reply(ReportReply::Recorded { nodes_reported: 1 })
        );
    }
    let merged = final_report(&mut state);
    assert_eq!((merged.total, merged.nodes_reported), (5, 1));
    // A later report from the same node replaces the earlier one.
    deliver("n1", "run", &mut state, report("node-1", &[("node-1", 5)]));
    let merged = final_report(&mut state);
    assert_eq!((merged.total, merged.nodes_reported), (5, 1));
    assert_eq!(merged.distribution, BTreeMap::from([("node-1".into(), 5)]));
}

#[test]
fn reading_an_absent_report_gives_an_empty_one_and_creates_nothing() {
    let mut state = None;
    let merged = final_report(&mut state);
    assert_eq!(merged, FinalReport::default());
    assert_eq!(merged.to_string(), "Final Report (0 tasks): ");
    assert!(state.is_none());
    let (handled, _) = deliver("n", "run", &mut state, ReportMsg::WaitForReports { n: 1 });
    assert_eq!(handled, Handled::Wait);
    assert!(state.is_none());
}

#[test]
fn waiting_for_reports_answers_once_n_distinct_nodes_reported() {
    let mut state: Option<ReportEntity> = None;
    let wait = ReportMsg::WaitForReports { n: 2 };
    let (handled, _) = deliver("n", "run", &mut state, ReportMsg::WaitForReports { n: 0 });
    assert_eq!(
        handled,
        Handled::Reply(ReportReply::Final(FinalReport::default()))
    );
    deliver("n1", "run", &mut state, report("node-1", &[("node-1", 1)]));
    assert_eq!(
        deliver("n", "run", &mut state, wait.clone()).0,
        Handled::Wait
    );
    // The same node again does not count as a second one.
    deliver("n1", "run", &mut state, report("node-1", &[("node-1", 1)]));
    assert_eq!(
        deliver("n", "run", &mut state, wait.clone()).0,
        Handled::Wait
    );
    deliver("n2", "run", &mut state, report("node-2", &[("node-1", 1)]));
    let Handled::Reply(ReportReply::Final(merged)) = deliver("n", "run", &mut state, wait).0 else {
        panic!("still waiting with two reports");
    };
    assert_eq!((merged.total, merged.nodes_reported), (2, 2));
}

#[test]
fn sums_saturate_instead_of_overflowing() {
    let mut state = None;
    deliver(
        "n1",
        "run",
        &mut state,
        report("node-1", &[("x", u64::MAX)]),
    );
    deliver("n2", "run", &mut state, report("node-2", &[("x", 5)]));
    let merged = final_report(&mut state);
    assert_eq!(merged.total, u64::MAX);
    assert_eq!(merged.distribution["x"], u64::MAX);
}

#[test]
fn a_replica_holds_the_same_reports() {
    let mut state = None;
    deliver("n1", "run", &mut state, report("node-1", &[("node-1", 2)]));
    let owner = state.unwrap();
    let copy: ReportEntity = postcard::from_bytes(&postcard::to_allocvec(&owner).unwrap()).unwrap();
    assert_eq!(copy, owner);
    assert_eq!(copy.merged(), owner.merged());
}

/// A node that reported and then died cannot stand in for a live member
/// that has not reported yet (the count-based wait released early, and two
/// survivors printed different Final Reports).
#[test]
fn waiting_for_named_members_ignores_reports_of_others() {
    let mut state: Option<ReportEntity> = None;
    let wait = ReportMsg::WaitForReportsFrom {
        members: vec!["node-1".into(), "node-2".into()],
    };
    assert_eq!(
        deliver("n", "run", &mut state, wait.clone()).0,
        Handled::Wait
    );
    assert!(state.is_none(), "waiting never creates the report");
    deliver("n3", "run", &mut state, report("node-3", &[("node-3", 1)]));
    deliver("n1", "run", &mut state, report("node-1", &[("node-1", 2)]));
    // Two reports, but node-2 (live) has not reported: still waiting.
    assert_eq!(
        deliver("n", "run", &mut state, wait.clone()).0,
        Handled::Wait
    );
    deliver("n2", "run", &mut state, report("node-2", &[("node-2", 4)]));
    let Handled::Reply(ReportReply::Final(merged)) = deliver("n", "run", &mut state, wait).0 else {
        panic!("every listed member reported");
    };
    // The dead node-3's report still counts in the totals.
    assert_eq!((merged.total, merged.nodes_reported), (7, 3));
    let empty = ReportMsg::WaitForReportsFrom { members: vec![] };
    assert!(matches!(
        deliver("n", "run", &mut state, empty).0,
        Handled::Reply(ReportReply::Final(_))
    ));
}
