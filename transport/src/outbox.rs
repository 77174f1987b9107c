//! The queue of encoded frames bound for one TCP connection, and the loop
//! that writes it. Used by outbound links (tells and asks) and by inbound
//! connections (the replies to their asks).
//!
//! Senders encode their frame straight into the queue's buffer under a
//! short lock ([`Outbox::try_push`]); the writer task swaps the whole buffer
//! out and writes it with as few syscalls as the socket allows, so many
//! frames go out per syscall under load. When the connection is up and the
//! writer idle, a latency-sensitive frame (an ask, a reply, anything on the
//! control lane) is written by the sender itself with one non-blocking
//! `write`, skipping the hand-over to the writer task.
//!
//! Invariant: bytes reach the socket only from the writer task while
//! `writer_busy` is set, or from a sender holding the lock while it is not,
//! so frames are never interleaved and leave in queue order.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::SendError;
use crate::frame::{Header, Kind};
use crate::transport::Inner;

/// A frame encoder handed to [`Outbox::try_push`]: appends the message bytes.
pub(crate) type BodyEncoder<'a> = &'a mut dyn FnMut(&mut BytesMut) -> Result<(), SendError>;

/// Frames waiting for one connection, and its write half while it is up.
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer task (a stored permit survives until it waits).
    writer: Notify,
    /// Wakes senders waiting for queue space.
    space: Notify,
    max_frame_bytes: usize,
    capacity_frames: usize,
    capacity_bytes: usize,
}

#[derive(Default)]
struct State {
    /// Encoded frames not yet handed to the socket. The first frame may be
    /// partly written already (after a short inline write).
    buf: BytesMut,
    /// Frames in `buf`.
    frames: usize,
    /// One-way frames (tells, replies, rejections) in `buf`.
    one_way: usize,
    /// The write half while connected.
    sock: Option<Arc<OwnedWriteHalf>>,
    /// The writer task has been handed the buffer (or is dialing).
    writer_busy: bool,
    /// No more frames are accepted.
    closed: bool,
    /// When a frame was last written inline (see [`CORK_WINDOW`]).
    last_inline: Option<std::time::Instant>,
}

/// A frame pushed within this long of the previous inline write is left
/// to the writer task, which yields once before it takes the queue, so
/// frames produced in one burst (a region answering a batch of requests)
/// share one `send` instead of one each. An isolated frame (an ask after a
/// round trip, a probe) is still written at once by its sender.
const CORK_WINDOW: Duration = Duration::from_micros(4);

/// What [`Outbox::try_push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The frame is queued (or already written).
    Queued,
    /// The queue is at capacity; nothing was queued.
    Full,
    /// The outbox was closed; nothing was queued.
    Closed,
}

/// A batch taken by the writer.
struct Batch {
    buf: BytesMut,
    frames: usize,
    one_way: usize,
}

/// How a write loop ended.
pub(crate) enum Ended {
    /// Retired and flushed (or the flush deadline passed); the outbox is
    /// closed.
    Retired,
    /// The connection failed, losing a batch with this many one-way frames
    /// (0 when idle).
    Broke(String, usize),
}

impl Outbox {
    pub(crate) fn new(inner: &Inner) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            writer: Notify::new(),
            space: Notify::new(),
            max_frame_bytes: inner.config.max_frame_bytes,
            capacity_frames: inner.config.outbound_queue_frames,
            capacity_bytes: inner.config.outbound_queue_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held cannot leave a half-encoded frame
        // behind (`encode_frame_with` rolls back), so the state stays sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Encodes one frame into the queue without waiting.
    ///
    /// With `inline` set and the connection up and idle, the frame is
    /// written to the socket here with one non-blocking write.
    ///
    /// # Errors
    /// The encoder's error, or [`SendError::TooLarge`]; nothing is queued.
    pub(crate) fn try_push(
        &self,
        inner: &Inner,
        header: Header,
        inline: bool,
        body: BodyEncoder<'_>,
    ) -> Result<Pushed, SendError> {
        let mut st = self.lock();
        if st.closed {
            return Ok(Pushed::Closed);
        }
        if st.frames >= self.capacity_frames
            || (st.frames > 0 && st.buf.len() >= self.capacity_bytes)
        {
            return Ok(Pushed::Full);
        }
        let was_empty = st.buf.is_empty();
        header.encode_frame_with(self.max_frame_bytes, &mut st.buf, body)?;
        st.frames += 1;
        if !matches!(header.kind, Kind::Ask { .. }) {
            st.one_way += 1;
        }
        if st.writer_busy {
            return Ok(Pushed::Queued);
        }
        let now = std::time::Instant::now();
        let corked = st
            .last_inline
            .is_some_and(|t| now.saturating_duration_since(t) < CORK_WINDOW);
        if inline && was_empty && !corked {
            st.last_inline = Some(now);
            if let Some(sock) = &st.sock {
                match sock.try_write(&st.buf) {
                    Ok(n) if n == st.buf.len() => {
                        st.buf.clear();
                        st.frames = 0;
                        st.one_way = 0;
                        inner.stats.frames_sent.fetch_add(1, Relaxed);
                        return Ok(Pushed::Queued);
                    }
                    Ok(n) => st.buf.advance(n),
                    // Would block, or the connection broke: the writer
                    // task finds out and handles it.
                    Err(_) => {}
                }
            }
        }
        st.writer_busy = true;
        drop(st);
        self.writer.notify_one();
        Ok(Pushed::Queued)
    }

    /// Encodes one frame into the queue, waiting for space.
    ///
    /// # Errors
    /// As [`Outbox::try_push`].
    ///
    /// # Cancel safety
    /// Cancel-safe: if dropped before it returns, nothing was queued.
    pub(crate) async fn push<F>(
        &self,
        inner: &Inner,
        header: Header,
        inline: bool,
        body: &mut F,
    ) -> Result<Pushed, SendError>
    where
        F: FnMut(&mut BytesMut) -> Result<(), SendError>,
    {
        loop {
            match self.try_push(inner, header, inline, body)? {
                Pushed::Full => {}
                done => return Ok(done),
            }
            // Register for a wake-up, then look again, so a batch taken by
            // the writer in between is not missed.
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_push(inner, header, inline, body)? {
                Pushed::Full => notified.await,
                done => return Ok(done),
            }
        }
    }

    /// Accepts no more frames (those queued stay for a last flush).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.space.notify_waiters();
    }

    /// Connects the queue to a write half (inline writes may start).
    pub(crate) fn attach(&self, sock: Arc<OwnedWriteHalf>) {
        self.lock().sock = Some(sock);
    }

    /// Forgets the write half (the connection is gone).
    pub(crate) fn detach(&self) {
        self.lock().sock = None;
    }

    /// Drops every queued frame and returns how many one-way frames were
    /// among them (asks are failed by the caller through the pending map).
    pub(crate) fn drop_queued(&self) -> usize {
        let one_way = {
            let mut st = self.lock();
            st.buf.clear();
            st.frames = 0;
            std::mem::take(&mut st.one_way)
        };
        self.space.notify_waiters();
        one_way
    }

    /// Waits until a frame is queued. False when `stop` is cancelled with
    /// nothing queued.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub(crate) async fn wait_for_work(&self, stop: &CancellationToken) -> bool {
        loop {
            {
                let mut st = self.lock();
                if !st.buf.is_empty() {
                    st.writer_busy = true;
                    return true;
                }
                st.writer_busy = false;
                if stop.is_cancelled() {
                    return false;
                }
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                _ = self.writer.notified() => {}
            }
        }
    }

    /// Takes everything queued, or marks the writer idle when nothing is.
    fn take(&self, spare: &mut BytesMut) -> Option<Batch> {
        let mut st = self.lock();
        if st.buf.is_empty() {
            st.writer_busy = false;
            return None;
        }
        st.writer_busy = true;
        let batch = Batch {
            frames: std::mem::take(&mut st.frames),
            one_way: std::mem::take(&mut st.one_way),
            buf: std::mem::replace(&mut st.buf, std::mem::take(spare)),
        };
        drop(st);
        self.space.notify_waiters();
        Some(batch)
    }

    /// Closes the outbox and takes what is left for a last flush.
    fn take_last(&self) -> Batch {
        let mut st = self.lock();
        st.closed = true;
        st.sock = None;
        let batch = Batch {
            frames: std::mem::take(&mut st.frames),
            one_way: std::mem::take(&mut st.one_way),
            buf: std::mem::take(&mut st.buf),
        };
        drop(st);
        self.space.notify_waiters();
        batch
    }
}

/// Completes `[transport] flush_deadline_ms` after `retire` is cancelled.
pub(crate) async fn flush_deadline(inner: &Inner, retire: &CancellationToken) {
    retire.cancelled().await;
    tokio::time::sleep(Duration::from_millis(inner.config.flush_deadline_ms)).await;
}

/// Writes the outbox's batches to `sock` until the connection breaks
/// (`broke` completes with the reader's reason, or a write fails) or
/// `retire` is cancelled; then flushes what is queued within
/// `[transport] flush_deadline_ms` and closes the outbox.
pub(crate) async fn write_loop(
    inner: &Inner,
    peer: &str,
    outbox: &Outbox,
    sock: Arc<OwnedWriteHalf>,
    spare: &mut BytesMut,
    retire: &CancellationToken,
    broke: &mut oneshot::Receiver<String>,
) -> Ended {
    loop {
        if retire.is_cancelled() {
            flush_last(inner, peer, outbox, sock).await;
            return Ended::Retired;
        }
        let Some(mut batch) = outbox.take(spare) else {
            tokio::select! {
                biased;
                _ = retire.cancelled() => continue,
                r = &mut *broke => {
                    return Ended::Broke(r.unwrap_or_else(|_| "connection closed".to_owned()), 0);
                }
                _ = outbox.writer.notified() => {
                    // Let the rest of the burst join the queue first.
                    tokio::task::yield_now().await;
                    continue;
                }
            }
        };
        // Once retired, the write in progress gets the flush deadline.
        let written = tokio::select! {
            r = write_all(&sock, &batch.buf, inner.config.max_batch_bytes) => r,
            _ = flush_deadline(inner, retire) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "not flushed before the shutdown deadline",
            )),
        };
        if let Err(e) = written {
            return Ended::Broke(e.to_string(), batch.one_way);
        }
        inner
            .stats
            .frames_sent
            .fetch_add(batch.frames as u64, Relaxed);
        batch.buf.clear();
        // Keep the allocation for the next swap unless a huge frame grew it.
        if batch.buf.capacity() <= inner.config.max_batch_bytes.max(64 * 1024) {
            *spare = batch.buf;
        }
    }
}

/// Closes the outbox and writes what it still holds within the flush
/// deadline; counts what could not be written.
async fn flush_last(inner: &Inner, peer: &str, outbox: &Outbox, sock: Arc<OwnedWriteHalf>) {
    let batch = outbox.take_last();
    if inner.is_forgotten(peer) {
        // The membership forgot this peer (it left or is dead): its last
        // frames have nobody to read them, and a peer that stopped reading
        // would hold this close for the whole flush deadline.
        count_dropped_at(
            inner,
            peer,
            batch.one_way,
            "peer forgotten (left or dead)",
            Loudness::Debug,
        );
        drop(sock);
        return;
    }
    let deadline = Duration::from_millis(inner.config.flush_deadline_ms);
    let written = tokio::time::timeout(
        deadline,
        write_all(&sock, &batch.buf, inner.config.max_batch_bytes),
    )
    .await;
    match written {
        Ok(Ok(())) => {
            inner
                .stats
                .frames_sent
                .fetch_add(batch.frames as u64, Relaxed);
        }
        Ok(Err(_)) | Err(_) => {
            count_dropped(inner, peer, batch.one_way, "not flushed before closing");
        }
    }
    // Dropping the last handle of the write half sends FIN.
    drop(sock);
}

/// How loudly a failure is logged: a failure that is news is a warning,
/// the first failed dial to a peer in a row is information (a seed that is
/// not listening yet, a peer that is restarting: the next frame dials
/// again), and a failure repeating one already logged is debug detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loudness {
    Debug,
    Info,
    Warn,
}

/// Counts one-way frames that a failed connection took with it, and logs
/// them at `warn`.
pub(crate) fn count_dropped(inner: &Inner, peer: &str, one_way: usize, reason: &str) {
    count_dropped_at(inner, peer, one_way, reason, Loudness::Warn);
}

/// [`count_dropped`], logged at `loudness` (the count in the stats is kept
/// whatever the level), or at debug level when the failure is expected
/// (`peer` is forgotten: the membership knows it left or died, and what
/// was on its way to it has nobody to read it; or this node is leaving)
/// or already said (`peer` is a seed this node is still joining through:
/// the dial's own line, "cannot reach a seed yet", tells the user).
pub(crate) fn count_dropped_at(
    inner: &Inner,
    peer: &str,
    one_way: usize,
    reason: &str,
    loudness: Loudness,
) {
    if one_way > 0 {
        let loudness = if inner.failure_expected(peer) || inner.is_joining_through(peer) {
            Loudness::Debug
        } else {
            loudness
        };
        inner
            .stats
            .dropped_on_link_failure
            .fetch_add(one_way as u64, Relaxed);
        const WHAT: &str = "one-way frames dropped: connection failed";
        match loudness {
            Loudness::Debug => tracing::debug!(peer, dropped = one_way, reason, "{WHAT}"),
            Loudness::Info => tracing::info!(peer, dropped = one_way, reason, "{WHAT}"),
            Loudness::Warn => tracing::warn!(peer, dropped = one_way, reason, "{WHAT}"),
        }
    }
}

/// Writes all of `data` through the shared write half, `chunk` bytes per
/// call at most.
async fn write_all(sock: &OwnedWriteHalf, mut data: &[u8], chunk: usize) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = data.len().min(chunk.max(1));
        match sock.try_write(&data[..n]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
