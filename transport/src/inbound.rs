//! What arrives: [`Inbound`] frames and the [`Responder`] that answers an ask.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::error::SendError;
use crate::frame::{Header, Kind};
use crate::handshake::{Lane, NodeId};
use crate::outbox::{BodyEncoder, Outbox, Pushed};
use crate::stats::RefusalKind;
use crate::transport::Inner;

/// One accepted inbound connection, shared by the frames read from it.
pub(crate) struct ConnInfo {
    pub inner: Arc<Inner>,
    pub peer: NodeId,
    pub lane: Lane,
    /// Cancelled to close the connection (e.g. a body that does not
    /// decode); replies already queued are flushed first.
    pub closer: CancellationToken,
    /// Replies and rejections, written back on this connection.
    pub replies: Outbox,
    /// Asks read from this connection and not answered yet (their reply
    /// or rejection not queued): while any is open the connection is not
    /// idle, whatever `idle_timeout_ms` says.
    pub open_asks: AtomicUsize,
    /// Set at the first undecodable message on this connection: the
    /// frames already queued from it that do not decode either are
    /// logged at debug level, one warning per connection at most.
    pub undecodable: AtomicBool,
}

impl ConnInfo {
    /// Counts a message body from this connection that did not decode
    /// (`error`, on `channel`), logs it, and closes the connection. The
    /// first on a connection is warned at the 1st, 2nd, 4th, ... such
    /// connection (`Inner::throttle`); the rest are debug detail.
    pub(crate) fn close_undecodable(&self, channel: u8, error: &dyn std::fmt::Display) {
        let inner = &self.inner;
        crate::stats::bump(&inner.stats.decode_errors);
        if self.undecodable.swap(true, Ordering::Relaxed) {
            tracing::debug!(peer = %self.peer, channel, %error, "undecodable message on a connection closing for one");
        } else {
            let t = inner.throttle(RefusalKind::UndecodableMessage);
            if t.warn {
                tracing::warn!(peer = %self.peer, channel, %error, closed = t.count, "closing connection: undecodable message (warned at the 1st, 2nd, 4th, ... such close)");
            } else {
                tracing::debug!(peer = %self.peer, channel, %error, closed = t.count, "closing connection: undecodable message");
            }
        }
        self.closer.cancel();
    }

    /// Counts one more ask read from this connection.
    pub(crate) fn ask_opened(&self) {
        self.open_asks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one ask answered (replied or rejected), never below zero.
    fn ask_answered(&self) {
        let _ = self
            .open_asks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Whether an ask read from this connection awaits its answer.
    pub(crate) fn has_open_asks(&self) -> bool {
        self.open_asks.load(Ordering::Relaxed) > 0
    }
}

/// A tell or an ask received on a registered channel.
///
/// Dropping an ask without answering it (through [`Inbound::into_parts`]
/// and its [`Responder`]) rejects it, so the asker learns at once.
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

    /// The channel it was sent to.
    pub fn channel(&self) -> u8 {
        self.channel
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
    /// not decode. Counted in `decode_errors` and logged at `warn` (once
    /// per connection, and at the 1st, 2nd, 4th, ... such connection).
    /// Frames already queued from it are still delivered.
    pub fn close_connection(&self, reason: &str) {
        self.conn.close_undecodable(self.channel, &reason);
    }

    /// The body, and a responder when it is an ask.
    pub fn into_parts(mut self) -> (Bytes, Option<Responder>) {
        let body = std::mem::take(&mut self.body);
        let responder = self.corr.take().map(|corr| Responder {
            conn: Arc::clone(&self.conn),
            channel: self.channel,
            corr,
            answered: false,
        });
        (body, responder)
    }

    /// Rejects an ask that no inbox will see (the channel has no receiver),
    /// counting it in `unknown_channel`.
    pub(crate) fn undeliverable(mut self) {
        crate::stats::bump(&self.conn.inner.stats.unknown_channel);
        tracing::debug!(peer = %self.conn.peer, channel = self.channel, "no receiver for channel");
        if let Some(corr) = self.corr.take() {
            let reason = format!("no receiver for channel {}", self.channel);
            let _ = answer(
                &self.conn,
                self.channel,
                Kind::Reject { corr },
                reason.as_bytes(),
            );
        }
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        if let Some(corr) = self.corr.take() {
            let _ = answer(
                &self.conn,
                self.channel,
                Kind::Reject { corr },
                b"request dropped without a reply",
            );
        }
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
    pub(crate) fn new(conn: Arc<ConnInfo>, channel: u8, corr: u64) -> Responder {
        Responder {
            conn,
            channel,
            corr,
            answered: false,
        }
    }

    /// Who asked.
    pub fn asker(&self) -> &NodeId {
        &self.conn.peer
    }

    /// Sends the reply back on the connection the ask came on, without
    /// waiting.
    ///
    /// # Errors
    /// [`SendError::QueueFull`] when the connection's reply queue is full,
    /// [`SendError::Shutdown`] when the connection has closed (the asker
    /// has seen its link fail) or the transport is shutting down,
    /// [`SendError::TooLarge`].
    pub fn reply(mut self, body: Bytes) -> Result<(), SendError> {
        self.answered = true;
        answer(
            &self.conn,
            self.channel,
            Kind::Reply { corr: self.corr },
            &body,
        )
    }

    /// Refuses the ask with a reason the asker gets as [`crate::AskError::Rejected`].
    ///
    /// # Errors
    /// [`SendError`] when it cannot be queued; the asker then times out.
    pub fn reject(mut self, reason: &str) -> Result<(), SendError> {
        self.answered = true;
        answer(
            &self.conn,
            self.channel,
            Kind::Reject { corr: self.corr },
            reason.as_bytes(),
        )
    }

    /// Sends a reply whose body `encode` appends (the typed path).
    pub(crate) fn reply_with(mut self, encode: BodyEncoder<'_>) -> Result<(), SendError> {
        self.answered = true;
        let header = Header {
            channel: self.channel,
            kind: Kind::Reply { corr: self.corr },
        };
        push_answer(&self.conn, header, encode)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let _ = answer(
                &self.conn,
                self.channel,
                Kind::Reject { corr: self.corr },
                b"request dropped without a reply",
            );
        }
    }
}

/// Queues a reply or rejection on the connection the ask came on.
pub(crate) fn answer(
    conn: &ConnInfo,
    channel: u8,
    kind: Kind,
    body: &[u8],
) -> Result<(), SendError> {
    let header = Header { channel, kind };
    let mut encode = |buf: &mut bytes::BytesMut| {
        buf.extend_from_slice(body);
        Ok(())
    };
    push_answer(conn, header, &mut encode)
}

fn push_answer(conn: &ConnInfo, header: Header, encode: BodyEncoder<'_>) -> Result<(), SendError> {
    // Every ask gets exactly one answer through here (replied, rejected,
    // or rejected when dropped), queued or not.
    conn.ask_answered();
    match conn.replies.try_push(&conn.inner, header, true, encode)? {
        Pushed::Queued => Ok(()),
        Pushed::Full => Err(SendError::QueueFull {
            peer: conn.peer.addr.clone(),
            capacity: conn.inner.config.outbound_queue_frames,
        }),
        Pushed::Closed => Err(SendError::Shutdown),
    }
}
