//! Integration tests of the transport (one binary, one module per concern).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod codec;
mod golden;
mod hostile;
mod idle;
mod lanes;
mod loopback;
mod support;
