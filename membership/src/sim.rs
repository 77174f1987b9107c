//! A deterministic simulator for many [`Swim`] cores: a virtual clock that
//! jumps to the next message delivery or timer, and a seeded network with
//! latency, loss, duplication and partitions, plus per-node crashes,
//! restarts and stalls. Everything is driven by one `ChaCha8Rng`, so a run
//! is a pure function of its seed: print the seed when a check fails and
//! replay it.
//!
//! Used by this crate's tests and its `sim` example; other crates may use
//! it to drive a simulated membership under their own cores.
//!
//! ```
//! use std::time::Duration;
//! use membership::sim::{NetConfig, Sim};
//!
//! let mut sim = Sim::new(7, NetConfig::default(), membership::MembershipConfig::default());
//! let seed = sim.add_node(Vec::new());
//! let seed_addr = sim.node(seed).addr.clone();
//! for _ in 0..4 {
//!     sim.add_node(vec![seed_addr.clone()]);
//! }
//! let all: Vec<usize> = (0..5).collect();
//! let at = sim.run_until_cond(Duration::from_secs(10), Duration::from_millis(50), |s| s.converged(&all));
//! assert!(at.is_some());
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::MembershipConfig;
use crate::swim::{Event, MemberId, MemberState, Message, Swim};

/// Network behaviour. Every message independently gets a latency drawn
/// uniformly from `latency_min..=latency_max`, is lost with probability
/// `loss` and delivered twice with probability `duplicate`.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Smallest one-way latency.
    pub latency_min: Duration,
    /// Largest one-way latency.
    pub latency_max: Duration,
    /// Probability a message is dropped, 0.0..=1.0.
    pub loss: f64,
    /// Probability a message is delivered twice, 0.0..=1.0.
    pub duplicate: f64,
    /// Count encoded bytes of every message (costs an encoding pass).
    pub count_bytes: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(5),
            loss: 0.0,
            duplicate: 0.0,
            count_bytes: false,
        }
    }
}

/// One simulated process slot: a name, an address, and a core while it
/// runs.
#[derive(Debug)]
pub struct SimNode {
    /// Member name (`node-<index>`).
    pub name: String,
    /// Current advertised address.
    pub addr: String,
    /// Current generation.
    pub generation: u64,
    /// Seed addresses it joins through.
    pub seeds: Vec<String>,
    /// Every event the current and previous lives emitted, with the
    /// simulated time since the start.
    pub events: Vec<(Duration, MemberId, Event)>,
    /// Messages sent by this slot (all lives).
    pub sent_messages: u64,
    /// Encoded bytes sent (when `NetConfig::count_bytes`).
    pub sent_bytes: u64,
    core: Option<Swim>,
    config: MembershipConfig,
    stalled_until: Option<Instant>,
    backlog: Vec<(String, Message)>,
    timer: Option<(Instant, u64)>,
}

impl SimNode {
    /// The running core, if the process is up.
    pub fn core(&self) -> Option<&Swim> {
        self.core.as_ref()
    }

    /// The current life's id.
    pub fn id(&self) -> MemberId {
        MemberId::new(self.name.clone(), self.addr.clone(), self.generation)
    }

    /// True while a core runs (started, not crashed).
    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }
}

/// A message held by a partition that behaves like TCP (not delivered
/// yet, not lost).
#[derive(Debug)]
struct Held {
    to_addr: String,
    from: usize,
    from_addr: String,
    msg: Message,
}

#[derive(Debug)]
enum Action {
    Deliver {
        to_addr: String,
        from: usize,
        from_addr: String,
        msg: Message,
    },
    Timer {
        node: usize,
        version: u64,
    },
    Wake {
        node: usize,
    },
    Start {
        node: usize,
    },
}

/// The simulator: nodes, the clock and the network.
#[derive(Debug)]
pub struct Sim {
    seed: u64,
    epoch: Instant,
    now: Instant,
    rng: ChaCha8Rng,
    net: NetConfig,
    config: MembershipConfig,
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<String, usize>,
    queue: BTreeMap<(Instant, u64), Action>,
    seq: u64,
    groups: Option<Vec<u32>>,
    /// While `Some`, messages across the partition are held instead of
    /// lost (see [`Sim::partition_holding`]); the value is the longest
    /// delay after the heal before a held pair resumes.
    hold_retransmit_max: Option<Duration>,
    /// Messages held across the partition, in send order.
    held: Vec<Held>,
    /// After a holding partition heals: until when each (sender, receiver
    /// address) pair stays blocked behind its held messages.
    stuck_until: BTreeMap<(usize, String), Instant>,
    /// Messages dropped by loss or partition.
    pub dropped: u64,
    /// Messages sent and updates (piggybacked or state entries) they
    /// carried, by message kind, since the start or `reset_counters`.
    pub by_kind: BTreeMap<&'static str, (u64, u64)>,
}

impl Sim {
    /// A simulator with no nodes. `seed` drives everything (network and
    /// every core's RNG); `config` is used for nodes added later.
    pub fn new(seed: u64, net: NetConfig, config: MembershipConfig) -> Sim {
        let epoch = Instant::now();
        Sim {
            seed,
            epoch,
            now: epoch,
            rng: ChaCha8Rng::seed_from_u64(seed),
            net,
            config,
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            groups: None,
            hold_retransmit_max: None,
            held: Vec::new(),
            stuck_until: BTreeMap::new(),
            dropped: 0,
            by_kind: BTreeMap::new(),
        }
    }

    /// The seed this run was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Converts a simulated offset since the start to an instant.
    pub fn at(&self, since_start: Duration) -> Instant {
        self.epoch + since_start
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there are no slots.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// One slot. Panics if `i` is out of range (a test bug).
    pub fn node(&self, i: usize) -> &SimNode {
        &self.nodes[i]
    }

    /// Every slot.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Replaces the network behaviour (e.g. to add loss after formation).
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// Adds a node that starts now and joins through `seeds`. Returns its
    /// index; its name is `node-<index>`.
    pub fn add_node(&mut self, seeds: Vec<String>) -> usize {
        let i = self.push_slot(seeds);
        self.start(i);
        i
    }

    /// Adds a node that starts at `at` (or now, if earlier) and joins
    /// through `seeds`. Returns its index.
    pub fn add_node_at(&mut self, at: Instant, seeds: Vec<String>) -> usize {
        let i = self.push_slot(seeds);
        self.schedule(at.max(self.now), Action::Start { node: i });
        i
    }

    /// Adds a node with a chosen name and address that starts now and
    /// joins through `seeds` (e.g. a second process claiming a taken
    /// name). Returns its index.
    pub fn add_named_node(&mut self, name: &str, addr: &str, seeds: Vec<String>) -> usize {
        let i = self.push_slot(seeds);
        let default_addr = std::mem::replace(&mut self.nodes[i].addr, addr.to_owned());
        self.nodes[i].name = name.to_owned();
        self.by_addr.remove(&default_addr);
        self.by_addr.insert(addr.to_owned(), i);
        self.start(i);
        i
    }

    /// The address node `i` gets by default: `10.x.y.z:7946`.
    pub fn default_addr(i: usize) -> String {
        format!("10.{}.{}.{}:7946", i / 65_536, (i / 256) % 256, i % 256)
    }

    fn push_slot(&mut self, seeds: Vec<String>) -> usize {
        let i = self.nodes.len();
        let addr = Sim::default_addr(i);
        self.nodes.push(SimNode {
            name: format!("node-{i}"),
            addr: addr.clone(),
            generation: 0,
            seeds,
            events: Vec::new(),
            sent_messages: 0,
            sent_bytes: 0,
            core: None,
            config: self.config.clone(),
            stalled_until: None,
            backlog: Vec::new(),
            timer: None,
        });
        self.by_addr.insert(addr, i);
        i
    }

    /// Uses `config` for node `i`'s next life.
    pub fn set_node_config(&mut self, i: usize, config: MembershipConfig) {
        self.nodes[i].config = config;
    }

    /// Kills node `i` (like `kill -9`): its core vanishes, messages to it
    /// are lost.
    pub fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.core = None;
        n.backlog.clear();
        n.stalled_until = None;
        n.timer = None;
    }

    /// Starts a new life of node `i` now (a larger generation), at a new
    /// address if `new_addr` is given, joining through its seeds.
    pub fn restart(&mut self, i: usize, new_addr: Option<String>) {
        self.crash(i);
        if let Some(addr) = new_addr {
            let old = std::mem::replace(&mut self.nodes[i].addr, addr.clone());
            if self.by_addr.get(&old) == Some(&i) {
                self.by_addr.remove(&old);
            }
            self.by_addr.insert(addr, i);
        }
        self.start(i);
    }

    /// Calls `leave` on node `i`.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Some(c) = self.nodes[i].core.as_mut() {
            c.leave(now);
        }
        self.drive(i);
    }

    /// Calls `set_metadata` on node `i`.
    ///
    /// # Errors
    /// As `Swim::set_metadata`.
    pub fn set_metadata(
        &mut self,
        i: usize,
        metadata: Vec<u8>,
    ) -> Result<(), crate::MetadataError> {
        let now = self.now;
        let r = match self.nodes[i].core.as_mut() {
            Some(c) => c.set_metadata(now, metadata),
            None => Err(crate::MetadataError::NotRunning),
        };
        self.drive(i);
        r
    }

    /// Stops node `i` from processing anything (messages queue up, timers
    /// wait) until `until`; then it handles its backlog at once.
    pub fn stall(&mut self, i: usize, until: Instant) {
        if self.nodes[i].core.is_none() || until <= self.now {
            return;
        }
        self.nodes[i].stalled_until = Some(until);
        self.schedule(until, Action::Wake { node: i });
    }

    /// Splits the network: nodes in the same listed group reach each
    /// other, unlisted nodes form one more group. Messages across groups
    /// (including those in flight) are lost.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let mut g = vec![0u32; self.nodes.len()];
        for (k, group) in groups.iter().enumerate() {
            for &i in group {
                if let Some(slot) = g.get_mut(i) {
                    *slot = k as u32 + 1;
                }
            }
        }
        self.groups = Some(g);
        self.hold_retransmit_max = None;
    }

    /// Splits the network like [`Sim::partition`], but the way a firewall
    /// that silently drops packets cuts established TCP connections:
    /// messages across groups are not lost but held (the sender's kernel
    /// keeps retransmitting them), and [`Sim::heal`] delivers them, in
    /// send order per (sender, receiver) pair, each pair after its own
    /// delay drawn uniformly from `0..=retransmit_max` (the pending
    /// retransmission timeout). So after the heal, receivers get messages
    /// that are as old as the partition.
    pub fn partition_holding(&mut self, groups: &[Vec<usize>], retransmit_max: Duration) {
        self.partition(groups);
        self.hold_retransmit_max = Some(retransmit_max);
    }

    /// Cuts node `i` off from everyone.
    pub fn isolate(&mut self, i: usize) {
        self.partition(&[vec![i]]);
    }

    /// Reconnects everything.
    pub fn heal(&mut self) {
        self.groups = None;
        self.stuck_until.clear();
        let max = self.hold_retransmit_max.take().unwrap_or_default();
        let held = std::mem::take(&mut self.held);
        let mut pair_delay: BTreeMap<(usize, String), Duration> = BTreeMap::new();
        for h in held {
            let key = (h.from, h.to_addr.clone());
            let delay = match pair_delay.get(&key) {
                Some(d) => *d,
                None => {
                    let span = max.as_nanos() as u64;
                    let d = Duration::from_nanos(self.rng.gen_range(0..=span));
                    pair_delay.insert(key.clone(), d);
                    self.stuck_until
                        .insert(key, self.now + d + self.net.latency_min);
                    d
                }
            };
            let at = self.now + delay + self.net.latency_min;
            // Same instant for a pair: the queue's sequence number keeps
            // the send order.
            self.schedule(
                at,
                Action::Deliver {
                    to_addr: h.to_addr,
                    from: h.from,
                    from_addr: h.from_addr,
                    msg: h.msg,
                },
            );
        }
    }

    /// Zeroes every slot's message and byte counters.
    pub fn reset_counters(&mut self) {
        for n in &mut self.nodes {
            n.sent_messages = 0;
            n.sent_bytes = 0;
        }
        self.by_kind.clear();
    }

    /// Runs every action up to `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let ((at, _), action) = entry.remove_entry();
            self.now = self.now.max(at);
            self.process(action);
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs in steps of `step` until `cond` holds or `within` has passed;
    /// returns the simulated time (since the start) at which it first held.
    pub fn run_until_cond(
        &mut self,
        within: Duration,
        step: Duration,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let deadline = self.now + within;
        loop {
            if cond(self) {
                return Some(self.elapsed());
            }
            if self.now >= deadline {
                return None;
            }
            let next = (self.now + step).min(deadline);
            self.run_until(next);
        }
    }

    /// True when every running node among `expected` sees exactly the
    /// nodes in `expected` as active, each with its current generation,
    /// alive (not suspect).
    pub fn converged(&self, expected: &[usize]) -> bool {
        let n = expected.len();
        let running: Vec<&Swim> = expected
            .iter()
            .filter_map(|&i| self.nodes[i].core.as_ref())
            .collect();
        if running.len() != n {
            return false;
        }
        if running.iter().any(|c| c.active_count() != n) {
            return false;
        }
        running.iter().all(|c| {
            expected.iter().all(|&j| {
                let node = &self.nodes[j];
                if node.name == c.local().id.name {
                    return true;
                }
                c.member(&node.name).is_some_and(|m| {
                    m.state == MemberState::Alive && m.id.generation == node.generation
                })
            })
        })
    }

    /// Every `MemberDown` event (time, observer, subject) emitted so far.
    pub fn downs(&self) -> Vec<(Duration, usize, MemberId)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (t, _, e) in &n.events {
                if let Event::MemberDown(m) = e {
                    out.push((*t, i, m.id.clone()));
                }
            }
        }
        out
    }

    // ----------------------------------------------------------------

    fn schedule(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        self.queue.insert((at, self.seq), action);
    }

    fn start(&mut self, i: usize) {
        let now = self.now;
        let ms = (now - self.epoch).as_millis() as u64 + 1;
        let node = &mut self.nodes[i];
        node.generation = (node.generation + 1).max(ms);
        let id = MemberId::new(node.name.clone(), node.addr.clone(), node.generation);
        let rng_seed = self.seed ^ ((i as u64) << 32) ^ node.generation.rotate_left(17);
        match Swim::new(id, Vec::new(), node.config.clone(), rng_seed) {
            Ok(mut core) => {
                core.join(now, node.seeds.clone());
                node.core = Some(core);
            }
            Err(e) => panic!("simulated node {i} rejected its config: {e}"),
        }
        node.timer = None;
        self.drive(i);
    }

    fn process(&mut self, action: Action) {
        match action {
            Action::Start { node } => self.start(node),
            Action::Deliver {
                to_addr,
                from,
                from_addr,
                msg,
            } => {
                let Some(&to) = self.by_addr.get(&to_addr) else {
                    return;
                };
                if !self.linked(from, to) {
                    if self.hold_retransmit_max.is_some() {
                        self.held.push(Held {
                            to_addr,
                            from,
                            from_addr,
                            msg,
                        });
                    } else {
                        self.dropped += 1;
                    }
                    return;
                }
                let now = self.now;
                let node = &mut self.nodes[to];
                if node.core.is_none() {
                    return;
                }
                if node.stalled_until.is_some() {
                    node.backlog.push((from_addr, msg));
                    return;
                }
                if let Some(c) = node.core.as_mut() {
                    c.handle_message(now, &from_addr, msg);
                }
                self.drive(to);
            }
            Action::Timer { node, version } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                if n.timer.map(|(_, v)| v) != Some(version) || n.stalled_until.is_some() {
                    return;
                }
                n.timer = None;
                if let Some(c) = n.core.as_mut() {
                    c.handle_timeout(now);
                }
                self.drive(node);
            }
            Action::Wake { node } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                if n.stalled_until.is_none_or(|u| u > now) {
                    return;
                }
                n.stalled_until = None;
                let backlog = std::mem::take(&mut n.backlog);
                if let Some(c) = n.core.as_mut() {
                    for (from_addr, msg) in backlog {
                        c.handle_message(now, &from_addr, msg);
                    }
                    if c.poll_timeout().is_some_and(|t| t <= now) {
                        c.handle_timeout(now);
                    }
                }
                n.timer = None;
                self.drive(node);
            }
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        match &self.groups {
            None => true,
            Some(g) => g.get(a).copied().unwrap_or(0) == g.get(b).copied().unwrap_or(0),
        }
    }

    /// Drains node `i`'s outputs and reschedules its timer.
    fn drive(&mut self, i: usize) {
        let now = self.now;
        let since = now - self.epoch;
        let mut out = Vec::new();
        {
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_mut() else {
                return;
            };
            let id = core.local().id.clone();
            while let Some(t) = core.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = core.poll_event() {
                node.events.push((since, id.clone(), e));
            }
        }
        let from_addr = self.nodes[i].addr.clone();
        for t in out {
            self.nodes[i].sent_messages += 1;
            let entries = match &t.msg {
                Message::Ping { updates, .. }
                | Message::Ack { updates, .. }
                | Message::PingReq { updates, .. }
                | Message::Gossip { updates, .. } => updates.len(),
                Message::Sync { state, .. } | Message::JoinAck { state, .. } => state.len(),
                _ => 0,
            };
            let k = self.by_kind.entry(t.msg.kind()).or_default();
            k.0 += 1;
            k.1 += entries as u64;
            if self.net.count_bytes {
                self.nodes[i].sent_bytes += t.msg.encoded_len() as u64;
            }
            if self.net.loss > 0.0 && self.rng.gen_bool(self.net.loss.clamp(0.0, 1.0)) {
                self.dropped += 1;
                continue;
            }
            let duplicate =
                self.net.duplicate > 0.0 && self.rng.gen_bool(self.net.duplicate.clamp(0.0, 1.0));
            if duplicate {
                let latency = self.latency();
                self.schedule(
                    now + latency,
                    Action::Deliver {
                        to_addr: t.to_addr.clone(),
                        from: i,
                        from_addr: from_addr.clone(),
                        msg: t.msg.clone(),
                    },
                );
            }
            let latency = self.latency();
            // A pair still blocked behind held messages delivers in order.
            let at = match self.stuck_until.get(&(i, t.to_addr.clone())) {
                Some(&until) if until > now + latency => until,
                _ => now + latency,
            };
            self.schedule(
                at,
                Action::Deliver {
                    to_addr: t.to_addr,
                    from: i,
                    from_addr: from_addr.clone(),
                    msg: t.msg,
                },
            );
        }
        let next = self.nodes[i].core.as_ref().and_then(Swim::poll_timeout);
        if let Some(t) = next {
            let t = t.max(now);
            if self.nodes[i].timer.map(|(at, _)| at) != Some(t) {
                self.seq += 1;
                let version = self.seq;
                self.nodes[i].timer = Some((t, version));
                self.queue
                    .insert((t, version), Action::Timer { node: i, version });
            }
        } else {
            self.nodes[i].timer = None;
        }
    }

    fn latency(&mut self) -> Duration {
        let lo = self.net.latency_min;
        let hi = self.net.latency_max.max(lo);
        if hi == lo {
            return lo;
        }
        let span = (hi - lo).as_nanos() as u64;
        lo + Duration::from_nanos(self.rng.gen_range(0..=span))
    }
}
