//! The handshake: the first frame on every connection.
//!
//! The dialer sends [`Hello`]; the acceptor checks magic, version, cluster
//! name and cluster settings and answers [`HelloReply`]. Only after `Accepted` do other frames
//! flow: tells and asks from dialer to acceptor, replies and rejections back.
//! See `PROTOCOL.md` for the bytes.

use serde::{Deserialize, Serialize};

use crate::error::{FrameError, HandshakeError};
use crate::frame::FrameReader;

/// The first four bytes of every handshake body.
pub const MAGIC: [u8; 4] = *b"CSTY";

/// Largest handshake frame body accepted, in bytes (16 KiB). Until a peer
/// has presented a valid [`Hello`] it may make this node buffer no more.
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = 16 * 1024;

/// The wire protocol version this build speaks, for everything a node
/// sends, the transport's frames and the messages and states of the
/// layers above alike. 2 since session 15: [`Hello`] carries the
/// cluster's settings (`settings`), which version 1 did not. 3 since
/// session 17: the task queue's job output and completed task carry an
/// input digest made from the payload's SHA-256 (`taskqueue`), which
/// version 2 made from the payload; the transport's own frames are as in
/// version 2. 4 since 2026-12-07 (session 19): a shard record
/// (`sharding`'s `wire::Record`) says whether a reset restored it and
/// from which confirmed version (`restored_from`, one byte more per record
/// when it did not); the transport's frames are as in version 2. Versions
/// refuse each other at the handshake (`Version`), for good: see
/// [`HelloReply::Mismatch`].
pub const PROTOCOL_VERSION: u16 = 4;

/// The oldest dialer version answered [`HelloReply::Mismatch`] rather than
/// [`HelloReply::Refused`]. `Mismatch` was appended in session 11, while
/// version 1 was current: some version-1 builds cannot decode it, every
/// version-2 build (session 15 on) can.
pub const MISMATCH_SINCE_VERSION: u16 = 2;

/// A node's identity as peers see it.
///
/// `(name, generation)` is one *life* of a node: `generation` is fixed when
/// the process starts and larger on each restart (start time in ms by
/// default), so a restarted node is told apart from its previous life.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Unique in the cluster; shown in logs and reports.
    pub name: String,
    /// Advertised `host:port`: what peers dial. May be a DNS name.
    pub addr: String,
    /// Per-process life number; larger means newer.
    pub generation: u64,
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.generation)
    }
}

/// Which of the two links per peer a connection is.
///
/// `Control` carries small latency-critical traffic (membership probes);
/// `Bulk` carries everything else. Each lane has its own TCP connection and
/// queue, so a probe never waits behind megabytes of task frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lane {
    /// Membership and other small, urgent messages.
    Control,
    /// Application traffic.
    Bulk,
}

impl Lane {
    /// Both lanes, in index order.
    pub const ALL: [Lane; 2] = [Lane::Control, Lane::Bulk];

    /// 0 for `Control`, 1 for `Bulk`.
    pub(crate) fn index(self) -> usize {
        match self {
            Lane::Control => 0,
            Lane::Bulk => 1,
        }
    }
}

/// The dialer's opening frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`MAGIC`].
    pub magic: [u8; 4],
    /// The dialer's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The dialer's cluster name (`[system] name`).
    pub cluster: String,
    /// Who is dialing.
    pub from: NodeId,
    /// Which lane this connection serves.
    pub lane: Lane,
    /// The settings every node of the dialer's cluster must share
    /// ([`crate::LocalNode::settings`]); compared byte for byte.
    pub settings: String,
}

/// The acceptor's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Frames may flow; the acceptor's identity.
    Accepted {
        /// Who answered.
        node: NodeId,
    },
    /// The connection will be closed; why, for the dialer's log.
    Refused {
        /// Human-readable reason.
        reason: String,
    },
    /// The connection will be closed because the dialer's cluster name,
    /// cluster settings or protocol version are not the acceptor's:
    /// dialing again cannot succeed until one of the two is reconfigured
    /// or upgraded, so a joining node may give up at once
    /// (`Transport::refused_for_good`). Appended in session 11; a dialer
    /// from before it cannot decode it and retries as after any malformed
    /// reply. A refusal for another protocol version is a `Mismatch` to a
    /// dialer of version [`MISMATCH_SINCE_VERSION`] or later, and a
    /// [`HelloReply::Refused`] (which every version decodes) to an older
    /// one, some of whose builds predate `Mismatch`.
    Mismatch {
        /// Human-readable reason.
        reason: String,
    },
}

impl HelloReply {
    /// Decodes the acceptor's answer.
    ///
    /// # Errors
    /// [`HandshakeError::Decode`] when it is not a `HelloReply`.
    pub fn decode(body: &[u8]) -> Result<HelloReply, HandshakeError> {
        postcard::from_bytes(body).map_err(|e| HandshakeError::Decode(e.to_string()))
    }
}

impl Hello {
    /// Checks magic, version, cluster name and cluster settings against
    /// ours.
    ///
    /// # Errors
    /// [`HandshakeError::BadMagic`], [`HandshakeError::Version`],
    /// [`HandshakeError::WrongCluster`] or [`HandshakeError::WrongSettings`].
    pub fn check(&self, cluster: &str, settings: &str) -> Result<(), HandshakeError> {
        if self.magic != MAGIC {
            return Err(HandshakeError::BadMagic(self.magic));
        }
        if self.version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version {
                theirs: self.version,
                ours: PROTOCOL_VERSION,
            });
        }
        if self.cluster != cluster {
            return Err(HandshakeError::WrongCluster {
                theirs: self.cluster.clone(),
                ours: cluster.to_owned(),
            });
        }
        if self.settings != settings {
            return Err(HandshakeError::WrongSettings {
                cluster: cluster.to_owned(),
                theirs: self.settings.clone(),
                ours: settings.to_owned(),
            });
        }
        Ok(())
    }

    /// Decodes a handshake body. The magic is checked first so a stranger
    /// (an HTTP request, random bytes) gets `BadMagic`, not a decode error.
    /// A body that does not decode as this version's `Hello` but starts
    /// with our magic and another version (a version-1 `Hello` has no
    /// `settings`) gets `Version`: any two versions refuse each other at
    /// the version check, whatever their `Hello` looks like after it.
    ///
    /// # Errors
    /// [`HandshakeError::BadMagic`], [`HandshakeError::Version`] or
    /// [`HandshakeError::Decode`].
    pub fn decode(body: &[u8]) -> Result<Hello, HandshakeError> {
        if body.len() < MAGIC.len() || body[..MAGIC.len()] != MAGIC {
            let mut got = [0u8; 4];
            for (d, s) in got.iter_mut().zip(body) {
                *d = *s;
            }
            return Err(HandshakeError::BadMagic(got));
        }
        postcard::from_bytes(body).map_err(|e| match HelloHead::version_of(body) {
            Some(theirs) if theirs != PROTOCOL_VERSION => HandshakeError::Version {
                theirs,
                ours: PROTOCOL_VERSION,
            },
            _ => HandshakeError::Decode(e.to_string()),
        })
    }
}

/// The start of a [`Hello`] of any version: the fields every version
/// begins with (postcard encodes a struct's fields in order: the magic as
/// 4 raw bytes, then the version as a varint).
#[derive(Deserialize)]
struct HelloHead {
    magic: [u8; 4],
    version: u16,
}

impl HelloHead {
    /// The version a handshake body announces, when it starts with our
    /// magic and a well-formed version; what follows is not read.
    fn version_of(body: &[u8]) -> Option<u16> {
        let (head, _rest) = postcard::take_from_bytes::<HelloHead>(body).ok()?;
        (head.magic == MAGIC).then_some(head.version)
    }
}

/// Whether `reason`, a refusal an acceptor sent in a
/// [`HelloReply::Refused`], is a refusal for another protocol version
/// ([`HandshakeError::Version`]'s message, the same in every version).
/// Acceptors before version 3 (session 17) refuse another version so
/// instead of with [`HelloReply::Mismatch`]; it is for good all the same.
pub(crate) fn is_version_refusal(reason: &str) -> bool {
    let is_version =
        |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    reason
        .strip_prefix("protocol version ")
        .and_then(|r| r.split_once(" not supported (this node speaks "))
        .and_then(|(theirs, r)| Some((theirs, r.strip_suffix(')')?)))
        .is_some_and(|(theirs, ours)| is_version(theirs) && is_version(ours))
}

/// The reply that refuses a dialer for `e`: [`HelloReply::Mismatch`] when
/// dialing again cannot help (another cluster name, other settings,
/// another protocol version) and the dialer can decode it, else
/// [`HelloReply::Refused`].
pub(crate) fn refusal_reply(e: &HandshakeError) -> HelloReply {
    let reason = e.to_string();
    match e {
        HandshakeError::WrongCluster { .. } | HandshakeError::WrongSettings { .. } => {
            HelloReply::Mismatch { reason }
        }
        HandshakeError::Version { theirs, .. } if *theirs >= MISMATCH_SINCE_VERSION => {
            HelloReply::Mismatch { reason }
        }
        _ => HelloReply::Refused { reason },
    }
}

/// A framing error while reading a handshake frame, as a handshake
/// error: a length prefix above the handshake's limit is most likely a
/// stranger's first bytes (an HTTP request or answer, "HTTP" read as a
/// length), so it is [`HandshakeError::BadMagic`] with the bytes
/// `reader` holds.
pub(crate) fn handshake_frame_error(e: FrameError, reader: &FrameReader) -> HandshakeError {
    match e {
        FrameError::TooLarge { .. } => {
            let mut magic = [0u8; 4];
            for (d, s) in magic.iter_mut().zip(reader.buffered()) {
                *d = *s;
            }
            HandshakeError::BadMagic(magic)
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_refusal_is_told_from_other_refusals_by_its_text() {
        let version = HandshakeError::Version { theirs: 3, ours: 2 };
        assert!(is_version_refusal(&version.to_string()));
        assert!(is_version_refusal(
            "protocol version 65535 not supported (this node speaks 1)"
        ));
        for other in [
            "too many connections (max 1024)",
            "undecodable handshake: Hit the end of buffer",
            "protocol version  not supported (this node speaks 3)",
            "protocol version 2 not supported (this node speaks 3) and more",
            "protocol version x not supported (this node speaks 3)",
            "",
        ] {
            assert!(!is_version_refusal(other), "{other:?}");
        }
    }

    #[test]
    fn the_version_is_read_from_a_body_cut_after_it() {
        // Magic, version 300 (varint ac 02), then nothing.
        assert_eq!(HelloHead::version_of(b"CSTY\xac\x02"), Some(300));
        assert_eq!(HelloHead::version_of(b"CSTY\x01\xff"), Some(1));
        // No version, a cut varint, one beyond u16, another magic.
        assert_eq!(HelloHead::version_of(b"CSTY"), None);
        assert_eq!(HelloHead::version_of(b"CSTY\x80"), None);
        assert_eq!(HelloHead::version_of(b"CSTY\xff\xff\x04"), None);
        assert_eq!(HelloHead::version_of(b"CSTX\x03"), None);
    }

    #[test]
    fn a_version_refusal_is_a_mismatch_from_version_2_on() {
        let reply = |theirs| {
            refusal_reply(&HandshakeError::Version {
                theirs,
                ours: PROTOCOL_VERSION,
            })
        };
        assert!(matches!(reply(0), HelloReply::Refused { .. }));
        assert!(matches!(reply(1), HelloReply::Refused { .. }));
        assert!(matches!(reply(2), HelloReply::Mismatch { .. }));
        assert!(matches!(reply(u16::MAX), HelloReply::Mismatch { .. }));
        let reason = match reply(2) {
            HelloReply::Mismatch { reason } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason,
            format!("protocol version 2 not supported (this node speaks {PROTOCOL_VERSION})")
        );
    }
}
