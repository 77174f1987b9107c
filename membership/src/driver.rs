//! The tokio driver: runs the sans-IO [`Swim`] core over the `transport`
//! crate's control lane.
//!
//! One task owns the core. It `select!`s over inbound messages, commands
//! from [`MembershipHandle`]s, the core's next timer and cancellation; after
//! every input it drains `poll_transmit` (sent as tells on the control
//! lane) and `poll_event` (logged, published on a broadcast channel and
//! folded into a `watch` of the [`View`]). Time is read from
//! `tokio::time::Instant`, so tests with a paused clock drive it too.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use transport::{Channel, Lane, Transport};

use crate::config::MembershipConfig;
use crate::error::ConfigError;
use crate::swim::{Event, MemberId, Message, RefuseReason, Status, Swim, View};

/// The transport channel id membership uses (the same on every node).
pub const MEMBERSHIP_CHANNEL: u8 = 1;

/// Events kept for slow subscribers before they see `Lagged`.
const EVENT_BUFFER: usize = 1024;

/// Why the driver could not start, join or leave.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The membership config or identity is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The membership channel is already registered on this transport.
    #[error("cannot register the membership channel: {0}")]
    Channel(#[from] transport::RegisterError),
    /// No seed answered before `join_deadline_ms`, or every seed refused
    /// our handshake for good (another cluster name, other cluster
    /// settings or another protocol version) and the join was given up
    /// at once.
    #[error(
        "could not join through seeds {seeds:?}: {}{}{}{}",
        if *for_good {
            "every seed refused this node for good (cluster name, settings or protocol version)"
        } else if invalid.is_some() {
            "no valid answer within the join deadline"
        } else {
            "no answer within the join deadline"
        },
        invalid_suffix(invalid.as_deref()),
        refused_suffix(refused),
        unreachable_suffix(unreachable)
    )]
    JoinFailed {
        /// The seeds tried.
        seeds: Vec<String>,
        /// Whether every seed refused for good
        /// ([`transport::Transport::refused_for_good`]), so the join was
        /// given up before its deadline.
        for_good: bool,
        /// The seeds whose transport refused our handshake, each with the
        /// reason it gave (`host:port: reason`), e.g. another cluster
        /// name: they answered, but not to membership.
        refused: Vec<String>,
        /// The seeds the last dial could not reach, each with the error
        /// (`host:port: error`), e.g. a name that does not resolve.
        unreachable: Vec<String>,
        /// The last message dropped as invalid while joining
        /// (`peer: kind: error`), e.g. a seed's `join-ack` holding member
        /// metadata over this node's `max_metadata_bytes`: answers came,
        /// and this is why none counted.
        invalid: Option<String>,
    },
    /// A seed refused the join (e.g. our name is taken by a running member).
    #[error("join refused by {by}: {reason}")]
    JoinRefused {
        /// The refusing member.
        by: MemberId,
        /// Why.
        reason: RefuseReason,
    },
    /// A newer life of this node's name exists; this process must stop.
    #[error("superseded by a newer life of this node: {by}")]
    Superseded {
        /// The newer life.
        by: MemberId,
    },
    /// The wait passed its timeout.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The driver has stopped.
    #[error("membership driver stopped")]
    Stopped,
}

enum Command {
    Leave(oneshot::Sender<()>),
    SetMetadata(
        Vec<u8>,
        oneshot::Sender<Result<(), crate::error::MetadataError>>,
    ),
}

/// A cloneable handle to the running membership of this node.
#[derive(Clone, Debug)]
pub struct MembershipHandle {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<View>,
    status: watch::Receiver<Status>,
    events: broadcast::Sender<Event>,
    failure: watch::Receiver<Option<Event>>,
    local: MemberId,
    /// For the reasons seeds gave when they refused our handshake.
    transport: Transport,
}

/// Starts membership for this node on `transport` and begins joining
/// through `seeds` (`host:port`, DNS names allowed; our own address among
/// them means "start a cluster if nobody answers"). Returns at once; use
/// [`MembershipHandle::wait_joined`] to wait for the outcome.
///
/// The node publishes no metadata; [`start_with_metadata`] publishes some
/// from the start.
///
/// # Errors
/// [`DriverError::Config`] for an invalid config, [`DriverError::Channel`]
/// when the membership channel is taken.
pub fn start(
    transport: &Transport,
    config: MembershipConfig,
    seeds: Vec<String>,
    shutdown: CancellationToken,
) -> Result<MembershipHandle, DriverError> {
    start_with_metadata(transport, config, seeds, Vec::new(), shutdown)
}

/// [`start`], with this node publishing `metadata` (opaque bytes, at most
/// `max_metadata_bytes`) from the start: its `Join` carries them, so every
/// member's first record of this node (its `MemberUp`) already holds
/// them. [`MembershipHandle::set_metadata`] replaces them later, but a
/// member may see this node before that change reaches it; metadata that
/// others rely on from first sight (for example a role) goes here.
///
/// # Errors
/// [`DriverError::Config`] for an invalid config or `metadata` longer
/// than `max_metadata_bytes` ([`ConfigError::MetadataTooLarge`]),
/// [`DriverError::Channel`] when the membership channel is taken.
pub fn start_with_metadata(
    transport: &Transport,
    config: MembershipConfig,
    seeds: Vec<String>,
    metadata: Vec<u8>,
    shutdown: CancellationToken,
) -> Result<MembershipHandle, DriverError> {
    let me = transport.identity();
    let local = MemberId::new(me.name.clone(), me.addr.clone(), me.generation);
    let rng_seed = me.generation ^ fnv1a(me.addr.as_bytes());
    let swim = Swim::new(local.clone(), metadata, config, rng_seed)?;
    let (chan, inbox) = Channel::<Message>::register(transport, MEMBERSHIP_CHANNEL, Lane::Control)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (view_tx, view_rx) = watch::channel(swim.view());
    let (status_tx, status_rx) = watch::channel(swim.status());
    let (events_tx, _) = broadcast::channel(EVENT_BUFFER);
    let (failure_tx, failure_rx) = watch::channel(None);
    let driver = Driver {
        swim,
        chan,
        view_tx,
        status_tx,
        events_tx: events_tx.clone(),
        failure_tx,
        leaving: Vec::new(),
    };
    tokio::spawn(driver.run(inbox, cmd_rx, seeds, shutdown));
    Ok(MembershipHandle {
        commands: cmd_tx,
        view: view_rx,
        status: status_rx,
        events: events_tx,
        failure: failure_rx,
        local,
        transport: transport.clone(),
    })
}

/// The end of [`DriverError::JoinFailed`]'s message: the last answer
/// dropped as invalid, if any.
fn invalid_suffix(invalid: Option<&str>) -> String {
    invalid.map_or_else(String::new, |i| {
        format!("; answers were dropped as invalid, the last {i}")
    })
}

/// The end of [`DriverError::JoinFailed`]'s message: the refusals, if any.
fn refused_suffix(refused: &[String]) -> String {
    if refused.is_empty() {
        String::new()
    } else {
        format!("; the handshake was refused by {}", refused.join("; "))
    }
}

/// The end of [`DriverError::JoinFailed`]'s message: the seeds the last
/// dial could not reach, if any.
fn unreachable_suffix(unreachable: &[String]) -> String {
    if unreachable.is_empty() {
        String::new()
    } else {
        format!("; the last dial failed for {}", unreachable.join("; "))
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl MembershipHandle {
    /// This node's identity.
    pub fn local(&self) -> &MemberId {
        &self.local
    }

    /// The current view (every known member, ourselves included).
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// A receiver that changes with the view.
    pub fn watch_view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// A receiver that changes with the core's status.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The core's status (joining, joined, leaving, …).
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// A stream of membership events from now on (`MemberUp`,
    /// `MemberSuspect`, `MemberAlive`, `MemberDown`, `MemberLeft`, …).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Waits until this node has joined a cluster.
    ///
    /// # Errors
    /// [`DriverError::JoinFailed`] (no seed answered within
    /// `join_deadline_ms`, or every seed refused this node for good:
    /// another cluster name, settings or protocol version),
    /// [`DriverError::JoinRefused`] (e.g. duplicate name),
    /// [`DriverError::Timeout`], [`DriverError::Stopped`].
    pub async fn wait_joined(&self, timeout: Duration) -> Result<(), DriverError> {
        let mut status = self.status.clone();
        let wait = async {
            loop {
                let s = *status.borrow_and_update();
                match s {
                    Status::Joined | Status::Leaving | Status::Left => return Ok(()),
                    Status::Failed | Status::Superseded => return Err(self.failure_error()),
                    Status::Idle | Status::Joining => {}
                }
                if status.changed().await.is_err() {
                    return Err(DriverError::Stopped);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| DriverError::Timeout(timeout.as_millis() as u64))?
    }

    fn failure_error(&self) -> DriverError {
        match self.failure.borrow().clone() {
            Some(Event::JoinFailed { seeds, invalid }) => {
                let refused = seeds
                    .iter()
                    .filter_map(|seed| Some(format!("{seed}: {}", self.transport.refusal(seed)?)))
                    .collect();
                let unreachable = seeds
                    .iter()
                    .filter_map(|seed| {
                        Some(format!("{seed}: {}", self.transport.dial_error(seed)?))
                    })
                    .collect();
                let for_good =
                    !seeds.is_empty() && seeds.iter().all(|s| self.transport.refused_for_good(s));
                DriverError::JoinFailed {
                    seeds,
                    for_good,
                    refused,
                    unreachable,
                    invalid,
                }
            }
            Some(Event::JoinRefused { by, reason }) => DriverError::JoinRefused { by, reason },
            Some(Event::Superseded { by }) => DriverError::Superseded { by },
            _ => DriverError::Stopped,
        }
    }

    /// Waits until at least `n` members (ourselves included) are alive or
    /// suspect in this node's view.
    ///
    /// # Errors
    /// [`DriverError::Timeout`] or [`DriverError::Stopped`].
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<(), DriverError> {
        let mut view = self.view.clone();
        let wait = async {
            loop {
                if view.borrow_and_update().active_count() >= n {
                    return Ok(());
                }
                if view.changed().await.is_err() {
                    return Err(DriverError::Stopped);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| DriverError::Timeout(timeout.as_millis() as u64))?
    }

    /// Waits until the set of active members has not changed for `settle`,
    /// then returns it (names, sorted).
    ///
    /// # Errors
    /// [`DriverError::Timeout`] when it keeps changing past `timeout`.
    pub async fn wait_stable(
        &self,
        settle: Duration,
        timeout: Duration,
    ) -> Result<Vec<String>, DriverError> {
        let mut view = self.view.clone();
        let wait = async {
            let mut last = active_names(&view.borrow_and_update());
            loop {
                match tokio::time::timeout(settle, view.changed()).await {
                    Err(_) => return Ok(last),
                    Ok(Err(_)) => return Err(DriverError::Stopped),
                    Ok(Ok(())) => {
                        let now = active_names(&view.borrow_and_update());
                        if now != last {
                            last = now;
                        } else {
                            // Same set (e.g. a suspicion came and went):
                            // keep waiting out the rest of the period.
                            continue;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| DriverError::Timeout(timeout.as_millis() as u64))?
    }

    /// Leaves gracefully: disseminates `Left` and waits until a member
    /// acknowledged it or `leave_timeout_ms` passed (then the core stops).
    ///
    /// # Errors
    /// [`DriverError::Timeout`] after `timeout`, [`DriverError::Stopped`].
    pub async fn leave(&self, timeout: Duration) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Leave(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| DriverError::Timeout(timeout.as_millis() as u64))?
            .map_err(|_| DriverError::Stopped)
    }

    /// Replaces this node's metadata (gossiped to every member, raising
    /// this node's incarnation). Members that saw this node before the
    /// change reaches them hold its earlier metadata meanwhile; metadata
    /// needed from first sight goes to [`start_with_metadata`].
    ///
    /// The inner result is the core's answer:
    /// [`crate::error::MetadataError`] past `max_metadata_bytes` (nothing
    /// changed).
    ///
    /// # Errors
    /// [`DriverError::Stopped`] when the driver has stopped.
    pub async fn set_metadata(
        &self,
        metadata: Vec<u8>,
    ) -> Result<Result<(), crate::error::MetadataError>, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SetMetadata(metadata, tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}

fn active_names(view: &View) -> Vec<String> {
    view.active().map(|m| m.id.name.clone()).collect()
}

struct Driver {
    swim: Swim,
    chan: Channel<Message>,
    view_tx: watch::Sender<View>,
    status_tx: watch::Sender<Status>,
    events_tx: broadcast::Sender<Event>,
    failure_tx: watch::Sender<Option<Event>>,
    leaving: Vec<oneshot::Sender<()>>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    async fn run(
        mut self,
        mut inbox: transport::Inbox<Message>,
        mut commands: mpsc::Receiver<Command>,
        seeds: Vec<String>,
        shutdown: CancellationToken,
    ) {
        // A seed may not be up yet (nodes started in any order): the
        // transport reports failing to reach one as information until the
        // join ends; a join that fails names each seed's last dial error.
        self.chan.transport().joining_through(&seeds);
        self.swim.join(now(), seeds);
        let mut commands_open = true;
        loop {
            self.drain();
            if self.no_seed_can_let_us_in() {
                self.swim.give_up_join();
                continue;
            }
            let deadline = self.swim.poll_timeout().map(tokio::time::Instant::from_std);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = inbox.recv() => match r {
                    Some(r) => self.swim.handle_message(now(), &r.from.addr, r.msg),
                    None => break,
                },
                c = commands.recv(), if commands_open => match c {
                    Some(Command::Leave(tx)) => {
                        if matches!(self.swim.status(), Status::Left | Status::Failed | Status::Superseded | Status::Idle) {
                            let _ = tx.send(());
                        } else {
                            self.leaving.push(tx);
                            // Members leaving at the same moment (a whole
                            // cluster stopping) may be gone before they
                            // hear of this leave: not a failure to warn of.
                            self.chan.transport().leaving();
                            self.swim.leave(now());
                        }
                    }
                    Some(Command::SetMetadata(m, tx)) => {
                        let _ = tx.send(self.swim.set_metadata(now(), m));
                    }
                    // Every handle is gone: membership goes on until shutdown.
                    None => commands_open = false,
                },
                _ = timer => self.swim.handle_timeout(now()),
            }
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(t) = self.swim.poll_transmit() {
            if let Err(e) = self.chan.tell(&t.to_addr, &t.msg) {
                tracing::debug!(to = %t.to_addr, kind = t.msg.kind(), error = %e, "membership message not sent");
            }
        }
        let mut changed = false;
        let mut down = Vec::new();
        while let Some(ev) = self.swim.poll_event() {
            changed = true;
            log_event(&ev);
            match &ev {
                // A member that left gracefully is gone as well: frames
                // still queued for it (a peer's hand-off while the whole
                // cluster stops) fail at once instead of redialling.
                Event::MemberDown(m) | Event::MemberLeft(m) => down.push(m.id.addr.clone()),
                Event::MemberUp(m) | Event::MemberAlive(m) => {
                    self.chan.transport().remember(&m.id.addr);
                }
                Event::Joined => self.chan.transport().joined(),
                Event::JoinFailed { .. } | Event::JoinRefused { .. } | Event::Superseded { .. } => {
                    self.chan.transport().joined();
                    self.failure_tx.send_replace(Some(ev.clone()));
                }
                Event::Left => {
                    for tx in self.leaving.drain(..) {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
            let _ = self.events_tx.send(ev);
        }
        self.forget_links(down);
        if changed {
            let view = self.swim.view();
            self.view_tx.send_if_modified(|v| {
                if *v != view {
                    *v = view;
                    true
                } else {
                    false
                }
            });
        }
        let status = self.swim.status();
        self.status_tx.send_if_modified(|s| {
            if *s != status {
                *s = status;
                true
            } else {
                false
            }
        });
        if matches!(status, Status::Left) {
            for tx in self.leaving.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

impl Driver {
    /// Whether this node is joining and every seed it still tries refused
    /// our handshake for good (its cluster name, settings or protocol
    /// version are not ours): waiting for the join deadline would only
    /// delay the same failure.
    fn no_seed_can_let_us_in(&self) -> bool {
        let seeds = self.swim.join_seeds();
        let transport = self.chan.transport();
        matches!(self.swim.status(), Status::Joining)
            && !seeds.is_empty()
            && seeds.iter().all(|s| transport.refused_for_good(s))
    }

    /// Drops the transport's links to the addresses of members declared
    /// dead or that left (unless an active member, e.g. a newer life, uses
    /// the address).
    ///
    /// A peer cut off by a firewall that drops packets silently keeps its
    /// established connections "up": writes land in the kernel's send
    /// buffer and are retransmitted with exponential backoff, so after
    /// the network heals nothing flows on them until the next
    /// retransmission, seconds to minutes later (RELIABILITY.md, finding
    /// 3). Forgotten, the next message to that address (push-pull rounds
    /// contact dead members) dials a fresh connection, which fails fast
    /// while the cut lasts and succeeds as soon as it heals.
    fn forget_links(&self, addrs: Vec<String>) {
        if addrs.is_empty() {
            return;
        }
        let view = self.swim.view();
        for addr in addrs {
            if addr == self.swim.local().id.addr || view.active().any(|m| m.id.addr == addr) {
                continue;
            }
            tracing::debug!(peer = %addr, "member down or left: dropping its links");
            self.chan.transport().forget(&addr);
        }
    }
}

/// The core logs lifecycle events itself at `info`; the driver adds the
/// failures at `error`/`warn` and the rest at `debug`.
fn log_event(ev: &Event) {
    match ev {
        Event::Joined => tracing::debug!("joined the cluster"),
        Event::JoinFailed { seeds, invalid } => {
            tracing::error!(?seeds, invalid, "join failed: no seed let this node in")
        }
        Event::JoinRefused { by, reason } => {
            tracing::error!(by = %by.name, %reason, "join refused")
        }
        Event::MemberUp(m) => tracing::debug!(member = %m.id, "member up"),
        Event::MemberSuspect(m) => tracing::debug!(member = %m.id, "member suspect"),
        Event::MemberAlive(m) => tracing::debug!(member = %m.id, "member alive again"),
        Event::MemberDown(m) => tracing::debug!(member = %m.id, "member down"),
        Event::MemberLeft(m) => tracing::debug!(member = %m.id, "member left"),
        Event::MemberUpdated(m) => tracing::debug!(member = %m.id, "member metadata updated"),
        Event::RejoinedAfterDeath {
            declared_by,
            incarnation,
        } => tracing::warn!(
            ?declared_by,
            incarnation,
            "this node was declared dead while running; refuted, its shards are lost"
        ),
        Event::Superseded { by } => {
            tracing::error!(by = %by, "a newer life of this node exists; stopping")
        }
        Event::Left => tracing::debug!("left the cluster"),
    }
}
