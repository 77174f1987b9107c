//! Region configuration: `[defaults.sharding]`, `[defaults.mailbox]` and
//! `[sharding]` of `casty.toml`.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

/// What a full mailbox does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MailboxStrategy {
    /// Refuse it: the sender gets [`crate::RegionError::Overloaded`] and may retry.
    #[default]
    Backpressure,
    /// Drop it (the seed's strategy): counted, logged at `warn`, and an
    /// asker gets [`crate::RegionError::Dropped`].
    DropNew,
}

/// The seed's `[defaults.sharding]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardingDefaults {
    /// Shards per entity type (seed: 50). Must be the same on every node.
    pub num_shards: NonZeroU32,
}

impl Default for ShardingDefaults {
    fn default() -> Self {
        ShardingDefaults {
            num_shards: NonZeroU32::new(50).expect("50 is not zero"),
        }
    }
}

/// The seed's `[defaults.mailbox]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxConfig {
    /// Messages a region's mailbox holds (seed: 5000), per entity type and node.
    pub capacity: usize,
    /// What happens when it is full.
    pub strategy: MailboxStrategy,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            capacity: 5000,
            strategy: MailboxStrategy::Backpressure,
        }
    }
}

/// The `[sharding]` section: replication and handoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardingConfig {
    /// Copies of each shard: the owner plus `replication_factor - 1`
    /// replicas (default 2; fewer when fewer members are alive).
    pub replication_factor: NonZeroU32,
    /// Times a message may be forwarded between nodes whose views disagree
    /// before the sender gets [`crate::RegionError::TooManyHops`] (default 3).
    pub max_forward_hops: u8,
    /// Timeout of one replication or handoff request, in ms (default 2,000).
    pub replicate_timeout_ms: u64,
    /// How long a node keeps the data of a shard it no longer holds, so a
    /// late handoff request can still be served, in ms (default 30,000;
    /// at least [`MIN_RETIRE_AFTER_MS`]).
    /// Also how long a removed entity's tombstone is kept: from its
    /// removal (or from when this node learned of it) and, on the owner,
    /// at least until every replica confirmed it. A copy of the entity
    /// older than that, met later, can bring it back.
    pub retire_after_ms: u64,
    /// Largest handoff or sync page, in bytes (default 1 MiB; at least
    /// 1,024). Pages use at most three quarters of `[transport]
    /// max_frame_bytes` whatever this says, so a smaller frame limit never
    /// makes a page too large to send.
    pub snapshot_page_bytes: usize,
    /// Most asks one region keeps waiting for a change of their entity
    /// ([`crate::Handled::Wait`], e.g. a task's `wait_result`), over all
    /// its entities and senders (default 100,000; each costs the message,
    /// its reply route and a deadline, about 100-200 bytes). Beyond it an
    /// ask that would wait is refused with
    /// [`crate::RegionError::TooManyWaiting`] instead of held.
    pub max_parked_asks: usize,
    /// Longest time, in ms, the owner may hold back the replication of a
    /// change nobody waits for (default 500; 0 sends every change after
    /// the burst of input that made it). A change some answer waits for
    /// (a submit, a read of a state not yet confirmed) is sent at once; a
    /// held one is replaced by the entity's next change if that comes
    /// first, so a task submitted with `submit_and_wait` reaches its
    /// replicas once, completed, instead of twice. A held change is lost
    /// if the owner fails within this time: its asker (kept waiting) gets
    /// an error and retries, and a job's output is computed again from
    /// the replicated input. A view change or a leave sends every held
    /// change at once.
    pub replicate_delay_ms: u64,
    /// Under load, the shortest time in ms between two replication batches
    /// from this owner to one replica set (default 1; 0 sends after every
    /// burst of input). It applies only after a batch of at least 8
    /// changes: a set that gets a change now and then, or one client's
    /// asks one after another, gets each at once; a busy set gets its
    /// changes in fewer, larger batches, each answer waiting at most this
    /// long (plus the timer's 1 ms tick) more. See `PROTOCOL.md`,
    /// Replication before acknowledgement. At most `replicate_timeout_ms`.
    pub replicate_linger_ms: u64,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        ShardingConfig {
            replication_factor: NonZeroU32::new(2).expect("2 is not zero"),
            max_forward_hops: 3,
            replicate_timeout_ms: 2_000,
            retire_after_ms: 30_000,
            snapshot_page_bytes: 1 << 20,
            max_parked_asks: 100_000,
            replicate_delay_ms: 500,
            replicate_linger_ms: 1,
        }
    }
}

/// Everything a region needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionConfig {
    /// `[defaults.sharding]`.
    pub defaults: ShardingDefaults,
    /// `[defaults.mailbox]`.
    pub mailbox: MailboxConfig,
    /// `[sharding]`.
    pub sharding: ShardingConfig,
}

/// Most shards per entity type: the allocation holds every shard's holders
/// and is recomputed on each view change (about 1 ms at 1,024 shards and
/// 20 members), so a bound keeps a typo from exhausting memory and time.
pub const MAX_SHARDS: u32 = 65_536;

/// Smallest `retire_after_ms` (1 s): the syncs a node starts when it gives
/// a shard up copy its records in later actor turns, which must find them.
pub const MIN_RETIRE_AFTER_MS: u64 = 1_000;

/// Largest replication factor (copies of each shard).
pub const MAX_REPLICATION: u32 = 16;

impl RegionConfig {
    /// The settings every node of a cluster must share for its regions to
    /// agree, as one text for the transport's handshake
    /// ([`transport::LocalNode::settings`]): `num_shards=<S>
    /// replication_factor=<R>`. Nodes that count shards differently map ids
    /// to different shards and route every message to owners that do not
    /// agree (forwarded until `TooManyHops`); a node with another
    /// replication factor copies its shards to fewer or more replicas than
    /// the others fetch from when it fails.
    pub fn cluster_settings(&self) -> String {
        format!(
            "num_shards={} replication_factor={}",
            self.defaults.num_shards, self.sharding.replication_factor
        )
    }

    /// Checks the invariants.
    ///
    /// # Errors
    /// A message naming the key: mailbox capacity ≥ 1,
    /// `replicate_timeout_ms` ≥ 1 ms, `retire_after_ms` ≥
    /// [`MIN_RETIRE_AFTER_MS`],
    /// replication linger ≤ replication timeout, snapshot pages ≥ 1 KiB,
    /// parked asks ≥ 1, forward hops ≤ 16, `num_shards` ≤
    /// [`MAX_SHARDS`], `replication_factor` ≤ [`MAX_REPLICATION`].
    pub fn validate(&self) -> Result<(), String> {
        if self.mailbox.capacity == 0 {
            return Err("defaults.mailbox.capacity must be at least 1".into());
        }
        if self.sharding.replicate_timeout_ms == 0 {
            return Err("sharding.replicate_timeout_ms must be at least 1".into());
        }
        if self.sharding.retire_after_ms < MIN_RETIRE_AFTER_MS {
            return Err(format!(
                "sharding.retire_after_ms = {} is below {MIN_RETIRE_AFTER_MS}: a shard's data must outlive the syncs this node starts when it gives the shard up",
                self.sharding.retire_after_ms
            ));
        }
        if self.sharding.replicate_linger_ms > self.sharding.replicate_timeout_ms {
            return Err(format!(
                "sharding.replicate_linger_ms = {} is above sharding.replicate_timeout_ms = {}",
                self.sharding.replicate_linger_ms, self.sharding.replicate_timeout_ms
            ));
        }
        if self.sharding.snapshot_page_bytes < 1024 {
            return Err("sharding.snapshot_page_bytes must be at least 1024".into());
        }
        if self.sharding.max_parked_asks == 0 {
            return Err("sharding.max_parked_asks must be at least 1".into());
        }
        if self.sharding.max_forward_hops > 16 {
            return Err("sharding.max_forward_hops must be at most 16".into());
        }
        if self.defaults.num_shards.get() > MAX_SHARDS {
            return Err(format!(
                "defaults.sharding.num_shards = {} is above {MAX_SHARDS}",
                self.defaults.num_shards
            ));
        }
        if self.sharding.replication_factor.get() > MAX_REPLICATION {
            return Err(format!(
                "sharding.replication_factor = {} is above {MAX_REPLICATION}",
                self.sharding.replication_factor
            ));
        }
        Ok(())
    }
}
