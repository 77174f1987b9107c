//! [`RegionHandle`]: tell and ask entities from any node.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use transport::{Channel, NodeId};

use crate::alloc::Allocation;
use crate::config::{MailboxStrategy, RegionConfig};
use crate::entity::Entity;
use crate::error::{RegionError, Result};
use crate::region::{Cmd, HandOff, MemberMap, RegionStats, ReplyTo};
use crate::shard::{ShardId, shard_id};
use crate::wire::{MAX_BATCH_ITEMS, Wire, WireReply};

/// One node's routing table: the members holding shards and the allocation
/// computed from them.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Members by name.
    pub members: MemberMap,
    /// Owner and replicas of every shard.
    pub alloc: Allocation,
    num_shards: NonZeroU32,
}

impl Routing {
    pub(crate) fn new(members: MemberMap, alloc: Allocation, num_shards: NonZeroU32) -> Self {
        Routing {
            members,
            alloc,
            num_shards,
        }
    }

    /// The shard of `entity_id`.
    pub fn shard_of(&self, entity_id: &str) -> ShardId {
        shard_id(entity_id, self.num_shards)
    }

    /// The owner of `entity_id`'s shard in this view, if any member holds shards.
    pub fn owner_of(&self, entity_id: &str) -> Option<&NodeId> {
        self.alloc
            .owner(self.shard_of(entity_id))
            .and_then(|n| self.members.get(n))
    }
}

struct Shared<E: Entity> {
    me: NodeId,
    channel: Channel<Wire<E>>,
    mbox: mpsc::Sender<Cmd<E>>,
    routing: watch::Receiver<Arc<Routing>>,
    stats: watch::Receiver<RegionStats>,
    config: RegionConfig,
    /// Messages a full `drop_new` mailbox dropped, here and in the
    /// intake (published in [`RegionStats::dropped`] by the actor).
    dropped: Arc<AtomicU64>,
}

/// A cloneable handle to this node's region of entity type `E`.
///
/// `ask` and `tell` work from any node: the message goes to the shard's
/// owner in this node's view (no network hop when that is this node);
/// ownership changes in flight are retried until the deadline.
pub struct RegionHandle<E: Entity> {
    shared: Arc<Shared<E>>,
}

impl<E: Entity> Clone for RegionHandle<E> {
    fn clone(&self) -> Self {
        RegionHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<E: Entity> std::fmt::Debug for RegionHandle<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionHandle")
            .field("entity", &E::TYPE_NAME)
            .field("node", &self.shared.me.name)
            .finish()
    }
}

/// A failed ask to `owner` as a [`RegionError`]: `timeout()` for a
/// timeout, otherwise the transport's error, naming `owner` where that
/// did not name the peer.
fn ask_failure(
    e: transport::AskError,
    owner: &NodeId,
    timeout: impl FnOnce() -> RegionError,
) -> RegionError {
    match e {
        transport::AskError::Timeout { .. } => timeout(),
        e => match RegionError::from(e) {
            RegionError::Protocol { node, reason } if node.is_empty() => RegionError::Protocol {
                node: owner.name.clone(),
                reason,
            },
            RegionError::Unreachable { node, reason } if node.is_empty() => {
                RegionError::Unreachable {
                    node: owner.name.clone(),
                    reason,
                }
            }
            e => e,
        },
    }
}

/// One frame of a batch: its owner (`None` = this node) and its items'
/// indices.
type Frame = (Option<NodeId>, Vec<usize>);

/// The items `idx` again after `backoff` (doubled for the next time, up to
/// 250 ms), unless there are none or the deadline comes first.
fn retry_later<'a, R: Send + 'a>(
    idx: Vec<usize>,
    backoff: Duration,
    deadline: Instant,
) -> Option<BoxFuture<'a, Step<R>>> {
    if idx.is_empty() || Instant::now() + backoff >= deadline {
        return None;
    }
    tracing::debug!(items = idx.len(), "retrying batch items");
    Some(Box::pin(async move {
        tokio::time::sleep(backoff).await;
        Step::Due {
            idx,
            backoff: (backoff * 2).min(RETRY_MAX),
        }
    }))
}

/// One event of [`RegionHandle::ask_batch`]: a frame's outcome, or the end
/// of the backoff before items are sent again.
enum Step<R> {
    Answered {
        idx: Vec<usize>,
        outcome: Result<Vec<Result<R>>>,
        backoff: Duration,
    },
    Due {
        idx: Vec<usize>,
        backoff: Duration,
    },
}

const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(250);

impl<E: Entity> RegionHandle<E> {
    pub(crate) fn new(
        me: NodeId,
        channel: Channel<Wire<E>>,
        mbox: mpsc::Sender<Cmd<E>>,
        routing: watch::Receiver<Arc<Routing>>,
        stats: watch::Receiver<RegionStats>,
        config: RegionConfig,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        RegionHandle {
            shared: Arc::new(Shared {
                me,
                channel,
                mbox,
                routing,
                stats,
                config,
                dropped,
            }),
        }
    }

    /// This node's current routing table.
    pub fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.shared.routing.borrow())
    }

    /// The region's counters.
    pub fn stats(&self) -> RegionStats {
        self.shared.stats.borrow().clone()
    }

    /// Sends `msg` to entity `entity_id` and waits for its answer, at most
    /// `timeout`. Retriable failures (ownership moving, a link down, views
    /// disagreeing, a full mailbox or link queue) are retried with backoff
    /// (10–250 ms) until the deadline.
    ///
    /// The answer comes only after the entity's state change (if any) is
    /// held by the shard's replicas.
    ///
    /// # Errors
    /// [`RegionError::Timeout`] at the deadline (the message may have been
    /// applied: make messages idempotent), or the last retriable error
    /// (e.g. [`RegionError::Overloaded`] or [`RegionError::Dropped`] while
    /// the owner's mailbox stays full) if the deadline passes while
    /// retrying.
    pub async fn ask(&self, entity_id: &str, msg: E::Msg, timeout: Duration) -> Result<E::Reply> {
        let deadline = Instant::now() + timeout;
        let mut backoff = RETRY_MIN;
        loop {
            let r = self.ask_once(entity_id, msg.clone(), deadline).await;
            match r {
                Err(e) if e.is_retriable() => {
                    let now = Instant::now();
                    if now + backoff >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(entity = entity_id, error = %e, "retrying ask");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                Err(RegionError::Timeout { .. }) => {
                    return Err(RegionError::Timeout {
                        entity: entity_id.to_owned(),
                        timeout_ms: timeout.as_millis() as u64,
                    });
                }
                other => return other,
            }
        }
    }

    async fn ask_once(&self, entity_id: &str, msg: E::Msg, deadline: Instant) -> Result<E::Reply> {
        let routing = self.routing();
        let shard = routing.shard_of(entity_id);
        let owner = routing
            .owner_of(entity_id)
            .cloned()
            .ok_or(RegionError::NoOwner { shard: shard.0 })?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout_err = || RegionError::Timeout {
            entity: entity_id.to_owned(),
            timeout_ms: remaining.as_millis() as u64,
        };
        if owner.name == self.shared.me.name {
            let (tx, rx) = oneshot::channel();
            self.enqueue(Cmd::Deliver {
                id: entity_id.to_owned(),
                msg,
                reply: ReplyTo::Local(tx),
                deadline: Some(deadline),
                hops: 0,
            })?;
            self.local_answer(rx, remaining, shard, timeout_err)
                .await
                .and_then(|r| r)
        } else {
            let wire = Wire::Deliver {
                id: entity_id.to_owned(),
                msg,
                hops: 0,
                timeout_ms: remaining.as_millis() as u64,
            };
            match self
                .shared
                .channel
                .ask::<WireReply<E>>(&owner.addr, &wire, remaining)
                .await
            {
                Ok(WireReply::Reply(v)) => Ok(v),
                Ok(WireReply::Error(e)) => Err(e),
                Ok(_) => Err(RegionError::Protocol {
                    node: owner.name.clone(),
                    reason: "unexpected reply to a delivery".into(),
                }),
                Err(e) => Err(ask_failure(e, &owner, timeout_err)),
            }
        }
    }

    /// Sends many asks at once and returns their answers in item order:
    /// answer `i` is entity `items[i].0`'s answer to `items[i].1`, as
    /// [`Self::ask`] would give it, all within `timeout`.
    ///
    /// The items are grouped by owner: one mailbox command per frame for
    /// the shards this node owns, and for each other owner one
    /// `DeliverBatch` frame per [`MAX_BATCH_ITEMS`] items or `[sharding]
    /// snapshot_page_bytes` of messages (at most 3/4 of `[transport]
    /// max_frame_bytes`), whichever comes first. Each item
    /// keeps the guarantees of a single ask: applied once per
    /// acknowledgement, answered after its replicas confirm, and items for
    /// one entity applied in item order (an item sent again may come after
    /// later ones, as with separate asks). Items that fail with a retriable
    /// error are grouped anew and sent again with backoff (10–250 ms)
    /// until the deadline. A frame is answered when its last item is, so
    /// an item that waits (a parked ask, such as a result not computed
    /// yet) holds back the answers of its frame: batch items expected to
    /// finish at about the same time. Per message this costs a fraction
    /// of a single ask (one frame, one wake-up and one reply per frame).
    ///
    /// # Errors
    /// Per item, those of [`Self::ask`]. An owner whose answers to a frame
    /// would not fit one frame (`[transport] max_frame_bytes`) fails that
    /// frame's items with [`RegionError::Protocol`] (they were applied);
    /// a link or timeout failure of a frame fails all of its items. A link
    /// that breaks after the owner applied a frame but before its answer
    /// arrived fails the frame's items with the retriable
    /// [`RegionError::Unreachable`]: as with a single ask, a resent item may
    /// then be applied twice, and here that is every item of the frame
    /// (make the messages idempotent, as task submits are).
    pub async fn ask_batch(
        &self,
        items: Vec<(String, E::Msg)>,
        timeout: Duration,
    ) -> Vec<Result<E::Reply>> {
        let deadline = Instant::now() + timeout;
        let mut answers: Vec<Option<Result<E::Reply>>> = items.iter().map(|_| None).collect();
        let all: Vec<usize> = (0..items.len()).collect();
        // Each frame is retried on its own: a frame that fails fast (its
        // owner died) has its retriable items regrouped and resent after a
        // backoff while the other frames still wait (a parked item can hold
        // a frame until the deadline).
        let mut inflight: FuturesUnordered<BoxFuture<'_, Step<E::Reply>>> = FuturesUnordered::new();
        inflight.push(Box::pin(async move {
            Step::Due {
                idx: all,
                backoff: RETRY_MIN,
            }
        }));
        while let Some(step) = inflight.next().await {
            match step {
                Step::Answered {
                    idx,
                    outcome,
                    backoff,
                } => {
                    let outcome = match outcome {
                        Ok(v) if v.len() == idx.len() => Ok(v),
                        Ok(v) => Err(RegionError::Protocol {
                            node: self.shared.me.name.clone(),
                            reason: format!("{} answers to a batch of {}", v.len(), idx.len()),
                        }),
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(v) => {
                            for (&i, r) in idx.iter().zip(v) {
                                answers[i] = Some(r);
                            }
                        }
                        Err(e) => {
                            for &i in &idx {
                                answers[i] = Some(Err(e.clone()));
                            }
                        }
                    }
                    let retry: Vec<usize> = idx
                        .into_iter()
                        .filter(|&i| matches!(&answers[i], Some(Err(e)) if e.is_retriable()))
                        .collect();
                    if let Some(later) = retry_later(retry, backoff, deadline) {
                        inflight.push(later);
                    }
                }
                Step::Due { idx, backoff } => {
                    let (frames, unrouted) = self.frames(&items, &idx, &mut answers);
                    for (owner, idx) in frames {
                        inflight.push(self.sent(&items, owner, idx, backoff, deadline));
                    }
                    // No owner in this view yet (an empty view, or one not
                    // applied yet): wait like any retriable failure.
                    if let Some(later) = retry_later(unrouted, backoff, deadline) {
                        inflight.push(later);
                    }
                }
            }
        }
        items
            .iter()
            .zip(answers)
            .map(|((id, _), a)| match a {
                Some(Err(RegionError::Timeout { .. })) | None => Err(RegionError::Timeout {
                    entity: id.clone(),
                    timeout_ms: timeout.as_millis() as u64,
                }),
                Some(r) => r,
            })
            .collect()
    }

    /// Sends the frame of items `idx` to `owner` (`None` = here) and yields
    /// its outcome, with the backoff to use if some of its items must be
    /// sent again.
    fn sent<'a>(
        &'a self,
        items: &[(String, E::Msg)],
        owner: Option<NodeId>,
        idx: Vec<usize>,
        backoff: Duration,
        deadline: Instant,
    ) -> BoxFuture<'a, Step<E::Reply>> {
        let msgs: Vec<(String, E::Msg)> = idx.iter().map(|&i| items[i].clone()).collect();
        Box::pin(async move {
            let outcome = self.send_frame(owner, msgs, deadline).await;
            Step::Answered {
                idx,
                outcome,
                backoff,
            }
        })
    }

    /// Splits the items `pending` into frames by owner in this node's view
    /// (`None` = this node), each within [`MAX_BATCH_ITEMS`] items and, for
    /// other owners, the bytes of `region::frame_budget`. Items whose shard
    /// has no owner get [`RegionError::NoOwner`] in `answers` and are
    /// returned apart (second value), to be tried again.
    fn frames(
        &self,
        items: &[(String, E::Msg)],
        pending: &[usize],
        answers: &mut [Option<Result<E::Reply>>],
    ) -> (Vec<Frame>, Vec<usize>) {
        let routing = self.routing();
        let mut unrouted = Vec::new();
        let budget = crate::region::frame_budget(&self.shared.config, &self.shared.channel);
        let mut frames: Vec<Frame> = Vec::new();
        // Per owner: its open frame (an index into `frames`) and its size
        // in bytes so far.
        let mut open: std::collections::HashMap<&str, (usize, usize)> =
            std::collections::HashMap::new();
        for &i in pending {
            let id = items[i].0.as_str();
            let Some(owner) = routing.owner_of(id) else {
                answers[i] = Some(Err(RegionError::NoOwner {
                    shard: routing.shard_of(id).0,
                }));
                unrouted.push(i);
                continue;
            };
            let local = owner.name == self.shared.me.name;
            // A local frame never goes on the wire: only its item count is
            // bounded (one mailbox command), so its size is not computed.
            let size = if local {
                0
            } else {
                postcard::experimental::serialized_size(&items[i]).unwrap_or(budget)
            };
            let new_frame = |frames: &mut Vec<Frame>| {
                frames.push(((!local).then(|| owner.clone()), Vec::new()));
                (frames.len() - 1, 0)
            };
            let (frame, used) = match open.get(owner.name.as_str()) {
                Some(&(f, used))
                    if frames[f].1.len() < MAX_BATCH_ITEMS && used + size <= budget =>
                {
                    (f, used)
                }
                _ => new_frame(&mut frames),
            };
            frames[frame].1.push(i);
            open.insert(owner.name.as_str(), (frame, used + size));
        }
        (frames, unrouted)
    }

    /// Sends one frame of a batch to `owner` (`None` = this node's region)
    /// and waits for its answers, at most until `deadline`.
    async fn send_frame(
        &self,
        owner: Option<NodeId>,
        items: Vec<(String, E::Msg)>,
        deadline: Instant,
    ) -> Result<Vec<Result<E::Reply>>> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout_err = || RegionError::Timeout {
            entity: String::new(),
            timeout_ms: remaining.as_millis() as u64,
        };
        let Some(owner) = owner else {
            let (tx, rx) = oneshot::channel();
            self.enqueue(Cmd::DeliverBatch {
                items,
                reply: tx,
                deadline,
            })?;
            // A batch spans shards: a dropped one says `Moved` of shard 0.
            return self
                .local_answer(rx, remaining, ShardId(0), timeout_err)
                .await;
        };
        let wire = Wire::DeliverBatch {
            items,
            hops: 0,
            timeout_ms: remaining.as_millis() as u64,
        };
        match self
            .shared
            .channel
            .ask::<WireReply<E>>(&owner.addr, &wire, remaining)
            .await
        {
            Ok(WireReply::Replies(v)) => Ok(v),
            Ok(WireReply::Error(e)) => Err(e),
            Ok(_) => Err(RegionError::Protocol {
                node: owner.name.clone(),
                reason: "unexpected reply to a batch".into(),
            }),
            Err(e) => Err(ask_failure(e, &owner, timeout_err)),
        }
    }

    /// Waits at most `remaining` for this node's region to answer a command
    /// through `rx`: `timeout()` past it; `Shutdown` or `Moved { shard }`
    /// when the region dropped the command unanswered (it stopped, or let
    /// go of the shard's state: retry at the owner).
    async fn local_answer<T>(
        &self,
        rx: oneshot::Receiver<T>,
        remaining: Duration,
        shard: ShardId,
        timeout: impl FnOnce() -> RegionError,
    ) -> Result<T> {
        match tokio::time::timeout(remaining, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) if self.shared.mbox.is_closed() => Err(RegionError::Shutdown),
            Ok(Err(_)) => Err(RegionError::Moved { shard: shard.0 }),
            Err(_) => Err(timeout()),
        }
    }

    /// Sends `msg` to entity `entity_id` without waiting for an answer.
    /// Best effort, never silent: a message that cannot be queued is an
    /// error here; one dropped further on is counted and logged there.
    ///
    /// # Errors
    /// [`RegionError::NoOwner`], [`RegionError::Overloaded`] /
    /// [`RegionError::Dropped`] (full mailbox or link queue), [`RegionError::Shutdown`].
    pub fn tell(&self, entity_id: &str, msg: E::Msg) -> Result<()> {
        let routing = self.routing();
        let shard = routing.shard_of(entity_id);
        let owner = routing
            .owner_of(entity_id)
            .ok_or(RegionError::NoOwner { shard: shard.0 })?;
        if owner.name == self.shared.me.name {
            self.enqueue(Cmd::Deliver {
                id: entity_id.to_owned(),
                msg,
                reply: ReplyTo::Nobody,
                deadline: None,
                hops: 0,
            })
        } else {
            let wire = Wire::Deliver {
                id: entity_id.to_owned(),
                msg,
                hops: 0,
                timeout_ms: 0,
            };
            self.shared
                .channel
                .tell(&owner.addr, &wire)
                .map_err(|e| match e {
                    transport::SendError::QueueFull { peer, capacity } => RegionError::Overloaded {
                        node: peer,
                        capacity,
                    },
                    transport::SendError::Shutdown => RegionError::Shutdown,
                    transport::SendError::TooLarge { len, max } => RegionError::TooLarge {
                        len_bytes: len as u64,
                        max_bytes: max as u64,
                    },
                    e => RegionError::Protocol {
                        node: owner.name.clone(),
                        reason: e.to_string(),
                    },
                })
        }
    }

    /// Graceful leave: hands every shard this node owns to its owner in
    /// the allocation without this node (and to that allocation's
    /// replicas), and stops applying messages for them (they are forwarded).
    /// Returns what was handed off (shards, and copies their next holders
    /// did not confirm), or `None` at the timeout.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call still hands the shards off.
    pub async fn hand_off_all(&self, timeout: Duration) -> Option<HandOff> {
        let (tx, rx) = oneshot::channel();
        self.shared.mbox.send(Cmd::HandOffAll(tx)).await.ok()?;
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }

    /// Tells the region that this node's life was declared dead while it
    /// kept running: it drops all shard data and fetches current state
    /// before serving again (see Identity in the design).
    ///
    /// # Errors
    /// [`RegionError::Shutdown`] when the region has stopped.
    pub async fn reset(&self) -> Result<()> {
        self.shared
            .mbox
            .send(Cmd::Reset)
            .await
            .map_err(|_| RegionError::Shutdown)
    }

    fn enqueue(&self, cmd: Cmd<E>) -> Result<()> {
        match self.shared.mbox.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let capacity = self.shared.config.mailbox.capacity;
                match self.shared.config.mailbox.strategy {
                    MailboxStrategy::Backpressure => Err(RegionError::Overloaded {
                        node: self.shared.me.name.clone(),
                        capacity,
                    }),
                    MailboxStrategy::DropNew => {
                        // Counted with the intake's drops; a full mailbox
                        // drops in bursts: warned at the 1st, 2nd, 4th, ...
                        let dropped = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(
                                capacity,
                                entity = E::TYPE_NAME,
                                dropped,
                                "mailbox full: message dropped (drop_new; the asker retries; warned at the 1st, 2nd, 4th, ... drop)"
                            );
                        } else {
                            tracing::debug!(
                                capacity,
                                entity = E::TYPE_NAME,
                                dropped,
                                "mailbox full: message dropped (drop_new)"
                            );
                        }
                        Err(RegionError::Dropped {
                            node: self.shared.me.name.clone(),
                        })
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RegionError::Shutdown),
        }
    }
}
