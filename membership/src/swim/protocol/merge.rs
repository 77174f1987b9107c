//! Merging updates into the view: precedence, refutation of updates about
//! ourselves, the anti-entropy rules (no dead via sync, the minority
//! rule), events, and what gets piggybacked.

use super::*;

impl Swim {
    pub(super) fn apply_updates(&mut self, now: Instant, updates: Vec<Update>, source: Source) {
        for u in updates {
            self.apply_update(now, u, source);
        }
    }

    /// Merges anti-entropy state sent by `from`. Whether we are in the
    /// minority, and whether `from` is a member we hold dead, is decided
    /// once, before merging, so that adopting the first entries cannot
    /// flip the verdict for the rest.
    pub(super) fn merge_state(&mut self, now: Instant, from: &MemberId, state: Vec<Update>) {
        self.sync_minority = self.in_minority();
        self.sync_from_dead = self.holds_dead(from);
        for mut u in state {
            u.accuser = None;
            self.apply_update(now, u, Source::Sync);
        }
        self.sync_minority = false;
        self.sync_from_dead = false;
    }

    /// Merges one update: the record with the greater precedence wins
    /// ([`Member::precedence`]); updates about ourselves are refuted.
    pub(super) fn apply_update(&mut self, now: Instant, u: Update, source: Source) {
        if u.member.id.name == self.local.id.name {
            self.apply_about_self(u);
            return;
        }
        if source == Source::Sync && u.member.state == MemberState::Dead {
            return;
        }
        let order = self
            .table
            .get(&u.member.id.name)
            .map(|e| u.member.precedence(&e.member));
        match order {
            None => {
                if self.table.len() >= self.config.max_members {
                    self.stats.members_dropped += 1;
                    return;
                }
                self.store(now, u, source);
            }
            Some(std::cmp::Ordering::Greater) => self.store(now, u, source),
            Some(std::cmp::Ordering::Equal) => {
                let confirmed = u.member.state == MemberState::Suspect
                    && source != Source::Sync
                    && u.accuser.as_ref().is_some_and(|accuser| {
                        self.suspicions
                            .get_mut(&u.member.id.name)
                            .is_some_and(|s| s.confirm(accuser))
                    });
                if confirmed {
                    // A new independent accuser: spread the confirmation.
                    self.enqueue(u);
                } else if source == Source::Gossip {
                    // Rumor mongering with feedback (Demers et al. 1987):
                    // the sender already knew it, so we send it less. An
                    // `alive` that comes back to us is dropped outright
                    // (anti-entropy covers the rest; this is what keeps a
                    // join storm from flooding), while failure news only
                    // counts one transmission.
                    if u.member.state == MemberState::Alive {
                        self.broadcasts.remove(&u.member.id.name);
                    } else {
                        let limit = self.config.retransmit_limit(self.cluster_size());
                        self.broadcasts.bump(&u.member.id.name, limit);
                    }
                }
            }
            Some(std::cmp::Ordering::Less) => {
                if source != Source::Sync || !u.member.is_active() {
                    return;
                }
                let Some(old) = self.table.get(&u.member.id.name).map(|e| &e.member) else {
                    return;
                };
                if old.state != MemberState::Dead || old.id.generation != u.member.id.generation {
                    return;
                }
                if self.sync_minority {
                    if self.sync_from_dead && u.member.incarnation == old.incarnation {
                        // We cannot see a majority, and a member we held
                        // dead reaches us again: trust its view over our
                        // own verdict. (Not a fellow member of our
                        // minority: its view is as cut off as ours, and two
                        // of them would keep reviving each other's dead.)
                        self.store(now, u, source);
                    }
                } else if !self.broadcasts.contains(&old.id.name) {
                    // The peer missed the death: spread it again.
                    let dead = Update {
                        member: old.clone(),
                        accuser: Some(self.local.id.name.clone()),
                    };
                    self.enqueue(dead);
                }
            }
        }
    }

    /// Stores `u.member` as the record of its name: indexes, suspicion
    /// timer, probe order, events and dissemination.
    pub(super) fn store(&mut self, now: Instant, u: Update, source: Source) {
        let old = self.table.set(u.member.clone(), now);
        let new = &u.member;
        let name = &new.id.name;

        if new.state == MemberState::Suspect {
            let restart = self.suspicions.get(name).is_none_or(|s| {
                s.generation != new.id.generation || s.incarnation != new.incarnation
            });
            if restart {
                let n = self.cluster_size();
                let expected =
                    (self.config.suspicion_confirmations as usize).min(n.saturating_sub(2)) as u32;
                let mut s = Suspicion::new(
                    new.id.generation,
                    new.incarnation,
                    now,
                    self.config.suspicion_bounds(n),
                    expected,
                    u.accuser.as_deref(),
                );
                if let Some(g) = self.grace_until.filter(|g| now < *g) {
                    s.hold_until(g);
                }
                self.suspicions.insert(name.clone(), s);
                // Check a fresh suspicion ourselves soon, so independent
                // confirmations (or the refutation) come within a period
                // or two instead of whenever round-robin gets there. About
                // PRIORITY_PROBERS members do, so the load stays flat.
                let accused_by_us = u.accuser.as_deref() == Some(self.local.id.name.as_str());
                let p = (PRIORITY_PROBERS / n as f64).min(1.0);
                if !accused_by_us && self.rng.gen_bool(p) && self.priority.len() < MAX_PRIORITY {
                    self.priority.push_back(name.clone());
                }
            }
        } else {
            self.suspicions.remove(name);
        }

        let revived = old.as_ref().is_some_and(|o| {
            o.state == MemberState::Dead && o.id.generation == new.id.generation && new.is_active()
        });
        if revived {
            self.revived.insert(name.clone(), (new.id.generation, now));
            // Tell the revived life that it was declared dead: it may have
            // raised its incarnation past our verdict before hearing of it
            // (a suspicion refuted while reading its backlog after a stall),
            // and the verdict may no longer be gossiped to it. Without it,
            // it would serve the shards it held before as current.
            if let Some(o) = old.as_ref().filter(|_| !self.in_minority()) {
                let verdict = Update {
                    member: o.clone(),
                    accuser: Some(self.local.id.name.clone()),
                };
                let msg = Message::Gossip {
                    from: self.local.id.clone(),
                    updates: vec![verdict],
                };
                self.send(new.id.addr.clone(), msg);
            }
        } else if old
            .as_ref()
            .is_some_and(|o| o.id.generation != new.id.generation)
        {
            self.revived.remove(name);
        }

        let was_active_same_life = old
            .as_ref()
            .is_some_and(|o| o.is_active() && o.id.generation == new.id.generation);
        if new.is_active() && !was_active_same_life {
            self.probe_list.insert(name, &mut self.rng);
        }

        self.emit_transition(old.as_ref(), new);

        if source == Source::Sync {
            // Never piggyback a queued update older than what we now hold.
            self.broadcasts.remove(&u.member.id.name);
        } else {
            self.enqueue(u);
        }
    }

    pub(super) fn emit_transition(&mut self, old: Option<&Member>, new: &Member) {
        use MemberState::{Alive, Dead, Left, Suspect};
        let up = |events: &mut VecDeque<Event>, m: &Member| {
            info!(member = %m.id, "member up");
            events.push_back(Event::MemberUp(m.clone()));
            if m.state == Suspect {
                events.push_back(Event::MemberSuspect(m.clone()));
            }
        };
        match old {
            None => {
                if new.is_active() {
                    up(&mut self.events, new);
                }
            }
            Some(o) if o.id.generation != new.id.generation => {
                if o.is_active() {
                    info!(member = %o.id, newer = %new.id, "member replaced by a newer life");
                    self.events.push_back(Event::MemberDown(o.clone()));
                }
                if new.is_active() {
                    up(&mut self.events, new);
                }
            }
            Some(o) => match (o.state, new.state) {
                (Alive, Alive) => {
                    if o.metadata != new.metadata {
                        self.events.push_back(Event::MemberUpdated(new.clone()));
                    }
                }
                (Alive, Suspect) => {
                    debug!(member = %new.id, "member suspect");
                    self.events.push_back(Event::MemberSuspect(new.clone()));
                }
                (Suspect, Alive) => {
                    debug!(member = %new.id, "member refuted suspicion");
                    self.events.push_back(Event::MemberAlive(new.clone()));
                }
                (Suspect, Suspect) => {}
                (Alive | Suspect, Dead) => {
                    info!(member = %new.id, "member down");
                    self.events.push_back(Event::MemberDown(new.clone()));
                }
                (Alive | Suspect, Left) => {
                    info!(member = %new.id, "member left");
                    self.events.push_back(Event::MemberLeft(new.clone()));
                }
                (Dead | Left, Alive | Suspect) => up(&mut self.events, new),
                (Dead | Left, Dead | Left) => {}
            },
        }
    }

    pub(super) fn apply_about_self(&mut self, u: Update) {
        let m = u.member;
        if m.id.generation > self.local.id.generation {
            self.superseded(m.id);
            return;
        }
        if m.id.generation < self.local.id.generation || self.local.state == MemberState::Left {
            return;
        }
        // A death verdict is news whatever its incarnation, unless we have
        // handled one at least as recent: it may have been reached on an
        // incarnation we have since raised (we refuted a suspicion that was
        // older than the verdict, e.g. while reading the backlog after a
        // stall), and the others, seeing our higher incarnation, revive us
        // and route to us again. Ignoring it would let this life serve the
        // state it held before it was declared dead.
        let death = matches!(m.state, MemberState::Dead | MemberState::Left)
            && self.death_handled.is_none_or(|i| m.incarnation > i);
        let refute = death
            || match m.state {
                MemberState::Alive => m.incarnation > self.local.incarnation,
                MemberState::Suspect | MemberState::Dead | MemberState::Left => {
                    m.incarnation >= self.local.incarnation
                }
            };
        if !refute {
            return;
        }
        if death {
            self.death_handled = Some(m.incarnation);
        }
        self.local.incarnation = self.local.incarnation.max(m.incarnation) + 1;
        self.stats.refutations += 1;
        let me = self.self_update();
        self.enqueue(me);
        match m.state {
            MemberState::Dead | MemberState::Left => {
                // Our own verdicts were reached while the cluster could
                // not reach us: stop spreading them (anti-entropy brings
                // the records themselves back in line).
                for name in self.table.dead().to_vec() {
                    self.broadcasts.remove(&name);
                }
                warn!(member = %self.local.id, incarnation = self.local.incarnation, "we were declared dead; refuted, shards lost");
                self.events.push_back(Event::RejoinedAfterDeath {
                    declared_by: u.accuser,
                    incarnation: self.local.incarnation,
                });
            }
            MemberState::Suspect => {
                debug!(member = %self.local.id, "refuting suspicion of ourselves");
                self.health.apply(1);
            }
            MemberState::Alive => {}
        }
    }

    /// What a member talking to us should hear first: the newer life of
    /// its name, or (unless we are in the minority) that we hold it dead.
    pub(super) fn corrective_update(&self, to: &MemberId) -> Option<Update> {
        let e = self.table.get(&to.name)?;
        if e.member.id.generation > to.generation {
            return Some(Update {
                member: e.member.clone(),
                accuser: None,
            });
        }
        if e.member.id.generation == to.generation
            && e.member.state == MemberState::Dead
            && !self.in_minority()
        {
            return Some(Update {
                member: e.member.clone(),
                accuser: Some(self.local.id.name.clone()),
            });
        }
        None
    }

    /// Up to `max_piggyback_updates` pending updates within
    /// `max_piggyback_bytes`, `first` (if any) in front. While in the
    /// minority, death verdicts about others are held back.
    pub(super) fn piggyback(&mut self, first: Option<Update>) -> Vec<Update> {
        let limit = self.config.retransmit_limit(self.cluster_size());
        let minority = self.in_minority();
        let mut count = self.config.max_piggyback_updates;
        let mut bytes = self.config.max_piggyback_bytes;
        let mut out = Vec::new();
        let mut first_name = None;
        if let Some(f) = first {
            count -= 1;
            bytes = bytes.saturating_sub(f.size_bound());
            first_name = Some(f.member.id.name.clone());
            out.push(f);
        }
        let local = self.local.id.name.as_str();
        let picked = self.broadcasts.select(limit, count, bytes, |u| {
            (minority && u.member.state == MemberState::Dead && u.member.id.name != local)
                || first_name.as_deref() == Some(u.member.id.name.as_str())
        });
        out.extend(picked);
        out
    }
}
