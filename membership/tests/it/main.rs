//! The `membership` integration tests: one binary, modules by topic.
//!
//! Simulations are deterministic: each prints its seed when it fails, and
//! `SWIM_SIM_SEED=<seed> cargo test -p membership --test it <name>` replays
//! it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod core;
#[cfg(feature = "runtime")]
mod driver;
mod harness;
mod order;
mod scenarios;
mod wire;
