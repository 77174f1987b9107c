//! The barrier entity: release once `n` distinct nodes have arrived.
//!
//! The seed's workload ends with a barrier so no node exits while others
//! still need the shards it holds. Each node sends [`BarrierMsg::Arrive`]
//! with its name and the number of nodes to wait for; the answer comes once
//! that many distinct nodes have arrived. A node arriving twice counts once.
//! A barrier stays released: a node arriving after the release is released
//! at once.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sharding::{Context, Entity, Handled};

/// Messages to a barrier (the entity id names the barrier).
///
/// A wire type (postcard): variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierMsg {
    /// Records `node`'s arrival (creating the barrier) and waits: the
    /// handler returns [`Handled::Wait`] until at least `n` distinct nodes
    /// have arrived, or the barrier was released before, then answers
    /// [`BarrierReply::Released`]. Idempotent: arriving again counts once.
    Arrive {
        /// The arriving node's name.
        node: String,
        /// How many distinct nodes release the barrier; 0 or 1 release it
        /// at once.
        n: u32,
    },
    /// Records `node`'s arrival (creating the barrier) and waits until
    /// every node in `members` has arrived (or the barrier was released
    /// before), then answers [`BarrierReply::Released`]. An arrival of a
    /// node that has since died cannot stand in for a live member that has
    /// not arrived yet, as it could with a count. Idempotent.
    ArriveAmong {
        /// The arriving node's name.
        node: String,
        /// The nodes that must have arrived (the live members).
        members: Vec<String>,
    },
}

/// Answers of a barrier.
///
/// A wire type (postcard): variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierReply {
    /// The barrier is released.
    Released {
        /// How many distinct nodes had arrived when this answer was given.
        arrived: u32,
    },
}

/// A barrier: who arrived, and whether it was released.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierEntity {
    arrived: BTreeSet<String>,
    released: bool,
}

impl BarrierEntity {
    /// The names of the nodes that arrived, in name order.
    pub fn arrived(&self) -> &BTreeSet<String> {
        &self.arrived
    }

    /// How many distinct nodes arrived (saturating at `u32::MAX`).
    pub fn arrived_count(&self) -> u32 {
        u32::try_from(self.arrived.len()).unwrap_or(u32::MAX)
    }

    /// Whether the barrier was released (final).
    pub fn is_released(&self) -> bool {
        self.released
    }
}

impl Entity for BarrierEntity {
    type Msg = BarrierMsg;
    type Reply = BarrierReply;

    const TYPE_NAME: &'static str = "barrier";

    /// Arrivals are counted by node name: arriving again counts once.
    fn idempotent(_msg: &BarrierMsg) -> bool {
        true
    }

    fn handle(
        _ctx: &mut Context<BarrierMsg>,
        _id: &str,
        state: &mut Option<Self>,
        msg: BarrierMsg,
    ) -> Handled<BarrierReply> {
        let (node, members, n) = match msg {
            BarrierMsg::Arrive { node, n } => (node, None, n),
            BarrierMsg::ArriveAmong { node, members } => (node, Some(members), 0),
        };
        let barrier = state.get_or_insert_with(BarrierEntity::default);
        // A redelivered arrival finds its node already there: no change.
        if !barrier.arrived.contains(&node) {
            barrier.arrived.insert(node);
        }
        let complete = match &members {
            Some(members) => members.iter().all(|m| barrier.arrived.contains(m)),
            None => barrier.arrived_count() >= n,
        };
        if !barrier.released && complete {
            barrier.released = true;
        }
        if barrier.released {
            Handled::Reply(BarrierReply::Released {
                arrived: barrier.arrived_count(),
            })
        } else {
            Handled::Wait
        }
    }
}
