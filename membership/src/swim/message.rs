//! The wire protocol: one serde enum ([`Message`]) encoded with postcard,
//! the membership [`Update`] it piggybacks, and the bounds every received
//! message is checked against ([`WireLimits`], [`Message::validate`]).
//!
//! Variants are append-only: a new message gets a new variant at the end,
//! never a changed one (postcard encodes the variant index). The golden
//! bytes in `tests/it/wire.rs` pin every variant.

use serde::{Deserialize, Serialize};

use crate::error::{InvalidMessage, WireError};
use crate::swim::member::{Member, MemberId};

/// Longest accepted member name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest accepted advertised address (`host:port`), in bytes: the
/// longest DNS name (253 bytes), `:` and a five-digit port.
pub const MAX_ADDR_BYTES: usize = 259;
/// Most digest buckets accepted in a `SyncRequest` or `Sync`.
pub const MAX_SYNC_BUCKETS: usize = 1024;
/// Most updates one probe, ack, ping-req or gossip message may carry, on
/// the wire; the configured `max_piggyback_updates` must not exceed it.
pub const MAX_UPDATES_PER_MESSAGE: usize = 64;
/// Largest incarnation accepted from the network (2^62). A life raises its
/// incarnation by one per refutation or metadata change, so a real one
/// never comes near it; a larger value can only be hostile or corrupt, and
/// refuting it (incarnation + 1) could overflow.
pub const MAX_INCARNATION: u64 = 1 << 62;

/// One belief about one member, as disseminated: the member record and,
/// for `Suspect`/`Dead`, the name of the member that declared it (its
/// *accuser*; Lifeguard counts distinct accusers as independent
/// confirmations, arXiv 1707.00788 §IV-B).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The record (life, incarnation, state, metadata).
    pub member: Member,
    /// Who declared the member suspect or dead; `None` for `Alive`/`Left`
    /// and in anti-entropy state.
    pub accuser: Option<String>,
}

impl Update {
    /// An upper bound of this update's postcard size, in bytes (strings
    /// and byte strings plus their varint lengths, varint integers at
    /// their widest). Used to fill messages up to a byte budget without
    /// encoding them.
    pub fn size_bound(&self) -> usize {
        let m = &self.member;
        // 3 length varints (name, addr, metadata) + 2 u64 varints + state +
        // option tag + accuser length varint.
        let fixed = 3 * 3 + 2 * 10 + 1 + 1 + 3;
        m.id.name.len()
            + m.id.addr.len()
            + m.metadata.len()
            + self.accuser.as_ref().map_or(0, String::len)
            + fixed
            + 10
    }
}

/// Why a join was refused; carried by [`Message::JoinRefused`] and
/// reported to the joiner as [`Event::JoinRefused`](crate::swim::Event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// Another life with this name, at another address, still answers
    /// probes: two processes claim the same name.
    DuplicateName {
        /// The life already in the cluster.
        existing: MemberId,
    },
    /// The cluster already knows a newer generation of this name; the
    /// joiner is an older life and must not come back.
    StaleGeneration {
        /// The generation the cluster knows.
        current: u64,
    },
    /// The acceptor already holds `max_members` members.
    ClusterFull {
        /// The acceptor's bound.
        max_members: u64,
    },
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseReason::DuplicateName { existing } => write!(
                f,
                "the name {} is already used by a running member at {} (generation {})",
                existing.name, existing.addr, existing.generation
            ),
            RefuseReason::StaleGeneration { current } => write!(
                f,
                "the cluster already knows a newer life of this name (generation {current}): another node started with the same name, or this one restarted with a clock behind its last start"
            ),
            RefuseReason::ClusterFull { max_members } => write!(
                f,
                "the cluster is full ({max_members} members, max_members)"
            ),
        }
    }
}

/// Every membership message. `from` is always the sender's life; replies
/// go to `from.addr`.
///
/// Sizes (see `PROTOCOL.md`): probe, ack, ping-req and gossip messages
/// carry at most `max_piggyback_updates` updates within
/// `max_piggyback_bytes`; `Sync` and `JoinAck` carry at most
/// `max_sync_bytes` of state (a larger view is sent in rotating windows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// SWIM probe: "are you alive?". Answered by `Ack` with the same `seq`.
    Ping {
        /// Sender.
        from: MemberId,
        /// Probe sequence number chosen by the sender.
        seq: u64,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
    /// Answer to `Ping` (directly, or relayed for a `PingReq`).
    Ack {
        /// Sender (the target, or the relay for an indirect probe).
        from: MemberId,
        /// The `seq` of the probe being answered.
        seq: u64,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
    /// SWIM indirect probe: "please ping `target` for me".
    PingReq {
        /// The member whose probe failed directly.
        from: MemberId,
        /// The requester's probe sequence number, echoed in `Ack`/`Nack`.
        seq: u64,
        /// The member to probe.
        target: MemberId,
        /// Piggybacked updates.
        updates: Vec<Update>,
    },
    /// Lifeguard negative ack: the relay got no answer from the target in
    /// time (arXiv 1707.00788 §IV-A). Tells the requester the relay itself
    /// is responsive.
    Nack {
        /// The relay.
        from: MemberId,
        /// The requester's probe sequence number.
        seq: u64,
    },
    /// Dissemination only: updates sent to a few random members while any
    /// are pending.
    Gossip {
        /// Sender.
        from: MemberId,
        /// The updates.
        updates: Vec<Update>,
    },
    /// Anti-entropy, step 1: the digest of the sender's view. Answered by
    /// `SyncBuckets` only when the receiver's digest differs.
    SyncRequest {
        /// Sender.
        from: MemberId,
        /// The address the sender dialled (lets a node notice that a seed
        /// address is itself).
        to: String,
        /// Digest of the sender's active members (see `PROTOCOL.md`).
        digest: u64,
    },
    /// Anti-entropy, step 2: the views differ; here are my per-bucket
    /// digests (`SYNC_BUCKETS` of them).
    SyncBuckets {
        /// Sender.
        from: MemberId,
        /// Per-bucket digests of the sender's active members.
        buckets: Vec<u64>,
    },
    /// Anti-entropy, steps 3 and 4: the alive, suspect and left members of
    /// the buckets that differ (plus the sender itself, and the receiver's
    /// own record when the sender holds it dead).
    Sync {
        /// Sender.
        from: MemberId,
        /// The sender's per-bucket digests when it sent this.
        buckets: Vec<u64>,
        /// State entries (`accuser` is `None`).
        state: Vec<Update>,
        /// True when the receiver should answer with its own state if its
        /// digest still differs after merging.
        reply: bool,
    },
    /// Join request from a new life, sent to each seed address.
    Join {
        /// The joining life.
        from: MemberId,
        /// The seed address the joiner dialled.
        seed: String,
        /// The joiner's incarnation.
        incarnation: u64,
        /// The joiner's metadata.
        metadata: Vec<u8>,
    },
    /// Join accepted: the acceptor's state, as in `Sync`.
    JoinAck {
        /// The acceptor.
        from: MemberId,
        /// State entries.
        state: Vec<Update>,
    },
    /// Join refused; the joiner stops joining and reports the reason.
    JoinRefused {
        /// The member that refused.
        from: MemberId,
        /// Why.
        reason: RefuseReason,
    },
}

/// Bounds a received message must respect (see [`Message::validate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest metadata accepted, in bytes.
    pub max_metadata_bytes: usize,
    /// Most updates in one piggybacking message.
    pub max_updates: usize,
    /// Most entries in one `Sync`/`JoinAck`.
    pub max_state_entries: usize,
}

impl Message {
    /// The sender's life.
    pub fn from(&self) -> &MemberId {
        match self {
            Message::Ping { from, .. }
            | Message::Ack { from, .. }
            | Message::PingReq { from, .. }
            | Message::Nack { from, .. }
            | Message::Gossip { from, .. }
            | Message::SyncRequest { from, .. }
            | Message::SyncBuckets { from, .. }
            | Message::Sync { from, .. }
            | Message::Join { from, .. }
            | Message::JoinAck { from, .. }
            | Message::JoinRefused { from, .. } => from,
        }
    }

    /// A short name of the variant, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping { .. } => "ping",
            Message::Ack { .. } => "ack",
            Message::PingReq { .. } => "ping-req",
            Message::Nack { .. } => "nack",
            Message::Gossip { .. } => "gossip",
            Message::SyncRequest { .. } => "sync-request",
            Message::SyncBuckets { .. } => "sync-buckets",
            Message::Sync { .. } => "sync",
            Message::Join { .. } => "join",
            Message::JoinAck { .. } => "join-ack",
            Message::JoinRefused { .. } => "join-refused",
        }
    }

    /// Encodes with postcard.
    ///
    /// # Errors
    /// [`WireError::Encode`] if postcard fails (it does not for these
    /// types; the error is kept rather than hidden behind a panic).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        postcard::to_allocvec(self).map_err(WireError::Encode)
    }

    /// Decodes a postcard body. Allocation is bounded by the input length
    /// (serde pre-allocates at most 1 MiB for a claimed sequence length).
    /// Call [`Message::validate`] before acting on the result.
    ///
    /// # Errors
    /// [`WireError::Decode`] for malformed input, [`WireError::TrailingBytes`]
    /// when bytes remain after the message.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let (msg, rest) = postcard::take_from_bytes(bytes).map_err(WireError::Decode)?;
        if rest.is_empty() {
            Ok(msg)
        } else {
            Err(WireError::TrailingBytes { len: rest.len() })
        }
    }

    /// The exact postcard size of this message, in bytes, computed without
    /// allocating.
    pub fn encoded_len(&self) -> usize {
        postcard::serialize_with_flavor::<Self, _, usize>(
            self,
            postcard::ser_flavors::Size::default(),
        )
        .unwrap_or(usize::MAX)
    }

    /// Checks every bound: names, addresses, metadata, accusers, the number
    /// of updates and state entries.
    ///
    /// # Errors
    /// The first [`InvalidMessage`] found.
    pub fn validate(&self, limits: &WireLimits) -> Result<(), InvalidMessage> {
        check_id(self.from())?;
        match self {
            Message::Ping { updates, .. }
            | Message::Ack { updates, .. }
            | Message::Gossip { updates, .. } => check_updates(updates, limits, limits.max_updates),
            Message::PingReq {
                target, updates, ..
            } => {
                check_id(target)?;
                check_updates(updates, limits, limits.max_updates)
            }
            Message::Nack { .. } => Ok(()),
            Message::SyncRequest { to, .. } => check_addr(to),
            Message::SyncBuckets { buckets, .. } => check_buckets(buckets),
            Message::Sync { state, buckets, .. } => {
                check_buckets(buckets)?;
                check_updates(state, limits, limits.max_state_entries)
            }
            Message::JoinAck { state, .. } => {
                check_updates(state, limits, limits.max_state_entries)
            }
            Message::Join {
                seed,
                metadata,
                incarnation,
                ..
            } => {
                check_addr(seed)?;
                check_incarnation(*incarnation)?;
                check_metadata(metadata, limits)
            }
            Message::JoinRefused { reason, .. } => match reason {
                RefuseReason::DuplicateName { existing } => check_id(existing),
                RefuseReason::StaleGeneration { .. } | RefuseReason::ClusterFull { .. } => Ok(()),
            },
        }
    }
}

fn check_incarnation(incarnation: u64) -> Result<(), InvalidMessage> {
    if incarnation > MAX_INCARNATION {
        return Err(InvalidMessage::IncarnationTooLarge {
            incarnation,
            max: MAX_INCARNATION,
        });
    }
    Ok(())
}

fn check_buckets(buckets: &[u64]) -> Result<(), InvalidMessage> {
    if buckets.len() > MAX_SYNC_BUCKETS {
        return Err(InvalidMessage::TooManyUpdates {
            len: buckets.len(),
            max: MAX_SYNC_BUCKETS,
        });
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), InvalidMessage> {
    if name.is_empty() {
        return Err(InvalidMessage::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(InvalidMessage::NameTooLong {
            len: name.len(),
            max: MAX_NAME_BYTES,
        });
    }
    if let Some(c) = name.chars().find(|&c| refused_in_identity(c)) {
        return Err(InvalidMessage::NameChar {
            name: name.to_owned(),
            c,
        });
    }
    if let Some(c) = name.chars().next().filter(|&c| is_combining_mark(c)) {
        return Err(InvalidMessage::NameLeadingMark {
            name: name.to_owned(),
            c,
        });
    }
    Ok(())
}

fn check_addr(addr: &str) -> Result<(), InvalidMessage> {
    if addr.len() > MAX_ADDR_BYTES {
        return Err(InvalidMessage::AddrTooLong {
            len: addr.len(),
            max: MAX_ADDR_BYTES,
        });
    }
    if let Some(c) = addr.chars().find(|&c| refused_in_identity(c)) {
        return Err(InvalidMessage::AddrChar {
            addr: addr.to_owned(),
            c,
        });
    }
    if let Some(c) = addr.chars().next().filter(|&c| is_combining_mark(c)) {
        return Err(InvalidMessage::AddrLeadingMark {
            addr: addr.to_owned(),
            c,
        });
    }
    Ok(())
}

/// Whether `c` is refused in a member name or address: whitespace, a
/// control character (a newline, an ANSI escape), an invisible one
/// (Unicode's Default_Ignorable_Code_Point and the interlinear annotation
/// marks), the braille blank U+2800, the null notehead U+1D159, the
/// format characters Default_Ignorable_Code_Point leaves out (prepended
/// concatenation marks, Egyptian hieroglyph format controls), a
/// noncharacter (U+FDD0..=U+FDEF,
/// U+xxFFFE, U+xxFFFF), `@` or `#`; and first, a combining mark
/// ([`is_combining_mark`]). It is the transport's identity rule
/// (`transport::check_identity`, whose doc says its limits), which every
/// handshake applies to the peer: names and addresses learnt by gossip
/// show in the same log lines. The core builds without the transport, so
/// the rule is written here too; a test (with the `runtime` feature)
/// checks every character, first and after another, against the
/// transport's.
pub(crate) fn refused_in_identity(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{fdd0}'..='\u{fdef}')
        || u32::from(c) & 0xfffe == 0xfffe
        || matches!(c,
            '@' | '#'
            | '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
            | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
            | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}' | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e0fff}' | '\u{2800}'
            // Format characters that Default_Ignorable_Code_Point leaves
            // out: the prepended concatenation marks, which join the
            // character after them (an `@` after a name), the Egyptian
            // hieroglyph format controls, and the blank null notehead.
            | '\u{600}'..='\u{605}' | '\u{6dd}' | '\u{70f}' | '\u{890}' | '\u{891}'
            | '\u{8e2}' | '\u{110bd}' | '\u{110cd}' | '\u{13430}'..='\u{1343f}'
            | '\u{1d159}')
}

/// Whether `c` is a combining mark of the main combining blocks, which a
/// member name or address may not start with (it would join the
/// character before it in a log line): U+0300..=U+036F, U+1AB0..=U+1AFF,
/// U+1DC0..=U+1DFF, U+20D0..=U+20FF, U+FE20..=U+FE2F, as
/// `transport::is_combining_mark`.
fn is_combining_mark(c: char) -> bool {
    matches!(c,
        '\u{300}'..='\u{36f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}'
        | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
}

fn check_id(id: &MemberId) -> Result<(), InvalidMessage> {
    check_name(&id.name)?;
    if id.addr.is_empty() {
        return Err(InvalidMessage::EmptyAddr);
    }
    check_addr(&id.addr)
}

fn check_metadata(metadata: &[u8], limits: &WireLimits) -> Result<(), InvalidMessage> {
    if metadata.len() > limits.max_metadata_bytes {
        return Err(InvalidMessage::MetadataTooLarge {
            len: metadata.len(),
            max: limits.max_metadata_bytes,
        });
    }
    Ok(())
}

fn check_updates(
    updates: &[Update],
    limits: &WireLimits,
    max: usize,
) -> Result<(), InvalidMessage> {
    if updates.len() > max {
        return Err(InvalidMessage::TooManyUpdates {
            len: updates.len(),
            max,
        });
    }
    for u in updates {
        check_id(&u.member.id)?;
        check_incarnation(u.member.incarnation)?;
        check_metadata(&u.member.metadata, limits)?;
        if let Some(accuser) = &u.accuser {
            check_name(accuser)?;
        }
    }
    Ok(())
}

/// A message to send: the core's only output to the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination `host:port` (an advertised member address or a seed
    /// address; the driver resolves DNS names).
    pub to_addr: String,
    /// The message.
    pub msg: Message,
}

#[cfg(all(test, feature = "runtime"))]
mod tests {
    use super::*;
    use transport::IdentityField::{Addr, Name};

    /// Membership refuses in names and addresses learnt by gossip exactly
    /// what the transport's handshake refuses in a peer's identity: every
    /// character after another one and first (where a combining mark is
    /// refused too).
    #[test]
    fn the_identity_rule_is_the_transport_s() {
        assert_eq!(MAX_NAME_BYTES, transport::MAX_NAME_BYTES);
        assert_eq!(MAX_ADDR_BYTES, transport::MAX_ADDR_BYTES);
        let mut text = String::new();
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            for first in [false, true] {
                text.clear();
                if first {
                    text.push(c);
                    text.push('a');
                } else {
                    text.push('a');
                    text.push(c);
                }
                assert_eq!(
                    check_name(&text).is_err(),
                    transport::check_identity(Name, &text).is_err(),
                    "{c:?} first: {first}"
                );
                assert_eq!(
                    check_addr(&text).is_err(),
                    transport::check_identity(Addr, &text).is_err(),
                    "{c:?} first: {first}"
                );
            }
        }
    }
}
