//! Sharding: stable shard ids, a deterministic allocation of shards to
//! members, and the shard region that routes messages to entities, hands
//! shards off when owners change and keeps replicas.
//!
//! - [`shard_id`] maps an entity id to its shard with a hash fixed by this
//!   crate; [`allocate`] maps the member set to an owner and replicas per
//!   shard, a pure function every node computes alike.
//! - [`Region::start`] runs one [`Entity`] type on a node; its
//!   [`RegionHandle`] asks and tells entities from any node.
//! - [`WorkerPool`] runs entity jobs (CPU work) off the async runtime.

pub mod alloc;
pub mod config;
pub mod entities;
pub mod entity;
pub mod error;
pub mod handle;
pub mod pool;
pub mod region;
pub mod shard;
pub mod view;
pub mod wire;

pub use alloc::{Allocation, Load, Moves, allocate};
pub use config::{
    MAX_REPLICATION, MAX_SHARDS, MailboxConfig, MailboxStrategy, RegionConfig, ShardingConfig,
    ShardingDefaults,
};
pub use entities::{EntityMap, IdHash, IdHasher, IdKey};
pub use entity::{Context, Entity, Handled, Job, LaneJob, Lanes};
pub use error::RegionError;
pub use handle::{RegionHandle, Routing};
pub use pool::WorkerPool;
pub use region::{HandOff, MemberMap, Region, RegionStats};
pub use shard::{ShardId, shard_id, stable_hash};
pub use view::follow_membership;
