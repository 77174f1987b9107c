//! [`Swim`]: the sans-IO membership state machine.
//!
//! Inputs carry the time (`now`); outputs are polled. Nothing here reads a
//! clock, sleeps, touches a socket or uses a thread RNG: randomness comes
//! from a seeded `ChaCha8Rng` the core owns, and every iteration is over
//! sorted collections, so the same inputs always give the same outputs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, info, warn};

use crate::config::MembershipConfig;
use crate::error::{ConfigError, MetadataError};
use crate::swim::broadcast::BroadcastQueue;
use crate::swim::event::Event;
use crate::swim::health::LocalHealth;
use crate::swim::member::{Member, MemberId, MemberState};
use crate::swim::message::{Message, RefuseReason, Transmit, Update, WireLimits};
use crate::swim::probe::{Probe, ProbeList};
use crate::swim::suspicion::Suspicion;
use crate::swim::view::{SYNC_BUCKETS, Table, View, bucket_of, view_digest};

/// Most indirect probes we relay for others at once; more are dropped and
/// counted (`Stats::relays_dropped`).
const MAX_RELAYS: usize = 256;
/// Most duplicate-name checks in flight at once.
const MAX_DUP_CHECKS: usize = 64;
/// How many members, in expectation, probe a freshly suspected member
/// out of round-robin order (each with probability this / N).
const PRIORITY_PROBERS: f64 = 8.0;
/// Most suspects waiting for a priority probe.
const MAX_PRIORITY: usize = 16;

/// Where the core is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Created; `join` not called yet. Messages are ignored.
    Idle,
    /// Sending join requests to the seeds (with backoff) until one
    /// accepts, the deadline passes or a seed refuses.
    Joining,
    /// Part of a cluster: probing, gossiping, syncing.
    Joined,
    /// `leave` was called; `Left` is being disseminated.
    Leaving,
    /// The leave finished. Inert.
    Left,
    /// Joining failed (deadline) or was refused. Inert.
    Failed,
    /// A newer life of our name exists. Inert.
    Superseded,
}

impl Status {
    fn is_running(self) -> bool {
        matches!(self, Status::Joining | Status::Joined | Status::Leaving)
    }
}

/// Counters, for logs, metrics and the simulator's figures. All
/// monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handed out by `poll_transmit`.
    pub messages_sent: u64,
    /// Messages given to `handle_message` (valid or not).
    pub messages_received: u64,
    /// Received messages dropped because they broke a bound.
    pub invalid_messages: u64,
    /// Direct probes started.
    pub probes_sent: u64,
    /// Probes that got no ack, direct or indirect.
    pub probes_failed: u64,
    /// Failed probes not acted on because we had just been stalled.
    pub probes_inconclusive: u64,
    /// Ping-req messages sent.
    pub ping_reqs_sent: u64,
    /// Suspicions we raised ourselves.
    pub suspicions_raised: u64,
    /// Members we declared dead ourselves.
    pub deaths_declared: u64,
    /// Times we refuted a suspicion or death of ourselves.
    pub refutations: u64,
    /// Anti-entropy rounds started.
    pub syncs_started: u64,
    /// Full states sent (`Sync`, `JoinAck`).
    pub states_sent: u64,
    /// Times our timers fired far too late (we were not scheduled).
    pub stalls_detected: u64,
    /// New members dropped because `max_members` was reached.
    pub members_dropped: u64,
    /// Ping-reqs dropped because `MAX_RELAYS` were in flight.
    pub relays_dropped: u64,
}

/// Where an update came from; decides the merge rule and whether it is
/// disseminated further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Decided here (our probe failed, our suspicion expired, a join).
    Local,
    /// Piggybacked or gossiped: strict merge, re-disseminated.
    Gossip,
    /// Anti-entropy state: not re-disseminated; dead members are not
    /// accepted; a conflicting dead entry follows the minority rule.
    Sync,
}

#[derive(Debug)]
struct Relay {
    requester: MemberId,
    origin_seq: u64,
    target: MemberId,
    nack_deadline: Instant,
}

#[derive(Debug)]
struct DupCheck {
    existing: MemberId,
    newcomer: Member,
    deadline: Instant,
}

#[derive(Debug)]
struct JoinState {
    seeds: Vec<String>,
    deadline: Instant,
    next_attempt: Instant,
    backoff: Duration,
}

#[derive(Debug)]
struct LeaveState {
    deadline: Instant,
    seqs: BTreeSet<u64>,
}

/// The SWIM membership core of one node (Das et al. 2002, with
/// Lifeguard's local health and dynamic suspicion, arXiv 1707.00788).
///
/// Drive it with [`Swim::join`], [`Swim::handle_message`],
/// [`Swim::handle_timeout`] (at [`Swim::poll_timeout`]), [`Swim::leave`]
/// and [`Swim::set_metadata`]; after each input drain
/// [`Swim::poll_transmit`] and [`Swim::poll_event`]. See `PROTOCOL.md`
/// for the messages, timers and invariants.
#[derive(Debug)]
pub struct Swim {
    config: MembershipConfig,
    limits: WireLimits,
    local: Member,
    status: Status,
    rng: ChaCha8Rng,
    table: Table,
    broadcasts: BroadcastQueue,
    suspicions: BTreeMap<String, Suspicion>,
    probe_list: ProbeList,
    probe: Option<Probe>,
    /// Suspects to probe before resuming round-robin.
    priority: VecDeque<String>,
    next_probe_at: Option<Instant>,
    next_gossip_at: Option<Instant>,
    next_sync_at: Option<Instant>,
    sync_round: u64,
    relays: BTreeMap<u64, Relay>,
    dup_checks: BTreeMap<u64, DupCheck>,
    health: LocalHealth,
    join: Option<JoinState>,
    leave: Option<LeaveState>,
    seeds: Vec<String>,
    self_addrs: BTreeSet<String>,
    grace_until: Option<Instant>,
    /// `in_minority()` when the anti-entropy state being merged arrived.
    sync_minority: bool,
    next_seq: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Swim {
    /// Creates the core for the local life `id` with `metadata`, using
    /// `config` and an RNG seeded with `rng_seed` (use different seeds on
    /// different nodes, e.g. from the generation and name).
    ///
    /// # Errors
    /// [`ConfigError`] if `config` is invalid, `id` breaks the wire bounds
    /// (empty or too long name, too long address) or `metadata` exceeds
    /// `max_metadata_bytes`.
    pub fn new(
        id: MemberId,
        metadata: Vec<u8>,
        config: MembershipConfig,
        rng_seed: u64,
    ) -> Result<Swim, ConfigError> {
        config.validate()?;
        let probe = Message::Nack {
            from: id.clone(),
            seq: 0,
        };
        let limits = WireLimits {
            max_metadata_bytes: config.max_metadata_bytes,
            max_updates: config.max_piggyback_updates,
            max_state_entries: config.max_members.saturating_add(2),
        };
        probe.validate(&limits)?;
        if metadata.len() > config.max_metadata_bytes {
            return Err(ConfigError::MetadataTooLarge {
                len: metadata.len(),
                max: config.max_metadata_bytes,
            });
        }
        let health = LocalHealth::new(config.max_local_health);
        Ok(Swim {
            limits,
            local: Member {
                id,
                incarnation: 0,
                state: MemberState::Alive,
                metadata,
            },
            status: Status::Idle,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            table: Table::default(),
            broadcasts: BroadcastQueue::default(),
            suspicions: BTreeMap::new(),
            probe_list: ProbeList::default(),
            probe: None,
            priority: VecDeque::new(),
            next_probe_at: None,
            next_gossip_at: None,
            next_sync_at: None,
            sync_round: 0,
            relays: BTreeMap::new(),
            dup_checks: BTreeMap::new(),
            health,
            join: None,
            leave: None,
            seeds: Vec::new(),
            self_addrs: BTreeSet::new(),
            grace_until: None,
            sync_minority: false,
            next_seq: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            config,
        })
    }

    // ----------------------------------------------------------------
    // Accessors
    // ----------------------------------------------------------------

    /// Our own record (life, incarnation, state, metadata).
    pub fn local(&self) -> &Member {
        &self.local
    }

    /// Where the core is in its life.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The configuration in use.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Lifeguard's local health score, `0..=max_local_health` (0 is
    /// healthy); probe interval and timeout are multiplied by score + 1.
    pub fn local_health(&self) -> u32 {
        self.health.score()
    }

    /// Updates waiting to be piggybacked.
    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// The record of `name` (not ourselves), if known.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.table.get(name).map(|e| &e.member)
    }

    /// Every other member we know (dead and left ones until reaped), in
    /// no particular (but deterministic) order; [`Swim::view`] is sorted.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.table.iter().map(|e| &e.member)
    }

    /// Active members (alive or suspect) including ourselves while we are
    /// active.
    pub fn active_count(&self) -> usize {
        self.table.active().len() + usize::from(self.local.is_active())
    }

    /// A snapshot of the whole view, ourselves included, by name.
    pub fn view(&self) -> View {
        let mut members: BTreeMap<String, Member> = self
            .table
            .iter()
            .map(|e| (e.member.id.name.clone(), e.member.clone()))
            .collect();
        members.insert(self.local.id.name.clone(), self.local.clone());
        View {
            local: self.local.id.name.clone(),
            members,
        }
    }

    // ----------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Swim::handle_timeout`] must be called next; `None` when the
    /// core is idle or stopped. May be in the past (call it at once).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.status.is_running() {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if let Some(j) = &self.join {
            at(Some(j.next_attempt));
            at(Some(j.deadline));
        }
        if let Some(l) = &self.leave {
            at(Some(l.deadline));
        }
        at(self.next_probe_at);
        if let Some(p) = &self.probe {
            if !p.acked && !p.indirect_sent {
                at(Some(p.direct_deadline));
            }
        }
        at(self.relays.values().map(|r| r.nack_deadline).min());
        at(self.dup_checks.values().map(|d| d.deadline).min());
        at(self.suspicions.values().map(Suspicion::deadline).min());
        if !self.broadcasts.is_empty() {
            at(self.next_gossip_at);
        }
        at(self.next_sync_at);
        at(self
            .table
            .next_reap()
            .map(|since| since + self.config.reap_after()));
        t
    }

    // ----------------------------------------------------------------
    // Commands
    // ----------------------------------------------------------------

    /// Starts joining through `seeds` (advertised `host:port` addresses,
    /// resolved by the driver). Seeds equal to our own address are
    /// skipped; if none remain we form a new cluster at once
    /// (`Event::Joined`). Otherwise a `Join` goes to every seed, retried
    /// with exponential backoff (`join_retry_ms` doubling up to
    /// `join_retry_max_ms`) until one accepts (`Event::Joined`), one
    /// refuses (`Event::JoinRefused`) or `join_deadline_ms` passes
    /// (`Event::JoinFailed`). A seed that turns out to be ourselves (our
    /// own `Join` comes back) is dropped the same way.
    ///
    /// Does nothing unless the core is [`Status::Idle`].
    pub fn join(&mut self, now: Instant, seeds: Vec<String>) {
        if self.status != Status::Idle {
            return;
        }
        let mut unique = BTreeSet::new();
        let seeds: Vec<String> = seeds
            .into_iter()
            .filter(|s| *s != self.local.id.addr && unique.insert(s.clone()))
            .collect();
        self.seeds = seeds.clone();
        self.start_timers(now);
        if seeds.is_empty() {
            info!(member = %self.local.id, "no other seed: forming a new cluster");
            self.become_joined();
            return;
        }
        self.status = Status::Joining;
        info!(member = %self.local.id, seeds = ?seeds, "joining");
        self.join = Some(JoinState {
            seeds,
            deadline: now + self.config.join_deadline(),
            next_attempt: now,
            backoff: self.config.join_retry(),
        });
        self.join_attempt(now);
    }

    /// Leaves gracefully: raises our incarnation, marks ourselves `Left`,
    /// sends it (piggybacked on pings) to up to `gossip_fanout` members and
    /// keeps gossiping it. Completes with `Event::Left` when one of them
    /// acknowledges or after `leave_timeout_ms`; then the core is inert.
    ///
    /// Does nothing once left, failed or superseded.
    pub fn leave(&mut self, now: Instant) {
        match self.status {
            Status::Joined | Status::Joining => {}
            Status::Idle => {
                self.status = Status::Left;
                self.local.state = MemberState::Left;
                self.events.push_back(Event::Left);
                return;
            }
            _ => return,
        }
        self.join = None;
        self.local.incarnation += 1;
        self.local.state = MemberState::Left;
        let me = self.self_update();
        self.enqueue(me.clone());
        self.status = Status::Leaving;
        self.probe = None;
        info!(member = %self.local.id, "leaving");
        let targets = self.random_active(self.config.gossip_fanout as usize, None, true);
        let mut seqs = BTreeSet::new();
        for m in targets {
            let seq = self.take_seq();
            let updates = self.piggyback(Some(me.clone()));
            seqs.insert(seq);
            self.send(
                m.id.addr.clone(),
                Message::Ping {
                    from: self.local.id.clone(),
                    seq,
                    updates,
                },
            );
        }
        if seqs.is_empty() {
            self.finish_leave();
        } else {
            self.leave = Some(LeaveState {
                deadline: now + self.config.leave_timeout(),
                seqs,
            });
        }
    }

    /// Publishes new metadata: raises our incarnation and disseminates our
    /// record.
    ///
    /// # Errors
    /// [`MetadataError::TooLarge`] past `max_metadata_bytes` (nothing
    /// changes); [`MetadataError::NotRunning`] once left, failed or
    /// superseded.
    pub fn set_metadata(&mut self, now: Instant, metadata: Vec<u8>) -> Result<(), MetadataError> {
        let _ = now;
        if metadata.len() > self.config.max_metadata_bytes {
            return Err(MetadataError::TooLarge {
                len: metadata.len(),
                max: self.config.max_metadata_bytes,
            });
        }
        if !matches!(self.status, Status::Idle | Status::Joining | Status::Joined) {
            return Err(MetadataError::NotRunning);
        }
        self.local.metadata = metadata;
        self.local.incarnation += 1;
        if self.status != Status::Idle {
            let me = self.self_update();
            self.enqueue(me);
        }
        Ok(())
    }

    // ----------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------

    /// Handles one message received from `from_addr` (the transport's view
    /// of the sender, used for logs; the sender's identity is `msg`'s
    /// `from`). Invalid messages (see [`Message::validate`]) are dropped,
    /// counted and logged; nothing here panics on network input.
    pub fn handle_message(&mut self, now: Instant, from_addr: &str, msg: Message) {
        self.stats.messages_received += 1;
        if !self.status.is_running() {
            return;
        }
        if let Err(e) = msg.validate(&self.limits) {
            self.stats.invalid_messages += 1;
            warn!(peer = %from_addr, kind = msg.kind(), error = %e, "dropping invalid membership message");
            return;
        }
        self.observe_time(now);
        debug!(peer = %from_addr, kind = msg.kind(), "membership message");
        let from = msg.from().clone();
        if from.name == self.local.id.name {
            match &msg {
                Message::Join { seed, .. } if from.generation == self.local.id.generation => {
                    self.own_join_returned(seed.clone());
                    return;
                }
                Message::SyncRequest { to, .. } if from.generation == self.local.id.generation => {
                    self.note_self_addr(to.clone());
                    return;
                }
                Message::Join { .. } => {}
                _ if from.generation > self.local.id.generation => {
                    self.superseded(from);
                    return;
                }
                _ => return,
            }
        }
        match msg {
            Message::Ping { from, seq, updates } => {
                self.apply_updates(now, updates, Source::Gossip);
                let first = self.corrective_update(&from);
                let updates = self.piggyback(first);
                self.send(
                    from.addr.clone(),
                    Message::Ack {
                        from: self.local.id.clone(),
                        seq,
                        updates,
                    },
                );
            }
            Message::Ack { from, seq, updates } => {
                self.apply_updates(now, updates, Source::Gossip);
                self.on_ack(&from, seq);
            }
            Message::PingReq {
                from,
                seq,
                target,
                updates,
            } => {
                self.apply_updates(now, updates, Source::Gossip);
                self.on_ping_req(now, from, seq, target);
            }
            Message::Nack { seq, .. } => {
                if let Some(p) = &mut self.probe {
                    if p.seq == seq {
                        p.nacks += 1;
                    }
                }
            }
            Message::Gossip { updates, .. } => {
                self.apply_updates(now, updates, Source::Gossip);
            }
            Message::SyncRequest {
                from,
                to: _,
                digest,
            } => {
                if self.status != Status::Joined {
                    return;
                }
                let buckets = self.table.buckets(&self.local);
                if view_digest(&buckets) != digest {
                    self.send(
                        from.addr.clone(),
                        Message::SyncBuckets {
                            from: self.local.id.clone(),
                            buckets,
                        },
                    );
                }
            }
            Message::SyncBuckets { from, buckets } => {
                if self.status != Status::Joined {
                    return;
                }
                let differing = self.differing_buckets(&buckets);
                if differing.iter().any(|d| *d) {
                    self.send_state(&from, &differing, true);
                }
            }
            Message::Sync {
                from,
                buckets,
                state,
                reply,
            } => {
                if self.status != Status::Joined {
                    return;
                }
                self.merge_state(now, state);
                if reply {
                    let differing = self.differing_buckets(&buckets);
                    if differing.iter().any(|d| *d) {
                        self.send_state(&from, &differing, false);
                    }
                }
            }
            Message::Join {
                from,
                seed: _,
                incarnation,
                metadata,
            } => self.on_join(now, from, incarnation, metadata),
            Message::JoinAck { from, state } => {
                self.merge_state(now, state);
                if self.status == Status::Joining {
                    info!(member = %self.local.id, via = %from, "joined");
                    self.become_joined();
                }
            }
            Message::JoinRefused { from, reason } => {
                if self.status == Status::Joining {
                    warn!(member = %self.local.id, by = %from, %reason, "join refused");
                    self.stop(Status::Failed);
                    self.events
                        .push_back(Event::JoinRefused { by: from, reason });
                }
            }
        }
    }

    /// Runs every timer due at `now`: join retries and deadline, the leave
    /// bound, probe phases (direct timeout → ping-req, period end →
    /// suspect), relay nacks, duplicate-name checks, suspicion timeouts
    /// (→ dead), gossip and push-pull rounds, and reaping.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.status.is_running() {
            return;
        }
        self.observe_time(now);
        if let Some(j) = &self.join {
            if now >= j.deadline {
                let seeds = j.seeds.clone();
                warn!(member = %self.local.id, seeds = ?seeds, "join deadline passed");
                self.stop(Status::Failed);
                self.events.push_back(Event::JoinFailed { seeds });
                return;
            }
            if now >= j.next_attempt {
                self.join_attempt(now);
            }
        }
        if let Some(l) = &self.leave {
            if now >= l.deadline {
                self.finish_leave();
                return;
            }
        }
        if let Some(p) = &self.probe {
            if !p.acked && !p.indirect_sent && now >= p.direct_deadline {
                self.send_ping_reqs();
            }
        }
        self.relay_timeouts(now);
        self.dup_check_timeouts(now);
        self.suspicion_timeouts(now);
        if self.next_probe_at.is_some_and(|t| now >= t) {
            self.probe_tick(now);
        }
        if self.next_gossip_at.is_some_and(|t| now >= t) {
            self.gossip_tick(now);
        }
        if self.next_sync_at.is_some_and(|t| now >= t) {
            self.sync_tick(now);
        }
        if let Some(cutoff) = now.checked_sub(self.config.reap_after()) {
            for m in self.table.reap(cutoff) {
                debug!(member = %m.id, "reaped");
                self.broadcasts.remove(&m.id.name);
            }
        }
    }

    // ----------------------------------------------------------------
    // Lifecycle helpers
    // ----------------------------------------------------------------

    fn start_timers(&mut self, now: Instant) {
        let period = self.config.probe_interval;
        let jitter = |rng: &mut ChaCha8Rng, d: Duration| d.mul_f64(rng.gen_range(0.0..1.0));
        self.next_probe_at = Some(now + jitter(&mut self.rng, period));
        self.next_sync_at = Some(now + jitter(&mut self.rng, self.config.push_pull_interval));
        self.next_gossip_at = Some(now);
    }

    fn become_joined(&mut self) {
        self.status = Status::Joined;
        self.join = None;
        self.events.push_back(Event::Joined);
    }

    fn stop(&mut self, status: Status) {
        self.status = status;
        self.join = None;
        self.leave = None;
        self.probe = None;
        self.relays.clear();
        self.dup_checks.clear();
        self.suspicions.clear();
        self.next_probe_at = None;
        self.next_gossip_at = None;
        self.next_sync_at = None;
    }

    fn finish_leave(&mut self) {
        info!(member = %self.local.id, "left");
        self.stop(Status::Left);
        self.events.push_back(Event::Left);
    }

    fn superseded(&mut self, by: MemberId) {
        warn!(member = %self.local.id, newer = %by, "a newer life of this member exists; stopping");
        self.stop(Status::Superseded);
        self.events.push_back(Event::Superseded { by });
    }

    fn join_attempt(&mut self, now: Instant) {
        let Some(j) = &mut self.join else { return };
        let seeds = j.seeds.clone();
        j.next_attempt = now + j.backoff;
        j.backoff = (j.backoff * 2).min(self.config.join_retry_max());
        for seed in seeds {
            self.send(
                seed.clone(),
                Message::Join {
                    from: self.local.id.clone(),
                    seed,
                    incarnation: self.local.incarnation,
                    metadata: self.local.metadata.clone(),
                },
            );
        }
    }

    /// Our own `Join` came back: that seed address is ourselves.
    fn own_join_returned(&mut self, seed: String) {
        self.note_self_addr(seed.clone());
        if let Some(j) = &mut self.join {
            j.seeds.retain(|s| *s != seed);
            if j.seeds.is_empty() {
                info!(member = %self.local.id, "every seed is ourselves: forming a new cluster");
                self.become_joined();
            }
        }
    }

    fn note_self_addr(&mut self, addr: String) {
        self.seeds.retain(|s| *s != addr);
        self.self_addrs.insert(addr);
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    fn send(&mut self, to_addr: String, msg: Message) {
        self.stats.messages_sent += 1;
        self.transmits.push_back(Transmit { to_addr, msg });
    }

    fn enqueue(&mut self, u: Update) {
        self.broadcasts.enqueue(u, self.config.max_queued_updates);
    }

    fn self_update(&self) -> Update {
        Update {
            member: self.local.clone(),
            accuser: None,
        }
    }

    /// Members we cannot see a majority of: we hold more dead members than
    /// active ones (ourselves included). Our death verdicts are then not
    /// spread, and anti-entropy may override them (see `PROTOCOL.md`).
    fn in_minority(&self) -> bool {
        self.table.dead().len() > self.table.active().len() + 1
    }

    fn cluster_size(&self) -> usize {
        self.table.active().len() + 1
    }

    /// Noticing that we were not scheduled: if the probe tick is overdue
    /// by more than a probe interval, our timers are unreliable. For a
    /// grace period we draw no conclusion from our own failed probes and
    /// hold every suspicion, so late acks and refutations waiting in our
    /// queue are read first (Lifeguard's local health, arXiv 1707.00788
    /// §IV-A, applied to timer lateness).
    fn observe_time(&mut self, now: Instant) {
        let Some(due) = self.next_probe_at else {
            return;
        };
        if now <= due + self.config.probe_interval {
            return;
        }
        if self.grace_until.is_some_and(|g| now < g) {
            return;
        }
        let grace =
            now + self.health.scale(self.config.probe_interval) + self.config.probe_interval;
        self.stats.stalls_detected += 1;
        self.health.apply(2);
        warn!(member = %self.local.id, late_ms = (now - due).as_millis() as u64, "timers fired late; holding suspicions");
        self.grace_until = Some(grace);
        for s in self.suspicions.values_mut() {
            s.hold_until(grace);
        }
    }

    fn in_grace(&self, now: Instant) -> bool {
        self.grace_until.is_some_and(|g| now < g)
    }

    // ----------------------------------------------------------------
    // Probing
    // ----------------------------------------------------------------

    fn probe_tick(&mut self, now: Instant) {
        if let Some(p) = self.probe.take() {
            self.conclude_probe(now, p);
        }
        self.next_probe_at = Some(now + self.health.scale(self.config.probe_interval));
        if self.status != Status::Joined {
            return;
        }
        let mut prioritized = None;
        while let Some(n) = self.priority.pop_front() {
            if self
                .table
                .get(&n)
                .is_some_and(|e| e.member.state == MemberState::Suspect)
            {
                prioritized = Some(n);
                break;
            }
        }
        let next = match prioritized {
            Some(n) => Some(n),
            None => self.probe_list.next_target(
                self.table.active(),
                |n| self.table.get(n).is_some_and(|e| e.member.is_active()),
                &mut self.rng,
            ),
        };
        let Some(name) = next else {
            return;
        };
        let Some(target) = self.table.get(&name).map(|e| e.member.clone()) else {
            return;
        };
        let seq = self.take_seq();
        // Lifeguard's buddy system: tell a suspect it is suspected first.
        let first = (target.state == MemberState::Suspect).then(|| Update {
            member: target.clone(),
            accuser: None,
        });
        let updates = self.piggyback(first);
        self.stats.probes_sent += 1;
        self.send(
            target.id.addr.clone(),
            Message::Ping {
                from: self.local.id.clone(),
                seq,
                updates,
            },
        );
        self.probe = Some(Probe {
            target: target.id,
            seq,
            direct_deadline: now + self.health.scale(self.config.probe_timeout()),
            indirect_sent: false,
            expected_nacks: 0,
            nacks: 0,
            acked: false,
        });
    }

    fn send_ping_reqs(&mut self) {
        let Some(p) = &self.probe else { return };
        let target = p.target.clone();
        let seq = p.seq;
        let relays = self.random_active(
            self.config.indirect_probes as usize,
            Some(&target.name),
            true,
        );
        for r in &relays {
            let updates = self.piggyback(None);
            self.stats.ping_reqs_sent += 1;
            self.send(
                r.id.addr.clone(),
                Message::PingReq {
                    from: self.local.id.clone(),
                    seq,
                    target: target.clone(),
                    updates,
                },
            );
        }
        if let Some(p) = &mut self.probe {
            p.indirect_sent = true;
            p.expected_nacks = relays.len() as u32;
        }
    }

    fn conclude_probe(&mut self, now: Instant, p: Probe) {
        if p.acked {
            return;
        }
        self.stats.probes_failed += 1;
        let delta = if p.expected_nacks > 0 {
            i64::from(p.expected_nacks.saturating_sub(p.nacks))
        } else {
            1
        };
        self.health.apply(delta);
        if self.in_grace(now) {
            self.stats.probes_inconclusive += 1;
            return;
        }
        let Some(current) = self.table.get(&p.target.name).map(|e| e.member.clone()) else {
            return;
        };
        if current.id.generation != p.target.generation || !current.is_active() {
            return;
        }
        debug!(member = %self.local.id, target = %current.id, "probe failed; suspecting");
        self.stats.suspicions_raised += u64::from(current.state == MemberState::Alive);
        let suspect = Member {
            state: MemberState::Suspect,
            ..current
        };
        let accuser = Some(self.local.id.name.clone());
        self.apply_update(
            now,
            Update {
                member: suspect,
                accuser,
            },
            Source::Local,
        );
    }

    fn on_ack(&mut self, from: &MemberId, seq: u64) {
        if let Some(p) = &mut self.probe {
            if p.seq == seq {
                if !p.acked && (from.same_life(&p.target) || p.indirect_sent) {
                    p.acked = true;
                    self.health.apply(-1);
                }
                return;
            }
        }
        if let Some(r) = self.relays.get(&seq) {
            if from.same_life(&r.target) {
                if let Some(r) = self.relays.remove(&seq) {
                    let updates = self.piggyback(None);
                    self.send(
                        r.requester.addr.clone(),
                        Message::Ack {
                            from: self.local.id.clone(),
                            seq: r.origin_seq,
                            updates,
                        },
                    );
                }
            }
            return;
        }
        if let Some(d) = self.dup_checks.get(&seq) {
            if from.same_life(&d.existing) {
                if let Some(d) = self.dup_checks.remove(&seq) {
                    info!(newcomer = %d.newcomer.id, existing = %d.existing, "duplicate name: refusing join");
                    self.send(
                        d.newcomer.id.addr.clone(),
                        Message::JoinRefused {
                            from: self.local.id.clone(),
                            reason: RefuseReason::DuplicateName {
                                existing: d.existing,
                            },
                        },
                    );
                }
            }
            return;
        }
        if let Some(l) = &self.leave {
            if l.seqs.contains(&seq) {
                self.finish_leave();
            }
        }
    }

    fn on_ping_req(&mut self, now: Instant, from: MemberId, seq: u64, target: MemberId) {
        if self.relays.len() >= MAX_RELAYS {
            self.stats.relays_dropped += 1;
            return;
        }
        let local_seq = self.take_seq();
        let nack_after = self.config.probe_timeout().mul_f64(0.8);
        let updates = self.piggyback(None);
        self.send(
            target.addr.clone(),
            Message::Ping {
                from: self.local.id.clone(),
                seq: local_seq,
                updates,
            },
        );
        self.relays.insert(
            local_seq,
            Relay {
                requester: from,
                origin_seq: seq,
                target,
                nack_deadline: now + nack_after,
            },
        );
    }

    fn relay_timeouts(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .relays
            .iter()
            .filter(|(_, r)| now >= r.nack_deadline)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            if let Some(r) = self.relays.remove(&s) {
                self.send(
                    r.requester.addr.clone(),
                    Message::Nack {
                        from: self.local.id.clone(),
                        seq: r.origin_seq,
                    },
                );
            }
        }
    }

    // ----------------------------------------------------------------
    // Suspicion
    // ----------------------------------------------------------------

    fn suspicion_timeouts(&mut self, now: Instant) {
        let due: Vec<String> = self
            .suspicions
            .iter()
            .filter(|(_, s)| now >= s.deadline())
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            if self.in_grace(now) {
                if let (Some(g), Some(s)) = (self.grace_until, self.suspicions.get_mut(&name)) {
                    s.hold_until(g);
                }
                continue;
            }
            let Some(s) = self.suspicions.remove(&name) else {
                continue;
            };
            let Some(current) = self.table.get(&name).map(|e| e.member.clone()) else {
                continue;
            };
            if current.state != MemberState::Suspect
                || current.id.generation != s.generation
                || current.incarnation != s.incarnation
            {
                continue;
            }
            info!(member = %self.local.id, dead = %current.id, confirmations = s.confirmations(), "suspicion timed out; declaring dead");
            self.stats.deaths_declared += 1;
            let dead = Member {
                state: MemberState::Dead,
                ..current
            };
            let accuser = Some(self.local.id.name.clone());
            self.apply_update(
                now,
                Update {
                    member: dead,
                    accuser,
                },
                Source::Local,
            );
        }
    }

    // ----------------------------------------------------------------
    // Merging
    // ----------------------------------------------------------------

    fn apply_updates(&mut self, now: Instant, updates: Vec<Update>, source: Source) {
        for u in updates {
            self.apply_update(now, u, source);
        }
    }

    /// Merges anti-entropy state. Whether we are in the minority is decided
    /// once, before merging, so that adopting the first entries cannot flip
    /// the verdict for the rest.
    fn merge_state(&mut self, now: Instant, state: Vec<Update>) {
        self.sync_minority = self.in_minority();
        for mut u in state {
            u.accuser = None;
            self.apply_update(now, u, Source::Sync);
        }
        self.sync_minority = false;
    }

    /// Merges one update: the record with the greater precedence wins
    /// ([`Member::precedence`]); updates about ourselves are refuted.
    fn apply_update(&mut self, now: Instant, u: Update, source: Source) {
        if u.member.id.name == self.local.id.name {
            self.apply_about_self(u);
            return;
        }
        if source == Source::Sync && u.member.state == MemberState::Dead {
            return;
        }
        let order = self
            .table
            .get(&u.member.id.name)
            .map(|e| u.member.precedence(&e.member));
        match order {
            None => {
                if self.table.len() >= self.config.max_members {
                    self.stats.members_dropped += 1;
                    return;
                }
                self.store(now, u, source);
            }
            Some(std::cmp::Ordering::Greater) => self.store(now, u, source),
            Some(std::cmp::Ordering::Equal) => {
                let confirmed = u.member.state == MemberState::Suspect
                    && source != Source::Sync
                    && u.accuser.as_ref().is_some_and(|accuser| {
                        self.suspicions
                            .get_mut(&u.member.id.name)
                            .is_some_and(|s| s.confirm(accuser))
                    });
                if confirmed {
                    // A new independent accuser: spread the confirmation.
                    self.enqueue(u);
                } else if source == Source::Gossip {
                    // Rumor mongering with feedback (Demers et al. 1987):
                    // the sender already knew it, so we send it less. An
                    // `alive` that comes back to us is dropped outright
                    // (anti-entropy covers the rest; this is what keeps a
                    // join storm from flooding), while failure news only
                    // counts one transmission.
                    if u.member.state == MemberState::Alive {
                        self.broadcasts.remove(&u.member.id.name);
                    } else {
                        let limit = self.config.retransmit_limit(self.cluster_size());
                        self.broadcasts.bump(&u.member.id.name, limit);
                    }
                }
            }
            Some(std::cmp::Ordering::Less) => {
                if source != Source::Sync || !u.member.is_active() {
                    return;
                }
                let Some(old) = self.table.get(&u.member.id.name).map(|e| &e.member) else {
                    return;
                };
                if old.state != MemberState::Dead || old.id.generation != u.member.id.generation {
                    return;
                }
                if self.sync_minority {
                    if u.member.incarnation == old.incarnation {
                        // We cannot see a majority: trust the peer's view
                        // over our own verdict.
                        self.store(now, u, source);
                    }
                } else if !self.broadcasts.contains(&old.id.name) {
                    // The peer missed the death: spread it again.
                    let dead = Update {
                        member: old.clone(),
                        accuser: Some(self.local.id.name.clone()),
                    };
                    self.enqueue(dead);
                }
            }
        }
    }

    /// Stores `u.member` as the record of its name: indexes, suspicion
    /// timer, probe order, events and dissemination.
    fn store(&mut self, now: Instant, u: Update, source: Source) {
        let old = self.table.set(u.member.clone(), now);
        let new = &u.member;
        let name = &new.id.name;

        if new.state == MemberState::Suspect {
            let restart = self.suspicions.get(name).is_none_or(|s| {
                s.generation != new.id.generation || s.incarnation != new.incarnation
            });
            if restart {
                let n = self.cluster_size();
                let expected =
                    (self.config.suspicion_confirmations as usize).min(n.saturating_sub(2)) as u32;
                let mut s = Suspicion::new(
                    new.id.generation,
                    new.incarnation,
                    now,
                    self.config.suspicion_bounds(n),
                    expected,
                    u.accuser.as_deref(),
                );
                if let Some(g) = self.grace_until.filter(|g| now < *g) {
                    s.hold_until(g);
                }
                self.suspicions.insert(name.clone(), s);
                // Check a fresh suspicion ourselves soon, so independent
                // confirmations (or the refutation) come within a period
                // or two instead of whenever round-robin gets there. About
                // PRIORITY_PROBERS members do, so the load stays flat.
                let accused_by_us = u.accuser.as_deref() == Some(self.local.id.name.as_str());
                let p = (PRIORITY_PROBERS / n as f64).min(1.0);
                if !accused_by_us && self.rng.gen_bool(p) && self.priority.len() < MAX_PRIORITY {
                    self.priority.push_back(name.clone());
                }
            }
        } else {
            self.suspicions.remove(name);
        }

        let was_active_same_life = old
            .as_ref()
            .is_some_and(|o| o.is_active() && o.id.generation == new.id.generation);
        if new.is_active() && !was_active_same_life {
            self.probe_list.insert(name, &mut self.rng);
        }

        self.emit_transition(old.as_ref(), new);

        if source == Source::Sync {
            // Never piggyback a queued update older than what we now hold.
            self.broadcasts.remove(&u.member.id.name);
        } else {
            self.enqueue(u);
        }
    }

    fn emit_transition(&mut self, old: Option<&Member>, new: &Member) {
        use MemberState::{Alive, Dead, Left, Suspect};
        let up = |events: &mut VecDeque<Event>, m: &Member| {
            info!(member = %m.id, "member up");
            events.push_back(Event::MemberUp(m.clone()));
            if m.state == Suspect {
                events.push_back(Event::MemberSuspect(m.clone()));
            }
        };
        match old {
            None => {
                if new.is_active() {
                    up(&mut self.events, new);
                }
            }
            Some(o) if o.id.generation != new.id.generation => {
                if o.is_active() {
                    info!(member = %o.id, newer = %new.id, "member replaced by a newer life");
                    self.events.push_back(Event::MemberDown(o.clone()));
                }
                if new.is_active() {
                    up(&mut self.events, new);
                }
            }
            Some(o) => match (o.state, new.state) {
                (Alive, Alive) => {
                    if o.metadata != new.metadata {
                        self.events.push_back(Event::MemberUpdated(new.clone()));
                    }
                }
                (Alive, Suspect) => {
                    debug!(member = %new.id, "member suspect");
                    self.events.push_back(Event::MemberSuspect(new.clone()));
                }
                (Suspect, Alive) => {
                    debug!(member = %new.id, "member refuted suspicion");
                    self.events.push_back(Event::MemberAlive(new.clone()));
                }
                (Suspect, Suspect) => {}
                (Alive | Suspect, Dead) => {
                    info!(member = %new.id, "member down");
                    self.events.push_back(Event::MemberDown(new.clone()));
                }
                (Alive | Suspect, Left) => {
                    info!(member = %new.id, "member left");
                    self.events.push_back(Event::MemberLeft(new.clone()));
                }
                (Dead | Left, Alive | Suspect) => up(&mut self.events, new),
                (Dead | Left, Dead | Left) => {}
            },
        }
    }

    fn apply_about_self(&mut self, u: Update) {
        let m = u.member;
        if m.id.generation > self.local.id.generation {
            self.superseded(m.id);
            return;
        }
        if m.id.generation < self.local.id.generation || self.local.state == MemberState::Left {
            return;
        }
        let refute = match m.state {
            MemberState::Alive => m.incarnation > self.local.incarnation,
            MemberState::Suspect | MemberState::Dead | MemberState::Left => {
                m.incarnation >= self.local.incarnation
            }
        };
        if !refute {
            return;
        }
        self.local.incarnation = m.incarnation + 1;
        self.stats.refutations += 1;
        let me = self.self_update();
        self.enqueue(me);
        match m.state {
            MemberState::Dead | MemberState::Left => {
                warn!(member = %self.local.id, incarnation = self.local.incarnation, "we were declared dead; refuted, shards lost");
                self.events.push_back(Event::RejoinedAfterDeath {
                    declared_by: u.accuser,
                    incarnation: self.local.incarnation,
                });
            }
            MemberState::Suspect => {
                debug!(member = %self.local.id, "refuting suspicion of ourselves");
                self.health.apply(1);
            }
            MemberState::Alive => {}
        }
    }

    /// What a member talking to us should hear first: the newer life of
    /// its name, or (unless we are in the minority) that we hold it dead.
    fn corrective_update(&self, to: &MemberId) -> Option<Update> {
        let e = self.table.get(&to.name)?;
        if e.member.id.generation > to.generation {
            return Some(Update {
                member: e.member.clone(),
                accuser: None,
            });
        }
        if e.member.id.generation == to.generation
            && e.member.state == MemberState::Dead
            && !self.in_minority()
        {
            return Some(Update {
                member: e.member.clone(),
                accuser: Some(self.local.id.name.clone()),
            });
        }
        None
    }

    /// Up to `max_piggyback_updates` pending updates within
    /// `max_piggyback_bytes`, `first` (if any) in front. While in the
    /// minority, death verdicts about others are held back.
    fn piggyback(&mut self, first: Option<Update>) -> Vec<Update> {
        let limit = self.config.retransmit_limit(self.cluster_size());
        let minority = self.in_minority();
        let mut count = self.config.max_piggyback_updates;
        let mut bytes = self.config.max_piggyback_bytes;
        let mut out = Vec::new();
        let mut first_name = None;
        if let Some(f) = first {
            count -= 1;
            bytes = bytes.saturating_sub(f.size_bound());
            first_name = Some(f.member.id.name.clone());
            out.push(f);
        }
        let local = self.local.id.name.as_str();
        let picked = self.broadcasts.select(limit, count, bytes, |u| {
            (minority && u.member.state == MemberState::Dead && u.member.id.name != local)
                || first_name.as_deref() == Some(u.member.id.name.as_str())
        });
        out.extend(picked);
        out
    }

    // ----------------------------------------------------------------
    // Join handling (acceptor side)
    // ----------------------------------------------------------------

    fn on_join(&mut self, now: Instant, from: MemberId, incarnation: u64, metadata: Vec<u8>) {
        if !matches!(self.status, Status::Joined | Status::Joining) {
            return;
        }
        let newcomer = Member {
            id: from.clone(),
            incarnation,
            state: MemberState::Alive,
            metadata,
        };
        if from.name == self.local.id.name {
            // Another process with our name while we run: a duplicate.
            self.send(
                from.addr.clone(),
                Message::JoinRefused {
                    from: self.local.id.clone(),
                    reason: RefuseReason::DuplicateName {
                        existing: self.local.id.clone(),
                    },
                },
            );
            return;
        }
        let existing = self.table.get(&from.name).map(|e| e.member.clone());
        if let Some(old) = existing {
            if old.id.generation > from.generation {
                self.send(
                    from.addr.clone(),
                    Message::JoinRefused {
                        from: self.local.id.clone(),
                        reason: RefuseReason::StaleGeneration {
                            current: old.id.generation,
                        },
                    },
                );
                return;
            }
            if old.is_active() && old.id.addr != from.addr {
                if old.id.generation == from.generation {
                    self.send(
                        from.addr.clone(),
                        Message::JoinRefused {
                            from: self.local.id.clone(),
                            reason: RefuseReason::DuplicateName { existing: old.id },
                        },
                    );
                    return;
                }
                // Same name, another address, newer generation: is the
                // old life still answering? Probe it before deciding.
                self.start_dup_check(now, old.id, newcomer);
                return;
            }
        }
        self.accept_join(now, newcomer);
    }

    fn start_dup_check(&mut self, now: Instant, existing: MemberId, newcomer: Member) {
        if self
            .dup_checks
            .values()
            .any(|d| d.newcomer.id == newcomer.id)
            || self.dup_checks.len() >= MAX_DUP_CHECKS
        {
            return;
        }
        let seq = self.take_seq();
        self.send(
            existing.addr.clone(),
            Message::Ping {
                from: self.local.id.clone(),
                seq,
                updates: Vec::new(),
            },
        );
        debug!(existing = %existing, newcomer = %newcomer.id, "checking for a duplicate name");
        self.dup_checks.insert(
            seq,
            DupCheck {
                existing,
                newcomer,
                deadline: now + self.config.probe_interval,
            },
        );
    }

    fn dup_check_timeouts(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .dup_checks
            .iter()
            .filter(|(_, d)| now >= d.deadline)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            if let Some(d) = self.dup_checks.remove(&s) {
                debug!(existing = %d.existing, newcomer = %d.newcomer.id, "old life silent: newer generation replaces it");
                self.accept_join(now, d.newcomer);
            }
        }
    }

    fn accept_join(&mut self, now: Instant, newcomer: Member) {
        let to = newcomer.id.clone();
        self.apply_update(
            now,
            Update {
                member: newcomer,
                accuser: None,
            },
            Source::Local,
        );
        let state = self.state_for(&to, &[true; SYNC_BUCKETS]);
        self.stats.states_sent += 1;
        self.send(
            to.addr.clone(),
            Message::JoinAck {
                from: self.local.id.clone(),
                state,
            },
        );
        if self.status == Status::Joining {
            info!(member = %self.local.id, joiner = %to, "a member joined through us: cluster formed");
            self.become_joined();
        }
    }

    // ----------------------------------------------------------------
    // Dissemination and anti-entropy
    // ----------------------------------------------------------------

    fn gossip_tick(&mut self, now: Instant) {
        self.next_gossip_at = Some(now + self.config.gossip_interval());
        if self.broadcasts.is_empty() || !matches!(self.status, Status::Joined | Status::Leaving) {
            return;
        }
        let targets = self.random_active(self.config.gossip_fanout as usize, None, false);
        for t in targets {
            let updates = self.piggyback(None);
            if updates.is_empty() {
                break;
            }
            self.send(
                t.id.addr.clone(),
                Message::Gossip {
                    from: self.local.id.clone(),
                    updates,
                },
            );
        }
    }

    fn sync_tick(&mut self, now: Instant) {
        self.next_sync_at = Some(now + self.config.push_pull_interval);
        if self.status != Status::Joined {
            return;
        }
        self.sync_round += 1;
        let dead_round = self.sync_round % u64::from(self.config.push_pull_dead_every) == 0;
        let seed_round = self.sync_round % u64::from(self.config.push_pull_seed_every) == 0;
        let mut target = None;
        if dead_round {
            target = self.random_dead_addr();
        }
        if target.is_none() && seed_round {
            target = self.random_unmatched_seed();
        }
        if target.is_none() {
            target = self.random_active(1, None, false).pop().map(|m| m.id.addr);
        }
        if target.is_none() {
            target = self
                .random_dead_addr()
                .or_else(|| self.random_unmatched_seed());
        }
        let Some(to) = target else { return };
        self.stats.syncs_started += 1;
        let digest = view_digest(&self.table.buckets(&self.local));
        self.send(
            to.clone(),
            Message::SyncRequest {
                from: self.local.id.clone(),
                to,
                digest,
            },
        );
    }

    fn random_dead_addr(&mut self) -> Option<String> {
        let dead = self.table.dead();
        if dead.is_empty() {
            return None;
        }
        let name = dead[self.rng.gen_range(0..dead.len())].clone();
        self.table.get(&name).map(|e| e.member.id.addr.clone())
    }

    fn random_unmatched_seed(&mut self) -> Option<String> {
        let table = &self.table;
        let is_active_addr = |addr: &str| {
            table
                .active()
                .iter()
                .filter_map(|n| table.get(n))
                .any(|e| e.member.id.addr == addr)
        };
        let candidates: Vec<&String> = self
            .seeds
            .iter()
            .filter(|s| !self.self_addrs.contains(*s) && !is_active_addr(s))
            .collect();
        candidates.choose(&mut self.rng).map(|s| (*s).clone())
    }

    /// Up to `k` distinct random active members other than `exclude`;
    /// with `alive_only`, suspects are skipped.
    fn random_active(&mut self, k: usize, exclude: Option<&str>, alive_only: bool) -> Vec<Member> {
        let active = self.table.active();
        if k == 0 || active.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(k);
        if active.len() <= 4 * k + 4 {
            let mut names: Vec<&String> = active.iter().collect();
            names.shuffle(&mut self.rng);
            for n in names {
                if out.len() == k {
                    break;
                }
                if let Some(e) = self.table.get(n) {
                    if Some(n.as_str()) != exclude
                        && (!alive_only || e.member.state == MemberState::Alive)
                    {
                        out.push(e.member.clone());
                    }
                }
            }
            return out;
        }
        let mut seen = BTreeSet::new();
        for _ in 0..(8 * k) {
            if out.len() == k {
                break;
            }
            let i = self.rng.gen_range(0..active.len());
            if !seen.insert(i) {
                continue;
            }
            let n = &active[i];
            if let Some(e) = self.table.get(n) {
                if Some(n.as_str()) != exclude
                    && (!alive_only || e.member.state == MemberState::Alive)
                {
                    out.push(e.member.clone());
                }
            }
        }
        out
    }

    /// Which buckets differ between our view and `theirs` (all of them
    /// when the peer uses another bucket count).
    fn differing_buckets(&self, theirs: &[u64]) -> [bool; SYNC_BUCKETS] {
        let mine = self.table.buckets(&self.local);
        let mut out = [true; SYNC_BUCKETS];
        if theirs.len() == SYNC_BUCKETS {
            for (i, d) in out.iter_mut().enumerate() {
                *d = mine[i] != theirs[i];
            }
        }
        out
    }

    fn send_state(&mut self, to: &MemberId, buckets: &[bool; SYNC_BUCKETS], reply: bool) {
        let state = self.state_for(to, buckets);
        self.stats.states_sent += 1;
        self.send(
            to.addr.clone(),
            Message::Sync {
                from: self.local.id.clone(),
                buckets: self.table.buckets(&self.local),
                state,
                reply,
            },
        );
    }

    /// Our state for `to`, limited to the members whose name falls in a
    /// bucket marked in `buckets`: ourselves, `to`'s own record when it
    /// must hear it (a newer life of its name, or its death unless we are
    /// in the minority), then every alive, suspect and left member. Dead
    /// members are not sent. Past `max_sync_bytes` a window starting at a
    /// random member is sent instead, so repeated rounds cover everything.
    fn state_for(&mut self, to: &MemberId, buckets: &[bool; SYNC_BUCKETS]) -> Vec<Update> {
        let mut budget = self.config.max_sync_bytes.saturating_sub(256);
        let mut out = vec![self.self_update()];
        budget = budget.saturating_sub(out[0].size_bound());
        let correction = self
            .corrective_update(to)
            .map(|u| Update { accuser: None, ..u });
        if let Some(c) = correction {
            budget = budget.saturating_sub(c.size_bound());
            out.push(c);
        }
        let entries: Vec<&Member> = self
            .table
            .iter()
            .map(|e| &e.member)
            .filter(|m| {
                m.state != MemberState::Dead
                    && m.id.name != to.name
                    && buckets[bucket_of(&m.id.name)]
            })
            .collect();
        let total: usize = entries
            .iter()
            .map(|m| m.id.name.len() + m.id.addr.len() + m.metadata.len() + 40)
            .sum();
        let start = if total > budget && !entries.is_empty() {
            self.rng.gen_range(0..entries.len())
        } else {
            0
        };
        for i in 0..entries.len() {
            let m = entries[(start + i) % entries.len()];
            let u = Update {
                member: m.clone(),
                accuser: None,
            };
            let size = u.size_bound();
            if size > budget {
                break;
            }
            budget -= size;
            out.push(u);
        }
        out
    }
}
