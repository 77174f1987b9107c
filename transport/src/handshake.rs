//! The handshake: the first frame on every connection.
//!
//! The dialer sends [`Hello`]; the acceptor checks magic, version, cluster
//! name and cluster settings and answers [`HelloReply`]. Only after `Accepted` do other frames
//! flow: tells and asks from dialer to acceptor, replies and rejections back.
//! See `PROTOCOL.md` for the bytes.

use serde::{Deserialize, Serialize};

use crate::error::{FrameError, HandshakeError, IdentityError, IdentityField};
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

/// Longest node name a handshake accepts, in bytes (membership's
/// `MAX_NAME_BYTES`, which a test keeps equal).
pub const MAX_NAME_BYTES: usize = 128;

/// Longest advertised address (`host:port`) a handshake accepts, in bytes
/// (membership's `MAX_ADDR_BYTES`, which a test keeps equal): the longest
/// DNS name (253 bytes, RFC 1035 section 2.3.4 as written in text), `:`
/// and a five-digit port.
pub const MAX_ADDR_BYTES: usize = 259;

impl NodeId {
    /// Checks the name and the address against the identity rule
    /// ([`check_identity`]).
    ///
    /// # Errors
    /// [`IdentityError`] for the name first, then the address.
    pub fn check(&self) -> Result<(), IdentityError> {
        check_identity(IdentityField::Name, &self.name)?;
        check_identity(IdentityField::Addr, &self.addr)
    }
}

/// The identity rule: a node name (`field` [`IdentityField::Name`]) or
/// advertised `host:port` ([`IdentityField::Addr`]) is not empty, at most
/// [`MAX_NAME_BYTES`] or [`MAX_ADDR_BYTES`] long, holds no whitespace,
/// control, invisible or blank character nor noncharacter
/// ([`is_unprintable`]), does not start with a combining mark
/// ([`is_combining_mark`]), and holds no `@` or `#`. Both show in every
/// log line that names a peer (`name@address#generation`): a newline or
/// an ANSI escape in one would forge lines or colours, a space or an
/// invisible character would shift or hide fields, a leading combining
/// mark would join the character before it.
///
/// Its limits: it is a fixed list, not Unicode's full tables (this crate
/// takes no Unicode dependency). A combining mark is refused only first
/// (after a base character it is part of the text: `e` and U+0301 is
/// `é`), and only from the main combining blocks: the marks of other
/// scripts (Devanagari vowel signs, Hebrew points, Arabic harakat, ...)
/// may still start a name, and a name may still look like another (`é`
/// as one character or two, Latin `a` and Cyrillic `а`): names are told
/// apart by their bytes, not their look. Every handshake checks the
/// peer's identity with it
/// (the acceptor the dialer's, the dialer the acceptor's), the transport
/// its own at bind, and node-cli its `--name`; membership applies the same
/// rule to the names and addresses it learns by gossip.
///
/// # Errors
/// [`IdentityError`] naming `field`, with the value escaped.
pub fn check_identity(field: IdentityField, value: &str) -> Result<(), IdentityError> {
    if value.is_empty() {
        return Err(IdentityError::Empty { field });
    }
    let max = match field {
        IdentityField::Name => MAX_NAME_BYTES,
        IdentityField::Addr => MAX_ADDR_BYTES,
    };
    if value.len() > max {
        return Err(IdentityError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if let Some(c) = value.chars().find(|&c| is_unprintable(c)) {
        return Err(IdentityError::Unprintable {
            field,
            value: value.to_owned(),
            c,
        });
    }
    if let Some(c) = value.chars().next().filter(|&c| is_combining_mark(c)) {
        return Err(IdentityError::LeadingMark {
            field,
            value: value.to_owned(),
            c,
        });
    }
    if let Some(c) = value.chars().find(|c| matches!(c, '@' | '#')) {
        return Err(IdentityError::Separator {
            field,
            value: value.to_owned(),
            c,
        });
    }
    Ok(())
}

/// Whether `c` is refused in an identity ([`check_identity`]):
/// whitespace, a control character, one that shows as nothing or
/// reorders the text around it (Unicode's Default_Ignorable_Code_Point
/// from DerivedCoreProperties.txt, and the interlinear annotation marks:
/// soft hyphen, zero-width and direction marks, the byte-order mark), the
/// braille blank U+2800, which renders as a space, the null notehead
/// U+1D159, which renders as nothing, a format character outside
/// Default_Ignorable_Code_Point (the prepended concatenation marks
/// U+0600..=U+0605, U+06DD, U+070F, U+0890, U+0891, U+08E2, U+110BD and
/// U+110CD, which join the character after them, and the Egyptian
/// hieroglyph format controls U+13430..=U+1343F), or a noncharacter
/// (U+FDD0..=U+FDEF and the last two code points of every plane, U+FFFE,
/// U+FFFF, U+1FFFE, ...: never meant to be shown, drawn as nothing or a
/// replacement box), so two names that differ by one would look the
/// same.
pub fn is_unprintable(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || is_noncharacter(c)
        || matches!(c,
            '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
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

/// Whether `c` is one of Unicode's 66 noncharacters: U+FDD0..=U+FDEF and
/// U+xxFFFE, U+xxFFFF of every plane.
fn is_noncharacter(c: char) -> bool {
    matches!(c, '\u{fdd0}'..='\u{fdef}') || u32::from(c) & 0xfffe == 0xfffe
}

/// Whether `c` is a combining mark of the main combining blocks, which an
/// identity may not start with ([`check_identity`]): Combining
/// Diacritical Marks (U+0300..=U+036F) and their Extended (U+1AB0..=U+1AFF)
/// and Supplement (U+1DC0..=U+1DFF) blocks, Combining Diacritical Marks
/// for Symbols (U+20D0..=U+20FF) and Combining Half Marks
/// (U+FE20..=U+FE2F). Not every combining mark: the marks inside other
/// scripts' blocks are not in it.
pub fn is_combining_mark(c: char) -> bool {
    matches!(c,
        '\u{300}'..='\u{36f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}'
        | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
}

/// `text` from a peer (a refusal's reason) as it may be logged: each
/// character [`is_unprintable`] refuses, except the space, escaped as
/// `{:?}` escapes it (`\n`, `\u{1b}`); anything else unchanged.
pub(crate) fn escape_unprintable(text: &str) -> String {
    if !text.chars().any(|c| c != ' ' && is_unprintable(c)) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c != ' ' && is_unprintable(c) {
            out.extend(c.escape_debug());
            if c.escape_debug().len() == 1 {
                // Not escaped by `escape_debug` (some whitespace).
                out.pop();
                out.extend(c.escape_unicode());
            }
        } else {
            out.push(c);
        }
    }
    out
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
    /// ours, then the dialer's identity ([`check_identity`]).
    ///
    /// # Errors
    /// [`HandshakeError::BadMagic`], [`HandshakeError::Version`],
    /// [`HandshakeError::WrongCluster`], [`HandshakeError::WrongSettings`]
    /// or [`HandshakeError::Identity`].
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
        self.from.check()?;
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
    fn bad_magic_bytes_are_shown_in_hex_and_as_text() {
        let e = HandshakeError::BadMagic(*b"XX\n\x01").to_string();
        assert!(e.contains("bad magic bytes 0x58580a01"), "{e}");
        assert!(e.contains("(\"XX..\" as text)"), "{e}");
    }

    #[test]
    fn the_identity_rule_refuses_what_would_split_shift_or_hide_a_log_field() {
        use IdentityField::{Addr, Name};
        for ok in [
            "a",
            "node-1_b.c",
            "ünïcode",
            "127.0.0.1:25520",
            "[::1]:1",
            "host.example:80",
        ] {
            assert_eq!(check_identity(Name, ok), Ok(()), "{ok:?}");
            assert_eq!(check_identity(Addr, ok), Ok(()), "{ok:?}");
        }
        for (bad, c) in [
            ("a\nb", '\n'),
            ("a\rb", '\r'),
            ("x\u{1b}[31m", '\u{1b}'),
            ("two words", ' '),
            ("tab\there", '\t'),
            ("line\u{2028}sep", '\u{2028}'),
            ("node\u{200b}1", '\u{200b}'),
            ("node\u{202e}1", '\u{202e}'),
            ("nul\0", '\0'),
        ] {
            match check_identity(Addr, bad) {
                Err(IdentityError::Unprintable {
                    field,
                    value,
                    c: got,
                }) => {
                    assert_eq!((field, value.as_str(), got), (Addr, bad, c));
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            check_identity(Name, "x@h:1#5"),
            Err(IdentityError::Separator { c: '@', .. })
        ));
        assert_eq!(
            check_identity(Name, ""),
            Err(IdentityError::Empty { field: Name })
        );
        assert!(check_identity(Name, &"n".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(matches!(
            check_identity(Name, &"n".repeat(MAX_NAME_BYTES + 1)),
            Err(IdentityError::TooLong {
                len: 129,
                max: 128,
                ..
            })
        ));
        assert!(check_identity(Addr, &"a".repeat(MAX_ADDR_BYTES)).is_ok());
        // The longest DNS name (253 bytes: three labels of 63, one of 61
        // and their dots) with a five-digit port.
        let longest_host = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(longest_host.len(), 253);
        assert!(check_identity(Addr, &format!("{longest_host}:65535")).is_ok());
        // Said once by a report that prints the error's chain: the
        // identity error is in the message, not also its source.
        let e = crate::BindError::from(check_identity(Addr, "").expect_err("empty"));
        assert!(std::error::Error::source(&e).is_none());
        assert!(e.to_string().starts_with("invalid local identity: "), "{e}");
        // The message shows the value escaped.
        let e = check_identity(Name, "ev\nERROR forged").expect_err("a newline");
        assert_eq!(
            e.to_string(),
            r#"node name "ev\nERROR forged" holds '\n': whitespace, control and invisible characters are not allowed"#
        );
    }

    /// A tester's finds: characters that render blank (braille blank),
    /// are not characters (U+FFFF and the other noncharacters), or join
    /// the character before them (a combining mark first, which would
    /// join the `@` of `name@address` or the field before the name).
    #[test]
    fn blank_noncharacters_and_a_leading_combining_mark_are_refused() {
        use IdentityField::{Addr, Name};
        for (bad, c) in [
            ("\u{2800}", '\u{2800}'),
            ("node\u{2800}1", '\u{2800}'),
            ("node\u{ffff}", '\u{ffff}'),
            ("node\u{fffe}", '\u{fffe}'),
            ("n\u{fdd0}", '\u{fdd0}'),
            ("n\u{fdef}", '\u{fdef}'),
            ("n\u{1fffe}", '\u{1fffe}'),
            ("n\u{10ffff}", '\u{10ffff}'),
            // Format characters outside Default_Ignorable_Code_Point, and
            // the blank null notehead.
            ("node\u{600}", '\u{600}'),
            ("node\u{605}", '\u{605}'),
            ("node\u{6dd}", '\u{6dd}'),
            ("node\u{70f}", '\u{70f}'),
            ("node\u{890}", '\u{890}'),
            ("node\u{891}", '\u{891}'),
            ("node\u{8e2}", '\u{8e2}'),
            ("node\u{110bd}", '\u{110bd}'),
            ("node\u{110cd}", '\u{110cd}'),
            ("a\u{13430}b", '\u{13430}'),
            ("a\u{1343f}b", '\u{1343f}'),
            ("a\u{1d159}b", '\u{1d159}'),
        ] {
            for field in [Name, Addr] {
                match check_identity(field, bad) {
                    Err(e @ IdentityError::Unprintable { c: got, .. }) => {
                        assert_eq!(got, c, "{bad:?}");
                        assert!(e.to_string().is_ascii(), "shown escaped: {e}");
                    }
                    other => panic!("{bad:?}: {other:?}"),
                }
            }
            assert!(escape_unprintable(bad).is_ascii(), "{bad:?} escaped");
        }
        for (bad, c) in [
            ("\u{301}a", '\u{301}'),
            ("\u{300}", '\u{300}'),
            ("\u{36f}x", '\u{36f}'),
            ("\u{1ab0}x", '\u{1ab0}'),
            ("\u{1aff}x", '\u{1aff}'),
            ("\u{1dc0}x", '\u{1dc0}'),
            ("\u{20d0}x", '\u{20d0}'),
            ("\u{20ff}x", '\u{20ff}'),
            ("\u{fe20}x", '\u{fe20}'),
            ("\u{fe2f}x", '\u{fe2f}'),
        ] {
            for field in [Name, Addr] {
                match check_identity(field, bad) {
                    Err(e @ IdentityError::LeadingMark { c: got, .. }) => {
                        assert_eq!(got, c, "{bad:?}");
                        assert!(e.to_string().is_ascii(), "shown escaped: {e}");
                        assert!(e.to_string().contains("not allowed"), "{e}");
                    }
                    other => panic!("{bad:?}: {other:?}"),
                }
            }
        }
        // After a base character a combining mark is part of the text.
        for ok in [
            "e\u{301}",
            "n\u{303}o",
            "a\u{20d7}",
            "\u{fdcf}",
            "\u{fdf0}",
            "\u{fffd}",
        ] {
            assert_eq!(check_identity(Name, ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn a_peer_s_text_is_escaped_where_it_would_split_a_line() {
        assert_eq!(
            escape_unprintable("plain text (max 5)"),
            "plain text (max 5)"
        );
        assert_eq!(escape_unprintable("a\nb\u{1b}[2J"), r"a\nb\u{1b}[2J");
        assert_eq!(
            escape_unprintable("a\u{2028}b\u{3164}"),
            r"a\u{2028}b\u{3164}"
        );
        assert_eq!(escape_unprintable("quote \" kept"), "quote \" kept");
    }

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
