//! Lifeguard's dynamic suspicion timeout (arXiv 1707.00788 §IV-B): a
//! suspicion starts at a ceiling and shrinks towards a floor as
//! independent members confirm it,
//!
//! ```text
//! timeout(C) = max(min, max − (max − min) · log(C + 1) / log(K + 1))
//! ```
//!
//! where C is the number of confirmations so far and K the number
//! expected. The floor and ceiling scale with log10(N)
//! ([`MembershipConfig::suspicion_bounds`](crate::MembershipConfig::suspicion_bounds)).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// One running suspicion of one life at one incarnation.
#[derive(Clone, Debug)]
pub(crate) struct Suspicion {
    pub(crate) generation: u64,
    pub(crate) incarnation: u64,
    start: Instant,
    min: Duration,
    max: Duration,
    /// K, expected confirmations.
    expected: u32,
    /// The first accuser (not a confirmation) and every confirmer.
    accusers: BTreeSet<String>,
    /// Earliest time this suspicion may fire (a stall grace period).
    not_before: Option<Instant>,
}

impl Suspicion {
    pub(crate) fn new(
        generation: u64,
        incarnation: u64,
        start: Instant,
        bounds: (Duration, Duration),
        expected: u32,
        accuser: Option<&str>,
    ) -> Self {
        let mut accusers = BTreeSet::new();
        if let Some(a) = accuser {
            accusers.insert(a.to_owned());
        }
        Suspicion {
            generation,
            incarnation,
            start,
            min: bounds.0,
            max: bounds.1.max(bounds.0),
            expected,
            accusers,
            not_before: None,
        }
    }

    /// Confirmations: distinct accusers beyond the first.
    pub(crate) fn confirmations(&self) -> u32 {
        (self.accusers.len() as u32).saturating_sub(1)
    }

    /// Records an accuser; true if it is new and counts (so the update is
    /// worth re-gossiping).
    pub(crate) fn confirm(&mut self, accuser: &str) -> bool {
        if self.confirmations() >= self.expected || self.accusers.contains(accuser) {
            return false;
        }
        self.accusers.insert(accuser.to_owned());
        true
    }

    /// The current timeout (Lifeguard's formula).
    pub(crate) fn timeout(&self) -> Duration {
        if self.expected == 0 {
            return self.min;
        }
        let c = f64::from(self.confirmations().min(self.expected));
        let frac = (c + 1.0).ln() / (f64::from(self.expected) + 1.0).ln();
        let span = self.max.saturating_sub(self.min);
        self.max
            .saturating_sub(span.mul_f64(frac.clamp(0.0, 1.0)))
            .max(self.min)
    }

    /// When the member is declared dead.
    pub(crate) fn deadline(&self) -> Instant {
        let d = self.start + self.timeout();
        match self.not_before {
            Some(nb) => d.max(nb),
            None => d,
        }
    }

    /// Delays firing until at least `t` (after a local stall).
    pub(crate) fn hold_until(&mut self, t: Instant) {
        self.not_before = Some(self.not_before.map_or(t, |nb| nb.max(t)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_shrinks_from_max_to_min_with_confirmations() {
        let t0 = Instant::now();
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(4);
        let mut s = Suspicion::new(1, 0, t0, (min, max), 3, Some("a"));
        assert_eq!(s.timeout(), max);
        assert!(s.confirm("b"));
        assert!(!s.confirm("b"), "the same accuser counts once");
        assert_eq!(s.timeout(), Duration::from_millis(2500));
        assert!(s.confirm("c"));
        assert!(s.confirm("d"));
        assert_eq!(s.timeout(), min);
        assert!(!s.confirm("e"), "past K, confirmations no longer matter");
        assert_eq!(s.deadline(), t0 + min);
        s.hold_until(t0 + Duration::from_secs(3));
        assert_eq!(s.deadline(), t0 + Duration::from_secs(3));
    }

    #[test]
    fn no_expected_confirmations_means_min() {
        let t0 = Instant::now();
        let s = Suspicion::new(
            1,
            0,
            t0,
            (Duration::from_secs(1), Duration::from_secs(4)),
            0,
            None,
        );
        assert_eq!(s.timeout(), Duration::from_secs(1));
    }
}
