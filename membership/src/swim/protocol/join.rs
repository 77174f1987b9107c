//! The acceptor side of joining: identity checks (duplicate names, stale
//! generations, a full table), the duplicate-name probe, and the
//! `JoinAck` with our state.

use super::*;

impl Swim {
    pub(super) fn on_join(
        &mut self,
        now: Instant,
        from: MemberId,
        incarnation: u64,
        metadata: Vec<u8>,
    ) {
        if !matches!(self.status, Status::Joined | Status::Joining) {
            return;
        }
        let newcomer = Member {
            id: from.clone(),
            incarnation,
            state: MemberState::Alive,
            metadata,
        };
        if from.name == self.local.id.name {
            // Another process with our name while we run: a duplicate.
            self.send(
                from.addr.clone(),
                Message::JoinRefused {
                    from: self.local.id.clone(),
                    reason: RefuseReason::DuplicateName {
                        existing: self.local.id.clone(),
                    },
                },
            );
            return;
        }
        let existing = self.table.get(&from.name).map(|e| e.member.clone());
        if existing.is_none() && self.table.len() >= self.config.max_members {
            self.stats.members_dropped += 1;
            self.send(
                from.addr.clone(),
                Message::JoinRefused {
                    from: self.local.id.clone(),
                    reason: RefuseReason::ClusterFull {
                        max_members: self.config.max_members as u64,
                    },
                },
            );
            return;
        }
        if let Some(old) = existing {
            if old.id.generation > from.generation {
                self.send(
                    from.addr.clone(),
                    Message::JoinRefused {
                        from: self.local.id.clone(),
                        reason: RefuseReason::StaleGeneration {
                            current: old.id.generation,
                        },
                    },
                );
                return;
            }
            if old.is_active() && old.id.addr != from.addr {
                if old.id.generation == from.generation {
                    self.send(
                        from.addr.clone(),
                        Message::JoinRefused {
                            from: self.local.id.clone(),
                            reason: RefuseReason::DuplicateName { existing: old.id },
                        },
                    );
                    return;
                }
                // Same name, another address, newer generation: is the
                // old life still answering? Probe it before deciding.
                self.start_dup_check(now, old.id, newcomer);
                return;
            }
        }
        self.accept_join(now, newcomer);
    }

    pub(super) fn start_dup_check(&mut self, now: Instant, existing: MemberId, newcomer: Member) {
        if self
            .dup_checks
            .values()
            .any(|d| d.newcomer.id == newcomer.id)
            || self.dup_checks.len() >= MAX_DUP_CHECKS
        {
            return;
        }
        let seq = self.take_seq();
        self.send(
            existing.addr.clone(),
            Message::Ping {
                from: self.local.id.clone(),
                seq,
                updates: Vec::new(),
            },
        );
        debug!(existing = %existing, newcomer = %newcomer.id, "checking for a duplicate name");
        self.dup_checks.insert(
            seq,
            DupCheck {
                existing,
                newcomer,
                deadline: now + self.config.probe_interval,
            },
        );
    }

    pub(super) fn dup_check_timeouts(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .dup_checks
            .iter()
            .filter(|(_, d)| now >= d.deadline)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            if let Some(d) = self.dup_checks.remove(&s) {
                debug!(existing = %d.existing, newcomer = %d.newcomer.id, "old life silent: newer generation replaces it");
                self.accept_join(now, d.newcomer);
            }
        }
    }

    pub(super) fn accept_join(&mut self, now: Instant, newcomer: Member) {
        let to = newcomer.id.clone();
        self.apply_update(
            now,
            Update {
                member: newcomer,
                accuser: None,
            },
            Source::Local,
        );
        let state = self.state_for(&to, &[true; SYNC_BUCKETS]);
        self.stats.states_sent += 1;
        self.send(
            to.addr.clone(),
            Message::JoinAck {
                from: self.local.id.clone(),
                state,
            },
        );
        if self.status == Status::Joining {
            info!(member = %self.local.id, joiner = %to, "a member joined through us: cluster formed");
            self.become_joined();
        }
    }
}
