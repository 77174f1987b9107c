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
    let mut chain = Chain::new(payload, iterations);
    chain.run();
    chain.digest()
}

/// Computes a task's result: the first 8 bytes of [`iterated_sha256`], shown
/// as 16 lowercase hex characters by [`ShortDigest`]'s `Display`.
pub fn compute(payload: &[u8], iterations: NonZeroU32) -> ShortDigest {
    let mut chain = Chain::new(payload, iterations);
    chain.run();
    chain.result()
}

/// Computes two tasks' results on the calling thread, interleaved (see
/// [`Chain::run_pair`]): the same results as two calls of [`compute`], in
/// about 0.7 of their time on a core with the SHA extensions (release
/// build; `cargo run --release -p node-cli --example sha_rate` prints both
/// rates).
pub fn compute_pair(a: (&[u8], NonZeroU32), b: (&[u8], NonZeroU32)) -> (ShortDigest, ShortDigest) {
    let (mut first, mut second) = (Chain::new(a.0, a.1), Chain::new(b.0, b.1));
    Chain::run_pair(&mut first, &mut second);
    first.run();
    second.run();
    (first.result(), second.result())
}

/// The first iteration of a task's chain: the SHA-256 of `payload` (any
/// length; the only step whose cost grows with the payload).
pub fn first_digest(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// One task's hash chain on its way: the digest so far, kept as the one
/// padded 64-byte block that hashes it, and the iterations left.
///
/// Every iteration after the first hashes exactly 32 bytes, which SHA-256
/// pads to one block whose second half never changes (FIPS 180-4 §5.1.1),
/// so an iteration is one call of the compression function (FIPS 180-4
/// §6.2.2) on that block, and the new digest is written over its first
/// half.
#[derive(Clone, Debug)]
pub struct Chain {
    block: Block,
    left: u32,
}

type Block = GenericArray<u8, sha2::digest::consts::U64>;

impl Chain {
    /// A chain whose first iteration (the SHA-256 of `payload`, any
    /// length) is done, with `iterations - 1` left.
    pub fn new(payload: &[u8], iterations: NonZeroU32) -> Chain {
        Chain::from_first(first_digest(payload), iterations)
    }

    /// A chain whose first iteration gave `first` (the [`first_digest`]
    /// of the payload), with `iterations - 1` left: what [`Chain::new`]
    /// does, for a caller that keeps the first digest (a task's input
    /// digest is made from it).
    pub fn from_first(first: [u8; 32], iterations: NonZeroU32) -> Chain {
        // The message, the `1` bit, zeros, then the length in bits (256 =
        // 0x100) big-endian in the last 8 bytes.
        let mut block = GenericArray::from([0u8; 64]);
        block[..32].copy_from_slice(&first);
        block[32] = 0x80;
        block[62] = 0x01;
        Chain {
            block,
            left: iterations.get() - 1,
        }
    }

    /// Iterations still to do (0: [`Chain::result`] is final).
    pub fn left(&self) -> u32 {
        self.left
    }

    /// Does every iteration left.
    pub fn run(&mut self) {
        for _ in 0..self.left {
            round(&mut self.block);
        }
        self.left = 0;
    }

    /// Advances both chains together, one iteration of each in turn, until
    /// the one with fewer iterations left is done (the other may have some
    /// left). Each iteration of a chain needs the previous one's digest, so
    /// one chain alone keeps the core waiting on the latency of the SHA
    /// instructions (several times their throughput on current x86-64
    /// cores); the iterations of two independent chains overlap. Measured
    /// on 2 vCPUs of an AMD EPYC (Zen 3, SHA-NI), one core, 500 iterations
    /// (`sha_rate`, release build): 58,119 tasks/s in pairs against 40,307
    /// one at a time. An unoptimized build may gain nothing.
    pub fn run_pair(a: &mut Chain, b: &mut Chain) {
        let both = a.left.min(b.left);
        for _ in 0..both {
            round(&mut a.block);
            round(&mut b.block);
        }
        a.left -= both;
        b.left -= both;
    }

    /// The digest so far (after [`Chain::run`], the final digest).
    pub fn digest(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.block[..32]);
        out
    }

    /// The task's result: the first 8 bytes of the digest so far.
    pub fn result(&self) -> ShortDigest {
        let mut short = [0u8; 8];
        short.copy_from_slice(&self.block[..8]);
        ShortDigest(short)
    }
}

/// One iteration: the SHA-256 of the 32-byte digest in `block`'s first
/// half, written over it.
#[inline(always)]
fn round(block: &mut Block) {
    let mut state = SHA256_IV;
    sha2::compress256(&mut state, std::slice::from_ref(block));
    for (word, out) in state.iter().zip(block[..32].chunks_exact_mut(4)) {
        out.copy_from_slice(&word.to_be_bytes());
    }
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
    fn pairs_give_what_single_chains_give() {
        let lengths = [1u32, 2, 3, 17, 500];
        for &a in &lengths {
            for &b in &lengths {
                let (na, nb) = (NonZeroU32::new(a).unwrap(), NonZeroU32::new(b).unwrap());
                let (pa, pb) = (format!("doc-a-{a}"), format!("doc-b-{b}"));
                let (ra, rb) = compute_pair((pa.as_bytes(), na), (pb.as_bytes(), nb));
                assert_eq!(ra, compute(pa.as_bytes(), na), "{a} and {b}");
                assert_eq!(rb, compute(pb.as_bytes(), nb), "{a} and {b}");
                assert_eq!(ra.0, reference(pa.as_bytes(), a)[..8], "{a} and {b}");
            }
        }
    }

    #[test]
    fn a_pair_stops_when_the_shorter_chain_is_done() {
        let mut a = Chain::new(b"x", NonZeroU32::new(4).unwrap());
        let mut b = Chain::new(b"y", NonZeroU32::new(10).unwrap());
        Chain::run_pair(&mut a, &mut b);
        assert_eq!((a.left(), b.left()), (0, 6));
        assert_eq!(a.digest(), reference(b"x", 4));
        b.run();
        assert_eq!(b.digest(), reference(b"y", 10));
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
