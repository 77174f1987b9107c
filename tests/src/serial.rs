//! Serializing heavy multi-process tests.

use std::sync::{Mutex, MutexGuard};

/// The lock behind [`serial`]; one per test binary (each binary links its
/// own copy of this crate).
static HEAVY: Mutex<()> = Mutex::new(());

/// Takes the heavy-test lock of this test binary; hold the guard for the
/// whole test.
///
/// Tests that start a cluster of processes take it, so two clusters never
/// run at once on a small machine while light tests still run in parallel.
/// Cargo runs test binaries one after another, so one lock per binary is
/// enough. A test that panicked while holding it does not poison it for the
/// others.
pub fn serial() -> MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
