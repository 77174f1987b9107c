//! One outbound link: the [`Outbox`] of frames to one (peer, lane), the
//! task that dials, writes and redials, and the reader of the replies that
//! come back on the same connection.
//!
//! States: *idle* (no connection, waiting for a frame) → *dialing* →
//! *connected* (writing batches; a reader task completes asks from the
//! replies) → back to idle when the connection breaks. A failed dial or a
//! broken connection fails every queued frame back (asks with
//! [`crate::AskError::Unreachable`], one-way frames counted in
//! `dropped_on_link_failure`) and the next dial waits one backoff step.
//! Once retired (`forget`, shutdown), frames still queued get one more dial
//! and write within `[transport] flush_deadline_ms`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::{AskError, FrameError, HandshakeError};
use crate::frame::{FrameReader, Header, Kind, frames_in};
use crate::handshake::{
    HANDSHAKE_MAX_FRAME_BYTES, Hello, HelloReply, Lane, MAGIC, NodeId, PROTOCOL_VERSION,
    handshake_frame_error, is_version_refusal,
};
use crate::listener::send_handshake_frame;
use crate::outbox::{Ended, Loudness, Outbox, count_dropped_at, flush_deadline, write_loop};
use crate::stats::bump;
use crate::transport::Inner;

/// The queue and connection state of one (peer, lane).
pub(crate) struct Link {
    /// The peer's advertised address, as callers name it.
    pub peer: String,
    /// Which lane this link serves.
    pub lane: Lane,
    /// Frames waiting for the connection.
    pub outbox: Outbox,
    /// Cancelled by `forget` or shutdown: flush, then stop.
    retire: CancellationToken,
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
            outbox: Outbox::new(inner),
            retire: inner.shutdown.child_token(),
        }
    }

    /// Stops accepting frames; the writer flushes what is queued and exits.
    pub(crate) fn retire(&self) {
        self.outbox.close();
        self.retire.cancel();
    }

    /// Fails what is queued (and a lost batch's one-way frames) and every
    /// pending ask sent on this link.
    /// Fails what is queued and in flight on the link, logging the dropped
    /// frames at `loudness`.
    fn fail(&self, inner: &Inner, reason: &str, in_flight_one_way: usize, loudness: Loudness) {
        let one_way = self.outbox.drop_queued() + in_flight_one_way;
        count_dropped_at(inner, &self.peer, one_way, reason, loudness);
        inner.fail_pending_link(self, reason);
    }

    /// Closes the link for good: frames still queued are failed.
    fn close(&self, inner: &Inner, reason: &str) {
        self.outbox.close();
        self.fail(inner, reason, 0, Loudness::Warn);
    }
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
        if !link.outbox.wait_for_work(&link.retire).await {
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
            _ = flush_deadline(&inner, &link.retire) => {
                link.close(&inner, "not flushed before the shutdown deadline");
                return;
            }
            r = dial(&inner, &link.peer, link.lane) => r,
        };
        let (rd, wr, remote, reader) = match dialed {
            Ok(conn) => conn,
            Err(e) => {
                bump(&inner.stats.dial_failures);
                // The first failed dial in a row is information (a seed
                // not listening yet: the next frame dials again); the
                // 2nd, 4th, 8th, ... are warned, the rest debug detail. A
                // refusal is warned by `dial` when it is news.
                let in_a_row = backoff.failures.saturating_add(1);
                if !matches!(e, HandshakeError::Refused(_)) {
                    inner.note_dial_error(&link.peer, &e.to_string());
                }
                // A retired link (its peer forgotten: a member that left
                // or died; or this node stopping) dials once more for what
                // is queued, and a peer forgotten may still be sent to
                // (a hand-off while the whole cluster stops): failing then
                // is expected. When a link closes, its one-way frames are
                // counted (and warned) as dropped and its asks fail to
                // their callers.
                let loudness = if matches!(e, HandshakeError::Refused(_))
                    || link.retire.is_cancelled()
                    || inner.failure_expected(&link.peer)
                {
                    Loudness::Debug
                } else if in_a_row == 1
                    || (inner.is_joining_through(&link.peer) && in_a_row.is_power_of_two())
                {
                    // A seed while this node joins: not up yet, perhaps.
                    Loudness::Info
                } else if in_a_row.is_power_of_two() {
                    Loudness::Warn
                } else {
                    Loudness::Debug
                };
                match loudness {
                    Loudness::Debug => {
                        tracing::debug!(peer = %link.peer, lane = ?link.lane, error = %e, failures = in_a_row, "cannot reach peer")
                    }
                    Loudness::Info if inner.is_joining_through(&link.peer) => {
                        tracing::info!(peer = %link.peer, lane = ?link.lane, error = %e, failures = in_a_row, "cannot reach a seed yet; still joining (logged at the 1st, 2nd, 4th, ... failed dial in a row)")
                    }
                    Loudness::Info => {
                        tracing::info!(peer = %link.peer, lane = ?link.lane, error = %e, failures = in_a_row, "cannot reach peer; the next frame dials again (warned from the 2nd failed dial in a row, then at the 4th, 8th, ...)")
                    }
                    Loudness::Warn => {
                        tracing::warn!(peer = %link.peer, lane = ?link.lane, error = %e, failures = in_a_row, "cannot reach peer (warned at the 2nd, 4th, 8th, ... failed dial in a row)")
                    }
                }
                link.fail(&inner, &e.to_string(), 0, loudness);
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
        link.outbox.attach(Arc::clone(&sock));
        let (broke_tx, mut broke_rx) = oneshot::channel();
        let reader = inner.tracker.spawn(read_replies(
            Arc::clone(&inner),
            Arc::clone(&link),
            rd,
            reader,
            broke_tx,
        ));
        let ended = write_loop(
            &inner,
            &link.peer,
            &link.outbox,
            sock,
            &mut spare,
            &link.retire,
            &mut broke_rx,
        )
        .await;
        link.outbox.detach();
        match ended {
            // The reader goes on until the peer closes its side (at most
            // the flush deadline), for the replies to what was flushed.
            // Then no reply can come back on this link any more: asks
            // still unanswered fail now (`Unreachable`, which callers
            // retry) instead of each waiting out its own timeout. A peer
            // that stalls (connection up, no answers) and is forgotten
            // (declared dead) would otherwise strand every ask in flight
            // to it, and its answers after it resumes go to a closed
            // connection.
            Ended::Retired => {
                if inner.shutdown.is_cancelled() {
                    inner.fail_pending_link(&link, "transport shut down");
                }
                let _ = reader.await;
                let reason = broke_rx
                    .try_recv()
                    .unwrap_or_else(|_| retire_reason(&inner).to_owned());
                inner.fail_pending_link(&link, &format!("{reason} before the reply came"));
                return;
            }
            Ended::Broke(reason, in_flight_one_way) => {
                reader.abort();
                bump(&inner.stats.links_down);
                tracing::info!(peer = %link.peer, lane = ?link.lane, reason = %reason, "link down");
                // A peer that closed or reset the connection is most often
                // one that left or stopped: its one-way frames (probes,
                // gossip) are lost as they would be on the way, and the
                // membership layer, not the transport, decides what its
                // silence means. Logged beside the "link down" line,
                // counted in the stats.
                link.fail(&inner, &reason, in_flight_one_way, Loudness::Info);
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

/// Reads the replies and rejections that come back on a link's
/// connection and completes their asks. Anything else from the acceptor
/// is a protocol violation that closes the connection. Sends why it
/// stopped on `broke`.
async fn read_replies(
    inner: Arc<Inner>,
    link: Arc<Link>,
    mut rd: OwnedReadHalf,
    mut reader: FrameReader,
    broke: oneshot::Sender<String>,
) {
    let reason = loop {
        if let Err(e) = complete_replies(&inner, &link, &mut reader) {
            bump(&inner.stats.frame_errors);
            tracing::warn!(peer = %link.peer, lane = ?link.lane, error = %e, "closing link: bad frame from peer");
            break e.to_string();
        }
        let read = tokio::select! {
            biased;
            // Retired: replies to what was flushed get the flush deadline.
            _ = flush_deadline(&inner, &link.retire) => break retire_reason(&inner).to_owned(),
            r = reader.read_from(&mut rd) => r,
        };
        match read {
            Ok(0) => break "connection closed by peer".to_owned(),
            Ok(_) => {}
            // A failed read or a peer that closed inside a frame
            // (`FrameError::Truncated`): a lost connection, said with the
            // link going down (info), not a bad frame.
            Err(e) => break e.to_string(),
        }
    };
    let _ = broke.send(reason);
}

/// Completes the asks answered by every complete frame buffered.
fn complete_replies(
    inner: &Inner,
    link: &Link,
    reader: &mut FrameReader,
) -> Result<(), FrameError> {
    while let Some(region) = reader.next_frames()? {
        for range in frames_in(&region) {
            let (header, header_len) = Header::decode(&region[range.clone()])?;
            let body = range.start + header_len..range.end;
            match header.kind {
                Kind::Reply { corr } => inner.complete(link, corr, Ok(region.slice(body))),
                Kind::Reject { corr } => inner.complete(
                    link,
                    corr,
                    Err(AskError::Rejected {
                        peer: link.peer.clone(),
                        // The peer's text: callers log it.
                        reason: crate::handshake::escape_unprintable(&String::from_utf8_lossy(
                            &region[body],
                        )),
                    }),
                ),
                Kind::Tell | Kind::Ask { .. } => {
                    return Err(FrameError::Header(format!(
                        "{:?} from the acceptor of a link",
                        header.kind
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Connects to `peer` from the listener's IP `local` (port chosen by the
/// system) when that IP is specific, so a node's outbound connections come
/// from the address it is known by: on a host with several addresses
/// (e.g. nodes on 127.0.0.2 and 127.0.0.3 of one machine) peers and
/// firewall rules see the right source. An unspecified `local` (0.0.0.0,
/// `::`), an address of the other family, or a loopback `local` with a
/// non-loopback peer connect without binding (the system's choice).
///
/// # Errors
/// Name resolution, bind or connect errors (the last one when the peer
/// has several addresses).
async fn connect_from(local: std::net::IpAddr, peer: &str) -> std::io::Result<TcpStream> {
    if local.is_unspecified() {
        return TcpStream::connect(peer).await;
    }
    let mut last = None;
    for addr in tokio::net::lookup_host(peer).await? {
        let bind =
            addr.is_ipv4() == local.is_ipv4() && (addr.ip().is_loopback() || !local.is_loopback());
        let r = if bind {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(std::net::SocketAddr::new(local, 0))?;
            socket.connect(addr).await
        } else {
            TcpStream::connect(addr).await
        };
        match r {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{peer}: no address"))
    }))
}

/// Dials `peer` (resolving its name now) and runs the handshake. Returns
/// the connection's halves, who answered, and the reader holding whatever
/// arrived after the handshake reply.
async fn dial(
    inner: &Inner,
    peer: &str,
    lane: Lane,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, NodeId, FrameReader), HandshakeError> {
    let connect = connect_from(inner.local_addr.ip(), peer);
    let mut stream = tokio::time::timeout(inner.config.connect_timeout(), connect)
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
    crate::socket::tune(&stream, &inner.config);
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: inner.cluster.clone(),
        from: inner.local.clone(),
        lane,
        settings: inner.settings.clone(),
    };
    let timeout_ms = inner.config.handshake_timeout_ms;
    let mut reader = FrameReader::new(HANDSHAKE_MAX_FRAME_BYTES);
    let reply = tokio::time::timeout(inner.config.handshake_timeout(), async {
        send_handshake_frame(&mut stream, &hello).await?;
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                // Something that is not a node may answer (an HTTP server).
                Err(e) => return Err(handshake_frame_error(e, &reader)),
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
            // Its name and address are logged with every frame error.
            node.check()?;
            inner.clear_refusal(peer);
            let (rd, wr) = stream.into_split();
            reader.set_max_frame_bytes(inner.config.max_frame_bytes);
            Ok((rd, wr, node, reader))
        }
        // An acceptor before version 3 refuses another protocol version
        // with `Refused`: for good all the same.
        HelloReply::Refused { reason } => {
            let for_good = is_version_refusal(&reason);
            Err(refused(inner, peer, reason, for_good))
        }
        HelloReply::Mismatch { reason } => Err(refused(inner, peer, reason, true)),
    }
}

/// Records and logs `peer`'s refusal of our handshake (`for_good`: for a
/// setting dialing again cannot change); the error to return.
/// The reason is the peer's text: shown with whatever would split or
/// colour a log line escaped.
fn refused(inner: &Inner, peer: &str, reason: String, for_good: bool) -> HandshakeError {
    let reason = crate::handshake::escape_unprintable(&reason);
    // Warned once per reason; the dialer's retries against the same
    // refusal are logged at debug level.
    if inner.note_refusal(peer, &reason, for_good) {
        tracing::warn!(peer = %peer, reason = %reason, "handshake refused by peer (repeats of this refusal are logged at debug level)");
    } else {
        tracing::debug!(peer = %peer, reason = %reason, "handshake refused by peer again");
    }
    HandshakeError::Refused(reason)
}
