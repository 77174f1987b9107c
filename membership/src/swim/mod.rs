//! The sans-IO SWIM core: no tokio, no sockets, no clock, no thread RNG.
//!
//! - [`member`]: identity ([`MemberId`]: name, address, generation),
//!   [`MemberState`], [`Member`] and the precedence that merges beliefs.
//! - [`message`]: the wire enum [`Message`], [`Update`], bounds.
//! - [`event`]: [`Event`]s for the layers above.
//! - [`view`]: the [`View`] snapshot.
//! - [`protocol`]: the state machine [`Swim`].
//! - private: `probe` (round-robin targets), `suspicion` (Lifeguard's
//!   dynamic timeout), `health` (Lifeguard's local health multiplier),
//!   `broadcast` (the piggyback queue).

mod broadcast;
pub mod event;
mod health;
pub mod member;
pub mod message;
mod probe;
pub mod protocol;
mod suspicion;
pub mod view;

pub use event::Event;
pub use member::{Member, MemberId, MemberState};
pub use message::{
    MAX_ADDR_BYTES, MAX_INCARNATION, MAX_NAME_BYTES, MAX_SYNC_BUCKETS, MAX_UPDATES_PER_MESSAGE,
    Message, RefuseReason, Transmit, Update, WireLimits,
};
pub use protocol::{Stats, Status, Swim};
pub use view::{SYNC_BUCKETS, View};
