//! Shared test support for every crate of the workspace (`DESIGN.md`, "Test
//! support"): one place, never copied per crate.
//!
//! - [`Process`]: a child process guard. It captures stdout and stderr line
//!   by line into shared buffers ([`Lines`]) a test can wait on, and kills
//!   the child when dropped (printing its last log lines when the test is
//!   failing).
//! - [`listen_addr`]: port discovery. Start a node with `--port 0` and read
//!   the address from its `listening on <addr>` log line, with a deadline.
//!   [`reserve_port`] gives a free port number for the rare test that must
//!   know a port before the process exists.
//! - [`wait_until`]: polls a condition until a deadline (the only kind of
//!   waiting a real-time test does; never a bare sleep).
//! - [`LostWriteChecker`]: records acknowledged submissions and observed
//!   results per task id, computes each expected result independently
//!   ([`expected_result`], with `sha2`), and asserts that every acknowledged
//!   task has exactly one result, equal to the independent one.
//! - [`seed_log`]: parsers for the seed's log lines (`job-..: <result> (on
//!   <node>)`, `<done>/<total> completed in <secs>s`, `Final Report ...`).
//! - [`Member`]: an in-process member of a task-queue cluster, wired from
//!   the library crates as node-cli wires a node.
//! - [`serial`]: a lock that serializes heavy multi-process tests inside one
//!   test binary, so two clusters never compete for the same cores.

mod lost_write;
mod member;
mod port;
mod process;
pub mod seed_log;
mod serial;
mod wait;

pub use lost_write::{LostWriteChecker, Violation, expected_result};
pub use member::Member;
pub use port::{listen_addr, reserve_port};
pub use process::{Lines, Process};
pub use serial::serial;
pub use wait::wait_until;
