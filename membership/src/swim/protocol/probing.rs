//! Probing (Das et al. 2002 §4): the probe of each protocol period, the
//! ping-req fallback, relaying for others, Lifeguard's nacks, and the
//! suspicion timeouts that turn suspects into dead members.

use super::*;

impl Swim {
    pub(super) fn probe_tick(&mut self, now: Instant) {
        if let Some(p) = self.probe.take() {
            self.conclude_probe(now, p);
        }
        self.next_probe_at = Some(now + self.health.scale(self.config.probe_interval));
        if self.status != Status::Joined {
            return;
        }
        let mut prioritized = None;
        while let Some(n) = self.priority.pop_front() {
            if self
                .table
                .get(&n)
                .is_some_and(|e| e.member.state == MemberState::Suspect)
            {
                prioritized = Some(n);
                break;
            }
        }
        let next = match prioritized {
            Some(n) => Some(n),
            None => self.probe_list.next_target(
                self.table.active(),
                |n| self.table.get(n).is_some_and(|e| e.member.is_active()),
                &mut self.rng,
            ),
        };
        let Some(name) = next else {
            return;
        };
        let Some(target) = self.table.get(&name).map(|e| e.member.clone()) else {
            return;
        };
        let seq = self.take_seq();
        // Lifeguard's buddy system: tell a suspect it is suspected first.
        let first = (target.state == MemberState::Suspect).then(|| Update {
            member: target.clone(),
            accuser: None,
        });
        let updates = self.piggyback(first);
        self.stats.probes_sent += 1;
        self.send(
            target.id.addr.clone(),
            Message::Ping {
                from: self.local.id.clone(),
                seq,
                updates,
            },
        );
        self.probe = Some(Probe {
            target: target.id,
            seq,
            direct_deadline: now + self.health.scale(self.config.probe_timeout()),
            indirect_sent: false,
            expected_nacks: 0,
            relays: Vec::new(),
            nacks: 0,
            acked: false,
        });
    }

    pub(super) fn send_ping_reqs(&mut self) {
        let Some(p) = &self.probe else { return };
        let target = p.target.clone();
        let seq = p.seq;
        let relays = self.random_active(
            self.config.indirect_probes as usize,
            Some(&target.name),
            true,
        );
        for r in &relays {
            let updates = self.piggyback(None);
            self.stats.ping_reqs_sent += 1;
            self.send(
                r.id.addr.clone(),
                Message::PingReq {
                    from: self.local.id.clone(),
                    seq,
                    target: target.clone(),
                    updates,
                },
            );
        }
        if let Some(p) = &mut self.probe {
            p.indirect_sent = true;
            p.expected_nacks = relays.len() as u32;
            p.relays = relays.iter().map(|r| r.id.name.clone()).collect();
        }
    }

    pub(super) fn conclude_probe(&mut self, now: Instant, p: Probe) {
        if p.acked {
            return;
        }
        self.stats.probes_failed += 1;
        let delta = if p.expected_nacks > 0 {
            i64::from(p.expected_nacks.saturating_sub(p.nacks))
        } else {
            1
        };
        self.health.apply(delta);
        if self.in_grace(now) {
            self.stats.probes_inconclusive += 1;
            return;
        }
        let Some(current) = self.table.get(&p.target.name).map(|e| e.member.clone()) else {
            return;
        };
        if current.id.generation != p.target.generation || !current.is_active() {
            return;
        }
        debug!(member = %current.id, by = %self.local.id, "probe failed; suspecting");
        self.stats.suspicions_raised += u64::from(current.state == MemberState::Alive);
        let suspect = Member {
            state: MemberState::Suspect,
            ..current
        };
        let accuser = Some(self.local.id.name.clone());
        self.apply_update(
            now,
            Update {
                member: suspect,
                accuser,
            },
            Source::Local,
        );
        // Spread the suspicion at once rather than at the next gossip
        // round: the members that check it (and confirm it or make the
        // suspect refute) start a gossip interval earlier.
        self.gossip_tick(now);
    }

    pub(super) fn on_ack(&mut self, from: &MemberId, seq: u64) {
        if let Some(p) = &mut self.probe {
            if p.seq == seq {
                let answers_for_target = from.same_life(&p.target) || p.relays.contains(&from.name);
                if !p.acked && answers_for_target {
                    p.acked = true;
                    self.health.apply(-1);
                }
                return;
            }
        }
        if let Some(r) = self.relays.get(&seq) {
            if from.same_life(&r.target) {
                if let Some(r) = self.relays.remove(&seq) {
                    let updates = self.piggyback(None);
                    self.send(
                        r.requester.addr.clone(),
                        Message::Ack {
                            from: self.local.id.clone(),
                            seq: r.origin_seq,
                            updates,
                        },
                    );
                }
            }
            return;
        }
        if let Some(d) = self.dup_checks.get(&seq) {
            if from.same_life(&d.existing) {
                if let Some(d) = self.dup_checks.remove(&seq) {
                    info!(newcomer = %d.newcomer.id, existing = %d.existing, "duplicate name: refusing join");
                    self.send(
                        d.newcomer.id.addr.clone(),
                        Message::JoinRefused {
                            from: self.local.id.clone(),
                            reason: RefuseReason::DuplicateName {
                                existing: d.existing,
                            },
                        },
                    );
                }
            }
            return;
        }
        if let Some(l) = &self.leave {
            if l.seqs.contains(&seq) {
                self.finish_leave();
            }
        }
    }

    pub(super) fn on_ping_req(&mut self, now: Instant, from: MemberId, seq: u64, target: MemberId) {
        if target.same_life(&self.local.id) {
            // Asked to probe ourselves (the requester's view is odd): we
            // are the answer.
            let updates = self.piggyback(None);
            self.send(
                from.addr.clone(),
                Message::Ack {
                    from: self.local.id.clone(),
                    seq,
                    updates,
                },
            );
            return;
        }
        if self.relays.len() >= MAX_RELAYS {
            self.stats.relays_dropped += 1;
            return;
        }
        let local_seq = self.take_seq();
        let nack_after = self.config.probe_timeout().mul_f64(0.8);
        let updates = self.piggyback(None);
        self.send(
            target.addr.clone(),
            Message::Ping {
                from: self.local.id.clone(),
                seq: local_seq,
                updates,
            },
        );
        self.relays.insert(
            local_seq,
            Relay {
                requester: from,
                origin_seq: seq,
                target,
                nack_deadline: now + nack_after,
            },
        );
    }

    pub(super) fn relay_timeouts(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .relays
            .iter()
            .filter(|(_, r)| now >= r.nack_deadline)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            if let Some(r) = self.relays.remove(&s) {
                self.send(
                    r.requester.addr.clone(),
                    Message::Nack {
                        from: self.local.id.clone(),
                        seq: r.origin_seq,
                    },
                );
            }
        }
    }

    // ----------------------------------------------------------------
    // Suspicion
    // ----------------------------------------------------------------

    pub(super) fn suspicion_timeouts(&mut self, now: Instant) {
        let due: Vec<String> = self
            .suspicions
            .iter()
            .filter(|(_, s)| now >= s.deadline())
            .map(|(n, _)| n.clone())
            .collect();
        let mut declared = false;
        for name in due {
            if self.in_grace(now) {
                if let (Some(g), Some(s)) = (self.grace_until, self.suspicions.get_mut(&name)) {
                    s.hold_until(g);
                }
                continue;
            }
            let Some(s) = self.suspicions.remove(&name) else {
                continue;
            };
            let Some(current) = self.table.get(&name).map(|e| e.member.clone()) else {
                continue;
            };
            if current.state != MemberState::Suspect
                || current.id.generation != s.generation
                || current.incarnation != s.incarnation
            {
                continue;
            }
            info!(member = %current.id, by = %self.local.id, confirmations = s.confirmations(), "suspicion timed out; declaring dead");
            self.stats.deaths_declared += 1;
            let dead = Member {
                state: MemberState::Dead,
                ..current
            };
            let accuser = Some(self.local.id.name.clone());
            self.apply_update(
                now,
                Update {
                    member: dead,
                    accuser,
                },
                Source::Local,
            );
            declared = true;
        }
        if declared {
            // A death verdict goes out at once to `gossip_fanout` members
            // instead of waiting up to a gossip interval.
            self.gossip_tick(now);
        }
    }
}
