//! Loopback integration tests of the transport.
#![allow(clippy::unwrap_used, missing_docs)]

mod loopback;
