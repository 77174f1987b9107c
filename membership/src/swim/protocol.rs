//! [`Swim`]: the sans-IO membership state machine.
//!
//! Inputs carry the time (`now`); outputs are polled. Nothing here reads a
//! clock, sleeps, touches a socket or uses a thread RNG: randomness comes
//! from a seeded `ChaCha8Rng` the core owns, and every iteration is over
//! sorted collections or insertion-ordered ones (never over a hash map),
//! so the same inputs always give the same outputs.
//!
//! This file holds the type, its accessors, the commands and the input
//! dispatch; the protocol itself is split by concept: `probing` (probes,
//! ping-req, nacks, suspicion timeouts), `merge` (precedence, refutation,
//! events, piggyback selection), `join` (the acceptor side) and `sync`
//! (gossip rounds and push-pull anti-entropy).

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

mod join;
mod merge;
mod probing;
mod sync;

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
    /// Suspect and dead updates not applied (or, about ourselves, taken as
    /// a suspicion) because their sender or accuser is a member we hold
    /// dead or revived from dead within `reap_after_ms` (see
    /// `PROTOCOL.md`, stale accusations).
    pub stale_accusations_dropped: u64,
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
    /// The last message dropped as invalid while joining
    /// (`Event::JoinFailed::invalid`).
    invalid: Option<String>,
    deadline: Instant,
    next_attempt: Instant,
    backoff: Duration,
}

#[derive(Debug)]
struct LeaveState {
    deadline: Instant,
    seqs: BTreeSet<u64>,
}

/// The updates a message carries (piggybacked, gossiped or as state).
fn updates_of(msg: &Message) -> &[Update] {
    match msg {
        Message::Ping { updates, .. }
        | Message::Ack { updates, .. }
        | Message::PingReq { updates, .. }
        | Message::Gossip { updates, .. } => updates,
        Message::Sync { state, .. } => state,
        _ => &[],
    }
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
    /// The incarnation of the latest death verdict about this life that we
    /// refuted and reported ([`Event::RejoinedAfterDeath`]); older or equal
    /// verdicts arriving late are stale.
    death_handled: Option<u64>,
    /// `in_minority()` when the anti-entropy state being merged arrived.
    sync_minority: bool,
    /// Whether the sender of the anti-entropy state being merged is a
    /// member we hold dead.
    sync_from_dead: bool,
    /// Sticky minority verdict (see [`Swim::update_minority`]).
    minority: bool,
    /// Members revived from dead (same life), with their generation and
    /// when: their accusations are distrusted for `reap_after_ms`
    /// ([`Swim::distrusted`]). One entry per name at most.
    revived: BTreeMap<String, (u64, Instant)>,
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
            death_handled: None,
            sync_minority: false,
            sync_from_dead: false,
            minority: false,
            revived: BTreeMap::new(),
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

    /// The seeds a join in progress still tries (our own address and
    /// seeds that turned out to be ourselves left out); empty when not
    /// joining.
    pub fn join_seeds(&self) -> &[String] {
        self.join.as_ref().map_or(&[], |j| j.seeds.as_slice())
    }

    /// Gives up a join in progress before its deadline, as if the deadline
    /// had passed (`Event::JoinFailed`, status `Failed`): for a driver
    /// that learnt no seed can let this node in, e.g. every seed's
    /// transport refused our handshake for another cluster name or other
    /// cluster settings. Does
    /// nothing unless joining.
    pub fn give_up_join(&mut self) {
        let Some(j) = &self.join else {
            return;
        };
        let (seeds, invalid) = (j.seeds.clone(), j.invalid.clone());
        warn!(member = %self.local.id, seeds = ?seeds, "join given up: no seed can let this node in");
        self.stop(Status::Failed);
        self.events.push_back(Event::JoinFailed { seeds, invalid });
    }

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
            invalid: None,
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
            if let Some(j) = &mut self.join {
                j.invalid = Some(format!("{from_addr}: {}: {e}", msg.kind()));
            }
            return;
        }
        self.observe_time(now);
        self.update_minority();
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
                // A running older life of our name refuses our join: the
                // name is taken (DESIGN.md, Identity). Let it through.
                Message::JoinRefused { .. } if from.generation < self.local.id.generation => {}
                _ if from.generation > self.local.id.generation => {
                    self.superseded(from);
                    return;
                }
                _ => return,
            }
        }
        let msg = self.drop_stale_accusations(now, msg);
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
            Message::Nack { from, seq } => {
                if let Some(p) = &mut self.probe {
                    if p.seq == seq && p.relays.contains(&from.name) {
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
                self.merge_state(now, &from, state);
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
                self.merge_state(now, &from, state);
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
        self.update_minority();
        if let Some(j) = &self.join {
            if now >= j.deadline {
                let (seeds, invalid) = (j.seeds.clone(), j.invalid.clone());
                warn!(member = %self.local.id, seeds = ?seeds, "join deadline passed");
                self.stop(Status::Failed);
                self.events.push_back(Event::JoinFailed { seeds, invalid });
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
            self.revived.retain(|_, (_, since)| *since > cutoff);
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
    /// active ones (ourselves included), or did since the last time we
    /// held no dead member at all (see [`Swim::update_minority`]). Our
    /// death verdicts are then not spread, and anti-entropy may override
    /// them (see `PROTOCOL.md`).
    fn in_minority(&self) -> bool {
        self.minority || self.table.dead().len() > self.table.active().len() + 1
    }

    /// Makes the minority verdict sticky: entered when we hold more dead
    /// members than active ones, left only once we hold no dead member.
    /// A healing minority revives the members it held dead one record at
    /// a time (refutations, anti-entropy); counted afresh, it would leave
    /// the minority half way and spread its remaining verdicts (reached
    /// while cut off) as if it saw the cluster.
    fn update_minority(&mut self) {
        if self.table.dead().len() > self.table.active().len() + 1 {
            if !self.minority {
                info!(member = %self.local.id, dead = self.table.dead().len(), active = self.table.active().len() + 1, "in the minority: holding back death verdicts");
            }
            self.minority = true;
        } else if self.minority && self.table.dead().is_empty() {
            info!(member = %self.local.id, "no longer in the minority");
            self.minority = false;
        }
    }

    /// We see a strict majority: fewer dead members than active ones
    /// (ourselves included), and not in the minority.
    fn sees_majority(&self) -> bool {
        !self.in_minority() && self.table.dead().len() < self.table.active().len() + 1
    }

    /// Whether `from` is a life we hold dead (same generation).
    fn holds_dead(&self, from: &MemberId) -> bool {
        self.table.get(&from.name).is_some_and(|e| {
            e.member.state == MemberState::Dead && e.member.id.generation == from.generation
        })
    }

    /// Whether we distrust what `name` (at `generation`, when known) says
    /// about others: we hold that life dead, or revived it from dead less
    /// than `reap_after_ms` ago. Such a member was cut off from us (or
    /// stopped): its verdicts were reached on a view that is not ours,
    /// and what it sent while cut off reaches us late (TCP retransmits it
    /// after the heal, possibly after its refutation reached us by
    /// another member).
    fn distrusted(&self, now: Instant, name: &str, generation: Option<u64>) -> bool {
        let same = |g: u64| generation.is_none_or(|x| x == g);
        let dead = self
            .table
            .get(name)
            .is_some_and(|e| e.member.state == MemberState::Dead && same(e.member.id.generation));
        dead || self
            .revived
            .get(name)
            .is_some_and(|(g, since)| same(*g) && now < *since + self.config.reap_after())
    }

    /// Removes stale accusations from `msg` when we see a strict majority
    /// ([`Swim::sees_majority`]): suspect and dead updates (about anyone
    /// but their author) sent by a member we distrust
    /// ([`Swim::distrusted`]) or naming such a member as accuser. Applied,
    /// a verdict of that kind kills members of our side that nobody here
    /// suspects. One about ourselves is kept as a suspicion: we refute it
    /// (so the sender's view revives us) but our side never held us dead,
    /// so our shards are not lost. The sender's own refutation and every
    /// other update still count; the sender learns that it was declared
    /// dead from our answer and rejoins, and a node not in a strict
    /// majority keeps listening, so the side that lost hears its death.
    fn drop_stale_accusations(&mut self, now: Instant, msg: Message) -> Message {
        let sender = msg.from().clone();
        if !self.sees_majority() {
            return msg;
        }
        let sender_distrusted = self.distrusted(now, &sender.name, Some(sender.generation));
        let accusers_distrusted: BTreeSet<String> = updates_of(&msg)
            .iter()
            .filter_map(|u| u.accuser.as_deref())
            .filter(|a| self.distrusted(now, a, None))
            .map(str::to_owned)
            .collect();
        if !sender_distrusted && accusers_distrusted.is_empty() {
            return msg;
        }
        let local = self.local.id.name.clone();
        let mut dropped = 0u64;
        let mut keep = |updates: Vec<Update>| -> Vec<Update> {
            updates
                .into_iter()
                .filter_map(|mut u| {
                    let accusation =
                        matches!(u.member.state, MemberState::Suspect | MemberState::Dead);
                    let about = &u.member.id.name;
                    let by_sender = sender_distrusted && *about != sender.name;
                    let by_accuser = u
                        .accuser
                        .as_ref()
                        .is_some_and(|a| a != about && accusers_distrusted.contains(a.as_str()));
                    if !(accusation && (by_sender || by_accuser)) {
                        return Some(u);
                    }
                    dropped += 1;
                    if *about == local {
                        // About us: refute it like a suspicion (a higher
                        // incarnation revives us in the sender's view),
                        // without treating our shards as lost: our side
                        // never held us dead.
                        u.member.state = MemberState::Suspect;
                        return Some(u);
                    }
                    None
                })
                .collect()
        };
        let msg = match msg {
            Message::Ping { from, seq, updates } => Message::Ping {
                from,
                seq,
                updates: keep(updates),
            },
            Message::Ack { from, seq, updates } => Message::Ack {
                from,
                seq,
                updates: keep(updates),
            },
            Message::PingReq {
                from,
                seq,
                target,
                updates,
            } => Message::PingReq {
                from,
                seq,
                target,
                updates: keep(updates),
            },
            Message::Gossip { from, updates } => Message::Gossip {
                from,
                updates: keep(updates),
            },
            Message::Sync {
                from,
                buckets,
                state,
                reply,
            } => Message::Sync {
                from,
                buckets,
                state: keep(state),
                reply,
            },
            other => other,
        };
        if dropped > 0 {
            self.stats.stale_accusations_dropped += dropped;
            debug!(member = %self.local.id, sender = %sender, dropped, "ignoring accusations by members we hold dead or just revived");
        }
        msg
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
}
