//! The accept loop and the reader of each inbound connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

use crate::error::{FrameError, HandshakeError};
use crate::frame::{FrameCodec, FrameReader, Header, Kind, LENGTH_PREFIX_BYTES, frames_in};
use crate::handshake::{
    HANDSHAKE_MAX_FRAME_BYTES, Hello, HelloReply, handshake_frame_error, refusal_reply,
};
use crate::inbound::ConnInfo;
use crate::mailbox::{Delivery, FrameRef};
use crate::outbox::{Ended, Outbox, count_dropped, write_loop};
use crate::stats::{RefusalKind, bump};
use crate::transport::{Inner, Slot};

pub(crate) async fn run(inner: Arc<Inner>, listener: TcpListener) {
    let handshaking = Arc::new(Semaphore::new(inner.config.max_handshaking_connections));
    let connected = Arc::new(Semaphore::new(inner.config.max_inbound_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => {
                inner.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, addr)) => {
                let Ok(permit) = Arc::clone(&handshaking).try_acquire_owned() else {
                    bump(&inner.stats.connections_refused);
                    let max = inner.config.max_handshaking_connections;
                    let t = inner.throttle(RefusalKind::HandshakeTableFull);
                    if t.warn {
                        tracing::warn!(%addr, max, refused = t.count, "refusing connection: too many handshakes in progress (warned at the 1st, 2nd, 4th, ... such refusal)");
                    } else {
                        tracing::debug!(%addr, max, refused = t.count, "refusing connection: too many handshakes in progress");
                    }
                    continue;
                };
                crate::socket::tune(&stream, &inner.config);
                inner.tracker.spawn(serve(
                    Arc::clone(&inner),
                    stream,
                    addr,
                    permit,
                    Arc::clone(&connected),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off a little
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(
    inner: Arc<Inner>,
    mut stream: TcpStream,
    addr: SocketAddr,
    handshake_permit: OwnedSemaphorePermit,
    connected: Arc<Semaphore>,
) {
    let mut reader = FrameReader::new(HANDSHAKE_MAX_FRAME_BYTES);
    let handshake = tokio::select! {
        biased;
        _ = inner.shutdown.cancelled() => return,
        r = tokio::time::timeout(
            inner.config.handshake_timeout(),
            read_hello(&inner, &mut reader, &mut stream),
        ) => r.unwrap_or(Err(HandshakeError::Timeout(inner.config.handshake_timeout_ms))),
    };
    let hello = match handshake {
        Ok(hello) => hello,
        Err(e) => {
            bump(&inner.stats.handshakes_refused);
            let lost = matches!(
                e,
                HandshakeError::Closed | HandshakeError::Frame(FrameError::Io(_))
            );
            if lost && reader.buffered().is_empty() {
                // Closed or reset before a byte came: a port probe (a load
                // balancer's or an orchestrator's health check, some of
                // which close with a reset), not a peer that was refused.
                tracing::debug!(%addr, error = %e, "connection closed before its handshake began (nothing sent: a port probe?)");
                return;
            }
            // Refusals may come by the hundred in a second from one
            // scanner or flood, and a stranger may vary what it sends
            // (its cluster name, settings or identity) on every
            // connection: each kind of refusal, whatever its values, is
            // warned at its 1st, 2nd, 4th, ... occurrence. The warning
            // shows the values, escaped.
            let t = inner.throttle(refusal_kind(&e));
            if t.warn {
                tracing::warn!(%addr, error = %e, refused = t.count, "handshake refused (warned at the 1st, 2nd, 4th, ... refusal of its kind)");
            } else {
                tracing::debug!(%addr, error = %e, refused = t.count, "handshake refused");
            }
            if !matches!(e, HandshakeError::Closed | HandshakeError::Timeout(_)) {
                refuse(&mut stream, refusal_reply(&e)).await;
            }
            return;
        }
    };
    let Ok(_conn_permit) = connected.try_acquire_owned() else {
        bump(&inner.stats.connections_refused);
        let reason = format!(
            "too many connections (max {})",
            inner.config.max_inbound_connections
        );
        let t = inner.throttle(RefusalKind::TooManyConnections);
        if t.warn {
            tracing::warn!(%addr, peer = %hello.from, refused = t.count, "refusing connection: {reason} (warned at the 1st, 2nd, 4th, ... such refusal)");
        } else {
            tracing::debug!(%addr, peer = %hello.from, refused = t.count, "refusing connection: {reason}");
        }
        refuse(&mut stream, HelloReply::Refused { reason }).await;
        return;
    };
    drop(handshake_permit);
    let accepted = HelloReply::Accepted {
        node: inner.local.clone(),
    };
    if let Err(e) = send_handshake_frame(&mut stream, &accepted).await {
        tracing::debug!(%addr, peer = %hello.from, error = %e, "inbound handshake reply failed");
        return;
    }
    tracing::debug!(peer = %hello.from, lane = ?hello.lane, %addr, "inbound link up");
    reader.set_max_frame_bytes(inner.config.max_frame_bytes);
    let (mut rd, wr) = stream.into_split();
    let conn = Arc::new(ConnInfo {
        inner: Arc::clone(&inner),
        peer: hello.from,
        lane: hello.lane,
        closer: inner.shutdown.child_token(),
        replies: Outbox::new(&inner),
        open_asks: AtomicUsize::new(0),
        undecodable: AtomicBool::new(false),
    });
    let sock = Arc::new(wr);
    conn.replies.attach(Arc::clone(&sock));
    let (broke_tx, broke_rx) = oneshot::channel();
    // Cancelled to stop the replies' writer alone (flush, then FIN) while
    // this reader goes on: an idle close. `closer` cancels it too.
    let finish = conn.closer.child_token();
    inner.tracker.spawn(write_replies(
        Arc::clone(&conn),
        sock,
        broke_rx,
        finish.clone(),
    ));
    let mut idle = Idle::new(inner.config.idle_timeout());
    let why = loop {
        // Hand every buffered frame on, then read more.
        let drained = tokio::select! {
            biased;
            _ = conn.closer.cancelled() => break "closed".to_owned(),
            r = drain(&inner, &conn, &mut reader) => r,
        };
        if let Err(e) = drained {
            bump(&inner.stats.frame_errors);
            warn_bad_frame(&inner, &conn, addr, &e);
            break e.to_string();
        }
        // Time spent handing frames on (an inbox may push back) is not
        // silence: the silent time counts from here.
        idle.active();
        let read = loop {
            tokio::select! {
                biased;
                _ = conn.closer.cancelled() => break Err("closed".to_owned()),
                r = reader.read_from(&mut rd) => break Ok(r),
                () = idle.expired() => match idle.check(&conn) {
                    IdleCheck::Busy => {}
                    IdleCheck::Idle(silent) => {
                        bump(&inner.stats.idle_closed);
                        tracing::info!(peer = %conn.peer, lane = ?conn.lane, %addr, silent_ms = silent.as_millis() as u64, "closing idle connection");
                        finish.cancel();
                        idle.closing(Duration::from_millis(inner.config.flush_deadline_ms));
                    }
                    IdleCheck::GraceOver => break Err("idle".to_owned()),
                },
            }
        };
        let read = match read {
            Ok(r) => r,
            Err(why) => break why,
        };
        match read {
            Ok(0) if idle.is_closing() => break "idle".to_owned(),
            Ok(0) => break "closed by peer".to_owned(),
            Ok(_) => {}
            // Lost, not malformed: a peer that closed inside a frame
            // (one that gave up on this node while it was stopped, say)
            // is said with the link going down, at debug.
            Err(e @ (FrameError::Io(_) | FrameError::Truncated { .. })) => break e.to_string(),
            Err(e) => {
                bump(&inner.stats.frame_errors);
                warn_bad_frame(&inner, &conn, addr, &e);
                break e.to_string();
            }
        }
    };
    tracing::debug!(peer = %conn.peer, %addr, reason = %why, "inbound link down");
    let _ = broke_tx.send(why);
}

/// Logs that an inbound connection is closed for a bad frame: warned at
/// the 1st, 2nd, 4th, ... such close ([`Inner::throttle`]).
fn warn_bad_frame(inner: &Inner, conn: &ConnInfo, addr: SocketAddr, e: &FrameError) {
    let t = inner.throttle(RefusalKind::BadFrame);
    if t.warn {
        tracing::warn!(peer = %conn.peer, %addr, error = %e, closed = t.count, "closing connection: bad frame (warned at the 1st, 2nd, 4th, ... such close)");
    } else {
        tracing::debug!(peer = %conn.peer, %addr, error = %e, closed = t.count, "closing connection: bad frame");
    }
}

/// The idle timer of one inbound connection (`[transport]
/// idle_timeout_ms`). One timer, reset only when it fires: the reader
/// notes activity with a clock read, not a timer reset.
struct Idle {
    timeout: Option<Duration>,
    last_active: Instant,
    timer: Pin<Box<Sleep>>,
    /// Set once the connection is being closed for silence: the end of
    /// the grace given to frames already on their way.
    closing: Option<Instant>,
}

/// What [`Idle::check`] found when its timer fired.
enum IdleCheck {
    /// Not idle (yet): the timer was set again.
    Busy,
    /// Silent this long, no ask open: close the connection.
    Idle(Duration),
    /// The grace after an idle close is over.
    GraceOver,
}

impl Idle {
    fn new(timeout: Option<Duration>) -> Idle {
        let now = Instant::now();
        // Disabled: a timer that is never polled (see `expired`).
        let first = now + timeout.unwrap_or(Duration::from_secs(3600));
        Idle {
            timeout,
            last_active: now,
            timer: Box::pin(tokio::time::sleep_until(first)),
            closing: None,
        }
    }

    /// Notes that the connection was just active (frames read and handed on).
    fn active(&mut self) {
        if self.timeout.is_some() && self.closing.is_none() {
            self.last_active = Instant::now();
        }
    }

    /// Completes when the timer fires; never when disabled.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    async fn expired(&mut self) {
        if self.timeout.is_none() {
            return std::future::pending().await;
        }
        self.timer.as_mut().await;
    }

    /// Decides what a fired timer means, and sets it again if needed.
    fn check(&mut self, conn: &ConnInfo) -> IdleCheck {
        let now = Instant::now();
        if self.closing.is_some() {
            return IdleCheck::GraceOver;
        }
        let Some(timeout) = self.timeout else {
            return IdleCheck::Busy;
        };
        let due = self.last_active + timeout;
        if now < due {
            self.timer.as_mut().reset(due);
            return IdleCheck::Busy;
        }
        if conn.has_open_asks() {
            // A slow answer is not silence; look again a period later.
            self.timer.as_mut().reset(now + timeout);
            return IdleCheck::Busy;
        }
        IdleCheck::Idle(now - self.last_active)
    }

    /// Starts the grace of an idle close: the timer fires once more after `grace`.
    fn closing(&mut self, grace: Duration) {
        let end = Instant::now() + grace;
        self.closing = Some(end);
        self.timer.as_mut().reset(end);
    }

    fn is_closing(&self) -> bool {
        self.closing.is_some()
    }
}

/// Writes the replies to the asks of one inbound connection until it
/// closes; replies still queued when the peer is gone are counted.
async fn write_replies(
    conn: Arc<ConnInfo>,
    sock: Arc<OwnedWriteHalf>,
    mut broke: oneshot::Receiver<String>,
    finish: CancellationToken,
) {
    let inner = &conn.inner;
    let mut spare = BytesMut::new();
    let ended = write_loop(
        inner,
        &conn.peer.addr,
        &conn.replies,
        sock,
        &mut spare,
        &finish,
        &mut broke,
    )
    .await;
    conn.replies.detach();
    if let Ended::Broke(reason, in_flight_one_way) = ended {
        conn.replies.close();
        let lost = conn.replies.drop_queued() + in_flight_one_way;
        count_dropped(inner, &conn.peer.addr, lost, &reason);
    }
}

/// Frames handed to a channel at once, at most.
const MAX_BATCH_FRAMES: usize = 1024;

/// Dispatches every complete frame in `reader`'s buffer: tells and asks go
/// to their channel's queue, one [`Delivery`] per run of frames for the
/// same channel; replies and rejections complete their ask.
///
/// # Cancel safety
/// Frames not yet handed on when it is dropped are dropped (asks among
/// them are rejected); only used when the connection closes.
async fn drain(
    inner: &Arc<Inner>,
    conn: &Arc<ConnInfo>,
    reader: &mut FrameReader,
) -> Result<(), FrameError> {
    loop {
        let Some(region) = reader.next_frames()? else {
            return Ok(());
        };
        let mut frames = 0u64;
        let mut run: Option<Delivery> = None;
        let mut bad = None;
        for range in frames_in(&region) {
            frames += 1;
            let (header, header_len) = match Header::decode(&region[range.clone()]) {
                Ok(h) => h,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            };
            let body = range.start + header_len..range.end;
            let corr = match header.kind {
                Kind::Tell => None,
                Kind::Ask { corr } => {
                    conn.ask_opened();
                    Some(corr)
                }
                // Replies travel from acceptor to dialer only: from a
                // dialer they could complete asks sent to other peers.
                Kind::Reply { .. } | Kind::Reject { .. } => {
                    bad = Some(FrameError::Header(format!(
                        "{:?} from the dialer of a connection",
                        header.kind
                    )));
                    break;
                }
            };
            let frame = FrameRef {
                // Regions are below 4 GiB: a region lies in the read
                // buffer, at most one maximal frame (≤ 1 GiB) or one chunk.
                start: body.start as u32,
                end: body.end as u32,
                corr,
            };
            match &mut run {
                Some(d) if d.channel == header.channel && d.frames.len() < MAX_BATCH_FRAMES => {
                    d.frames.push(frame);
                    d.bytes += body.len();
                }
                _ => {
                    if let Some(d) = run.take() {
                        deliver(inner, d).await;
                    }
                    run = Some(Delivery {
                        conn: Arc::clone(conn),
                        channel: header.channel,
                        region: region.clone(),
                        frames: vec![frame],
                        next: 0,
                        bytes: body.len(),
                    });
                }
            }
        }
        inner
            .stats
            .frames_received
            .fetch_add(frames, std::sync::atomic::Ordering::Relaxed);
        // Frames before a bad one are still delivered.
        if let Some(d) = run {
            deliver(inner, d).await;
        }
        if let Some(e) = bad {
            return Err(e);
        }
    }
}

/// Hands `d` to its channel's receiver, waiting for queue space. Frames
/// nobody will receive are counted and, for asks, rejected.
async fn deliver(inner: &Inner, d: Delivery) {
    let slot = inner
        .channels
        .get(usize::from(d.channel))
        .and_then(|s| s.get());
    match slot {
        Some(Slot::Mailbox(mailbox)) => {
            if let Err(d) = mailbox.push(d).await {
                d.undeliverable();
            }
        }
        Some(Slot::Raw(tx)) => {
            for item in d.into_inbounds() {
                if let Err(e) = tx.send(item).await {
                    e.0.undeliverable();
                }
            }
        }
        None => d.undeliverable(),
    }
}

/// What a refused handshake is counted as for its warning's rate
/// ([`Inner::throttle`]): its kind alone, never the values or bytes the
/// stranger sent (a cluster name varied on every connection is one kind).
fn refusal_kind(e: &HandshakeError) -> RefusalKind {
    match e {
        HandshakeError::WrongCluster { .. } => RefusalKind::WrongCluster,
        HandshakeError::WrongSettings { .. } => RefusalKind::WrongSettings,
        HandshakeError::Version { .. } => RefusalKind::Version,
        HandshakeError::BadMagic(_) => RefusalKind::BadMagic,
        HandshakeError::Identity(_) => RefusalKind::Identity,
        HandshakeError::Decode(_) => RefusalKind::UndecodableHandshake,
        HandshakeError::Timeout(_) => RefusalKind::HandshakeTimeout,
        HandshakeError::Closed => RefusalKind::ClosedInHandshake,
        HandshakeError::Frame(_) => RefusalKind::BadHandshakeFrame,
        HandshakeError::Refused(_) => RefusalKind::Refused,
    }
}

/// Reads the dialer's [`Hello`] and checks it against this node.
async fn read_hello(
    inner: &Inner,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
) -> Result<Hello, HandshakeError> {
    loop {
        match reader.next_frame() {
            Ok(Some(body)) => {
                let hello = Hello::decode(&body)?;
                hello.check(&inner.cluster, &inner.settings)?;
                return Ok(hello);
            }
            Ok(None) => {}
            Err(e) => return Err(handshake_frame_error(e, reader)),
        }
        match reader.read_from(stream).await {
            Ok(0) | Err(FrameError::Truncated { .. }) => return Err(HandshakeError::Closed),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes one handshake frame (a [`Hello`] or a [`HelloReply`]).
pub(crate) async fn send_handshake_frame<T: serde::Serialize>(
    stream: &mut TcpStream,
    msg: &T,
) -> Result<(), HandshakeError> {
    let body = postcard::to_allocvec(msg).map_err(|e| HandshakeError::Decode(e.to_string()))?;
    let mut frame = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + body.len());
    FrameCodec::new(HANDSHAKE_MAX_FRAME_BYTES).encode(Bytes::from(body), &mut frame)?;
    stream.write_all(&frame).await.map_err(FrameError::Io)?;
    Ok(())
}

/// Tells a refused dialer why (`reply`, a refusal), best effort (at most
/// 500 ms), then closes.
async fn refuse(stream: &mut TcpStream, reply: HelloReply) {
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        send_handshake_frame(stream, &reply).await?;
        stream.shutdown().await.map_err(FrameError::Io)?;
        Ok::<_, HandshakeError>(())
    })
    .await;
}
