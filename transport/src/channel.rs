//! Typed channels: one serde enum per upper layer, encoded with postcard.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::error::{AskError, SendError};
use crate::handshake::{Lane, NodeId};
use crate::inbound::{Inbound, Responder};
use crate::transport::Transport;

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
    _msg: PhantomData<fn(M)>,
}

impl<M> Clone for Channel<M> {
    fn clone(&self) -> Self {
        Channel {
            transport: self.transport.clone(),
            id: self.id,
            lane: self.lane,
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

fn encode<T: Serialize>(msg: &T) -> Result<Bytes, SendError> {
    postcard::to_allocvec(msg)
        .map(Bytes::from)
        .map_err(|e| SendError::Encode(e.to_string()))
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
        let rx = transport.register(id)?;
        Ok((
            Channel {
                transport: transport.clone(),
                id,
                lane,
                _msg: PhantomData,
            },
            Inbox {
                rx,
                _msg: PhantomData,
            },
        ))
    }

    /// The transport under this channel.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Queues `msg` for `peer` without waiting.
    ///
    /// # Errors
    /// As [`Transport::tell`], plus [`SendError::Encode`].
    pub fn tell(&self, peer: &str, msg: &M) -> Result<(), SendError> {
        self.transport.tell(peer, self.lane, self.id, encode(msg)?)
    }

    /// Queues `msg` for `peer`, waiting for queue space.
    ///
    /// # Errors
    /// As [`Transport::send`], plus [`SendError::Encode`].
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is queued if it is dropped before completing.
    pub async fn send(&self, peer: &str, msg: &M) -> Result<(), SendError> {
        self.transport
            .send(peer, self.lane, self.id, encode(msg)?)
            .await
    }

    /// Asks `peer` and decodes its reply as `R`.
    ///
    /// # Errors
    /// As [`Transport::ask`], plus [`AskError::Decode`] for a reply that is
    /// not an `R`.
    pub async fn ask<R: DeserializeOwned>(
        &self,
        peer: &str,
        msg: &M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let body = encode(msg)?;
        let reply = self
            .transport
            .ask(peer, self.lane, self.id, body, timeout)
            .await?;
        postcard::from_bytes(&reply).map_err(|e| AskError::Decode {
            peer: peer.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// The receiving side of a typed channel.
pub struct Inbox<M> {
    rx: mpsc::Receiver<Inbound>,
    _msg: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
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
    /// at `warn`), rejects it if it was an ask, and is skipped.
    /// `None` once the transport has shut down.
    ///
    /// # Cancel safety
    /// Cancel-safe: no message is lost if it is dropped while waiting.
    pub async fn recv(&mut self) -> Option<Received<M>> {
        loop {
            let inbound = self.rx.recv().await?;
            match postcard::from_bytes::<M>(inbound.body()) {
                Ok(msg) => {
                    let from = inbound.from().clone();
                    let (_, responder) = inbound.into_parts();
                    return Some(Received {
                        from,
                        msg,
                        responder,
                    });
                }
                Err(e) => {
                    inbound.close_connection(&e.to_string());
                    let (_, responder) = inbound.into_parts();
                    if let Some(r) = responder {
                        let _ = r.reject("undecodable message");
                    }
                }
            }
        }
    }
}

impl Responder {
    /// Encodes `reply` with postcard and sends it.
    ///
    /// # Errors
    /// [`SendError`] when it cannot be encoded or queued.
    pub fn reply_msg<R: Serialize>(self, reply: &R) -> Result<(), SendError> {
        let body = encode(reply)?;
        self.reply(body)
    }
}
