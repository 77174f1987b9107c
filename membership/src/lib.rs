//! Cluster membership for casty: who is in the cluster, who is alive, and
//! what changed, agreed on quickly and without false alarms.
//!
//! The protocol is SWIM (Das et al., *SWIM: Scalable Weakly-consistent
//! Infection-style Process Group Membership Protocol*, 2002) with the
//! Lifeguard extensions (Dadgar et al., arXiv 1707.00788): round-robin
//! probes with indirect ping-req, suspicion refuted by incarnation
//! numbers, a suspicion timeout that scales with log N and shrinks with
//! independent confirmations, local health awareness that slows a starved
//! node down instead of letting it accuse healthy peers, dissemination
//! piggybacked on probes plus a small gossip fan-out, and periodic
//! push-pull anti-entropy that also contacts dead members and seeds, so
//! partitions and islands heal on their own.
//!
//! Identity follows `DESIGN.md`: a member is (name, advertised address,
//! generation); a newer generation replaces an older life everywhere; a
//! second process with a taken name is refused; a life declared dead that
//! is still running refutes and is told it lost its shards.
//!
//! - [`swim`]: the sans-IO core ([`Swim`]): time is an argument, outputs
//!   are polled (`poll_transmit`, `poll_event`, `poll_timeout`),
//!   randomness is a seeded RNG. Builds without the `runtime` feature.
//! - [`config`]: [`MembershipConfig`] and the mapping of the seed's
//!   `casty.toml` keys ([`SeedTimings`]).
//! - [`error`]: error enums.
//! - [`sim`]: a deterministic network simulator for many cores (tests,
//!   figures, and other crates' simulations).
//!
//! The default `runtime` feature adds the tokio and `transport`
//! dependencies for the driver that runs a [`Swim`] over the network;
//! without it (`--no-default-features`) the crate is the pure core.
//!
//! See `PROTOCOL.md` for messages, timers and invariants, and `README.md`
//! for measured figures.

pub mod config;
#[cfg(feature = "runtime")]
pub mod driver;
pub mod error;
pub mod sim;
pub mod swim;

pub use config::{MembershipConfig, SeedTimings};
#[cfg(feature = "runtime")]
pub use driver::{DriverError, MEMBERSHIP_CHANNEL, MembershipHandle, start, start_with_metadata};
pub use error::{ConfigError, InvalidMessage, MetadataError, WireError};
pub use swim::{
    Event, Member, MemberId, MemberState, Message, RefuseReason, Stats, Status, Swim, Transmit,
    Update, View,
};
