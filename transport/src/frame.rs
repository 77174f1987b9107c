//! Framing: a 4-byte big-endian length, then the body.
//!
//! ```text
//! +----------------+----------------------------+
//! | len: u32 (BE)  | body: `len` bytes          |
//! +----------------+----------------------------+
//! ```
//!
//! After the handshake every body is a postcard-encoded [`Header`] followed
//! by the message bytes of the header's channel. The decoder checks the
//! length prefix against the maximum before it reserves any memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::error::FrameError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Largest encoded [`Header`], in bytes (channel and kind tags plus a
/// varint correlation id).
pub const MAX_HEADER_BYTES: usize = 16;

/// A tokio-util codec for length-prefixed frames with a hard maximum.
///
/// Decoding yields whole frame bodies; an incomplete frame is `Ok(None)`.
/// A length prefix above the maximum is [`FrameError::TooLarge`], raised
/// before any allocation; end of stream inside a frame is
/// [`FrameError::Truncated`].
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec that accepts bodies of at most `max_frame_bytes` bytes.
    pub fn new(max_frame_bytes: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(LENGTH_PREFIX_BYTES)
            .big_endian()
            .max_frame_length(max_frame_bytes)
            .new_codec();
        FrameCodec {
            inner,
            max_frame_bytes,
        }
    }

    /// The maximum body length in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if src.len() >= LENGTH_PREFIX_BYTES {
            let len = u64::from((&src[..LENGTH_PREFIX_BYTES]).get_u32());
            if len > self.max_frame_bytes as u64 {
                return Err(FrameError::TooLarge {
                    len,
                    max: self.max_frame_bytes,
                });
            }
        }
        Ok(self.inner.decode(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        if body.len() > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len: body.len() as u64,
                max: self.max_frame_bytes,
            });
        }
        dst.reserve(LENGTH_PREFIX_BYTES + body.len());
        dst.put_u32(body.len() as u32);
        dst.extend_from_slice(&body);
        Ok(())
    }
}

/// What a post-handshake frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A one-way message.
    Tell,
    /// A request; the answer carries the same correlation id.
    Ask {
        /// Chosen by the asker, unique per transport.
        corr: u64,
    },
    /// The answer to the ask with this correlation id.
    Reply {
        /// The ask's correlation id.
        corr: u64,
    },
    /// The ask with this correlation id was refused by the receiver; the
    /// body is a UTF-8 reason.
    Reject {
        /// The ask's correlation id.
        corr: u64,
    },
}

/// The header in front of every post-handshake frame body.
/// Append-only: new [`Kind`]s go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The upper layer this frame belongs to.
    pub channel: u8,
    /// Tell, ask, reply or reject.
    pub kind: Kind,
}

impl Header {
    /// Appends one whole frame (prefix, header, `body`) to `dst`.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when header and body exceed `max_frame_bytes`.
    pub fn encode_frame(
        &self,
        body: &[u8],
        max_frame_bytes: usize,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let mut head = [0u8; MAX_HEADER_BYTES];
        let head =
            postcard::to_slice(self, &mut head).map_err(|e| FrameError::Header(e.to_string()))?;
        let len = head.len() + body.len();
        if len > max_frame_bytes {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: max_frame_bytes,
            });
        }
        dst.reserve(LENGTH_PREFIX_BYTES + len);
        dst.put_u32(len as u32);
        dst.extend_from_slice(head);
        dst.extend_from_slice(body);
        Ok(())
    }

    /// Splits a frame body into its header and message bytes (zero-copy).
    ///
    /// # Errors
    /// [`FrameError::Header`] when the header does not decode.
    pub fn decode_frame(frame: Bytes) -> Result<(Header, Bytes), FrameError> {
        let (header, rest) = postcard::take_from_bytes::<Header>(&frame)
            .map_err(|e| FrameError::Header(e.to_string()))?;
        let offset = frame.len() - rest.len();
        Ok((header, frame.slice(offset..)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn too_large_prefix_is_refused_before_allocating() {
        let mut codec = FrameCodec::new(1024);
        let mut src = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        let cap = src.capacity();
        let err = codec.decode(&mut src).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 0xffff_ffff,
                max: 1024
            }
        ));
        assert_eq!(
            src.capacity(),
            cap,
            "decoder must not reserve for a refused frame"
        );
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut codec = FrameCodec::new(1024);
        let mut src = BytesMut::from(&[0, 0, 0, 10, 1, 2, 3][..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut src),
            Err(FrameError::Truncated { buffered: 3 })
        ));
    }

    #[test]
    fn header_round_trip_is_zero_copy() {
        let mut buf = BytesMut::new();
        let h = Header {
            channel: 3,
            kind: Kind::Ask { corr: 1 << 40 },
        };
        h.encode_frame(b"hello", 1024, &mut buf).unwrap();
        let mut codec = FrameCodec::new(1024);
        let frame = codec.decode(&mut buf).unwrap().unwrap().freeze();
        let (h2, body) = Header::decode_frame(frame).unwrap();
        assert_eq!(h, h2);
        assert_eq!(&body[..], b"hello");
    }
}
