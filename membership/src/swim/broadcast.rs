//! The piggyback queue: pending membership updates, each sent a limited
//! number of times (λ·⌈log2(N+1)⌉, SWIM's infection-style dissemination,
//! Das et al. 2002 §4.1). Updates sent the fewest times go first, newest
//! first among equals; a newer update about a member replaces the queued
//! one and starts its count again.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::swim::message::Update;
use crate::swim::view::NameMap;

#[derive(Debug)]
struct Queued {
    update: Update,
    transmits: u32,
    id: u64,
}

/// Pending updates, at most one per member name.
#[derive(Debug, Default)]
pub(crate) struct BroadcastQueue {
    /// Looked up by name, never iterated.
    entries: NameMap<Queued>,
    /// (transmits, newest first) -> name.
    order: BTreeMap<(u32, Reverse<u64>), String>,
    next_id: u64,
}

impl BroadcastQueue {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Queues `update`, replacing any queued update about the same name.
    /// Past `capacity` entries, the most sent (oldest among equals) is
    /// dropped: in a join storm the announcements that are already widely
    /// known are left to push-pull.
    pub(crate) fn enqueue(&mut self, update: Update, capacity: usize) {
        let name = update.member.id.name.clone();
        self.remove(&name);
        let id = self.next_id;
        self.next_id += 1;
        self.order.insert((0, Reverse(id)), name.clone());
        self.entries.insert(
            name,
            Queued {
                update,
                transmits: 0,
                id,
            },
        );
        while self.entries.len() > capacity.max(1) {
            let Some((_, victim)) = self.order.pop_last() else {
                break;
            };
            self.entries.remove(&victim);
        }
    }

    pub(crate) fn remove(&mut self, name: &str) {
        if let Some(q) = self.entries.remove(name) {
            self.order.remove(&(q.transmits, Reverse(q.id)));
        }
    }

    /// Counts one transmission of the update queued about `name` without
    /// sending it (someone else already spread it), dropping it at `limit`.
    pub(crate) fn bump(&mut self, name: &str, limit: u32) {
        let Some(q) = self.entries.get_mut(name) else {
            return;
        };
        let Some(n) = self.order.remove(&(q.transmits, Reverse(q.id))) else {
            return;
        };
        q.transmits += 1;
        if q.transmits >= limit {
            self.entries.remove(name);
        } else {
            self.order.insert((q.transmits, Reverse(q.id)), n);
        }
    }

    /// Picks up to `max_count` updates whose size bounds add up to at most
    /// `max_bytes`, skipping those `skip` rejects, counts one transmission
    /// for each and drops those that reached `limit`.
    pub(crate) fn select(
        &mut self,
        limit: u32,
        max_count: usize,
        mut max_bytes: usize,
        skip: impl Fn(&Update) -> bool,
    ) -> Vec<Update> {
        let mut picked: Vec<(u32, Reverse<u64>)> = Vec::new();
        let mut out = Vec::new();
        let mut expired = Vec::new();
        let scan_limit = max_count.saturating_mul(8);
        for (key, name) in self.order.iter().take(scan_limit) {
            if out.len() >= max_count || max_bytes == 0 {
                break;
            }
            let Some(q) = self.entries.get(name) else {
                continue;
            };
            if q.transmits >= limit {
                expired.push(*key);
                continue;
            }
            if skip(&q.update) {
                continue;
            }
            let size = q.update.size_bound();
            if size > max_bytes {
                continue;
            }
            max_bytes -= size;
            out.push(q.update.clone());
            picked.push(*key);
        }
        for key in expired {
            if let Some(name) = self.order.remove(&key) {
                self.entries.remove(&name);
            }
        }
        for key in picked {
            let Some(name) = self.order.remove(&key) else {
                continue;
            };
            let (transmits, id) = key;
            if transmits + 1 >= limit {
                self.entries.remove(&name);
            } else if let Some(q) = self.entries.get_mut(&name) {
                q.transmits = transmits + 1;
                self.order.insert((transmits + 1, id), name);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swim::member::{Member, MemberId, MemberState};

    fn update(name: &str, incarnation: u64) -> Update {
        Update {
            member: Member {
                id: MemberId::new(name, "h:1", 1),
                incarnation,
                state: MemberState::Alive,
                metadata: Vec::new(),
            },
            accuser: None,
        }
    }

    #[test]
    fn least_sent_first_and_limited() {
        let mut q = BroadcastQueue::default();
        q.enqueue(update("a", 0), 100);
        q.enqueue(update("b", 0), 100);
        let first = q.select(2, 1, 10_000, |_| false);
        assert_eq!(first[0].member.id.name, "b", "newest first among equals");
        let second = q.select(2, 1, 10_000, |_| false);
        assert_eq!(second[0].member.id.name, "a", "then the least sent");
        q.select(2, 2, 10_000, |_| false);
        assert!(q.is_empty(), "each update sent twice, then dropped");
    }

    #[test]
    fn newer_update_replaces_and_restarts_count() {
        let mut q = BroadcastQueue::default();
        q.enqueue(update("a", 0), 100);
        q.select(3, 1, 10_000, |_| false);
        q.enqueue(update("a", 1), 100);
        assert_eq!(q.len(), 1);
        let got = q.select(3, 4, 10_000, |_| false);
        assert_eq!(got[0].member.incarnation, 1);
    }

    #[test]
    fn capacity_drops_the_most_sent() {
        let mut q = BroadcastQueue::default();
        q.enqueue(update("old", 0), 2);
        q.select(10, 1, 10_000, |_| false);
        q.enqueue(update("b", 0), 2);
        q.enqueue(update("c", 0), 2);
        assert_eq!(q.len(), 2);
        assert!(!q.contains("old"));
    }

    #[test]
    fn byte_budget_and_skip_are_respected() {
        let mut q = BroadcastQueue::default();
        for i in 0..10 {
            q.enqueue(update(&format!("m{i}"), 0), 100);
        }
        let budget = update("m0", 0).size_bound() * 3;
        assert_eq!(q.select(5, 10, budget, |_| false).len(), 3);
        let got = q.select(5, 10, 100_000, |u| u.member.id.name == "m9");
        assert!(got.iter().all(|u| u.member.id.name != "m9"));
    }
}
