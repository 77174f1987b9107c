//! One outbound link: the queue of encoded frames to one (peer, lane) and
//! the task that dials, writes and redials.
//!
//! Senders encode their frame straight into the link's buffer under a
//! short lock ([`Link::try_push`]); the writer task swaps the whole buffer
//! out and writes it with as few syscalls as the socket allows, so many
//! frames go out per syscall under load. When the link is connected and
//! idle, a latency-sensitive frame (an ask, a reply, anything on the
//! control lane) is written by the sender itself with one non-blocking
//! `write`, skipping the hand-over to the writer task.
//!
//! Writer states: *idle* (no connection, waiting for a frame) → *dialing*
//! → *connected* (writing batches) → back to idle when the connection
//! breaks. A failed dial or a broken connection fails every queued frame
//! back (asks with [`crate::AskError::Unreachable`], one-way frames counted
//! in `dropped_on_link_failure`) and the next dial waits one backoff step.
//!
//! Invariant: bytes reach the socket only from the writer task while
//! `writer_busy` is set, or from a sender holding the lock while it is not,
//! so frames are never interleaved and leave in queue order.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rand::Rng;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::{HandshakeError, SendError};
use crate::frame::{FrameReader, Header, Kind};
use crate::handshake::{
    HANDSHAKE_MAX_FRAME_BYTES, Hello, HelloReply, Lane, MAGIC, NodeId, PROTOCOL_VERSION,
};
use crate::listener::send_handshake_frame;
use crate::transport::Inner;

/// A frame encoder handed to [`Link::try_push`]: appends the message bytes.
pub(crate) type BodyEncoder<'a> = &'a mut dyn FnMut(&mut BytesMut) -> Result<(), SendError>;

/// The queue and connection state of one (peer, lane).
pub(crate) struct Link {
    /// The peer's advertised address, as callers name it.
    pub peer: String,
    /// Which lane this link serves.
    pub lane: Lane,
    state: Mutex<LinkState>,
    /// Wakes the writer task (a stored permit survives until it waits).
    writer: Notify,
    /// Wakes senders waiting for queue space.
    space: Notify,
    /// Cancelled by `forget` or shutdown: flush, then stop.
    retire: CancellationToken,
    max_frame_bytes: usize,
    capacity_frames: usize,
    capacity_bytes: usize,
}

#[derive(Default)]
struct LinkState {
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
}

/// What [`Link::try_push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The frame is queued (or already written).
    Queued,
    /// The queue is at capacity; nothing was queued.
    Full,
    /// The link was retired; look it up again.
    Closed,
}

/// Exponential backoff with jitter between `min` and `max`.
struct Backoff {
    min_ms: u64,
    max_ms: u64,
    failures: u32,
}

impl Backoff {
    /// The next delay: `min · 2^failures`, capped at `max`, then drawn
    /// uniformly from 50–100 % of that ("equal jitter", see
    /// <https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>).
    fn next_delay(&mut self) -> Duration {
        let exp = self
            .min_ms
            .saturating_mul(1u64 << self.failures.min(20))
            .min(self.max_ms);
        self.failures = self.failures.saturating_add(1);
        let jittered = rand::thread_rng().gen_range(exp / 2..=exp);
        Duration::from_millis(jittered.max(1))
    }
}

impl Link {
    pub(crate) fn new(inner: &Inner, peer: &str, lane: Lane) -> Link {
        Link {
            peer: peer.to_owned(),
            lane,
            state: Mutex::new(LinkState::default()),
            writer: Notify::new(),
            space: Notify::new(),
            retire: inner.shutdown.child_token(),
            max_frame_bytes: inner.config.max_frame_bytes,
            capacity_frames: inner.config.outbound_queue_frames,
            capacity_bytes: inner.config.outbound_queue_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A panic while the lock is held cannot leave a half-encoded frame
        // behind (`encode_frame_with` rolls back), so the state stays sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops accepting frames; the writer flushes what is queued and exits.
    pub(crate) fn retire(&self) {
        self.lock().closed = true;
        self.retire.cancel();
    }

    /// Encodes one frame into the queue without waiting.
    ///
    /// With `inline` set and the link connected and idle, the frame is
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
        if inline && was_empty {
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
    /// As [`Link::try_push`].
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

    /// Drops every queued frame: asks are failed by the caller through
    /// the pending map, one-way frames are counted here.
    fn fail_queued(&self, inner: &Inner, reason: &str, in_flight_one_way: usize) {
        let one_way = {
            let mut st = self.lock();
            st.buf.clear();
            st.frames = 0;
            std::mem::take(&mut st.one_way)
        } + in_flight_one_way;
        self.space.notify_waiters();
        if one_way > 0 {
            inner
                .stats
                .dropped_on_link_failure
                .fetch_add(one_way as u64, Relaxed);
            tracing::warn!(peer = %self.peer, lane = ?self.lane, dropped = one_way, reason, "one-way frames dropped: link failed");
        }
    }

    /// Waits until a frame is queued. False when the link was retired
    /// with nothing queued.
    async fn wait_for_work(&self) -> bool {
        loop {
            {
                let mut st = self.lock();
                if !st.buf.is_empty() {
                    st.writer_busy = true;
                    return true;
                }
                st.writer_busy = false;
                if self.retire.is_cancelled() {
                    return false;
                }
            }
            tokio::select! {
                biased;
                _ = self.retire.cancelled() => {}
                _ = self.writer.notified() => {}
            }
        }
    }

    /// Completes `[transport] flush_deadline_ms` after the link is retired.
    async fn flush_deadline(&self, inner: &Inner) {
        self.retire.cancelled().await;
        tokio::time::sleep(Duration::from_millis(inner.config.flush_deadline_ms)).await;
    }

    /// Closes the link for good: frames still queued are failed.
    fn close(&self, inner: &Inner, reason: &str) {
        self.lock().closed = true;
        self.fail_queued(inner, reason, 0);
        inner.fail_pending_link(self, reason);
    }
}

/// How a connected period ended.
enum Ended {
    /// The connection failed, losing a batch with this many one-way
    /// frames (0 when idle); redial when there is work.
    Broke(String, usize),
    /// The link was retired and flushed.
    Retired,
}

/// The writer task of one link. Returns when the link is retired.
pub(crate) async fn run(inner: Arc<Inner>, link: Arc<Link>) {
    let mut backoff = Backoff {
        min_ms: inner.config.reconnect_backoff_min_ms,
        max_ms: inner.config.reconnect_backoff_max_ms,
        failures: 0,
    };
    let mut spare = BytesMut::new();
    // Once retired, frames still queued get one more dial and write.
    let mut last_try = false;
    loop {
        if !link.wait_for_work().await {
            link.close(&inner, retire_reason(&inner));
            return;
        }
        if link.retire.is_cancelled() {
            if last_try {
                link.close(&inner, retire_reason(&inner));
                return;
            }
            last_try = true;
        }
        let dialed = tokio::select! {
            biased;
            _ = link.flush_deadline(&inner) => {
                link.close(&inner, "not flushed before the shutdown deadline");
                return;
            }
            r = dial(&inner, &link.peer, link.lane) => r,
        };
        let (mut rd, wr, remote) = match dialed {
            Ok(conn) => conn,
            Err(e) => {
                crate::stats::bump(&inner.stats.dial_failures);
                tracing::warn!(peer = %link.peer, lane = ?link.lane, error = %e, "cannot reach peer");
                let reason = e.to_string();
                link.fail_queued(&inner, &reason, 0);
                inner.fail_pending_link(&link, &reason);
                if link.retire.is_cancelled() {
                    link.close(&inner, retire_reason(&inner));
                    return;
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = link.retire.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        backoff.failures = 0;
        tracing::debug!(peer = %link.peer, remote = %remote, lane = ?link.lane, "link up");
        let sock = Arc::new(wr);
        link.lock().sock = Some(Arc::clone(&sock));
        let ended = connected(&inner, &link, &mut rd, sock, &mut spare).await;
        match ended {
            Ended::Retired => return,
            Ended::Broke(reason, in_flight_one_way) => {
                link.lock().sock = None;
                tracing::info!(peer = %link.peer, lane = ?link.lane, reason = %reason, "link down");
                link.fail_queued(&inner, &reason, in_flight_one_way);
                inner.fail_pending_link(&link, &reason);
            }
        }
    }
}

fn retire_reason(inner: &Inner) -> &'static str {
    if inner.shutdown.is_cancelled() {
        "transport shut down"
    } else {
        "link forgotten"
    }
}

/// Writes batches until the connection breaks or the link is retired.
async fn connected(
    inner: &Inner,
    link: &Link,
    rd: &mut OwnedReadHalf,
    sock: Arc<OwnedWriteHalf>,
    spare: &mut BytesMut,
) -> Ended {
    loop {
        if link.retire.is_cancelled() {
            flush_and_close(inner, link, sock).await;
            return Ended::Retired;
        }
        let batch = {
            let mut st = link.lock();
            if st.buf.is_empty() {
                st.writer_busy = false;
                None
            } else {
                st.writer_busy = true;
                let frames = std::mem::take(&mut st.frames);
                let one_way = std::mem::take(&mut st.one_way);
                let buf = std::mem::replace(&mut st.buf, std::mem::take(spare));
                Some((buf, frames, one_way))
            }
        };
        let Some((mut buf, frames, one_way)) = batch else {
            let mut probe = [0u8; 1];
            tokio::select! {
                biased;
                _ = link.retire.cancelled() => continue,
                // The acceptor never writes after the handshake: a read
                // completing means the connection closed or misbehaved.
                r = rd.read(&mut probe) => {
                    let reason = match r {
                        Ok(0) => "connection closed by peer".to_owned(),
                        Ok(_) => "peer wrote on a one-way link".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    return Ended::Broke(reason, 0);
                }
                _ = link.writer.notified() => continue,
            }
        };
        link.space.notify_waiters();
        // Once retired, the write in progress gets the flush deadline.
        let written = tokio::select! {
            r = write_all(&sock, &buf, inner.config.max_batch_bytes) => r,
            _ = link.flush_deadline(inner) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "not flushed before the shutdown deadline",
            )),
        };
        if let Err(e) = written {
            return Ended::Broke(e.to_string(), one_way);
        }
        inner.stats.frames_sent.fetch_add(frames as u64, Relaxed);
        buf.clear();
        // Keep the allocation for the next swap unless a huge frame grew it.
        if buf.capacity() <= inner.config.max_batch_bytes.max(64 * 1024) {
            *spare = buf;
        }
    }
}

/// Retires the connected link: takes what is queued, writes it within
/// `[transport] flush_deadline_ms`, then closes the write side.
async fn flush_and_close(inner: &Inner, link: &Link, sock: Arc<OwnedWriteHalf>) {
    let (buf, frames, one_way) = {
        let mut st = link.lock();
        st.closed = true;
        st.sock = None;
        (
            std::mem::take(&mut st.buf),
            std::mem::take(&mut st.frames),
            std::mem::take(&mut st.one_way),
        )
    };
    link.space.notify_waiters();
    let deadline = Duration::from_millis(inner.config.flush_deadline_ms);
    let written = tokio::time::timeout(
        deadline,
        write_all(&sock, &buf, inner.config.max_batch_bytes),
    )
    .await;
    let reason = retire_reason(inner);
    match written {
        Ok(Ok(())) => {
            inner.stats.frames_sent.fetch_add(frames as u64, Relaxed);
        }
        Ok(Err(e)) => link.fail_queued(inner, &e.to_string(), one_way),
        Err(_) => link.fail_queued(inner, "not flushed before the shutdown deadline", one_way),
    }
    if inner.shutdown.is_cancelled() {
        inner.fail_pending_link(link, reason);
    }
    // Dropping the last handle of the write half sends FIN.
    drop(sock);
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

/// Dials `peer` (resolving its name now) and runs the handshake.
async fn dial(
    inner: &Inner,
    peer: &str,
    lane: Lane,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, NodeId), HandshakeError> {
    let mut stream = tokio::time::timeout(inner.config.connect_timeout(), TcpStream::connect(peer))
        .await
        .map_err(|_| {
            HandshakeError::Frame(crate::FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "connect timed out after {} ms",
                    inner.config.connect_timeout_ms
                ),
            )))
        })?
        .map_err(|e| HandshakeError::Frame(e.into()))?;
    let _ = stream.set_nodelay(true);
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: inner.cluster.clone(),
        from: inner.local.clone(),
        lane,
    };
    let timeout_ms = inner.config.handshake_timeout_ms;
    let reply = tokio::time::timeout(inner.config.handshake_timeout(), async {
        send_handshake_frame(&mut stream, &hello).await?;
        let mut reader = FrameReader::new(HANDSHAKE_MAX_FRAME_BYTES);
        loop {
            if let Some(frame) = reader.next_frame()? {
                return Ok(frame);
            }
            if reader.read_from(&mut stream).await? == 0 {
                return Err(HandshakeError::Closed);
            }
        }
    })
    .await
    .map_err(|_| HandshakeError::Timeout(timeout_ms))??;
    let reply = HelloReply::decode(&reply)?;
    match reply {
        HelloReply::Accepted { node } => {
            let (rd, wr) = stream.into_split();
            Ok((rd, wr, node))
        }
        HelloReply::Refused { reason } => {
            tracing::warn!(peer = %peer, reason = %reason, "handshake refused by peer");
            Err(HandshakeError::Refused(reason))
        }
    }
}
