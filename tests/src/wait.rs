//! Polling a condition with a deadline.

use std::time::{Duration, Instant};

/// How often [`wait_until`] re-checks its condition.
const POLL: Duration = Duration::from_millis(10);

/// Calls `cond` every 10 ms until it returns `true` (then returns `true`) or
/// `deadline` passes (then returns `false`, after one last check).
///
/// `cond` is always called at least once, also with a deadline already in
/// the past. Blocks the calling thread; use it from synchronous tests.
pub fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_at_once_and_false_after_the_deadline() {
        assert!(wait_until(Instant::now(), || true));
        let start = Instant::now();
        assert!(!wait_until(start + Duration::from_millis(50), || false));
        assert!(start.elapsed() >= Duration::from_millis(50));
        let mut n = 0;
        assert!(wait_until(Instant::now() + Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
    }
}
