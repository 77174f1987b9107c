//! Who a member is ([`MemberId`]), what we believe about it
//! ([`MemberState`], [`Member`]) and the order in which beliefs replace
//! each other.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// One life of a node: its cluster-unique name, its advertised address and
/// its generation.
///
/// - `name` is unique in the cluster and shown in logs (at most
///   [`MAX_NAME_BYTES`](crate::swim::MAX_NAME_BYTES) bytes, not empty).
/// - `addr` is the advertised `host:port` peers dial; `host` may be a DNS
///   name (at most [`MAX_ADDR_BYTES`](crate::swim::MAX_ADDR_BYTES) bytes).
/// - `generation` is fixed when the process starts and larger on each
///   restart (for example the start time in milliseconds). `(name,
///   generation)` is one *life*; a larger generation replaces every older
///   life of the same name, everywhere, and an older one never comes back.
///
/// The derived `Ord` (name, then addr, then generation) is only used to
/// keep collections deterministic; which life wins is decided by
/// [`Member::supersedes`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId {
    /// Cluster-unique node name.
    pub name: String,
    /// Advertised `host:port` (host may be a DNS name).
    pub addr: String,
    /// Number fixed at process start, larger on each restart.
    pub generation: u64,
}

impl MemberId {
    /// Builds an id from its three parts.
    pub fn new(name: impl Into<String>, addr: impl Into<String>, generation: u64) -> Self {
        Self {
            name: name.into(),
            addr: addr.into(),
            generation,
        }
    }

    /// True when `other` is the same life (same name and generation).
    pub fn same_life(&self, other: &MemberId) -> bool {
        self.name == other.name && self.generation == other.generation
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.generation)
    }
}

/// What the cluster believes about one life of a member.
///
/// Within one life and one incarnation the states are ordered
/// `Alive < Suspect < Dead < Left`: a later state overrides an earlier one
/// at the same incarnation, and only the member itself can leave a state
/// by raising its incarnation (SWIM's refutation, Das et al. 2002 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answers probes (or has not been found failing yet).
    Alive,
    /// A probe failed; the member has until the suspicion timeout to refute.
    Suspect,
    /// Declared failed; removed from shard allocation. Reaped after
    /// `reap_after_ms`.
    Dead,
    /// Left gracefully. Reaped after `reap_after_ms`.
    Left,
}

impl MemberState {
    /// True for `Alive` and `Suspect`: the member is part of the cluster
    /// (suspects keep their shards) and is probed.
    pub fn is_active(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }

    /// True for `Dead` and `Left`: the member is gone and will be reaped.
    pub fn is_gone(self) -> bool {
        !self.is_active()
    }
}

/// One member as held in a view: its life, incarnation, state and
/// metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The life this record is about.
    pub id: MemberId,
    /// Orders the states of one life; only the member itself raises it.
    pub incarnation: u64,
    /// What we believe.
    pub state: MemberState,
    /// Opaque bytes the member publishes (at most `max_metadata_bytes`);
    /// changing them raises the incarnation.
    pub metadata: Vec<u8>,
}

impl Member {
    /// Total order deciding which of two records about the same name wins:
    /// generation, then incarnation, then state (`Alive < Suspect < Dead <
    /// Left`), then the address and metadata bytes as tie-breakers so that
    /// merging is a join (max) over a total order and the result never
    /// depends on the order updates arrive in.
    pub fn precedence(&self, other: &Member) -> Ordering {
        precedence(
            (
                self.id.generation,
                self.incarnation,
                self.state,
                &self.id.addr,
                &self.metadata,
            ),
            (
                other.id.generation,
                other.incarnation,
                other.state,
                &other.id.addr,
                &other.metadata,
            ),
        )
    }

    /// True when `self` replaces `other` (strictly greater precedence).
    pub fn supersedes(&self, other: &Member) -> bool {
        self.precedence(other) == Ordering::Greater
    }

    /// True when the member is alive or suspect.
    pub fn is_active(&self) -> bool {
        self.state.is_active()
    }
}

/// The precedence key: (generation, incarnation, state, addr, metadata).
pub(crate) type PrecedenceKey<'a> = (u64, u64, MemberState, &'a String, &'a Vec<u8>);

/// Compares two precedence keys (see [`Member::precedence`]).
pub(crate) fn precedence(a: PrecedenceKey<'_>, b: PrecedenceKey<'_>) -> Ordering {
    a.cmp(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(generation: u64, incarnation: u64, state: MemberState) -> Member {
        Member {
            id: MemberId::new("a", "h:1", generation),
            incarnation,
            state,
            metadata: Vec::new(),
        }
    }

    #[test]
    fn newer_generation_wins_over_everything() {
        assert!(m(2, 0, MemberState::Alive).supersedes(&m(1, 9, MemberState::Left)));
    }

    #[test]
    fn lower_incarnation_alive_never_revives_dead() {
        assert!(!m(1, 4, MemberState::Alive).supersedes(&m(1, 5, MemberState::Dead)));
        assert!(m(1, 6, MemberState::Alive).supersedes(&m(1, 5, MemberState::Dead)));
    }

    #[test]
    fn states_order_within_an_incarnation() {
        assert!(m(1, 3, MemberState::Suspect).supersedes(&m(1, 3, MemberState::Alive)));
        assert!(m(1, 3, MemberState::Dead).supersedes(&m(1, 3, MemberState::Suspect)));
        assert!(m(1, 3, MemberState::Left).supersedes(&m(1, 3, MemberState::Dead)));
    }
}
