//! Sharding: stable shard ids, a deterministic allocation of shards to
//! members, and the shard region that routes messages to entities, hands
//! shards off when owners change and keeps replicas.

pub mod entity;

pub use entity::{Context, Entity, Handled, Job};
