//! [`Event`]: what the core tells the layers above, polled with
//! `Swim::poll_event`.

use crate::swim::member::{Member, MemberId};
use crate::swim::message::RefuseReason;

/// Something the layers above must know. Events about other members
/// describe the alive set exactly: replaying `MemberUp`/`MemberDown`/
/// `MemberLeft` gives the active members of [`Swim::view`](crate::Swim::view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// We are part of a cluster: a seed accepted our join, another node
    /// joined through us, or every seed was ourselves (we formed a new
    /// cluster).
    Joined,
    /// `join_deadline_ms` passed without any seed answering. The core
    /// stops.
    JoinFailed {
        /// The seed addresses tried.
        seeds: Vec<String>,
        /// The last message dropped as invalid while joining, as
        /// `<peer>: <kind>: <error>` (for example a seed's `join-ack`
        /// carrying metadata over this node's `max_metadata_bytes`): the
        /// seeds may have answered, and this is why no answer counted.
        /// `None` when nothing was dropped.
        invalid: Option<String>,
    },
    /// A seed refused our join (the name is taken by a running member, or
    /// a newer life of it exists). The core stops.
    JoinRefused {
        /// The member that refused.
        by: MemberId,
        /// Why.
        reason: RefuseReason,
    },
    /// A member (a new life) entered the active set, or came back after
    /// being dead by refuting with a higher incarnation.
    MemberUp(Member),
    /// A member is suspected; it keeps its shards until it is `MemberDown`.
    MemberSuspect(Member),
    /// A suspected member refuted the suspicion (it was never dead).
    MemberAlive(Member),
    /// A member was declared dead, or an older life was replaced by a
    /// newer generation (then `MemberUp` of the new life follows).
    MemberDown(Member),
    /// A member left gracefully.
    MemberLeft(Member),
    /// An active member changed its metadata.
    MemberUpdated(Member),
    /// We learnt that the cluster (or part of it) declared us dead while we
    /// were running; we refuted with a higher incarnation and are alive
    /// again, but the layers above must treat every shard we held as lost
    /// (DESIGN.md, Identity).
    RejoinedAfterDeath {
        /// The member that told us (or the accuser named in its update).
        declared_by: Option<String>,
        /// Our new incarnation.
        incarnation: u64,
    },
    /// A newer life of our own name exists in the cluster: this process is
    /// an old life and must stop. The core stops.
    Superseded {
        /// The newer life.
        by: MemberId,
    },
    /// Our graceful leave finished (a member acknowledged our `Left`, or
    /// `leave_timeout_ms` passed). The core stops.
    Left,
}
