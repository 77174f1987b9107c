//! The [`Transport`] handle: bind, register channels, tell, ask.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TransportConfig;
use crate::error::{AskError, BindError, SendError};
use crate::frame::{Header, Kind};
use crate::handshake::{Lane, NodeId};
use crate::inbound::Inbound;
use crate::stats::{Stats, StatsSnapshot};
use crate::{link, listener};

/// Channel ids are `0..MAX_CHANNELS`.
pub const MAX_CHANNELS: usize = 64;

/// Who this node is and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// The cluster's name (`[system] name`); peers with another name are refused.
    pub cluster: String,
    /// This node's name, unique in the cluster.
    pub name: String,
    /// This life's generation (larger on each restart; e.g. start time in ms).
    pub generation: u64,
    /// `host:port` to bind; port 0 picks a free port.
    pub listen: String,
    /// Host (name or IP) peers should dial; the advertised address is
    /// `advertise_host:<bound port>`.
    pub advertise_host: String,
}

/// A frame waiting in a link's queue.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub header: Header,
    pub body: Bytes,
}

struct PendingAsk {
    peer: String,
    lane: Lane,
    tx: oneshot::Sender<Result<Bytes, AskError>>,
}

pub(crate) struct Inner {
    pub config: TransportConfig,
    pub cluster: String,
    pub local: NodeId,
    pub local_addr: SocketAddr,
    links: Mutex<HashMap<(String, Lane), mpsc::Sender<Outgoing>>>,
    pub channels: [OnceLock<mpsc::Sender<Inbound>>; MAX_CHANNELS],
    pending: Mutex<HashMap<u64, PendingAsk>>,
    next_corr: AtomicU64,
    pub stats: Stats,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// A cloneable handle to one node's transport: a TCP listener plus one
/// outbound link per (peer, [`Lane`]), dialled lazily.
///
/// Peers are addressed by their advertised `host:port`, resolved with DNS at
/// every dial. Frames to one peer on one lane arrive in the order they were
/// queued. See `PROTOCOL.md` for the wire format.
#[derive(Clone)]
pub struct Transport {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local", &self.inner.local)
            .field("listening", &self.inner.local_addr)
            .finish()
    }
}

impl Transport {
    /// Binds the listener and starts accepting. Stops when `shutdown` is
    /// cancelled (see [`Transport::shutdown`]).
    ///
    /// # Errors
    /// [`BindError::Config`] for an invalid config, [`BindError::Listen`]
    /// when the address cannot be bound.
    pub async fn bind(
        local: LocalNode,
        config: TransportConfig,
        shutdown: CancellationToken,
    ) -> Result<Transport, BindError> {
        config.validate().map_err(BindError::Config)?;
        let listener =
            TcpListener::bind(&local.listen)
                .await
                .map_err(|source| BindError::Listen {
                    addr: local.listen.clone(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| BindError::Listen {
            addr: local.listen.clone(),
            source,
        })?;
        let id = NodeId {
            name: local.name,
            addr: format!("{}:{}", local.advertise_host, local_addr.port()),
            generation: local.generation,
        };
        let inner = Arc::new(Inner {
            config,
            cluster: local.cluster,
            local: id,
            local_addr,
            links: Mutex::new(HashMap::new()),
            channels: std::array::from_fn(|_| OnceLock::new()),
            pending: Mutex::new(HashMap::new()),
            next_corr: AtomicU64::new(1),
            stats: Stats::default(),
            shutdown,
            tracker: TaskTracker::new(),
        });
        inner
            .tracker
            .spawn(listener::run(Arc::clone(&inner), listener));
        Ok(Transport { inner })
    }

    /// This node's identity as peers see it (advertised address included).
    pub fn identity(&self) -> &NodeId {
        &self.inner.local
    }

    /// The socket address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The cluster name peers must present.
    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    /// The configuration in force.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// The counters so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The token that stops this transport.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Takes the inbound queue of channel `id`: every tell and ask that
    /// arrives for it, in arrival order per connection. At most one receiver
    /// per channel for the transport's life. Capacity
    /// `[transport] inbound_queue_frames`; when it is full the connection
    /// stops reading (back-pressure), other connections and lanes go on.
    ///
    /// # Errors
    /// [`crate::RegisterError`] when `id ≥ MAX_CHANNELS` or it is already taken.
    pub fn register(&self, id: u8) -> Result<mpsc::Receiver<Inbound>, crate::RegisterError> {
        let slot = self
            .inner
            .channels
            .get(usize::from(id))
            .ok_or(crate::RegisterError::OutOfRange(id))?;
        let (tx, rx) = mpsc::channel(self.inner.config.inbound_queue_frames);
        slot.set(tx).map_err(|_| crate::RegisterError::Taken(id))?;
        Ok(rx)
    }

    /// Queues a one-way message for `peer` without waiting.
    ///
    /// # Errors
    /// [`SendError::QueueFull`] when the link's queue is full (nothing is
    /// queued), [`SendError::TooLarge`], [`SendError::Shutdown`].
    pub fn tell(&self, peer: &str, lane: Lane, channel: u8, body: Bytes) -> Result<(), SendError> {
        self.inner.try_enqueue(
            peer,
            lane,
            Outgoing {
                header: Header {
                    channel,
                    kind: Kind::Tell,
                },
                body,
            },
        )
    }

    /// Queues a one-way message for `peer`, waiting for queue space.
    ///
    /// # Errors
    /// [`SendError::TooLarge`], [`SendError::Shutdown`].
    ///
    /// # Cancel safety
    /// Cancel-safe: if dropped before it completes, nothing was queued.
    pub async fn send(
        &self,
        peer: &str,
        lane: Lane,
        channel: u8,
        body: Bytes,
    ) -> Result<(), SendError> {
        self.inner
            .enqueue(
                peer,
                lane,
                Outgoing {
                    header: Header {
                        channel,
                        kind: Kind::Tell,
                    },
                    body,
                },
            )
            .await
    }

    /// Sends a request to `peer` and waits for its reply, at most `timeout`.
    ///
    /// # Errors
    /// [`AskError::Timeout`] when no reply came in time (the peer may have
    /// applied the request), [`AskError::Unreachable`] when the link failed,
    /// [`AskError::Rejected`] when the peer refused it, [`AskError::Send`]
    /// when it could not be queued. A reply that arrives after the timeout
    /// is dropped and counted (`late_replies`).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the ask; a late reply is counted.
    pub async fn ask(
        &self,
        peer: &str,
        lane: Lane,
        channel: u8,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, AskError> {
        let corr = self.inner.next_corr.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending_lock().insert(
            corr,
            PendingAsk {
                peer: peer.to_owned(),
                lane,
                tx,
            },
        );
        let guard = PendingGuard {
            inner: &self.inner,
            corr,
        };
        let out = Outgoing {
            header: Header {
                channel,
                kind: Kind::Ask { corr },
            },
            body,
        };
        let result = tokio::time::timeout(timeout, async {
            self.inner.enqueue(peer, lane, out).await?;
            match rx.await {
                Ok(r) => r,
                Err(_) => Err(AskError::Unreachable {
                    peer: peer.to_owned(),
                    reason: "transport shut down".into(),
                }),
            }
        })
        .await;
        drop(guard);
        match result {
            Ok(r) => r,
            Err(_) => Err(AskError::Timeout {
                peer: peer.to_owned(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Drops the links to `peer` (e.g. a member that was removed); frames
    /// still queued on them are written or failed as on shutdown. A later
    /// send dials again.
    pub fn forget(&self, peer: &str) {
        let mut links = self.inner.links_lock();
        links.remove(&(peer.to_owned(), Lane::Control));
        links.remove(&(peer.to_owned(), Lane::Bulk));
    }

    /// Stops the listener and the links: queued frames get up to
    /// `[transport] flush_deadline_ms` to be written, then every task is
    /// waited for (at most twice that deadline).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let deadline = Duration::from_millis(self.inner.config.flush_deadline_ms * 2);
        let _ = tokio::time::timeout(deadline, self.inner.tracker.wait()).await;
    }
}

/// Removes an ask's pending entry however the ask ends.
struct PendingGuard<'a> {
    inner: &'a Inner,
    corr: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending_lock().remove(&self.corr);
    }
}

impl Inner {
    fn links_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, Lane), mpsc::Sender<Outgoing>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PendingAsk>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_size(&self, out: &Outgoing) -> Result<(), SendError> {
        let max = self.config.max_frame_bytes;
        if out.body.len() + crate::frame::MAX_HEADER_BYTES > max {
            return Err(SendError::TooLarge {
                len: out.body.len(),
                max,
            });
        }
        if self.shutdown.is_cancelled() {
            return Err(SendError::Shutdown);
        }
        Ok(())
    }

    /// The sender of the link to (`peer`, `lane`), spawning the link task on first use.
    fn link(self: &Arc<Self>, peer: &str, lane: Lane) -> mpsc::Sender<Outgoing> {
        let mut links = self.links_lock();
        if let Some(tx) = links.get(&(peer.to_owned(), lane)) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(self.config.outbound_queue_frames);
        self.tracker
            .spawn(link::run(Arc::clone(self), peer.to_owned(), lane, rx));
        links.insert((peer.to_owned(), lane), tx.clone());
        tx
    }

    pub(crate) fn try_enqueue(
        self: &Arc<Self>,
        peer: &str,
        lane: Lane,
        out: Outgoing,
    ) -> Result<(), SendError> {
        self.check_size(&out)?;
        match self.link(peer, lane).try_send(out) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(SendError::QueueFull {
                peer: peer.to_owned(),
                capacity: self.config.outbound_queue_frames,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Shutdown),
        }
    }

    pub(crate) async fn enqueue(
        self: &Arc<Self>,
        peer: &str,
        lane: Lane,
        out: Outgoing,
    ) -> Result<(), SendError> {
        self.check_size(&out)?;
        let tx = self.link(peer, lane);
        tx.send(out).await.map_err(|_| SendError::Shutdown)
    }

    /// Completes a pending ask; a missing entry is a late reply.
    pub(crate) fn complete(&self, corr: u64, result: Result<Bytes, AskError>) {
        let pending = self.pending_lock().remove(&corr);
        match pending {
            Some(p) => {
                let _ = p.tx.send(result);
            }
            None => {
                crate::stats::bump(&self.stats.late_replies);
                tracing::debug!(corr, "late reply dropped");
            }
        }
    }

    /// Fails every pending ask to (`peer`, `lane`): its link broke.
    pub(crate) fn fail_pending_to(&self, peer: &str, lane: Lane, reason: &str) {
        let mut pending = self.pending_lock();
        let corrs: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.peer == peer && p.lane == lane)
            .map(|(c, _)| *c)
            .collect();
        for corr in corrs {
            if let Some(p) = pending.remove(&corr) {
                let _ = p.tx.send(Err(AskError::Unreachable {
                    peer: peer.to_owned(),
                    reason: reason.to_owned(),
                }));
            }
        }
    }
}
