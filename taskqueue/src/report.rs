//! The report entity: each node's task counts, merged into the final report.
//!
//! At the end of the seed's workload every node reports how many of its
//! tasks each node processed (its distribution) and its total. Reports are
//! keyed by the sending node: a node that reports again replaces its earlier
//! report, so nothing is counted twice. The final report sums the
//! distributions and totals of all nodes that reported.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sharding::{Context, Entity, Handled};

/// Messages to a report (the entity id names the report, e.g. a run).
///
/// A wire type (postcard): variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportMsg {
    /// Records (or replaces) `node`'s report; creates the report entity.
    /// Answers [`ReportReply::Recorded`].
    Report {
        /// The reporting node's name.
        node: String,
        /// Tasks submitted by `node`, counted per processing node's name.
        distribution: BTreeMap<String, u64>,
        /// Tasks submitted by `node` that completed.
        total: u64,
    },
    /// Reads the merged report as it is now: [`ReportReply::Final`] (empty
    /// if no node reported; never creates the entity).
    FinalReport,
    /// Waits until at least `n` distinct nodes have reported, then answers
    /// [`ReportReply::Final`]; the handler returns [`Handled::Wait`] until
    /// then. Never creates the entity.
    WaitForReports {
        /// How many distinct nodes must have reported.
        n: u32,
    },
    /// Waits until every node in `members` has reported, then answers
    /// [`ReportReply::Final`] (all reports stored, including those of nodes
    /// not listed, e.g. a node that reported and then died); the handler
    /// returns [`Handled::Wait`] until then. An empty list answers at once.
    /// Unlike a count, a report from a node that has since died cannot
    /// stand in for a live member that has not reported yet. Never creates
    /// the entity.
    WaitForReportsFrom {
        /// The nodes that must have reported (the live members).
        members: Vec<String>,
    },
}

/// Answers of a report.
///
/// A wire type (postcard): variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportReply {
    /// The report is stored.
    Recorded {
        /// How many distinct nodes have reported so far.
        nodes_reported: u32,
    },
    /// The merged report.
    Final(FinalReport),
}

/// One node's report as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Tasks counted per processing node's name.
    pub distribution: BTreeMap<String, u64>,
    /// Completed tasks.
    pub total: u64,
}

/// The reports of every node merged.
///
/// `Display` gives the seed's line:
/// `Final Report (<total> tasks): <node>: <count>, ...` with nodes in name
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalReport {
    /// Tasks per processing node's name, summed over all reports
    /// (saturating).
    pub distribution: BTreeMap<String, u64>,
    /// The sum of the reported totals (saturating).
    pub total: u64,
    /// How many distinct nodes reported.
    pub nodes_reported: u32,
    /// The names of the nodes that reported, in name order.
    pub reporters: Vec<String>,
}

impl fmt::Display for FinalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Final Report ({} tasks): ", self.total)?;
        for (i, (node, count)) in self.distribution.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{node}: {count}")?;
        }
        Ok(())
    }
}

/// A report: every node's latest report, keyed by node name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntity {
    reports: BTreeMap<String, NodeReport>,
}

impl ReportEntity {
    /// The latest report of each node that reported, by node name.
    pub fn reports(&self) -> &BTreeMap<String, NodeReport> {
        &self.reports
    }

    /// How many distinct nodes reported (saturating at `u32::MAX`).
    pub fn nodes_reported(&self) -> u32 {
        u32::try_from(self.reports.len()).unwrap_or(u32::MAX)
    }

    /// The reports merged.
    pub fn merged(&self) -> FinalReport {
        let mut merged = FinalReport {
            nodes_reported: self.nodes_reported(),
            reporters: self.reports.keys().cloned().collect(),
            ..FinalReport::default()
        };
        for report in self.reports.values() {
            merged.total = merged.total.saturating_add(report.total);
            for (node, count) in &report.distribution {
                let sum = merged.distribution.entry(node.clone()).or_insert(0);
                *sum = sum.saturating_add(*count);
            }
        }
        merged
    }
}

impl Entity for ReportEntity {
    type Msg = ReportMsg;
    type Reply = ReportReply;

    const TYPE_NAME: &'static str = "report";

    /// Reports are keyed by the sending node: a report sent again replaces
    /// itself; the other messages only read.
    fn idempotent(_msg: &ReportMsg) -> bool {
        true
    }

    fn handle(
        _ctx: &mut Context<ReportMsg>,
        _id: &str,
        state: &mut Option<Self>,
        msg: ReportMsg,
    ) -> Handled<ReportReply> {
        match msg {
            ReportMsg::Report {
                node,
                distribution,
                total,
            } => {
                let report = state.get_or_insert_with(ReportEntity::default);
                report.reports.insert(
                    node,
                    NodeReport {
                        distribution,
                        total,
                    },
                );
                Handled::Reply(ReportReply::Recorded {
                    nodes_reported: report.nodes_reported(),
                })
            }
            ReportMsg::FinalReport => Handled::Reply(ReportReply::Final(
                state.as_ref().map(ReportEntity::merged).unwrap_or_default(),
            )),
            ReportMsg::WaitForReportsFrom { members } => {
                let all = members
                    .iter()
                    .all(|m| state.as_ref().is_some_and(|r| r.reports.contains_key(m)));
                if all {
                    Handled::Reply(ReportReply::Final(
                        state.as_ref().map(ReportEntity::merged).unwrap_or_default(),
                    ))
                } else {
                    Handled::Wait
                }
            }
            ReportMsg::WaitForReports { n } => {
                let reported = state.as_ref().map_or(0, ReportEntity::nodes_reported);
                if reported >= n {
                    Handled::Reply(ReportReply::Final(
                        state.as_ref().map(ReportEntity::merged).unwrap_or_default(),
                    ))
                } else {
                    Handled::Wait
                }
            }
        }
    }
}
