//! Messages between the regions of one entity type on different nodes.
//! One channel per entity type; postcard bodies; append-only variants.

use serde::{Deserialize, Serialize};

use crate::entity::Entity;
use crate::error::RegionError;
use crate::shard::stable_hash;

/// An entity's state with its version (incremented by the owner on every
/// change; the higher version wins wherever two copies meet, except over
/// a state a reset restored: [`Record::restored_from`]; at equal versions
/// of two owner lives, the copy held stays unless the record comes from
/// the shard's owner in the receiver's view) and the stamp of the owner
/// life that numbered that version. A record without a state is a
/// *tombstone*: the entity was removed at `version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Record<E: Entity> {
    /// The entity id.
    pub id: String,
    /// The owner's change counter for this entity.
    pub version: u64,
    /// Which owner life numbered `version` ([`life_stamp`] of its name and
    /// generation). Copies keep it; only a node that numbers a new version
    /// puts its own. Two owners at once (split views) can number the same
    /// version by different histories: the stamp tells them apart.
    pub stamp: u64,
    /// The state; `None` when a handler removed the entity at `version`
    /// (a tombstone: it removes older copies wherever it is merged, and a
    /// copy at or below its version does not bring the entity back).
    pub state: Option<E>,
    /// `Some(confirmed)` when a reset numbered this record: the node put
    /// the entity back to its state confirmed at version `confirmed`,
    /// under a version above every one it issued for it (its changes above
    /// `confirmed` were not confirmed by every replica, and their asks are
    /// sent again). Such a record wins a merge over the versions its own
    /// life numbered below it (the reverted changes) and over copies at or
    /// below `confirmed`, but not over a change another owner life made
    /// above `confirmed` (the new owner applying the retried ask), whatever
    /// the two versions. `None` for every other record: a change, or a
    /// copy of one.
    pub restored_from: Option<u64>,
}

/// The stamp of one life of a node (name and generation), as
/// [`Record::stamp`] carries it: [`stable_hash`] of the name's UTF-8
/// bytes, a `0xff` byte (never part of UTF-8, so no two lives encode
/// alike) and the generation's 8 bytes, little-endian.
///
/// Two lives share a stamp only by a 64-bit hash collision.
pub fn life_stamp(name: &str, generation: u64) -> u64 {
    let mut bytes = Vec::with_capacity(name.len() + 9);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0xff);
    bytes.extend_from_slice(&generation.to_le_bytes());
    stable_hash(&bytes)
}

/// Requests between regions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Wire<E: Entity> {
    /// A message for entity `id` (an ask when it comes with a responder).
    Deliver {
        /// The entity id.
        id: String,
        /// The message.
        msg: E::Msg,
        /// Times it was forwarded so far.
        hops: u8,
        /// The asker's remaining patience, in ms (for parked asks).
        timeout_ms: u64,
    },
    /// The owner's new state of one entity, or its removal (a tombstone),
    /// for a replica (ask; answered `Ack` once the replica holds it, or a
    /// later version; `Error(ReplicationFailed)` when it keeps another
    /// owner life's record at that version, which it does when its view
    /// does not make the sender the owner).
    Replicate {
        /// The shard.
        shard: u32,
        /// The record.
        record: Record<E>,
    },
    /// A new owner asks for a shard's data, one page after `after` (ask;
    /// answered `Page`). The first page (`after: None`) from a node that
    /// owns the shard makes it hand the shard off: it stops applying
    /// messages for it and forwards them to the asker.
    Fetch {
        /// The shard.
        shard: u32,
        /// The last entity id of the previous page.
        after: Option<String>,
    },
    /// The owner's full data of a shard, one page, for a new replica
    /// (ask; answered `Ack`). Tombstones included. Also a node's push of
    /// its copy to the shard's owner. From the owner in the receiver's
    /// view, its records win ties of two lives' equal versions, as its
    /// replication does.
    Sync {
        /// The shard.
        shard: u32,
        /// The page.
        records: Vec<Record<E>>,
    },
    /// The owner's new states (or tombstones) of several entities, for a
    /// replica (ask; answered `Ack`, or `Error(ReplicationFailed)` when
    /// the replica does not hold one of them, as for `Replicate`): what
    /// `Replicate` does, batched per burst of input.
    ReplicateBatch {
        /// `(shard, record)` pairs.
        records: Vec<(u32, Record<E>)>,
    },
    /// Messages for several entities in one frame: each item is handled
    /// exactly as a `Deliver` of its own (routed, forwarded, parked,
    /// replicated before its answer), in item order. An ask with a
    /// responder is answered once with `Replies`, one answer per item in
    /// the same order, when the last item has its answer; a tell otherwise.
    /// At most [`MAX_BATCH_ITEMS`] items (more is answered `Error`).
    DeliverBatch {
        /// `(entity id, message)` pairs.
        items: Vec<(String, E::Msg)>,
        /// Times the items were forwarded so far.
        hops: u8,
        /// The asker's remaining patience, in ms (for parked items).
        timeout_ms: u64,
    },
    /// An old owner's entities whose changes it applied but whose answers
    /// still waited for its replicas when it lost the shard, for the owner
    /// its view names now (ask; answered `Holding`, one [`Holding`] per
    /// record). Merged as a `Sync` is; the answer says whether each change
    /// is now held, so the old owner can answer its asks without having
    /// them sent again (which would apply them twice).
    HandOver {
        /// The shard.
        shard: u32,
        /// The entities' states, each at the version the change produced
        /// (a tombstone for a removal).
        records: Vec<Record<E>>,
    },
}

/// Whether the receiver of a [`Wire::HandOver`] holds one record's change,
/// after merging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Holding {
    /// It holds this very record (it had it, or took it): the same
    /// version, numbered by the same owner life (the same stamp), with the
    /// same encoded state. The change is here; its asks can be answered.
    Held,
    /// It holds another record at the same version: numbered by another
    /// owner life (two owners at once, split views), or another state.
    /// Either way a history without this change (a copy that has the
    /// change is this record or a higher version), so sending its ask
    /// again applies it once.
    Other,
    /// It holds a newer version, which may or may not include the change.
    Newer,
}

/// The most items one `DeliverBatch` frame may carry (the region refuses
/// more with [`RegionError::Protocol`]); senders split larger batches.
pub const MAX_BATCH_ITEMS: usize = 4096;

/// Answers to [`Wire`] asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum WireReply<E: Entity> {
    /// The entity's answer to a `Deliver`.
    Reply(E::Reply),
    /// `Replicate` or `Sync` applied.
    Ack,
    /// One page of a `Fetch`; `more` when another page follows.
    Page {
        /// Records (tombstones included) in the holder's page order
        /// (`EntityMap::after`).
        records: Vec<Record<E>>,
        /// Whether to fetch again after the last id.
        more: bool,
    },
    /// The request failed.
    Error(RegionError),
    /// The answers to a `DeliverBatch`, one per item, in item order.
    Replies(Vec<Result<E::Reply, RegionError>>),
    /// The answer to a `HandOver`, one per record, in record order.
    Holding(Vec<Holding>),
}
