//! Typed channels: one serde enum per upper layer, encoded with postcard.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::error::{AskError, SendError};
use crate::frame::{Header, Kind, postcard_into};
use crate::handshake::{Lane, NodeId};
use crate::inbound::Responder;
use crate::mailbox::{Delivery, Mailbox};
use crate::transport::{PeerCache, Slot, Transport};

/// Why a channel could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Channel ids are below [`crate::MAX_CHANNELS`].
    #[error("channel id {0} is out of range")]
    OutOfRange(u8),
    /// Each channel has one receiver per transport.
    #[error("channel {0} is already registered")]
    Taken(u8),
}

/// The sending side of a typed channel: messages of type `M` on channel `id`
/// and lane `lane`. Cheap to clone.
pub struct Channel<M> {
    transport: Transport,
    id: u8,
    lane: Lane,
    /// The links of the last peer sent to.
    cache: PeerCache,
    _msg: PhantomData<fn(M)>,
}

impl<M> Clone for Channel<M> {
    fn clone(&self) -> Self {
        Channel {
            transport: self.transport.clone(),
            id: self.id,
            lane: self.lane,
            cache: PeerCache::default(),
            _msg: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Channel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("lane", &self.lane)
            .finish()
    }
}

/// An encoder that appends `msg`'s postcard encoding to a frame.
fn typed<T: Serialize>(msg: &T) -> impl FnMut(&mut BytesMut) -> Result<(), SendError> + '_ {
    move |buf: &mut BytesMut| postcard_into(msg, buf)
}

impl<M: Serialize + DeserializeOwned + Send + 'static> Channel<M> {
    /// Registers channel `id` on `transport` and returns its sender and its
    /// inbox. `lane` is the lane this side sends on.
    ///
    /// # Errors
    /// [`RegisterError`] when `id` is out of range or already registered.
    pub fn register(
        transport: &Transport,
        id: u8,
        lane: Lane,
    ) -> Result<(Channel<M>, Inbox<M>), RegisterError> {
        let config = &transport.inner.config;
        let mailbox = Arc::new(Mailbox::new(
            config.inbound_queue_frames,
            config.inbound_queue_bytes,
        ));
        transport
            .inner
            .register_slot(id, Slot::Mailbox(Arc::clone(&mailbox)))?;
        Ok((
            Channel {
                transport: transport.clone(),
                id,
                lane,
                cache: PeerCache::default(),
                _msg: PhantomData,
            },
            Inbox {
                mailbox,
                taken: VecDeque::new(),
                stop: transport.inner.shutdown.clone(),
                _msg: PhantomData,
            },
        ))
    }

    /// The transport under this channel.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// This channel's id.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The lane this side sends on.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    fn header(&self) -> Header {
        Header {
            channel: self.id,
            kind: Kind::Tell,
        }
    }

    /// Queues `msg` for `peer` without waiting. The message is encoded
    /// straight into the link's queue.
    ///
    /// # Errors
    /// As [`Transport::tell`], plus [`SendError::Encode`].
    pub fn tell(&self, peer: &str, msg: &M) -> Result<(), SendError> {
        self.transport.inner.try_send(
            Some(&self.cache),
            peer,
            self.lane,
            self.header(),
            &mut typed(msg),
        )
    }

    /// Queues `msg` for `peer`, waiting for queue space.
    ///
    /// # Errors
    /// As [`Transport::send`], plus [`SendError::Encode`].
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is queued if it is dropped before completing.
    pub async fn send(&self, peer: &str, msg: &M) -> Result<(), SendError> {
        // The common case, a queue with room, needs no nested future.
        let inner = &self.transport.inner;
        let mut encode = typed(msg);
        if inner.try_send_once(
            Some(&self.cache),
            peer,
            self.lane,
            self.header(),
            &mut encode,
        )? {
            return Ok(());
        }
        self.transport
            .inner
            .send(
                Some(&self.cache),
                peer,
                self.lane,
                self.header(),
                &mut typed(msg),
            )
            .await
    }

    /// Asks `peer` and decodes its reply as `R`.
    ///
    /// # Errors
    /// As [`Transport::ask`], plus [`AskError::Decode`] for a reply that is
    /// not an `R`.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the ask; a late reply is counted.
    pub async fn ask<R: DeserializeOwned>(
        &self,
        peer: &str,
        msg: &M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let reply = self
            .transport
            .inner
            .ask(
                Some(&self.cache),
                peer,
                self.lane,
                self.id,
                &mut typed(msg),
                timeout,
            )
            .await?;
        postcard::from_bytes(&reply).map_err(|e| AskError::Decode {
            peer: peer.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// The receiving side of a typed channel.
///
/// Dropping it closes the channel for good: frames still queued are
/// dropped (asks among them rejected) and later frames for it are counted
/// in `unknown_channel` and, when asks, rejected.
pub struct Inbox<M> {
    mailbox: Arc<Mailbox>,
    /// Deliveries taken from the mailbox, not yet fully returned.
    taken: VecDeque<Delivery>,
    stop: CancellationToken,
    _msg: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl<M> Drop for Inbox<M> {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

/// A decoded message and, for an ask, its responder.
#[derive(Debug)]
pub struct Received<M> {
    /// The sender's identity from its handshake.
    pub from: NodeId,
    /// The message.
    pub msg: M,
    /// Present for asks: answer with [`Responder::reply_msg`].
    pub responder: Option<Responder>,
}

impl<M: DeserializeOwned> Inbox<M> {
    /// The next message that decodes. A body that does not decode as `M`
    /// closes the connection it came on (counted as `decode_errors`, logged
    /// at `warn` once per connection, and at the 1st, 2nd, 4th, ... such
    /// connection), rejects it if it was an ask, and is skipped.
    /// `None` once the transport has shut down and every message that had
    /// arrived was returned.
    ///
    /// # Cancel safety
    /// Cancel-safe: no message is lost if it is dropped while waiting.
    pub async fn recv(&mut self) -> Option<Received<M>> {
        loop {
            let Some(d) = self.taken.front_mut() else {
                if !self.mailbox.take(&mut self.taken, &self.stop).await {
                    return None;
                }
                continue;
            };
            let Some(f) = d.pop() else {
                self.taken.pop_front();
                continue;
            };
            match postcard::from_bytes::<M>(d.body(f)) {
                Ok(msg) => {
                    return Some(Received {
                        from: d.conn.peer.clone(),
                        msg,
                        responder: f
                            .corr
                            .map(|corr| Responder::new(Arc::clone(&d.conn), d.channel, corr)),
                    });
                }
                Err(e) => {
                    if let Some(corr) = f.corr {
                        let _ = Responder::new(Arc::clone(&d.conn), d.channel, corr)
                            .reject("undecodable message");
                    }
                    d.conn.close_undecodable(d.channel, &e);
                }
            }
        }
    }

    /// Messages already taken from the transport and waiting in this inbox
    /// (a lower bound: messages still queued in the transport are not counted).
    pub fn len(&self) -> usize {
        self.taken.iter().map(|d| d.frames.len() - d.next).sum()
    }

    /// True when [`Inbox::len`] is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Responder {
    /// Encodes `reply` with postcard straight into the link's queue and
    /// sends it.
    ///
    /// # Errors
    /// [`SendError`] when it cannot be encoded or queued.
    pub fn reply_msg<R: Serialize>(self, reply: &R) -> Result<(), SendError> {
        self.reply_with(&mut typed(reply))
    }
}
