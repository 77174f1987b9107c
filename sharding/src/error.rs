//! Errors of the shard region.

use serde::{Deserialize, Serialize};

/// `Result` with [`RegionError`] as the default error.
pub type Result<T, E = RegionError> = std::result::Result<T, E>;

/// Why a message to an entity got no answer. Each variant says whether a
/// retry may help ([`RegionError::is_retriable`]); the region handle already
/// retries the retriable ones until the ask's deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RegionError {
    /// No answer before the deadline. The message may or may not have been
    /// applied.
    #[error("no answer for entity {entity:?} within {timeout_ms} ms")]
    Timeout {
        /// The entity id.
        entity: String,
        /// The deadline that passed, in ms.
        timeout_ms: u64,
    },
    /// The owner could not be reached (link failure, dial refused). Retriable.
    #[error("owner {node} of the entity is unreachable: {reason}")]
    Unreachable {
        /// The owner's name or address.
        node: String,
        /// What failed.
        reason: String,
    },
    /// The owner's mailbox is full (`[defaults.mailbox] capacity`, strategy
    /// `backpressure`), or the link's queue to it is. Nothing was applied.
    /// Retriable (since session 11): the handle backs off and sends again.
    #[error("mailbox of node {node} is full ({capacity} messages)")]
    Overloaded {
        /// The node whose mailbox is full.
        node: String,
        /// The mailbox capacity.
        capacity: usize,
    },
    /// The message was dropped by a full mailbox with strategy `drop_new`
    /// (counted and logged on the node that dropped it). Nothing was
    /// applied. Retriable (since session 11): the handle backs off (10-250
    /// ms, doubling) and sends again until the ask's deadline, so a burst
    /// that overflows the mailbox is shed and then served, not lost.
    #[error("dropped by a full mailbox on node {node} (strategy drop_new)")]
    Dropped {
        /// The node that dropped it.
        node: String,
    },
    /// No member holds shards in this node's view (it is empty: the node
    /// has not joined yet, or it has left). Retriable.
    #[error(
        "no member owns shard {shard}: this node's view holds no member (not joined yet, or left)"
    )]
    NoOwner {
        /// The shard.
        shard: u32,
    },
    /// Views disagreed for longer than the forwarding limit allows. Retriable.
    #[error("message forwarded {hops} times without reaching the owner")]
    TooManyHops {
        /// Hops taken (`[sharding] max_forward_hops`).
        hops: u8,
    },
    /// The state change was applied by the owner but neither its replicas
    /// nor, after the shard moved, the new owner confirmed holding it (or
    /// the owner reset before they did), so it is not acknowledged. Not
    /// retried automatically: the change may be applied (asks to entities
    /// should be idempotent).
    #[error("replicas of shard {shard} did not confirm: {reason}")]
    ReplicationFailed {
        /// The shard.
        shard: u32,
        /// What failed.
        reason: String,
    },
    /// The shard moved while the message waited; retry to reach the new owner.
    #[error("shard {shard} moved while the message waited")]
    Moved {
        /// The shard.
        shard: u32,
    },
    /// The peer answered something that does not decode, or refused.
    #[error("protocol error from {node}: {reason}")]
    Protocol {
        /// The peer.
        node: String,
        /// Details.
        reason: String,
    },
    /// This node's region is stopping.
    #[error("region is shut down")]
    Shutdown,
    /// The owner already keeps `limit` asks waiting for a change
    /// (`[sharding] max_parked_asks`): this one was refused, not parked.
    /// The entity's handler did run (it is what asked to wait), so any
    /// change it made stays, as for every message that may wait, which
    /// must be idempotent ([`crate::Handled::Wait`]). Retriable: the handle asks again with backoff
    /// (10-250 ms) until the deadline, so a wait polls while the owner is
    /// full and this error is what remains if it stays full.
    #[error("node {node} already keeps {limit} asks waiting ([sharding] max_parked_asks)")]
    TooManyWaiting {
        /// The owner that refused.
        node: String,
        /// The configured limit.
        limit: usize,
    },
    /// The message, encoded, is longer than a frame may be
    /// (`[transport] max_frame_bytes`): it was not sent, on this node.
    /// Sending it again cannot help. (Appended in protocol version 3; a
    /// send refused so was a [`RegionError::Protocol`] naming the peer.)
    #[error(
        "the message is {len_bytes} bytes encoded, more than a frame may carry ({max_bytes} bytes, transport.max_frame_bytes): not sent"
    )]
    TooLarge {
        /// Encoded frame length in bytes.
        len_bytes: u64,
        /// `[transport] max_frame_bytes`.
        max_bytes: u64,
    },
    /// The region's settings are invalid or its channel is taken
    /// ([`Region::start`](crate::Region::start)): nothing was started.
    /// (Appended in protocol version 3; it was a
    /// [`RegionError::Protocol`] naming this node.)
    #[error("cannot start the region: {reason}")]
    Config {
        /// The setting and what is wrong with it.
        reason: String,
    },
}

impl RegionError {
    /// True when the same message may succeed if sent again shortly
    /// (ownership or links were changing, or the owner shed load).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            RegionError::Unreachable { .. }
                | RegionError::TooManyHops { .. }
                | RegionError::Moved { .. }
                | RegionError::NoOwner { .. }
                | RegionError::TooManyWaiting { .. }
                | RegionError::Overloaded { .. }
                | RegionError::Dropped { .. }
        )
    }
}

impl From<transport::AskError> for RegionError {
    fn from(e: transport::AskError) -> Self {
        use transport::AskError as A;
        match e {
            A::Timeout { peer, timeout_ms } => RegionError::Timeout {
                entity: format!("(via {peer})"),
                timeout_ms,
            },
            A::Unreachable { peer, reason } => RegionError::Unreachable { node: peer, reason },
            A::Rejected { peer, reason } => RegionError::Unreachable { node: peer, reason },
            A::Send(transport::SendError::QueueFull { peer, capacity }) => {
                RegionError::Overloaded {
                    node: peer,
                    capacity,
                }
            }
            // The link to that peer closed (it died or left) while the
            // request was being queued: like a dial failure, retriable.
            A::Send(transport::SendError::Shutdown) => RegionError::Unreachable {
                node: String::new(),
                reason: "link closed".into(),
            },
            A::Send(transport::SendError::TooLarge { len, max }) => RegionError::TooLarge {
                len_bytes: len as u64,
                max_bytes: max as u64,
            },
            A::Send(e) => RegionError::Protocol {
                node: String::new(),
                reason: e.to_string(),
            },
            A::Decode { peer, reason } => RegionError::Protocol { node: peer, reason },
        }
    }
}
