//! One outbound link: a task that owns the queue and the TCP connection to
//! one (peer, lane), dials lazily, writes queued frames in batches and
//! redials with exponential backoff and jitter.
//!
//! States: *idle* (no connection, waiting for a frame) → *dialing* →
//! *connected* (writing batches) → back to idle when the connection breaks.
//! A failed dial fails every queued frame back (asks get
//! [`AskError::Unreachable`], one-way frames are counted) and waits one
//! backoff step before the next dial.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::error::{AskError, HandshakeError};
use crate::frame::{FrameCodec, Kind};
use crate::handshake::{Hello, HelloReply, Lane, MAGIC, NodeId, PROTOCOL_VERSION};
use crate::stats::bump;
use crate::transport::{Inner, Outgoing};

/// Frames taken from the queue per wake-up.
const BATCH_FRAMES: usize = 512;

/// Exponential backoff with jitter between `min` and `max`.
struct Backoff {
    min_ms: u64,
    max_ms: u64,
    failures: u32,
}

impl Backoff {
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

pub(crate) async fn run(
    inner: Arc<Inner>,
    peer: String,
    lane: Lane,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let mut backoff = Backoff {
        min_ms: inner.config.reconnect_backoff_min_ms,
        max_ms: inner.config.reconnect_backoff_max_ms,
        failures: 0,
    };
    let mut batch: Vec<Outgoing> = Vec::with_capacity(BATCH_FRAMES);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        // Idle: wait for something to send.
        if batch.is_empty() {
            tokio::select! {
                biased;
                _ = inner.shutdown.cancelled() => return,
                n = rx.recv_many(&mut batch, BATCH_FRAMES) => if n == 0 { return },
            }
        }
        let dialed = tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => {
                fail(&inner, &peer, &mut batch, "transport shut down");
                return;
            }
            r = dial(&inner, &peer, lane) => r,
        };
        let (mut rd, mut wr, remote) = match dialed {
            Ok(conn) => conn,
            Err(e) => {
                bump(&inner.stats.dial_failures);
                tracing::warn!(peer = %peer, ?lane, error = %e, "cannot reach peer");
                let reason = e.to_string();
                fail(&inner, &peer, &mut batch, &reason);
                while let Ok(out) = rx.try_recv() {
                    batch.push(out);
                }
                fail(&inner, &peer, &mut batch, &reason);
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        backoff.failures = 0;
        tracing::debug!(peer = %remote, ?lane, "link up");
        // Connected: write batches until the connection breaks.
        let broke = loop {
            if let Err(e) = write_batch(&inner, &mut wr, &mut batch, &mut buf).await {
                break e.to_string();
            }
            let mut probe = [0u8; 1];
            tokio::select! {
                biased;
                _ = inner.shutdown.cancelled() => {
                    flush_on_shutdown(&inner, &peer, &mut rx, &mut wr, &mut batch, &mut buf).await;
                    return;
                }
                // The acceptor never writes after the handshake: any read
                // completing means the connection closed or misbehaved.
                r = rd.read(&mut probe) => {
                    break match r {
                        Ok(0) => "connection closed by peer".to_owned(),
                        Ok(_) => "peer wrote on a one-way link".to_owned(),
                        Err(e) => e.to_string(),
                    };
                }
                n = rx.recv_many(&mut batch, BATCH_FRAMES) => if n == 0 {
                    let _ = wr.shutdown().await;
                    return;
                },
            }
        };
        tracing::info!(peer = %peer, ?lane, reason = %broke, "link down");
        fail(&inner, &peer, &mut batch, &broke);
        inner.fail_pending_to(&peer, lane, &broke);
    }
}

/// Encodes and writes `batch` in chunks of at most `max_batch_bytes`.
/// On error the frames not yet written stay in `batch`.
async fn write_batch(
    inner: &Inner,
    wr: &mut OwnedWriteHalf,
    batch: &mut Vec<Outgoing>,
    buf: &mut BytesMut,
) -> std::io::Result<()> {
    let max = inner.config.max_frame_bytes;
    let mut start = 0;
    while start < batch.len() {
        buf.clear();
        let mut end = start;
        while end < batch.len() && buf.len() < inner.config.max_batch_bytes {
            let out = &batch[end];
            if let Err(e) = out.header.encode_frame(&out.body, max, buf) {
                // Sizes are checked at enqueue; this only guards the invariant.
                tracing::warn!(error = %e, "dropping unencodable frame");
            }
            end += 1;
        }
        wr.write_all(buf).await?;
        inner
            .stats
            .frames_sent
            .fetch_add((end - start) as u64, std::sync::atomic::Ordering::Relaxed);
        start = end;
        if start < batch.len() {
            // Keep only the unwritten tail, so an error fails just those.
            batch.drain(..start);
            start = 0;
        }
    }
    batch.clear();
    Ok(())
}

async fn flush_on_shutdown(
    inner: &Inner,
    peer: &str,
    rx: &mut mpsc::Receiver<Outgoing>,
    wr: &mut OwnedWriteHalf,
    batch: &mut Vec<Outgoing>,
    buf: &mut BytesMut,
) {
    rx.close();
    while let Some(out) = rx.recv().await {
        batch.push(out);
    }
    let deadline = Duration::from_millis(inner.config.flush_deadline_ms);
    let written = tokio::time::timeout(deadline, async {
        write_batch(inner, wr, batch, buf).await?;
        wr.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        fail(
            inner,
            peer,
            batch,
            "not flushed before the shutdown deadline",
        );
    }
}

/// Fails queued frames back: asks to their callers, the rest counted.
fn fail(inner: &Inner, peer: &str, batch: &mut Vec<Outgoing>, reason: &str) {
    let mut dropped = 0u64;
    for out in batch.drain(..) {
        match out.header.kind {
            Kind::Ask { corr } => inner.complete(
                corr,
                Err(AskError::Unreachable {
                    peer: peer.to_owned(),
                    reason: reason.to_owned(),
                }),
            ),
            _ => dropped += 1,
        }
    }
    if dropped > 0 {
        inner
            .stats
            .dropped_on_link_failure
            .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(peer = %peer, dropped, reason = %reason, "one-way frames dropped: link failed");
    }
}

/// Dials `peer` (resolving its name now) and runs the handshake.
async fn dial(
    inner: &Inner,
    peer: &str,
    lane: Lane,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, NodeId), HandshakeError> {
    let stream = tokio::time::timeout(inner.config.connect_timeout(), TcpStream::connect(peer))
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
    let mut framed = Framed::new(stream, FrameCodec::new(inner.config.max_frame_bytes));
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: inner.cluster.clone(),
        from: inner.local.clone(),
        lane,
    };
    let body = postcard::to_allocvec(&hello).map_err(|e| HandshakeError::Decode(e.to_string()))?;
    let timeout_ms = inner.config.handshake_timeout_ms;
    let reply = tokio::time::timeout(inner.config.handshake_timeout(), async {
        framed.send(body.into()).await?;
        match framed.next().await {
            Some(frame) => Ok(frame?),
            None => Err(HandshakeError::Closed),
        }
    })
    .await
    .map_err(|_| HandshakeError::Timeout(timeout_ms))??;
    let reply: HelloReply =
        postcard::from_bytes(&reply).map_err(|e| HandshakeError::Decode(e.to_string()))?;
    match reply {
        HelloReply::Accepted { node } => {
            let parts = framed.into_parts();
            let (rd, wr) = parts.io.into_split();
            Ok((rd, wr, node))
        }
        HelloReply::Refused { reason } => {
            tracing::warn!(peer = %peer, reason = %reason, "handshake refused by peer");
            Err(HandshakeError::Refused(reason))
        }
    }
}
