//! Dissemination and anti-entropy: gossip rounds while updates are
//! pending, push-pull rounds (to a random member, now and then to a dead
//! member or an unmatched seed), bucketed digests and the state we send.

use super::*;

impl Swim {
    pub(super) fn gossip_tick(&mut self, now: Instant) {
        self.next_gossip_at = Some(now + self.config.gossip_interval());
        if self.broadcasts.is_empty() || !matches!(self.status, Status::Joined | Status::Leaving) {
            return;
        }
        let targets = self.random_active(self.config.gossip_fanout as usize, None, false);
        for t in targets {
            let updates = self.piggyback(None);
            if updates.is_empty() {
                break;
            }
            self.send(
                t.id.addr.clone(),
                Message::Gossip {
                    from: self.local.id.clone(),
                    updates,
                },
            );
        }
    }

    pub(super) fn sync_tick(&mut self, now: Instant) {
        self.next_sync_at = Some(now + self.config.push_pull_interval);
        if self.status != Status::Joined {
            return;
        }
        self.sync_round += 1;
        let dead_round = self.sync_round % u64::from(self.config.push_pull_dead_every) == 0;
        let seed_round = self.sync_round % u64::from(self.config.push_pull_seed_every) == 0;
        let mut target = None;
        if dead_round {
            target = self.random_dead_addr();
        }
        if target.is_none() && seed_round {
            target = self.random_unmatched_seed();
        }
        if target.is_none() {
            target = self.random_active(1, None, false).pop().map(|m| m.id.addr);
        }
        if target.is_none() {
            target = self
                .random_dead_addr()
                .or_else(|| self.random_unmatched_seed());
        }
        let Some(to) = target else { return };
        self.stats.syncs_started += 1;
        let digest = view_digest(&self.table.buckets(&self.local));
        self.send(
            to.clone(),
            Message::SyncRequest {
                from: self.local.id.clone(),
                to,
                digest,
            },
        );
    }

    pub(super) fn random_dead_addr(&mut self) -> Option<String> {
        let dead = self.table.dead();
        if dead.is_empty() {
            return None;
        }
        let name = dead[self.rng.gen_range(0..dead.len())].clone();
        self.table.get(&name).map(|e| e.member.id.addr.clone())
    }

    pub(super) fn random_unmatched_seed(&mut self) -> Option<String> {
        let table = &self.table;
        let is_active_addr = |addr: &str| {
            table
                .active()
                .iter()
                .filter_map(|n| table.get(n))
                .any(|e| e.member.id.addr == addr)
        };
        let candidates: Vec<&String> = self
            .seeds
            .iter()
            .filter(|s| !self.self_addrs.contains(*s) && !is_active_addr(s))
            .collect();
        candidates.choose(&mut self.rng).map(|s| (*s).clone())
    }

    /// Up to `k` distinct random active members other than `exclude`;
    /// with `alive_only`, suspects are skipped.
    pub(super) fn random_active(
        &mut self,
        k: usize,
        exclude: Option<&str>,
        alive_only: bool,
    ) -> Vec<Member> {
        let active = self.table.active();
        if k == 0 || active.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(k);
        if active.len() <= 4 * k + 4 {
            let mut names: Vec<&String> = active.iter().collect();
            names.shuffle(&mut self.rng);
            for n in names {
                if out.len() == k {
                    break;
                }
                if let Some(e) = self.table.get(n) {
                    if Some(n.as_str()) != exclude
                        && (!alive_only || e.member.state == MemberState::Alive)
                    {
                        out.push(e.member.clone());
                    }
                }
            }
            return out;
        }
        let mut seen = BTreeSet::new();
        for _ in 0..(8 * k) {
            if out.len() == k {
                break;
            }
            let i = self.rng.gen_range(0..active.len());
            if !seen.insert(i) {
                continue;
            }
            let n = &active[i];
            if let Some(e) = self.table.get(n) {
                if Some(n.as_str()) != exclude
                    && (!alive_only || e.member.state == MemberState::Alive)
                {
                    out.push(e.member.clone());
                }
            }
        }
        out
    }

    /// Which buckets differ between our view and `theirs` (all of them
    /// when the peer uses another bucket count).
    pub(super) fn differing_buckets(&self, theirs: &[u64]) -> [bool; SYNC_BUCKETS] {
        let mine = self.table.buckets(&self.local);
        let mut out = [true; SYNC_BUCKETS];
        if theirs.len() == SYNC_BUCKETS {
            for (i, d) in out.iter_mut().enumerate() {
                *d = mine[i] != theirs[i];
            }
        }
        out
    }

    pub(super) fn send_state(
        &mut self,
        to: &MemberId,
        buckets: &[bool; SYNC_BUCKETS],
        reply: bool,
    ) {
        let state = self.state_for(to, buckets);
        self.stats.states_sent += 1;
        self.send(
            to.addr.clone(),
            Message::Sync {
                from: self.local.id.clone(),
                buckets: self.table.buckets(&self.local),
                state,
                reply,
            },
        );
    }

    /// Our state for `to`, limited to the members whose name falls in a
    /// bucket marked in `buckets`: ourselves, `to`'s own record when it
    /// must hear it (a newer life of its name, or its death unless we are
    /// in the minority), then every alive, suspect and left member. Dead
    /// members are not sent. Past `max_sync_bytes` a window starting at a
    /// random member is sent instead, so repeated rounds cover everything.
    pub(super) fn state_for(
        &mut self,
        to: &MemberId,
        buckets: &[bool; SYNC_BUCKETS],
    ) -> Vec<Update> {
        let mut budget = self.config.max_sync_bytes.saturating_sub(256);
        let mut out = vec![self.self_update()];
        budget = budget.saturating_sub(out[0].size_bound());
        let correction = self
            .corrective_update(to)
            .map(|u| Update { accuser: None, ..u });
        if let Some(c) = correction {
            budget = budget.saturating_sub(c.size_bound());
            out.push(c);
        }
        let entries: Vec<&Member> = self
            .table
            .iter()
            .map(|e| &e.member)
            .filter(|m| {
                m.state != MemberState::Dead
                    && m.id.name != to.name
                    && buckets[bucket_of(&m.id.name)]
            })
            .collect();
        let total: usize = entries
            .iter()
            .map(|m| m.id.name.len() + m.id.addr.len() + m.metadata.len() + 40)
            .sum();
        let start = if total > budget && !entries.is_empty() {
            self.rng.gen_range(0..entries.len())
        } else {
            0
        };
        for i in 0..entries.len() {
            let m = entries[(start + i) % entries.len()];
            let u = Update {
                member: m.clone(),
                accuser: None,
            };
            let size = u.size_bound();
            if size > budget {
                break;
            }
            budget -= size;
            out.push(u);
        }
        out
    }
}
