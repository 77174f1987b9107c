//! Support for tests of this crate and of the crates above it: peers that
//! speak only the start of the protocol, to play what a node of this build
//! cannot be (a seed of another protocol version, say).

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::FrameCodec;
use crate::handshake::HelloReply;

/// Largest first frame the peer reads (1 MiB, far above a `Hello`).
const MAX_FRAME_BYTES: usize = 1 << 20;

/// Listens on a free loopback port and answers the first frame of every
/// connection with `reply`, then closes the connection: a peer that
/// answers every handshake alike (e.g. refuses it as a seed of another
/// protocol version would, with [`HelloReply::Mismatch`] from version 3
/// on or [`HelloReply::Refused`] before). Runs until the runtime stops.
///
/// # Errors
/// Binding the listener, or encoding `reply`.
pub async fn answering(reply: HelloReply) -> io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let body = postcard::to_allocvec(&reply).map_err(|e| io::Error::other(e.to_string()))?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            // The first frame, whole, or whatever came before the dialer
            // gave up.
            let mut buf = BytesMut::new();
            while matches!(FrameCodec::new(MAX_FRAME_BYTES).decode(&mut buf), Ok(None)) {
                if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    break;
                }
            }
            let mut frame = BytesMut::new();
            if FrameCodec::new(MAX_FRAME_BYTES)
                .encode(Bytes::from(body.clone()), &mut frame)
                .is_ok()
            {
                let _ = stream.write_all(&frame).await;
            }
            let _ = stream.shutdown().await;
        }
    });
    Ok(addr)
}
