//! The sharding crate's integration tests, one binary (see STYLE.md).
#![allow(clippy::unwrap_used)]

mod alloc;
mod lanes;
mod region;
mod shard;
