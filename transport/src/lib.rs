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
//! - **Ask/reply**: correlation ids, typed timeouts and failures
//!   ([`AskError`]); the reply comes back on the connection the ask went
//!   out on.
//!
//! On a connection the dialer sends tells and asks, the acceptor only
//! replies and rejections. The wire format, limits and invariants are in
//! `PROTOCOL.md`; how to use the crate alone, its configuration and its
//! measured speed in `README.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use transport::{Channel, Lane, LocalNode, Transport, TransportConfig};
//!
//! let node = LocalNode {
//!     cluster: "demo".into(),
//!     settings: String::new(),
//!     name: "a".into(),
//!     generation: 1,
//!     listen: "127.0.0.1:0".into(),
//!     advertise_host: "127.0.0.1".into(),
//! };
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let t = Transport::bind(node, TransportConfig::default(), shutdown).await?;
//! let (ch, mut inbox) = Channel::<String>::register(&t, 1, Lane::Control)?;
//! ch.tell("127.0.0.1:25520", &"hello".to_owned())?;
//! let answer: String = ch
//!     .ask("127.0.0.1:25520", &"ping".to_owned(), Duration::from_millis(500))
//!     .await?;
//! if let Some(r) = inbox.recv().await {
//!     if let Some(responder) = r.responder {
//!         responder.reply_msg(&format!("hi {}", r.from.name))?;
//!     }
//! }
//! # Ok(()) }
//! ```

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
mod socket;
mod stats;
pub mod testing;
mod transport;

pub use channel::{Channel, Inbox, Received, RegisterError};
pub use config::TransportConfig;
pub use error::{
    AskError, BindError, FrameError, HandshakeError, IdentityError, IdentityField, SendError,
};
pub use handshake::{
    Lane, MAX_ADDR_BYTES, MAX_NAME_BYTES, NodeId, PROTOCOL_VERSION, check_identity,
    is_combining_mark, is_unprintable,
};
pub use inbound::{Inbound, Responder};
pub use stats::StatsSnapshot;
pub use transport::{LocalNode, MAX_CHANNELS, Transport};

/// `Result` with this crate's default error, [`BindError`].
pub use error::Result;
