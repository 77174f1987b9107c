//! Length-framed TCP between cluster nodes: a handshake, one outbound link
//! per peer and lane, typed channels, and ask/reply.
//!
//! - **Frames** ([`frame`]): a 4-byte big-endian length and a postcard
//!   body, at most `max_frame_bytes` long; an oversized prefix closes the
//!   connection before anything is allocated.
//! - **Handshake** ([`handshake`]): magic, version, cluster name and the
//!   sender's [`NodeId`] (name, advertised address, generation); a mismatch
//!   is refused with a reason both sides log.
//! - **Links** ([`Transport`]): dialled lazily per (peer, [`Lane`]), redialled
//!   with exponential backoff and jitter, bounded queues, batched writes.
//!   The `Control` lane has its own connection, so membership traffic never
//!   waits behind bulk frames.
//! - **Channels** ([`Channel`], [`Inbox`]): each upper layer registers a
//!   channel id and gets only its own messages, typed by its serde enum.
//! - **Ask/reply**: correlation ids, typed timeouts and failures ([`AskError`]).
//!
//! Data flows one way per connection: a reply travels on the replier's own
//! link to the asker's advertised address. See `PROTOCOL.md`.

pub mod channel;
pub mod config;
pub mod error;
pub mod frame;
pub mod handshake;
mod inbound;
mod link;
mod listener;
mod mailbox;
mod outbox;
mod stats;
mod transport;

pub use channel::{Channel, Inbox, Received, RegisterError};
pub use config::TransportConfig;
pub use error::{AskError, BindError, FrameError, HandshakeError, SendError};
pub use handshake::{Lane, NodeId, PROTOCOL_VERSION};
pub use inbound::{Inbound, Responder};
pub use stats::StatsSnapshot;
pub use transport::{LocalNode, MAX_CHANNELS, Transport};
