//! The task's computation: SHA-256 iterated over its own digest.
//!
//! This is the seed's work function, bit for bit: start from the payload's
//! bytes, apply SHA-256 `iterations` times, each time hashing the previous
//! 32-byte digest, and keep the first 16 lowercase hex characters (the first
//! 8 bytes) of the final digest. SHA-256 is FIPS 180-4.
//!
//! Every round after the first hashes exactly 32 bytes, which SHA-256 pads to
//! a single 64-byte block whose second half never changes (FIPS 180-4 §5.1.1:
//! a `1` bit, zeros, and the message length 256 as a 64-bit big-endian
//! number). So each of those rounds is one call of the compression function
//! on a block kept on the stack: no allocation, no buffering, no padding
//! logic per round.

use std::fmt;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};

/// SHA-256's initial hash value H(0) (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Computes the full final digest: SHA-256 applied `iterations` times,
/// starting from `payload`, each later round hashing the previous 32-byte
/// digest.
///
/// Cost: one SHA-256 of `payload`, then `iterations - 1` compressions of one
/// 64-byte block. Allocates nothing.
pub fn iterated_sha256(payload: &[u8], iterations: NonZeroU32) -> [u8; 32] {
    let first: [u8; 32] = Sha256::digest(payload).into();
    rehash(first, iterations.get() - 1)
}

/// Computes a task's result: the first 8 bytes of [`iterated_sha256`], shown
/// as 16 lowercase hex characters by [`ShortDigest`]'s `Display`.
pub fn compute(payload: &[u8], iterations: NonZeroU32) -> ShortDigest {
    let digest = iterated_sha256(payload, iterations);
    let mut short = [0u8; 8];
    short.copy_from_slice(&digest[..8]);
    ShortDigest(short)
}

/// Applies SHA-256 `rounds` more times to a 32-byte digest.
fn rehash(digest: [u8; 32], rounds: u32) -> [u8; 32] {
    // The one padded block of a 32-byte message: the message, the `1` bit,
    // zeros, then the length in bits (256 = 0x100) big-endian in the last 8
    // bytes.
    let mut block = GenericArray::from([0u8; 64]);
    block[..32].copy_from_slice(&digest);
    block[32] = 0x80;
    block[62] = 0x01;
    for _ in 0..rounds {
        let mut state = SHA256_IV;
        sha2::compress256(&mut state, std::slice::from_ref(&block));
        for (word, out) in state.iter().zip(block[..32].chunks_exact_mut(4)) {
            out.copy_from_slice(&word.to_be_bytes());
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&block[..32]);
    out
}

/// A task's result: the first 8 bytes of the final digest.
///
/// `Display` (and [`ShortDigest::to_hex`]) show it as the seed does: 16
/// lowercase hex characters. On the wire and in replicated state it is the 8
/// raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShortDigest(pub [u8; 8]);

/// Lowercase hex digits, indexed by nibble.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

impl ShortDigest {
    /// The 16 lowercase hex characters, as bytes.
    pub fn hex_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (byte, pair) in self.0.iter().zip(out.chunks_exact_mut(2)) {
            pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
            pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        out
    }

    /// The 16 lowercase hex characters, as a `String`.
    pub fn to_hex(&self) -> String {
        // ASCII digits: one allocation of 16 bytes, not 16 pushes of a
        // char (and never a lossy replacement: every byte is a hex digit).
        String::from_utf8_lossy(&self.hex_bytes()).into_owned()
    }

    /// Parses exactly 16 hex characters (lower or upper case).
    ///
    /// # Errors
    /// `None` if `hex` is not 16 characters long or holds a non-hex character.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 16 {
            return None;
        }
        let mut out = [0u8; 8];
        for (pair, byte) in bytes.chunks_exact(2).zip(out.iter_mut()) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(ShortDigest(out))
    }
}

/// The value of one hex digit.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ShortDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex_bytes();
        for &b in &hex {
            fmt::Write::write_char(f, char::from(b))?;
        }
        Ok(())
    }
}

impl fmt::Debug for ShortDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShortDigest({self})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The straightforward loop through the `Digest` API, the reference the
    /// block-level loop must match.
    fn reference(payload: &[u8], iterations: u32) -> [u8; 32] {
        let mut digest: [u8; 32] = Sha256::digest(payload).into();
        for _ in 1..iterations {
            digest = Sha256::digest(digest).into();
        }
        digest
    }

    #[test]
    fn block_loop_matches_the_digest_api() {
        for payload in [&b""[..], b"hello", &[0xffu8; 200][..]] {
            for iterations in [1, 2, 3, 17, 64, 500] {
                let n = NonZeroU32::new(iterations).unwrap();
                assert_eq!(iterated_sha256(payload, n), reference(payload, iterations));
            }
        }
    }

    #[test]
    fn hex_round_trips_and_is_lowercase() {
        let d = ShortDigest([0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff]);
        assert_eq!(d.to_hex(), "00017f80abcdefff");
        assert_eq!(d.to_string(), "00017f80abcdefff");
        assert_eq!(ShortDigest::from_hex("00017f80abcdefff"), Some(d));
        assert_eq!(ShortDigest::from_hex("00017F80ABCDEFFF"), Some(d));
        assert_eq!(ShortDigest::from_hex("00017f80abcdeff"), None);
        assert_eq!(ShortDigest::from_hex("00017f80abcdefffa"), None);
        assert_eq!(ShortDigest::from_hex("00017f80abcdefgf"), None);
        assert_eq!(ShortDigest::from_hex("é0017f80abcdeff"), None);
    }
}
