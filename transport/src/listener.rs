//! The accept loop and the reader of each inbound connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Framed;

use crate::error::{FrameError, HandshakeError};
use crate::frame::{FrameCodec, Header, Kind};
use crate::handshake::{Hello, HelloReply};
use crate::inbound::{ConnInfo, Inbound};
use crate::stats::bump;
use crate::transport::{Inner, Outgoing};

pub(crate) async fn run(inner: Arc<Inner>, listener: TcpListener) {
    let handshaking = Arc::new(Semaphore::new(inner.config.max_handshaking_connections));
    let connected = Arc::new(Semaphore::new(inner.config.max_inbound_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, addr)) => {
                let Ok(permit) = Arc::clone(&handshaking).try_acquire_owned() else {
                    bump(&inner.stats.connections_refused);
                    tracing::warn!(%addr, max = inner.config.max_handshaking_connections, "refusing connection: too many handshakes in progress");
                    continue;
                };
                let _ = stream.set_nodelay(true);
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
    stream: TcpStream,
    addr: SocketAddr,
    handshake_permit: OwnedSemaphorePermit,
    connected: Arc<Semaphore>,
) {
    let mut framed = Framed::new(stream, FrameCodec::new(inner.config.max_frame_bytes));
    let hello = match handshake(&inner, &mut framed).await {
        Ok(hello) => hello,
        Err(e) => {
            bump(&inner.stats.handshakes_refused);
            tracing::warn!(%addr, error = %e, "handshake refused");
            if !matches!(e, HandshakeError::Closed | HandshakeError::Timeout(_)) {
                refuse(&mut framed, &e.to_string()).await;
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
        tracing::warn!(%addr, peer = %hello.from, "refusing connection: {reason}");
        refuse(&mut framed, &reason).await;
        return;
    };
    drop(handshake_permit);
    let accepted = HelloReply::Accepted {
        node: inner.local.clone(),
    };
    let Ok(body) = postcard::to_allocvec(&accepted) else {
        return;
    };
    if framed.send(Bytes::from(body)).await.is_err() {
        return;
    }
    tracing::debug!(peer = %hello.from, lane = ?hello.lane, %addr, "inbound link up");
    let conn = Arc::new(ConnInfo {
        inner: Arc::clone(&inner),
        peer: hello.from,
        lane: hello.lane,
        closer: inner.shutdown.child_token(),
    });
    loop {
        let next = tokio::select! {
            biased;
            _ = conn.closer.cancelled() => break,
            f = framed.next() => f,
        };
        match next {
            None => break,
            Some(Err(e)) => {
                bump(&inner.stats.frame_errors);
                tracing::warn!(peer = %conn.peer, %addr, error = %e, "closing connection: bad frame");
                break;
            }
            Some(Ok(frame)) => {
                bump(&inner.stats.frames_received);
                if let Err(e) = dispatch(&inner, &conn, frame.freeze()).await {
                    bump(&inner.stats.frame_errors);
                    tracing::warn!(peer = %conn.peer, %addr, error = %e, "closing connection: bad frame");
                    break;
                }
            }
        }
    }
    tracing::debug!(peer = %conn.peer, %addr, "inbound link down");
}

async fn handshake(
    inner: &Inner,
    framed: &mut Framed<TcpStream, FrameCodec>,
) -> Result<Hello, HandshakeError> {
    let first = tokio::time::timeout(inner.config.handshake_timeout(), framed.next())
        .await
        .map_err(|_| HandshakeError::Timeout(inner.config.handshake_timeout_ms))?;
    let body = match first {
        None => return Err(HandshakeError::Closed),
        Some(Err(FrameError::TooLarge { .. })) => {
            // A stranger's first bytes read as a huge length: report it as
            // what it most likely is.
            let mut magic = [0u8; 4];
            let buffered = framed.read_buffer();
            for (d, s) in magic.iter_mut().zip(buffered.iter()) {
                *d = *s;
            }
            return Err(HandshakeError::BadMagic(magic));
        }
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(body)) => body,
    };
    let hello = Hello::decode(&body)?;
    hello.check(&inner.cluster)?;
    Ok(hello)
}

async fn refuse(framed: &mut Framed<TcpStream, FrameCodec>, reason: &str) {
    let reply = HelloReply::Refused {
        reason: reason.to_owned(),
    };
    if let Ok(body) = postcard::to_allocvec(&reply) {
        let _ =
            tokio::time::timeout(Duration::from_millis(500), framed.send(Bytes::from(body))).await;
    }
}

async fn dispatch(
    inner: &Arc<Inner>,
    conn: &Arc<ConnInfo>,
    frame: Bytes,
) -> Result<(), FrameError> {
    let (header, body) = Header::decode_frame(frame)?;
    match header.kind {
        Kind::Tell | Kind::Ask { .. } => {
            let corr = match header.kind {
                Kind::Ask { corr } => Some(corr),
                _ => None,
            };
            let slot = inner
                .channels
                .get(usize::from(header.channel))
                .and_then(|s| s.get());
            let delivered = match slot {
                Some(tx) => tx
                    .send(Inbound {
                        conn: Arc::clone(conn),
                        channel: header.channel,
                        corr,
                        body,
                    })
                    .await
                    .is_ok(),
                None => false,
            };
            if !delivered {
                bump(&inner.stats.unknown_channel);
                tracing::debug!(peer = %conn.peer, channel = header.channel, "no receiver for channel");
                if let Some(corr) = corr {
                    let _ = inner.try_enqueue(
                        &conn.peer.addr,
                        conn.lane,
                        Outgoing {
                            header: Header {
                                channel: header.channel,
                                kind: Kind::Reject { corr },
                            },
                            body: Bytes::from(format!(
                                "no receiver for channel {}",
                                header.channel
                            )),
                        },
                    );
                }
            }
        }
        Kind::Reply { corr } => inner.complete(corr, Ok(body)),
        Kind::Reject { corr } => inner.complete(
            corr,
            Err(crate::AskError::Rejected {
                peer: conn.peer.addr.clone(),
                reason: String::from_utf8_lossy(&body).into_owned(),
            }),
        ),
    }
    Ok(())
}
