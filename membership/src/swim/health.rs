//! Lifeguard's local health multiplier (LHM, arXiv 1707.00788 §IV-A): a
//! saturating score in `0..=S` raised by signs that *we* are slow (a
//! probe of ours failed, a relay's nack never came, we had to refute a
//! suspicion of ourselves, our timers fired late) and lowered by each
//! successful probe. Probe interval and probe timeout are multiplied by
//! `score + 1`, so a starved node probes less and accuses later.

use std::time::Duration;

/// The local health score.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalHealth {
    score: u32,
    max: u32,
}

impl LocalHealth {
    pub(crate) fn new(max: u32) -> Self {
        LocalHealth { score: 0, max }
    }

    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// Adds `delta`, saturating at 0 and `max`.
    pub(crate) fn apply(&mut self, delta: i64) {
        let s = i64::from(self.score) + delta;
        self.score = s.clamp(0, i64::from(self.max)) as u32;
    }

    /// `d` stretched by `score + 1`.
    pub(crate) fn scale(&self, d: Duration) -> Duration {
        d.saturating_mul(self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_and_scales() {
        let mut h = LocalHealth::new(8);
        h.apply(-1);
        assert_eq!(h.score(), 0);
        h.apply(20);
        assert_eq!(h.score(), 8);
        assert_eq!(
            h.scale(Duration::from_millis(100)),
            Duration::from_millis(900)
        );
    }
}
