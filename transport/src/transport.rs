//! The [`Transport`] handle: bind, register channels, tell, ask.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TransportConfig;
use crate::error::{AskError, BindError, SendError};
use crate::frame::{Header, Kind};
use crate::handshake::{Lane, NodeId};
use crate::inbound::Inbound;
use crate::link::{self, Link};
use crate::listener;
use crate::mailbox::Mailbox;
use crate::outbox::{BodyEncoder, Pushed};
use crate::stats::{RefusalKind, Stats, StatsSnapshot};

/// Channel ids are `0..MAX_CHANNELS`.
pub const MAX_CHANNELS: usize = 64;

/// `settings` with the frame limit every node of a cluster must share
/// appended: `num_shards=50 max_frame_bytes=8388608`.
fn with_frame_limit(settings: &str, max_frame_bytes: usize) -> String {
    let limit = format!("max_frame_bytes={max_frame_bytes}");
    if settings.is_empty() {
        limit
    } else {
        format!("{settings} {limit}")
    }
}

/// Who this node is and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// The cluster's name (`[system] name`); peers with another name are refused.
    pub cluster: String,
    /// Settings every node of the cluster must share, as one text the
    /// application builds (node-cli: `num_shards=50`); a peer presenting
    /// other settings is refused at the handshake as one of another
    /// cluster is ([`crate::HandshakeError::WrongSettings`]). Empty when
    /// the application has none. The transport adds its own
    /// `max_frame_bytes=<n>` ([`Transport::settings`]): a peer with a
    /// smaller frame limit would refuse the frames sized for this one.
    pub settings: String,
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

/// Where a channel's inbound frames go.
pub(crate) enum Slot {
    /// [`Transport::register`]: one frame per queue item.
    Raw(mpsc::Sender<Inbound>),
    /// [`crate::Channel::register`]: batched.
    Mailbox(Arc<Mailbox>),
}

/// The two links (one per [`Lane`]) to one peer address.
pub(crate) struct PeerLinks {
    addr: String,
    lanes: [Arc<Link>; 2],
}

/// A sender's memory of the last peer it sent to, so a stream of frames to
/// one peer skips the transport's map (its lock and hash).
#[derive(Default)]
pub(crate) struct PeerCache(Mutex<Option<Arc<PeerLinks>>>);

impl PeerCache {
    fn get(&self, inner: &Arc<Inner>, peer: &str) -> Arc<PeerLinks> {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some(p) if p.addr == peer => Arc::clone(p),
            _ => {
                let p = inner.peer_links(peer);
                *last = Some(Arc::clone(&p));
                p
            }
        }
    }

    fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Most addresses [`Transport::forget`] keeps quiet at once (see
/// `Inner::set_forgotten`).
const MAX_FORGOTTEN: usize = 1024;

impl Inner {
    /// Records that `peer` refused our handshake for `reason`; true when
    /// that is news (the first refusal, or another reason than the last),
    /// so a dialer retrying against a steady refusal warns once.
    /// `for_good`: the refusal is for a setting that dialing again cannot
    /// change (another cluster name, other settings or another protocol
    /// version: [`HelloReply::Mismatch`](crate::handshake::HelloReply::Mismatch),
    /// or an older acceptor's `Refused` for the version).
    pub(crate) fn note_refusal(&self, peer: &str, reason: &str, for_good: bool) -> bool {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        match refusals.get(peer) {
            Some((last, _)) if last == reason => false,
            _ => {
                refusals.insert(peer.to_owned(), (reason.to_owned(), for_good));
                true
            }
        }
    }

    /// `peer` accepted a handshake (or is forgotten): no refusal or dial
    /// failure stands.
    pub(crate) fn clear_refusal(&self, peer: &str) {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if !refusals.is_empty() {
            refusals.remove(peer);
        }
        drop(refusals);
        let mut failures = self.dial_errors.lock().unwrap_or_else(|p| p.into_inner());
        if !failures.is_empty() {
            failures.remove(peer);
        }
    }

    /// Marks `peer` forgotten (see `forgotten`) or, with `false`,
    /// remembered again. At most [`MAX_FORGOTTEN`] addresses are kept (a
    /// cluster whose members come and go on new ports would grow the set
    /// without end): past it the set starts over, and failing to reach an
    /// address dropped that way is warned again.
    pub(crate) fn set_forgotten(&self, peer: &str, forgotten: bool) {
        let mut set = self.forgotten.lock().unwrap_or_else(|p| p.into_inner());
        if forgotten {
            if set.len() >= MAX_FORGOTTEN {
                set.clear();
            }
            set.insert(peer.to_owned(), ());
        } else if !set.is_empty() {
            set.remove(peer);
        }
    }

    /// Whether failing to reach `peer` is expected: this node is leaving
    /// ([`Transport::leaving`]), or `peer` was forgotten and not remembered
    /// since. Such failures are logged at debug level.
    pub(crate) fn failure_expected(&self, peer: &str) -> bool {
        self.leaving.load(Ordering::Relaxed) || self.is_forgotten(peer)
    }

    /// Whether `peer` is a seed this node is still joining through
    /// ([`Transport::joining_through`]).
    pub(crate) fn is_joining_through(&self, peer: &str) -> bool {
        let set = self
            .joining_through
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        !set.is_empty() && set.contains_key(peer)
    }

    /// Whether `peer` was forgotten and not remembered since.
    pub(crate) fn is_forgotten(&self, peer: &str) -> bool {
        let set = self.forgotten.lock().unwrap_or_else(|p| p.into_inner());
        !set.is_empty() && set.contains_key(peer)
    }

    /// Records why the last dial to `peer` failed (its address did not
    /// resolve, nothing listened, ...).
    pub(crate) fn note_dial_error(&self, peer: &str, error: &str) {
        let mut failures = self.dial_errors.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get_mut(peer) {
            Some(last) if last == error => {}
            Some(last) => error.clone_into(last),
            None => {
                failures.insert(peer.to_owned(), error.to_owned());
            }
        }
    }

    /// The links to `peer`, through `cache` when there is one.
    fn links(self: &Arc<Self>, cache: Option<&PeerCache>, peer: &str) -> Arc<PeerLinks> {
        match cache {
            Some(c) => c.get(self, peer),
            None => self.peer_links(peer),
        }
    }
}

impl PeerLinks {
    pub(crate) fn lane(&self, lane: Lane) -> &Arc<Link> {
        &self.lanes[lane.index()]
    }
}

/// A fast hasher for the small keys of the links and pending-ask maps
/// (peer addresses, correlation ids): the FxHash mixing step (rotate, xor,
/// multiply by a 64-bit odd constant, as in rustc's `FxHasher`). Not
/// resistant to chosen keys, which is fine here: keys are our own
/// correlation ids and the addresses this node sends to.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(tail) ^ rest.len() as u64);
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

struct PendingAsk {
    /// The link the ask was queued on.
    link: Arc<Link>,
    tx: oneshot::Sender<Result<Bytes, AskError>>,
}

pub(crate) struct Inner {
    pub config: TransportConfig,
    pub cluster: String,
    pub settings: String,
    pub local: NodeId,
    pub local_addr: SocketAddr,
    links: Mutex<FastMap<String, Arc<PeerLinks>>>,
    pub channels: [OnceLock<Slot>; MAX_CHANNELS],
    pending: Mutex<FastMap<u64, PendingAsk>>,
    /// Peers whose last answer to our handshake was a refusal, by
    /// address: the reason they gave, and whether it was for good (see
    /// [`Transport::refused_for_good`]). Cleared by an accepted handshake
    /// and by [`Transport::forget`].
    refusals: Mutex<FastMap<String, (String, bool)>>,
    /// Peers whose last dial failed before any handshake, by address: the
    /// error. Cleared as `refusals` are.
    dial_errors: Mutex<FastMap<String, String>>,
    /// Peers dropped by [`Transport::forget`] (a member that left or
    /// died) and not [`Transport::remember`]ed since: failing to reach one
    /// is expected, so it is logged as detail, not warned.
    forgotten: Mutex<FastMap<String, ()>>,
    /// This node is leaving ([`Transport::leaving`]): failing to reach any
    /// peer is expected from then on.
    leaving: AtomicBool,
    /// Seeds this node is joining through ([`Transport::joining_through`]):
    /// one may not be listening yet, so failing to reach it is information
    /// until the join ends ([`Transport::joined`]).
    joining_through: Mutex<FastMap<String, ()>>,
    /// Refusals and closes of misbehaving connections on this node,
    /// counted by kind ([`Inner::throttle`]): one counter per kind, so
    /// the memory is fixed whatever peers send.
    refused_here: [AtomicU64; RefusalKind::COUNT],
    next_corr: AtomicU64,
    pub stats: Stats,
    pub shutdown: CancellationToken,
    /// Set once `shutdown` is seen cancelled (a lock-free copy for the
    /// send path; `CancellationToken::is_cancelled` takes a lock).
    pub stopped: AtomicBool,
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

/// Checks that this node's [`crate::handshake::Hello`] fits the handshake frame
/// ([`crate::handshake::HANDSHAKE_MAX_FRAME_BYTES`]): it carries the cluster name and
/// the settings, and a peer refuses a longer one unread, so a node with a
/// cluster name of 20,000 bytes could never join nor be joined.
///
/// # Errors
/// [`BindError::Config`] naming the two sizes.
fn check_hello_fits(cluster: &str, id: &NodeId, settings: &str) -> Result<(), BindError> {
    use tokio_util::codec::Encoder as _;
    let hello = crate::handshake::Hello {
        magic: crate::handshake::MAGIC,
        version: crate::PROTOCOL_VERSION,
        cluster: cluster.to_owned(),
        from: id.clone(),
        lane: Lane::Bulk,
        settings: settings.to_owned(),
    };
    let body = postcard::to_allocvec(&hello).map_err(|e| BindError::Config(e.to_string()))?;
    crate::frame::FrameCodec::new(crate::handshake::HANDSHAKE_MAX_FRAME_BYTES)
        .encode(Bytes::from(body), &mut BytesMut::new())
        .map_err(|e| {
            BindError::Config(format!(
                "this node's handshake does not fit its frame ({e}): the cluster name is {} bytes and the settings {} bytes",
                cluster.len(),
                settings.len()
            ))
        })
}

impl Transport {
    /// Binds the listener and starts accepting. Stops when `shutdown` is
    /// cancelled (see [`Transport::shutdown`]).
    ///
    /// # Errors
    /// [`BindError::Config`] for an invalid config or a cluster name and
    /// settings too long for the handshake frame, [`BindError::Identity`]
    /// for a name or advertised address peers would refuse
    /// ([`crate::check_identity`]), [`BindError::Listen`] when the address
    /// cannot be bound.
    pub async fn bind(
        local: LocalNode,
        config: TransportConfig,
        shutdown: CancellationToken,
    ) -> Result<Transport, BindError> {
        config.validate().map_err(BindError::Config)?;
        crate::check_identity(crate::IdentityField::Name, &local.name)?;
        let listener =
            TcpListener::bind(&local.listen)
                .await
                .map_err(|error| BindError::Listen {
                    addr: local.listen.clone(),
                    error,
                })?;
        let local_addr = listener.local_addr().map_err(|error| BindError::Listen {
            addr: local.listen.clone(),
            error,
        })?;
        let id = NodeId {
            name: local.name,
            addr: host_port(&local.advertise_host, local_addr.port()),
            generation: local.generation,
        };
        id.check()?;
        let settings = with_frame_limit(&local.settings, config.max_frame_bytes);
        check_hello_fits(&local.cluster, &id, &settings)?;
        let inner = Arc::new(Inner {
            config,
            cluster: local.cluster,
            settings,
            local: id,
            local_addr,
            links: Mutex::new(FastMap::default()),
            channels: std::array::from_fn(|_| OnceLock::new()),
            pending: Mutex::new(FastMap::default()),
            refusals: Mutex::new(FastMap::default()),
            forgotten: Mutex::new(FastMap::default()),
            leaving: AtomicBool::new(false),
            joining_through: Mutex::new(FastMap::default()),
            refused_here: std::array::from_fn(|_| AtomicU64::new(0)),
            dial_errors: Mutex::new(FastMap::default()),
            next_corr: AtomicU64::new(1),
            stats: Stats::default(),
            shutdown,
            stopped: AtomicBool::new(false),
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

    /// The cluster settings peers must present: [`LocalNode::settings`]
    /// and this transport's `max_frame_bytes=<n>`.
    pub fn settings(&self) -> &str {
        &self.inner.settings
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
    /// [`crate::Channel::register`] is the typed (and faster, batched) way.
    /// The receiver does not end at shutdown (the transport keeps its
    /// sender): select on [`Transport::shutdown_token`] to stop.
    ///
    /// # Errors
    /// [`crate::RegisterError`] when `id ≥ MAX_CHANNELS` or it is already taken.
    pub fn register(&self, id: u8) -> Result<mpsc::Receiver<Inbound>, crate::RegisterError> {
        let (tx, rx) = mpsc::channel(self.inner.config.inbound_queue_frames);
        self.inner.register_slot(id, Slot::Raw(tx))?;
        Ok(rx)
    }

    /// Queues a one-way message for `peer` without waiting.
    ///
    /// # Errors
    /// [`SendError::QueueFull`] when the link's queue is full (nothing is
    /// queued), [`SendError::TooLarge`], [`SendError::Shutdown`].
    ///
    /// # Panics
    /// When called outside a tokio runtime and no link to `peer` exists yet
    /// (the link's task is spawned on first use).
    pub fn tell(&self, peer: &str, lane: Lane, channel: u8, body: Bytes) -> Result<(), SendError> {
        self.inner.check_body(&body)?;
        let header = Header {
            channel,
            kind: Kind::Tell,
        };
        self.inner
            .try_send(None, peer, lane, header, &mut copy_body(&body))
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
        self.inner.check_body(&body)?;
        let header = Header {
            channel,
            kind: Kind::Tell,
        };
        self.inner
            .send(None, peer, lane, header, &mut copy_body(&body))
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
        self.inner.check_body(&body)?;
        self.inner
            .ask(None, peer, lane, channel, &mut copy_body(&body), timeout)
            .await
    }

    /// The reason `peer` (`host:port`, as dialled) gave when it refused
    /// our last handshake with it, e.g. a cluster name that does not
    /// match; `None` when its last answer was an acceptance or it never
    /// answered. For a caller whose sends are one-way (tells) and would
    /// otherwise only see silence.
    pub fn refusal(&self, peer: &str) -> Option<String> {
        self.last_refusal(peer).map(|(reason, _)| reason)
    }

    /// Whether `peer` (`host:port`, as dialled) refused our last handshake
    /// with it for something that dialing again cannot change: its cluster
    /// name, cluster settings or protocol version is not ours. A node
    /// joining through seeds that all answer so can give up at once
    /// instead of waiting for its join deadline.
    pub fn refused_for_good(&self, peer: &str) -> bool {
        self.last_refusal(peer)
            .is_some_and(|(_, for_good)| for_good)
    }

    /// `peer`'s standing refusal of our handshake: its reason and whether
    /// it is for good.
    fn last_refusal(&self, peer: &str) -> Option<(String, bool)> {
        let refusals = self
            .inner
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        refusals.get(peer).cloned()
    }

    /// Why the last dial to `peer` (`host:port`, as dialled) failed before
    /// any handshake (its name did not resolve, nothing listened, ...);
    /// `None` when the last dial succeeded or none failed. For a caller
    /// whose sends are one-way and would otherwise only see silence.
    pub fn dial_error(&self, peer: &str) -> Option<String> {
        let failures = self
            .inner
            .dial_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failures.get(peer).cloned()
    }

    /// Drops the links to `peer` (e.g. a member that was removed): a write
    /// in progress gets `[transport] flush_deadline_ms`, frames still
    /// queued are dropped and counted, not written. Replies to asks sent
    /// on them are read until the peer closes or the flush deadline
    /// passes; asks still unanswered then fail with
    /// [`AskError::Unreachable`] (a peer that stalled answers nothing, and
    /// its late answers go to a closed connection). A later send dials
    /// again; until [`Transport::remember`], failing to reach `peer` and
    /// frames lost on the way to it are logged at debug level, not warned
    /// (it is known to be gone).
    pub fn forget(&self, peer: &str) {
        self.inner.clear_refusal(peer);
        self.inner.set_forgotten(peer, true);
        let removed = self.inner.links_lock().remove(peer);
        if let Some(links) = removed {
            for link in &links.lanes {
                link.retire();
            }
        }
    }

    /// This node is leaving its cluster: from now on, failing to reach a
    /// peer is expected (the others may be leaving at the same moment, as
    /// when a whole cluster stops) and is logged at debug level instead of
    /// warned; frames and dials go on as before. The membership calls it
    /// when a graceful leave starts; there is no way back.
    pub fn leaving(&self) {
        self.inner.leaving.store(true, Ordering::Relaxed);
    }

    /// Whether [`Transport::leaving`] was called: failures to reach peers
    /// are expected from then on, so callers log theirs at debug level too.
    pub fn is_leaving(&self) -> bool {
        self.inner.leaving.load(Ordering::Relaxed)
    }

    /// This node is joining its cluster through `seeds` (`host:port` as
    /// dialled): a seed may not be listening yet (nodes started in any
    /// order), so failing to reach one is logged as information, not
    /// warned, until [`Transport::joined`]. A join that never succeeds is
    /// reported by the membership at its deadline, with each seed's last
    /// dial error ([`Transport::dial_error`]).
    pub fn joining_through(&self, seeds: &[String]) {
        let mut set = self
            .inner
            .joining_through
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set.clear();
        set.extend(seeds.iter().map(|s| (s.clone(), ())));
    }

    /// The join ended (joined, or given up): failing to reach a seed is
    /// warned as for any peer again.
    pub fn joined(&self) {
        self.inner
            .joining_through
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Undoes [`Transport::forget`]'s quiet failures: `peer` (e.g. a new
    /// life of a member at that address) is expected to answer again, so
    /// failing to reach it is warned as for any peer.
    pub fn remember(&self, peer: &str) {
        self.inner.set_forgotten(peer, false);
    }

    /// Stops the listener and the links: queued frames get up to
    /// `[transport] flush_deadline_ms` to be written, then every task is
    /// waited for (at most twice that deadline). Pending asks fail with
    /// [`AskError::Unreachable`], inboxes return `None` once drained.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.stopped.store(true, Ordering::Relaxed);
        self.inner.tracker.close();
        let deadline = Duration::from_millis(self.inner.config.flush_deadline_ms * 2);
        let _ = tokio::time::timeout(deadline, self.inner.tracker.wait()).await;
        self.inner.fail_all_pending("transport shut down");
    }
}

/// A link came back closed: it was forgotten, so the cache is stale.
fn forgotten(cache: Option<&PeerCache>) {
    if let Some(c) = cache {
        c.clear();
    }
}

/// The error of an ask whose transport stopped before it was answered.
fn shut_down(peer: &str) -> AskError {
    AskError::Unreachable {
        peer: peer.to_owned(),
        reason: "transport shut down".into(),
    }
}

/// An encoder that copies an already encoded body.
fn copy_body(body: &[u8]) -> impl FnMut(&mut BytesMut) -> Result<(), SendError> + '_ {
    move |buf: &mut BytesMut| {
        buf.extend_from_slice(body);
        Ok(())
    }
}

/// Whether a frame is worth a syscall of its own when the link is idle:
/// everything on the control lane, and asks and replies on any lane.
fn inline(lane: Lane, kind: Kind) -> bool {
    lane == Lane::Control || !matches!(kind, Kind::Tell)
}

/// Removes an ask's pending entry however the ask ends.
struct PendingGuard<'a> {
    inner: &'a Inner,
    corr: u64,
    armed: std::sync::atomic::AtomicBool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed.load(Ordering::Relaxed) {
            self.inner.pending_lock().remove(&self.corr);
        }
    }
}

/// One refusal counted by [`Inner::throttle`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throttled {
    /// How many refusals of its kind this node made (1 for the first).
    pub count: u64,
    /// Whether to warn of it (the 1st, 2nd, 4th, ... of its kind); if
    /// not, it is logged at debug level and counted in
    /// `warnings_throttled`.
    pub warn: bool,
}

impl Inner {
    /// Counts a refusal or close of a misbehaving connection of kind
    /// `kind` and says whether to warn of it: at the 1st, 2nd, 4th, ...
    /// of its kind on this node, so n of a kind give ⌊log2 n⌋ + 1
    /// warnings, however the peers vary what they send (the warning
    /// itself may show the peer's values, escaped).
    pub(crate) fn throttle(&self, kind: RefusalKind) -> Throttled {
        let count = self.refused_here[kind.index()]
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let warn = crate::stats::warned_at(count);
        if !warn {
            crate::stats::bump(&self.stats.warnings_throttled);
        }
        Throttled { count, warn }
    }
}

impl Inner {
    fn links_lock(&self) -> std::sync::MutexGuard<'_, FastMap<String, Arc<PeerLinks>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending_lock(&self) -> std::sync::MutexGuard<'_, FastMap<u64, PendingAsk>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register_slot(&self, id: u8, slot: Slot) -> Result<(), crate::RegisterError> {
        let cell = self
            .channels
            .get(usize::from(id))
            .ok_or(crate::RegisterError::OutOfRange(id))?;
        cell.set(slot).map_err(|_| crate::RegisterError::Taken(id))
    }

    /// Refuses a body that cannot fit a frame before copying it anywhere.
    fn check_body(&self, body: &[u8]) -> Result<(), SendError> {
        let max = self.config.max_frame_bytes;
        if body.len() > max {
            return Err(SendError::TooLarge {
                len: body.len(),
                max,
            });
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), SendError> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(SendError::Shutdown);
        }
        Ok(())
    }

    /// The links to `peer`, creating them (and spawning their tasks) on
    /// first use.
    fn peer_links(self: &Arc<Self>, peer: &str) -> Arc<PeerLinks> {
        let mut links = self.links_lock();
        if let Some(p) = links.get(peer) {
            return Arc::clone(p);
        }
        let p = Arc::new(PeerLinks {
            addr: peer.to_owned(),
            lanes: Lane::ALL.map(|lane| Arc::new(Link::new(self, peer, lane))),
        });
        for link in &p.lanes {
            self.tracker
                .spawn(link::run(Arc::clone(self), Arc::clone(link)));
        }
        links.insert(peer.to_owned(), Arc::clone(&p));
        p
    }

    fn queue_full(&self, peer: &str) -> SendError {
        SendError::QueueFull {
            peer: peer.to_owned(),
            capacity: self.config.outbound_queue_frames,
        }
    }

    /// Queues one frame without waiting.
    pub(crate) fn try_send(
        self: &Arc<Self>,
        cache: Option<&PeerCache>,
        peer: &str,
        lane: Lane,
        header: Header,
        body: BodyEncoder<'_>,
    ) -> Result<(), SendError> {
        // A link retired by `forget` while we held it: take the new one.
        for _ in 0..2 {
            self.check_open()?;
            let links = self.links(cache, peer);
            match links
                .lane(lane)
                .outbox
                .try_push(self, header, inline(lane, header.kind), body)?
            {
                Pushed::Queued => return Ok(()),
                Pushed::Full => return Err(self.queue_full(peer)),
                Pushed::Closed => forgotten(cache),
            }
        }
        Err(SendError::Shutdown)
    }

    /// One attempt to queue a frame without waiting: true when queued,
    /// false when the caller should go the waiting way ([`Inner::send`]).
    pub(crate) fn try_send_once(
        self: &Arc<Self>,
        cache: Option<&PeerCache>,
        peer: &str,
        lane: Lane,
        header: Header,
        body: BodyEncoder<'_>,
    ) -> Result<bool, SendError> {
        self.check_open()?;
        let links = self.links(cache, peer);
        let pushed =
            links
                .lane(lane)
                .outbox
                .try_push(self, header, inline(lane, header.kind), body)?;
        Ok(pushed == Pushed::Queued)
    }

    /// Queues one frame, waiting for space.
    pub(crate) async fn send<F>(
        self: &Arc<Self>,
        cache: Option<&PeerCache>,
        peer: &str,
        lane: Lane,
        header: Header,
        body: &mut F,
    ) -> Result<(), SendError>
    where
        F: FnMut(&mut BytesMut) -> Result<(), SendError>,
    {
        for _ in 0..2 {
            self.check_open()?;
            let links = self.links(cache, peer);
            let outbox = &links.lane(lane).outbox;
            let inline = inline(lane, header.kind);
            // Without waiting first: the common case needs no future.
            let pushed = match outbox.try_push(self, header, inline, body)? {
                Pushed::Full => outbox.push(self, header, inline, body).await?,
                pushed => pushed,
            };
            match pushed {
                Pushed::Queued | Pushed::Full => return Ok(()),
                Pushed::Closed => forgotten(cache),
            }
        }
        Err(SendError::Shutdown)
    }

    /// Queues an ask and waits for its reply.
    pub(crate) async fn ask<F>(
        self: &Arc<Self>,
        cache: Option<&PeerCache>,
        peer: &str,
        lane: Lane,
        channel: u8,
        body: &mut F,
        timeout: Duration,
    ) -> Result<Bytes, AskError>
    where
        F: FnMut(&mut BytesMut) -> Result<(), SendError>,
    {
        let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        let mut tx = Some(tx);
        let guard = PendingGuard {
            inner: self,
            corr,
            armed: std::sync::atomic::AtomicBool::new(true),
        };
        let header = Header {
            channel,
            kind: Kind::Ask { corr },
        };
        let result = tokio::time::timeout(timeout, async {
            let mut queued = false;
            for _ in 0..2 {
                self.check_open()?;
                let links = self.links(cache, peer);
                let link = links.lane(lane);
                // Registered before it is queued: the reply may beat us back.
                if let Some(tx) = tx.take() {
                    let link = Arc::clone(link);
                    self.pending_lock().insert(corr, PendingAsk { link, tx });
                } else if let Some(p) = self.pending_lock().get_mut(&corr) {
                    p.link = Arc::clone(link);
                }
                // Waiting for queue space ends early if the link fails
                // meanwhile: the ask fails with it instead of being queued.
                let pushed = tokio::select! {
                    biased;
                    r = &mut rx => return r.unwrap_or_else(|_| Err(shut_down(peer))),
                    p = link.outbox.push(self, header, true, body) => p?,
                };
                match pushed {
                    Pushed::Queued | Pushed::Full => {
                        queued = true;
                        break;
                    }
                    Pushed::Closed => forgotten(cache),
                }
            }
            if !queued {
                return Err(AskError::Send(SendError::Shutdown));
            }
            let reply = (&mut rx).await;
            // Whoever answered removed the entry already.
            guard.armed.store(false, Ordering::Relaxed);
            reply.unwrap_or_else(|_| Err(shut_down(peer)))
        })
        .await;
        drop(guard);
        match result {
            Ok(r) => r,
            Err(_) => Err(AskError::Timeout {
                peer: peer.to_owned(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Completes the ask `corr` sent on `link` with what came back on that
    /// link's connection. No such ask (it timed out, or the peer answers
    /// what was never asked of it) counts as a late reply.
    pub(crate) fn complete(&self, link: &Link, corr: u64, result: Result<Bytes, AskError>) {
        let pending = {
            let mut pending = self.pending_lock();
            match pending.get(&corr) {
                Some(p) if std::ptr::eq(Arc::as_ptr(&p.link), link) => pending.remove(&corr),
                _ => None,
            }
        };
        match pending {
            Some(p) => {
                let _ = p.tx.send(result);
            }
            None => {
                crate::stats::bump(&self.stats.late_replies);
                tracing::debug!(peer = %link.peer, corr, "late reply dropped");
            }
        }
    }

    /// Fails every pending ask queued on `link`: it broke or was closed.
    pub(crate) fn fail_pending_link(&self, link: &Link, reason: &str) {
        let failed: Vec<PendingAsk> = {
            let mut pending = self.pending_lock();
            let corrs: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| std::ptr::eq(Arc::as_ptr(&p.link), link))
                .map(|(c, _)| *c)
                .collect();
            corrs.iter().filter_map(|c| pending.remove(c)).collect()
        };
        for p in failed {
            let _ = p.tx.send(Err(AskError::Unreachable {
                peer: link.peer.clone(),
                reason: reason.to_owned(),
            }));
        }
    }

    /// Fails every pending ask (shutdown).
    fn fail_all_pending(&self, reason: &str) {
        let failed: Vec<PendingAsk> = self.pending_lock().drain().map(|(_, p)| p).collect();
        for p in failed {
            let _ = p.tx.send(Err(AskError::Unreachable {
                peer: p.link.peer.clone(),
                reason: reason.to_owned(),
            }));
        }
    }
}

/// `host:port`, with an IPv6 literal host in brackets (`[::1]:25520`), so
/// the address parses back and reads unambiguously.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn an_ipv6_host_is_bracketed() {
        assert_eq!(host_port("::1", 25520), "[::1]:25520");
        assert_eq!(host_port("[::1]", 25520), "[::1]:25520");
        assert_eq!(host_port("127.0.0.1", 25520), "127.0.0.1:25520");
        assert_eq!(host_port("node-1.local", 1), "node-1.local:1");
    }
}
