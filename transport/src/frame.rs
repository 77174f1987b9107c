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
use tokio_util::codec::{Decoder, Encoder};

use crate::error::FrameError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Largest encoded [`Header`], in bytes (channel and kind tags plus a
/// varint correlation id).
pub const MAX_HEADER_BYTES: usize = 16;

/// Bytes a reader asks the socket for at once when it has no frame in
/// progress (64 KiB), and the least a buffer grows by.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A tokio-util codec for length-prefixed frames with a hard maximum.
///
/// Decoding yields whole frame bodies; an incomplete frame is `Ok(None)`.
/// A length prefix above the maximum is [`FrameError::TooLarge`], raised
/// before any allocation; end of stream inside a frame is
/// [`FrameError::Truncated`]. The decoder grows the buffer only to hold the
/// frame being decoded: its capacity never exceeds
/// `max(capacity before, LENGTH_PREFIX_BYTES + max_frame_bytes)`.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec that accepts bodies of at most `max_frame_bytes` bytes
    /// (capped at `u32::MAX - 4`, so a whole frame's length fits a `u32`).
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameCodec {
            max_frame_bytes: cap_frame_bytes(max_frame_bytes),
        }
    }

    /// The maximum body length in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Changes the maximum body length (e.g. from the handshake's small
    /// limit to the configured one once the peer is known).
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = cap_frame_bytes(max_frame_bytes);
    }

    /// The total length (prefix included) of the frame at the start of
    /// `src`, once its prefix is complete.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when the prefix announces more than the maximum.
    pub fn peek_total(&self, src: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = src.first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len as usize > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max: self.max_frame_bytes,
            });
        }
        Ok(Some(LENGTH_PREFIX_BYTES + len as usize))
    }
}

fn cap_frame_bytes(max_frame_bytes: usize) -> usize {
    max_frame_bytes.min(u32::MAX as usize - LENGTH_PREFIX_BYTES)
}

/// Makes `buf` able to hold `total` bytes without growing past that: a
/// larger buffer is allocated at exactly `total` bytes (plain
/// `BytesMut::reserve` may double, which would break the memory bound).
pub(crate) fn reserve_total(buf: &mut BytesMut, total: usize) {
    if buf.capacity() < total {
        let mut grown = BytesMut::with_capacity(total);
        grown.extend_from_slice(buf);
        *buf = grown;
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(total) = self.peek_total(src)? else {
            return Ok(None);
        };
        if src.len() < total {
            // Room for this frame, and for a read chunk of the next ones,
            // but never past one maximal frame.
            let chunk = READ_CHUNK_BYTES.min(LENGTH_PREFIX_BYTES + self.max_frame_bytes);
            reserve_total(src, total.max(chunk));
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(src.split_to(total - LENGTH_PREFIX_BYTES)))
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

/// Reads a LEB128 varint of at most `max_bytes` bytes (5 for a `u32`, 10
/// for a `u64`, as postcard does), rejecting values that overflow the
/// type. Returns the value and its length.
fn varint(src: &[u8], max_bytes: usize) -> Option<(u64, usize)> {
    let bits = if max_bytes == 5 { 32 } else { 64 };
    let mut value = 0u64;
    for (i, &byte) in src.iter().take(max_bytes).enumerate() {
        let part = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if i + 1 == max_bytes {
            // The last byte may only carry the bits the type has left.
            if byte & 0x80 != 0 || part >> (bits - shift) != 0 {
                return None;
            }
        }
        value |= part << shift;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Truncates a buffer back to `start` on drop, unless `start` was set to
/// `usize::MAX` (the frame was completed).
struct Rollback<'a> {
    start: usize,
    dst: &'a mut BytesMut,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.start != usize::MAX {
            self.dst.truncate(self.start);
        }
    }
}

/// A postcard output that appends to a [`BytesMut`] (one copy per slice,
/// no intermediate `Vec`).
pub(crate) struct BytesFlavor<'a>(pub &'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BytesFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `msg`'s postcard encoding to `dst`.
///
/// Small messages are encoded into a stack buffer first and copied with
/// one `memcpy` (postcard copies every varint separately, which costs more
/// through `BytesMut` than through a plain slice); larger ones are encoded
/// straight into `dst`.
pub(crate) fn postcard_into<T: Serialize + ?Sized>(
    msg: &T,
    dst: &mut BytesMut,
) -> Result<(), crate::SendError> {
    let mut stack = [0u8; 256];
    match postcard::to_slice(msg, &mut stack) {
        Ok(used) => {
            dst.extend_from_slice(used);
            Ok(())
        }
        Err(postcard::Error::SerializeBufferFull) => {
            postcard::serialize_with_flavor(msg, BytesFlavor(dst))
                .map_err(|e| crate::SendError::Encode(e.to_string()))
        }
        Err(e) => Err(crate::SendError::Encode(e.to_string())),
    }
}

/// Reads frames from a byte stream into one buffer whose capacity never
/// exceeds `max(READ_CHUNK_BYTES, LENGTH_PREFIX_BYTES + max_frame_bytes)`
/// bytes, however the peer behaves. Frames come out as [`Bytes`] that share
/// the buffer's allocation (no copy per frame).
#[derive(Debug)]
pub struct FrameReader {
    codec: FrameCodec,
    buf: BytesMut,
}

impl FrameReader {
    /// A reader for bodies of at most `max_frame_bytes` bytes.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameReader {
            codec: FrameCodec::new(max_frame_bytes),
            buf: BytesMut::new(),
        }
    }

    /// Changes the maximum body length for the frames still to come.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.codec.set_max_frame_bytes(max_frame_bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The buffer's capacity in bytes (for tests of the memory bound).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next complete frame body already buffered, if any.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] for a length prefix above the maximum; the
    /// stream cannot be resynchronised after it, so the caller closes it.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        Ok(self.codec.decode(&mut self.buf)?.map(BytesMut::freeze))
    }

    /// Every complete frame already buffered, as one region of whole frames
    /// (length prefixes included; walk it with [`frames_in`]). One
    /// reference count for the lot instead of one per frame.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] for a length prefix above the maximum, once
    /// the complete frames before it have been returned.
    pub fn next_frames(&mut self) -> Result<Option<Bytes>, FrameError> {
        let mut end = 0;
        let mut bad_next = false;
        loop {
            match self.codec.peek_total(&self.buf[end..]) {
                Ok(Some(total)) if self.buf.len() - end >= total => end += total,
                Ok(_) => break,
                Err(e) if end == 0 => return Err(e),
                Err(_) => {
                    bad_next = true;
                    break;
                }
            }
        }
        let region = (end > 0).then(|| self.buf.split_to(end).freeze());
        if !bad_next {
            // Size the buffer for the partial frame left, as `decode` does
            // (nothing complete is left, so it returns `Ok(None)`).
            let _ = self.codec.decode(&mut self.buf)?;
        }
        Ok(region)
    }

    /// Copies a prefix of `bytes` into the buffer as one read would, and
    /// returns its length (at least 1 unless `bytes` is empty). For sans-IO
    /// use and tests: call [`FrameReader::next_frame`] until it returns
    /// `None` before feeding more, as a socket reader does.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        if bytes.is_empty() {
            return 0;
        }
        self.make_room();
        let n = bytes.len().min(self.buf.capacity() - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        n
    }

    /// Reads once from `io` into the buffer. Call
    /// [`FrameReader::next_frame`] until it returns `None` first.
    ///
    /// Returns the number of bytes read; `Ok(0)` is a clean end of stream
    /// (nothing buffered).
    ///
    /// # Errors
    /// [`FrameError::Truncated`] when the stream ends inside a frame,
    /// [`FrameError::Io`] when the read fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: a read that did not complete consumed nothing.
    pub async fn read_from<R>(&mut self, io: &mut R) -> Result<usize, FrameError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        self.make_room();
        let n = tokio::io::AsyncReadExt::read_buf(io, &mut self.buf).await?;
        if n == 0 && !self.buf.is_empty() {
            return Err(FrameError::Truncated {
                buffered: self.buf.len(),
            });
        }
        Ok(n)
    }

    /// Ensures at least one byte of spare capacity. With the frames
    /// drained, a full buffer holds less than a length prefix (once a
    /// prefix is complete the codec sizes the buffer for the whole frame),
    /// so growing to one chunk keeps the bound.
    fn make_room(&mut self) {
        if self.buf.capacity() == self.buf.len() {
            let chunk = READ_CHUNK_BYTES.min(LENGTH_PREFIX_BYTES + self.codec.max_frame_bytes());
            let total = chunk.max(self.buf.len() + 1);
            reserve_total(&mut self.buf, total);
        }
    }
}

/// Walks a region of whole frames from [`FrameReader::next_frames`]:
/// yields each frame body's byte range within `region`.
pub fn frames_in(region: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let prefix = region.get(at..)?.first_chunk::<LENGTH_PREFIX_BYTES>()?;
        let start = at + LENGTH_PREFIX_BYTES;
        let end = start.checked_add(u32::from_be_bytes(*prefix) as usize)?;
        if end > region.len() {
            return None;
        }
        at = end;
        Some(start..end)
    })
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
        let head_len = self.encode(&mut head);
        let head = &head[..head_len];
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

    /// Appends one whole frame to `dst`: a length prefix, this header, then
    /// whatever `body` writes. On any error, or if `body` panics, `dst` is
    /// left exactly as it was, so a queue of frames is never corrupted.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when header and body exceed
    /// `max_frame_bytes`; `body`'s own error, converted.
    pub fn encode_frame_with<E: From<FrameError>>(
        &self,
        max_frame_bytes: usize,
        dst: &mut BytesMut,
        body: &mut dyn FnMut(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        // Prefix (patched below) and header in one copy.
        let mut head = [0u8; LENGTH_PREFIX_BYTES + MAX_HEADER_BYTES];
        let (_, header) = head.split_at_mut(LENGTH_PREFIX_BYTES);
        let header: &mut [u8; MAX_HEADER_BYTES] = header
            .try_into()
            .expect("the split leaves exactly MAX_HEADER_BYTES");
        let head_len = LENGTH_PREFIX_BYTES + self.encode(header);
        let mut guard = Rollback {
            start: dst.len(),
            dst,
        };
        guard.dst.extend_from_slice(&head[..head_len]);
        body(guard.dst)?;
        let len = guard.dst.len() - guard.start - LENGTH_PREFIX_BYTES;
        if len > max_frame_bytes {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: max_frame_bytes,
            }
            .into());
        }
        let start = guard.start;
        guard.dst[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
        guard.start = usize::MAX;
        Ok(())
    }

    /// Splits a frame body into its header and message bytes (zero-copy).
    ///
    /// # Errors
    /// [`FrameError::Header`] when the header does not decode.
    pub fn decode_frame(mut frame: Bytes) -> Result<(Header, Bytes), FrameError> {
        let (header, len) = Header::decode(&frame)?;
        frame.advance(len);
        Ok((header, frame))
    }

    /// Writes this header's postcard encoding into `out` and returns its
    /// length: the channel byte, the kind's varint tag, then for asks,
    /// replies and rejections the correlation id as a LEB128 varint.
    /// Hand-written for speed; equal to `postcard::to_slice(self)` (a
    /// property test checks it).
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_BYTES]) -> usize {
        out[0] = self.channel;
        let (tag, corr) = match self.kind {
            Kind::Tell => (0, None),
            Kind::Ask { corr } => (1, Some(corr)),
            Kind::Reply { corr } => (2, Some(corr)),
            Kind::Reject { corr } => (3, Some(corr)),
        };
        out[1] = tag;
        let mut n = 2;
        if let Some(mut v) = corr {
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out[n] = byte;
                    n += 1;
                    break;
                }
                out[n] = byte | 0x80;
                n += 1;
            }
        }
        n
    }

    /// Reads a header from the front of a frame body; returns it and the
    /// number of bytes it took. Accepts exactly what postcard accepts for
    /// [`Header`].
    ///
    /// # Errors
    /// [`FrameError::Header`] for a short body, an unknown kind or a
    /// malformed varint.
    pub fn decode(src: &[u8]) -> Result<(Header, usize), FrameError> {
        let bad = |what: &str| FrameError::Header(what.to_owned());
        let (&channel, rest) = src.split_first().ok_or_else(|| bad("empty frame"))?;
        let (tag, tag_len) = varint(rest, 5).ok_or_else(|| bad("bad kind tag"))?;
        let rest = &rest[tag_len..];
        let mut used = 1 + tag_len;
        let kind = if tag == 0 {
            Kind::Tell
        } else {
            let (corr, corr_len) = varint(rest, 10).ok_or_else(|| bad("bad correlation id"))?;
            used += corr_len;
            match tag {
                1 => Kind::Ask { corr },
                2 => Kind::Reply { corr },
                3 => Kind::Reject { corr },
                _ => return Err(bad("unknown frame kind")),
            }
        };
        if tag > 3 {
            return Err(bad("unknown frame kind"));
        }
        Ok((Header { channel, kind }, used))
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
            Err(FrameError::Truncated { buffered: 7 })
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
