//! Probe target selection and the state of the probe in flight.
//!
//! Targets are chosen round-robin over a shuffled list of the active
//! members, reshuffled each round; a new member is inserted at a random
//! position of the remaining round (Das et al. 2002 §4.3), so every member
//! is probed by every other within one round of N − 1 periods, and the
//! first prober of a failed member comes within about one period.

use std::time::Instant;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::swim::member::MemberId;

/// The shuffled round-robin order.
#[derive(Debug, Default)]
pub(crate) struct ProbeList {
    order: Vec<String>,
    next: usize,
}

impl ProbeList {
    /// The next member to probe, reshuffling `active` when a round ends;
    /// names for which `is_active` is false are skipped.
    pub(crate) fn next_target(
        &mut self,
        active: &[String],
        is_active: impl Fn(&str) -> bool,
        rng: &mut ChaCha8Rng,
    ) -> Option<String> {
        if active.is_empty() {
            return None;
        }
        // Each name is looked at most once per round plus one reshuffle.
        for _ in 0..(self.order.len() + active.len() + 1) {
            if self.next >= self.order.len() {
                self.order = active.to_vec();
                self.order.sort_unstable();
                self.order.shuffle(rng);
                self.next = 0;
            }
            let name = &self.order[self.next];
            self.next += 1;
            if is_active(name) {
                return Some(name.clone());
            }
        }
        None
    }

    /// Inserts a newly active member at a random position of what remains
    /// of this round (appended, then swapped with a random remaining one).
    pub(crate) fn insert(&mut self, name: &str, rng: &mut ChaCha8Rng) {
        let lo = self.next.min(self.order.len());
        self.order.push(name.to_owned());
        let last = self.order.len() - 1;
        let at = rng.gen_range(lo..=last);
        self.order.swap(at, last);
    }
}

/// The probe of the current protocol period.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) target: MemberId,
    pub(crate) seq: u64,
    /// When the direct probe gives up and ping-reqs go out.
    pub(crate) direct_deadline: Instant,
    pub(crate) indirect_sent: bool,
    pub(crate) expected_nacks: u32,
    /// Names of the members asked to probe indirectly; only they (and
    /// the target itself) may answer for the target.
    pub(crate) relays: Vec<String>,
    pub(crate) nacks: u32,
    pub(crate) acked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_member_once_per_round() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let active: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        let mut list = ProbeList::default();
        let mut seen: Vec<String> = (0..10)
            .filter_map(|_| list.next_target(&active, |_| true, &mut rng))
            .collect();
        seen.sort();
        assert_eq!(seen, active);
    }

    #[test]
    fn gone_members_are_skipped() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut list = ProbeList::default();
        let all: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        list.next_target(&all, |_| true, &mut rng);
        let only_b = vec!["b".to_owned()];
        for _ in 0..5 {
            assert_eq!(
                list.next_target(&only_b, |n| n == "b", &mut rng).as_deref(),
                Some("b")
            );
        }
    }
}
