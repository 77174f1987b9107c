//! The bounded queue between the connection readers and one channel's
//! [`crate::Inbox`].
//!
//! A reader hands over every frame of one read for one channel at once, as
//! a [`Delivery`]: the read's bytes (one reference-counted region) and the
//! frames' positions in it. The inbox takes everything queued at once. So
//! the lock, the wake-ups and the reference counts are paid per batch, not
//! per message. When the queue holds `capacity_frames` frames or
//! `capacity_bytes` bytes, readers wait: the connection stops reading and
//! TCP pushes back on the sender.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::frame::Kind;
use crate::inbound::{ConnInfo, Inbound, answer};

/// One tell or ask inside a [`Delivery`]'s region.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRef {
    /// Message bytes: `region[start..end]`.
    pub start: u32,
    pub end: u32,
    /// The ask's correlation id; `None` for a tell.
    pub corr: Option<u64>,
}

/// Frames of one channel from one read of one connection.
pub(crate) struct Delivery {
    pub conn: Arc<ConnInfo>,
    pub channel: u8,
    pub region: Bytes,
    pub frames: Vec<FrameRef>,
    /// Frames before this index were handed out.
    pub next: usize,
    /// Message bytes of `frames`, for the queue's byte bound.
    pub bytes: usize,
}

impl Delivery {
    /// The next frame not yet handed out.
    pub(crate) fn pop(&mut self) -> Option<FrameRef> {
        let f = *self.frames.get(self.next)?;
        self.next += 1;
        Some(f)
    }

    /// The message bytes of `f`.
    pub(crate) fn body(&self, f: FrameRef) -> &[u8] {
        &self.region[f.start as usize..f.end as usize]
    }

    /// One [`Inbound`] per frame not yet handed out (the per-message form
    /// of `Transport::register`).
    pub(crate) fn into_inbounds(mut self) -> Vec<Inbound> {
        let frames = std::mem::take(&mut self.frames);
        frames[self.next..]
            .iter()
            .map(|f| Inbound {
                conn: Arc::clone(&self.conn),
                channel: self.channel,
                corr: f.corr,
                body: self.region.slice(f.start as usize..f.end as usize),
            })
            .collect()
    }

    /// Counts the frames not yet handed out as undeliverable (no receiver
    /// for the channel) and rejects the asks among them.
    pub(crate) fn undeliverable(mut self) {
        let frames = std::mem::take(&mut self.frames);
        let left = &frames[self.next.min(frames.len())..];
        if left.is_empty() {
            return;
        }
        let stats = &self.conn.inner.stats;
        stats
            .unknown_channel
            .fetch_add(left.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(peer = %self.conn.peer, channel = self.channel, frames = left.len(), "no receiver for channel");
        let reason = format!("no receiver for channel {}", self.channel);
        for corr in left.iter().filter_map(|f| f.corr) {
            let _ = answer(
                &self.conn,
                self.channel,
                Kind::Reject { corr },
                reason.as_bytes(),
            );
        }
    }
}

impl Drop for Delivery {
    /// Frames dropped unread (inbox dropped, shutdown) are counted; asks
    /// among them are rejected so their askers learn at once.
    fn drop(&mut self) {
        let left = &self.frames[self.next.min(self.frames.len())..];
        if left.is_empty() {
            return;
        }
        self.conn
            .inner
            .stats
            .dropped_unread
            .fetch_add(left.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(peer = %self.conn.peer, channel = self.channel, frames = left.len(), "frames dropped unread");
        for corr in left.iter().filter_map(|f| f.corr) {
            let _ = answer(
                &self.conn,
                self.channel,
                Kind::Reject { corr },
                b"request dropped without a reply",
            );
        }
    }
}

pub(crate) struct Mailbox {
    state: Mutex<MailState>,
    /// Wakes the inbox (a stored permit survives until it waits).
    ready: Notify,
    /// Wakes readers waiting for space.
    space: Notify,
    capacity_frames: usize,
    capacity_bytes: usize,
}

struct MailState {
    items: VecDeque<Delivery>,
    /// Frames in `items`.
    frames: usize,
    /// Message bytes in `items`.
    bytes: usize,
    /// The inbox found the queue empty and waits (or is about to).
    consumer_waiting: bool,
    /// The inbox was dropped: nothing more is accepted.
    closed: bool,
}

/// What [`Mailbox::try_push`] did with a delivery.
enum Push {
    Queued,
    Full(Delivery),
    Closed(Delivery),
}

impl Mailbox {
    pub(crate) fn new(capacity_frames: usize, capacity_bytes: usize) -> Mailbox {
        Mailbox {
            state: Mutex::new(MailState {
                items: VecDeque::new(),
                frames: 0,
                bytes: 0,
                consumer_waiting: false,
                closed: false,
            }),
            ready: Notify::new(),
            space: Notify::new(),
            capacity_frames,
            capacity_bytes,
        }
    }

    fn is_full(&self, st: &MailState) -> bool {
        st.frames >= self.capacity_frames || st.bytes >= self.capacity_bytes
    }

    fn lock(&self) -> MutexGuard<'_, MailState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `d` unless the queue is full (`capacity_frames` frames or
    /// `capacity_bytes` bytes), so it holds at most one delivery beyond
    /// either bound.
    fn try_push(&self, d: Delivery) -> Push {
        let wake = {
            let mut st = self.lock();
            if st.closed {
                return Push::Closed(d);
            }
            if self.is_full(&st) {
                return Push::Full(d);
            }
            st.frames += d.frames.len() - d.next;
            st.bytes += d.bytes;
            st.items.push_back(d);
            std::mem::take(&mut st.consumer_waiting)
        };
        if wake {
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Queues `d`, waiting while the queue is full.
    ///
    /// # Errors
    /// Gives `d` back when the inbox is gone.
    ///
    /// # Cancel safety
    /// If dropped while waiting, `d` is dropped (its asks rejected).
    pub(crate) async fn push(&self, mut d: Delivery) -> Result<(), Delivery> {
        loop {
            d = match self.try_push(d) {
                Push::Queued => return Ok(()),
                Push::Closed(d) => return Err(d),
                Push::Full(d) => d,
            };
            // Register for a wake-up, then look again, so a take in
            // between is not missed.
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            d = match self.try_push(d) {
                Push::Queued => return Ok(()),
                Push::Closed(d) => return Err(d),
                Push::Full(d) => d,
            };
            notified.await;
        }
    }

    /// Moves everything queued into `out` (which must be empty), waiting
    /// while the queue is empty. False when `stop` was cancelled and
    /// nothing is queued.
    ///
    /// # Cancel safety
    /// Cancel-safe: deliveries are moved only when it returns.
    pub(crate) async fn take(
        &self,
        out: &mut VecDeque<Delivery>,
        stop: &CancellationToken,
    ) -> bool {
        debug_assert!(out.is_empty());
        loop {
            {
                let mut st = self.lock();
                if !st.items.is_empty() {
                    std::mem::swap(&mut st.items, out);
                    let was_full = self.is_full(&st);
                    st.frames = 0;
                    st.bytes = 0;
                    drop(st);
                    // Readers wait only on a full queue.
                    if was_full {
                        self.space.notify_waiters();
                    }
                    return true;
                }
                if stop.is_cancelled() {
                    return false;
                }
                st.consumer_waiting = true;
            }
            tokio::select! {
                biased;
                _ = self.ready.notified() => {}
                _ = stop.cancelled() => {}
            }
        }
    }

    /// Refuses further frames and drops those still queued (their asks
    /// are rejected).
    pub(crate) fn close(&self) {
        let items = {
            let mut st = self.lock();
            st.closed = true;
            st.frames = 0;
            st.bytes = 0;
            std::mem::take(&mut st.items)
        };
        self.space.notify_waiters();
        drop(items);
    }
}
