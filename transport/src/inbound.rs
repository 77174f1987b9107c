//! What arrives: [`Inbound`] frames and the [`Responder`] that answers an ask.

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::error::SendError;
use crate::frame::{Header, Kind};
use crate::handshake::{Lane, NodeId};
use crate::transport::{Inner, Outgoing};

/// One accepted inbound connection, shared by the frames read from it.
pub(crate) struct ConnInfo {
    pub inner: Arc<Inner>,
    pub peer: NodeId,
    pub lane: Lane,
    /// Cancelled to close the connection (e.g. a body that does not decode).
    pub closer: CancellationToken,
}

/// A tell or an ask received on a registered channel.
pub struct Inbound {
    pub(crate) conn: Arc<ConnInfo>,
    pub(crate) channel: u8,
    pub(crate) corr: Option<u64>,
    pub(crate) body: Bytes,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("from", &self.conn.peer)
            .field("channel", &self.channel)
            .field("corr", &self.corr)
            .field("len", &self.body.len())
            .finish()
    }
}

impl Inbound {
    /// The sender, as its handshake presented it.
    pub fn from(&self) -> &NodeId {
        &self.conn.peer
    }

    /// The lane it came on.
    pub fn lane(&self) -> Lane {
        self.conn.lane
    }

    /// The message bytes (the channel's own encoding).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// True for an ask (a [`Responder`] comes with [`Inbound::into_parts`]).
    pub fn is_ask(&self) -> bool {
        self.corr.is_some()
    }

    /// Closes the connection this frame came on, e.g. because its body did
    /// not decode. Frames already queued from it are still delivered.
    pub fn close_connection(&self, reason: &str) {
        crate::stats::bump(&self.conn.inner.stats.decode_errors);
        tracing::warn!(peer = %self.conn.peer, channel = self.channel, reason, "closing connection: undecodable message");
        self.conn.closer.cancel();
    }

    /// The body, and a responder when it is an ask.
    pub fn into_parts(self) -> (Bytes, Option<Responder>) {
        let responder = self.corr.map(|corr| Responder {
            conn: Arc::clone(&self.conn),
            channel: self.channel,
            corr,
            answered: false,
        });
        (self.body, responder)
    }
}

/// Answers one ask. Dropping it unanswered rejects the ask, so the asker
/// learns at once instead of waiting for its timeout.
pub struct Responder {
    conn: Arc<ConnInfo>,
    channel: u8,
    corr: u64,
    answered: bool,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("to", &self.conn.peer)
            .field("corr", &self.corr)
            .finish()
    }
}

impl Responder {
    /// Who asked.
    pub fn asker(&self) -> &NodeId {
        &self.conn.peer
    }

    /// Sends the reply over this node's link to the asker.
    ///
    /// # Errors
    /// [`SendError`] when it cannot be queued; the asker then times out.
    pub fn reply(mut self, body: Bytes) -> Result<(), SendError> {
        self.answered = true;
        self.send(Kind::Reply { corr: self.corr }, body)
    }

    /// Refuses the ask with a reason the asker gets as [`crate::AskError::Rejected`].
    ///
    /// # Errors
    /// [`SendError`] when it cannot be queued; the asker then times out.
    pub fn reject(mut self, reason: &str) -> Result<(), SendError> {
        self.answered = true;
        self.send(
            Kind::Reject { corr: self.corr },
            Bytes::copy_from_slice(reason.as_bytes()),
        )
    }

    fn send(&self, kind: Kind, body: Bytes) -> Result<(), SendError> {
        let out = Outgoing {
            header: Header {
                channel: self.channel,
                kind,
            },
            body,
        };
        self.conn
            .inner
            .try_enqueue(&self.conn.peer.addr, self.conn.lane, out)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.send(
                Kind::Reject { corr: self.corr },
                Bytes::from_static(b"request dropped without a reply"),
            );
        }
    }
}
