//! Error types of the transport.
//!
//! Split by what the caller does about them: [`BindError`] stops a node from
//! starting, [`SendError`] is a refusal to queue (retry later or give up),
//! [`AskError`] is a failed request/reply, [`FrameError`] and
//! [`HandshakeError`] describe a misbehaving connection (which is closed; the
//! node keeps serving others).

use std::io;

/// `Result` with this crate's default error.
pub type Result<T, E = BindError> = std::result::Result<T, E>;

/// Why [`crate::Transport::bind`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The listener could not bind the address (in use, not local, bad syntax).
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The `host:port` that was asked for.
        addr: String,
        /// The operating system's error. Shown in the message, and so not
        /// a `source()`: a chain printed in full would show it twice.
        error: io::Error,
    },
    /// The configuration breaks an invariant (named in the message).
    #[error("invalid transport config: {0}")]
    Config(String),
    /// This node's own name or advertised address breaks the identity
    /// rule every peer checks at the handshake ([`crate::check_identity`]):
    /// peers would refuse it.
    #[error("invalid local identity: {0}")]
    Identity(IdentityError),
}

// Not `#[from]`, which would also make the identity error the source, and
// a report that prints the chain (anyhow's) would say it twice.
impl From<IdentityError> for BindError {
    fn from(e: IdentityError) -> BindError {
        BindError::Identity(e)
    }
}

/// Which part of a node's identity ([`crate::NodeId`]) an [`IdentityError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityField {
    /// The node's name.
    Name,
    /// The node's advertised `host:port`.
    Addr,
}

impl std::fmt::Display for IdentityField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdentityField::Name => "name",
            IdentityField::Addr => "address",
        })
    }
}

/// Why a node name or advertised address breaks the identity rule
/// ([`crate::check_identity`]). The offending value is shown escaped
/// (`{:?}`, and each character [`crate::is_unprintable`] refuses that
/// `{:?}` shows as is, such as the braille blank, as `\u{..}`), so a
/// hostile one cannot forge log lines and a blank one is seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The name or address is empty.
    #[error("node {field} is empty")]
    Empty {
        /// Which part.
        field: IdentityField,
    },
    /// Longer than [`crate::MAX_NAME_BYTES`] or [`crate::MAX_ADDR_BYTES`].
    #[error("node {field} of {len} bytes exceeds {max}")]
    TooLong {
        /// Which part.
        field: IdentityField,
        /// Its length in bytes.
        len: usize,
        /// The bound, in bytes.
        max: usize,
    },
    /// It holds whitespace, a control character (a newline, an ANSI
    /// escape) or an invisible one: each would split, shift or hide the
    /// fields of the log lines it is shown in.
    #[error(
        "node {field} {value} holds {c}: whitespace, control and invisible characters are not allowed",
        value = shown(.value),
        c = shown(.c)
    )]
    Unprintable {
        /// Which part.
        field: IdentityField,
        /// The whole value.
        value: String,
        /// The first offending character.
        c: char,
    },
    /// It starts with a combining mark ([`crate::is_combining_mark`]),
    /// which would join the character before it in a log line (the `@`
    /// of `name@address`, or the field before the name).
    #[error(
        "node {field} {value} starts with {c}: a combining mark is not allowed first (it would join the character before it in a log line)",
        value = shown(.value),
        c = shown(.c)
    )]
    LeadingMark {
        /// Which part.
        field: IdentityField,
        /// The whole value.
        value: String,
        /// The combining mark it starts with.
        c: char,
    },
    /// It holds `@` or `#`, which separate the parts of an identity as
    /// logged (`name@address#generation`).
    #[error(
        "node {field} {value} holds {c:?}: '@' and '#' are not allowed (members show as name@address#generation)",
        value = shown(.value)
    )]
    Separator {
        /// Which part.
        field: IdentityField,
        /// The whole value.
        value: String,
        /// The first offending character.
        c: char,
    },
}

/// Why a frame could not be queued for a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer's outbound queue holds `capacity` frames already: the peer is
    /// slow or unreachable. Nothing was queued; retry later or use an `await`ing send.
    #[error("outbound queue to {peer} is full ({capacity} frames)")]
    QueueFull {
        /// The peer's advertised address.
        peer: String,
        /// The queue's capacity in frames (`[transport] outbound_queue_frames`).
        capacity: usize,
    },
    /// The body is longer than the peer would accept (`max_frame_bytes`).
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Encoded frame length in bytes.
        len: usize,
        /// `[transport] max_frame_bytes`.
        max: usize,
    },
    /// The message could not be encoded (a serde error from postcard).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The transport is shutting down.
    #[error("transport is shut down")]
    Shutdown,
}

impl From<FrameError> for SendError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => SendError::TooLarge {
                len: usize::try_from(len).unwrap_or(usize::MAX),
                max,
            },
            other => SendError::Encode(other.to_string()),
        }
    }
}

/// Why an ask got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// No reply within the ask's timeout. The request may or may not have
    /// been applied by the peer.
    #[error("no reply from {peer} within {timeout_ms} ms")]
    Timeout {
        /// The peer's advertised address.
        peer: String,
        /// The timeout that passed, in ms.
        timeout_ms: u64,
    },
    /// The link to the peer failed (dial refused, connection reset, handshake
    /// refused) before a reply came.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer's advertised address.
        peer: String,
        /// What failed, for logs.
        reason: String,
    },
    /// The peer received the ask but rejected it (no handler for its channel,
    /// handler dropped the request, inbox closed).
    #[error("peer {peer} rejected the request: {reason}")]
    Rejected {
        /// The peer's advertised address.
        peer: String,
        /// The peer's reason.
        reason: String,
    },
    /// The request could not be queued.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The reply did not decode as the expected type.
    #[error("cannot decode reply from {peer}: {reason}")]
    Decode {
        /// The peer's advertised address.
        peer: String,
        /// The postcard error.
        reason: String,
    },
}

/// A framing error on one connection; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced more than the maximum; nothing was allocated.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced length in bytes.
        len: u64,
        /// `[transport] max_frame_bytes`.
        max: usize,
    },
    /// The connection ended in the middle of a frame: the peer closed it
    /// with a frame on its way (e.g. a peer that gave up on this node
    /// while this node was stopped). A lost connection, not malformed
    /// input: the readers log it at debug or info, never as a bad frame,
    /// and do not count it in `frame_errors`.
    #[error("connection closed mid-frame ({buffered} bytes of it received)")]
    Truncated {
        /// Bytes of the partial frame (length prefix included) that had arrived.
        buffered: usize,
    },
    /// The frame's header did not decode.
    #[error("undecodable frame header: {0}")]
    Header(String),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The first frame did not start with the protocol's magic bytes (not a
    /// casty node: an HTTP client, a port scanner, random bytes).
    #[error("bad magic bytes 0x{hex} ({text:?} as text): not a casty peer", hex = as_hex(.0), text = as_text(.0))]
    BadMagic([u8; 4]),
    /// The peer speaks another protocol version: its `Hello` says so,
    /// whether or not the rest of it decodes as this version's.
    #[error("protocol version {theirs} not supported (this node speaks {ours})")]
    Version {
        /// The peer's version.
        theirs: u16,
        /// This build's [`crate::PROTOCOL_VERSION`].
        ours: u16,
    },
    /// The peer belongs to another cluster (`[system] name`).
    #[error(
        "the dialing node's cluster name {theirs:?} does not match the listening node's {ours:?}"
    )]
    WrongCluster {
        /// The peer's cluster name.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The peer names our cluster but runs it with other settings that
    /// every node must share ([`crate::LocalNode::settings`], e.g. the
    /// shard count): let in, it would route to owners that do not agree.
    #[error(
        "the dialing node runs cluster {cluster:?} with settings {theirs:?}, the listening node with {ours:?}: every node of a cluster must share them"
    )]
    WrongSettings {
        /// The cluster name both present.
        cluster: String,
        /// The peer's settings.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The peer refused our handshake; its reason.
    #[error("refused by peer: {0}")]
    Refused(String),
    /// The handshake frame did not decode.
    #[error("undecodable handshake: {0}")]
    Decode(String),
    /// No handshake within `[transport] handshake_timeout_ms`.
    #[error("no handshake within {0} ms")]
    Timeout(u64),
    /// The peer's name or advertised address breaks the identity rule
    /// ([`crate::check_identity`]): a dialer's in its [`crate::handshake::Hello`],
    /// an acceptor's in its answer.
    #[error("the peer's identity is refused: {0}")]
    Identity(IdentityError),
    /// The connection closed before the handshake completed.
    #[error("connection closed during the handshake")]
    Closed,
    /// Framing failed during the handshake.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

// Not `#[from]`: see `BindError`'s `From<IdentityError>`.
impl From<IdentityError> for HandshakeError {
    fn from(e: IdentityError) -> HandshakeError {
        HandshakeError::Identity(e)
    }
}

/// `bytes` in hex, two lowercase digits each, nothing between (`58585858`).
fn as_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` as ASCII text, each byte that is not printable shown as `.`.
fn as_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect()
}

/// `v` as `{:?}` shows it, with each character [`crate::is_unprintable`]
/// refuses that `{:?}` leaves as is (the braille blank, a Hangul filler)
/// escaped as `\u{..}`: an identity error shows what was refused.
fn shown<T: std::fmt::Debug + ?Sized>(v: &T) -> String {
    crate::handshake::escape_unprintable(&format!("{v:?}"))
}
