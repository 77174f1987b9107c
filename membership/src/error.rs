//! Error types. Split by what a caller does about them: a bad
//! configuration is fixed by the operator ([`ConfigError`]), oversized
//! metadata by the caller ([`MetadataError`]), a bad message is dropped
//! and counted ([`InvalidMessage`], [`WireError`]).

use thiserror::Error;

/// A [`MembershipConfig`](crate::MembershipConfig) (or the seed values it
/// was built from) breaks an invariant. Returned by `validate()` and by
/// the core's constructor.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    /// A duration that must be positive is zero (or a seed value is not a
    /// positive finite number of seconds).
    #[error("`{key}` must be a positive duration")]
    NotPositive {
        /// The configuration key.
        key: &'static str,
    },
    /// A duration is shorter than [`MIN_DURATION`](crate::config::MIN_DURATION)
    /// or longer than [`MAX_DURATION`](crate::config::MAX_DURATION) (a
    /// seed value in seconds, or a `_ms` key).
    #[error("`{key}` must be within {min:?}..={max:?} (it is {})", shown(value))]
    DurationOutOfRange {
        /// The configuration key.
        key: &'static str,
        /// The value given (saturated at `Duration::MAX` when it does not
        /// fit one).
        value: std::time::Duration,
        /// Shortest allowed value.
        min: std::time::Duration,
        /// Longest allowed value.
        max: std::time::Duration,
    },
    /// A number that may have a fraction (a multiplier) is outside its
    /// allowed range, or is not a number.
    #[error("`{key}` = {value} is outside {min}..={max}")]
    NumberOutOfRange {
        /// The configuration key.
        key: &'static str,
        /// The value given.
        value: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// A count is outside its allowed range.
    #[error("`{key}` = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The configuration key.
        key: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// Two keys contradict each other: `key` must stay below `other`.
    #[error(
        "`{key}` ({}) must be smaller than `{other}` ({})",
        shown(value),
        shown(limit)
    )]
    MustBeSmaller {
        /// The key that is too large.
        key: &'static str,
        /// The key it must stay below.
        other: &'static str,
        /// `key`'s value.
        value: std::time::Duration,
        /// `other`'s value.
        limit: std::time::Duration,
    },
    /// Two keys contradict each other: `key` must not exceed `other`.
    #[error(
        "`{key}` ({}) must be at most `{other}` ({})",
        shown(value),
        shown(limit)
    )]
    MustNotExceed {
        /// The key that is too large.
        key: &'static str,
        /// The key it must not exceed.
        other: &'static str,
        /// `key`'s value.
        value: std::time::Duration,
        /// `other`'s value.
        limit: std::time::Duration,
    },
    /// The local member's initial metadata exceeds `max_metadata_bytes`.
    #[error("metadata is {len} bytes, the limit is {max} bytes (max_metadata_bytes)")]
    MetadataTooLarge {
        /// Bytes given.
        len: usize,
        /// The configured bound.
        max: usize,
    },
    /// The local member's identity is unusable (empty or too long name,
    /// too long address).
    #[error("invalid local identity: {0}")]
    InvalidIdentity(#[from] InvalidMessage),
}

/// A duration as an error shows it: `100ns`, `86401s`, or "longer than
/// any duration" for one that does not fit a `Duration` (1e300 seconds).
fn shown(d: &std::time::Duration) -> String {
    if *d == std::time::Duration::MAX {
        "longer than any duration".to_owned()
    } else {
        format!("{d:?}")
    }
}

impl ConfigError {
    /// The configuration key the error is about, when it names one: a
    /// dotted seed key (`cluster.gossip.interval`) or a bare key of
    /// [`MembershipConfig`](crate::MembershipConfig) (`probe_timeout_ms`).
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ConfigError::NotPositive { key }
            | ConfigError::DurationOutOfRange { key, .. }
            | ConfigError::NumberOutOfRange { key, .. }
            | ConfigError::OutOfRange { key, .. }
            | ConfigError::MustBeSmaller { key, .. }
            | ConfigError::MustNotExceed { key, .. } => Some(key),
            ConfigError::MetadataTooLarge { .. } => Some("max_metadata_bytes"),
            ConfigError::InvalidIdentity(_) => None,
        }
    }
}

/// Metadata given to `set_metadata` (or the constructor) is too large.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetadataError {
    /// More than `max_metadata_bytes`.
    #[error("metadata is {len} bytes, the limit is {max} bytes (max_metadata_bytes)")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The configured bound.
        max: usize,
    },
    /// The member has left, was superseded or failed to join; its record
    /// no longer changes.
    #[error("the member is no longer part of the cluster")]
    NotRunning,
}

/// A received message breaks a bound; it is dropped, counted and logged
/// at `warn`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidMessage {
    /// A member name is empty.
    #[error("empty member name")]
    EmptyName,
    /// A member's advertised address is empty.
    #[error("empty member address")]
    EmptyAddr,
    /// A member name is longer than `MAX_NAME_BYTES`.
    #[error("member name of {len} bytes exceeds {max}")]
    NameTooLong {
        /// Bytes received.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An address is longer than `MAX_ADDR_BYTES`.
    #[error("address of {len} bytes exceeds {max}")]
    AddrTooLong {
        /// Bytes received.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Metadata larger than `max_metadata_bytes`.
    #[error("metadata of {len} bytes exceeds {max} (this node's max_metadata_bytes)")]
    MetadataTooLarge {
        /// Bytes received.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// More updates or state entries than allowed.
    #[error("{len} updates exceed {max}")]
    TooManyUpdates {
        /// Entries received.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An incarnation above `MAX_INCARNATION` (2^62): no real life gets
    /// there, and refuting it could overflow.
    #[error("incarnation {incarnation} exceeds {max}")]
    IncarnationTooLarge {
        /// The incarnation received.
        incarnation: u64,
        /// The bound.
        max: u64,
    },
    /// A member name (a member's, an accuser's) holds whitespace, a
    /// control, invisible or blank character, a noncharacter, `@` or `#`, which would split,
    /// shift or hide the fields of the log lines it shows in (the
    /// transport's identity rule). The name is shown escaped.
    #[error(
        "member name {name} holds {c}: whitespace, control and invisible characters, '@' and '#' are not allowed",
        name = escaped(.name),
        c = escaped(.c)
    )]
    NameChar {
        /// The name received.
        name: String,
        /// The first character refused.
        c: char,
    },
    /// An address holds whitespace, a control or invisible character,
    /// `@` or `#` (the transport's identity rule). Shown escaped.
    #[error(
        "address {addr} holds {c}: whitespace, control and invisible characters, '@' and '#' are not allowed",
        addr = escaped(.addr),
        c = escaped(.c)
    )]
    AddrChar {
        /// The address received.
        addr: String,
        /// The first character refused.
        c: char,
    },
    /// A member name starts with a combining mark, which would join the
    /// character before it in a log line (the transport's identity rule).
    /// Shown escaped.
    #[error(
        "member name {name} starts with {c}: a combining mark is not allowed first (it would join the character before it in a log line)",
        name = escaped(.name),
        c = escaped(.c)
    )]
    NameLeadingMark {
        /// The name received.
        name: String,
        /// The combining mark it starts with.
        c: char,
    },
    /// An address starts with a combining mark (the transport's identity
    /// rule). Shown escaped.
    #[error(
        "address {addr} starts with {c}: a combining mark is not allowed first (it would join the character before it in a log line)",
        addr = escaped(.addr),
        c = escaped(.c)
    )]
    AddrLeadingMark {
        /// The address received.
        addr: String,
        /// The combining mark it starts with.
        c: char,
    },
}

/// `v` as `{:?}` shows it, with each character the identity rule refuses
/// that `{:?}` leaves as is (the braille blank, a Hangul filler) escaped
/// as `\u{..}`, the space and `@` and `#` excepted: an error shows what
/// was refused.
fn escaped<T: std::fmt::Debug + ?Sized>(v: &T) -> String {
    let debug = format!("{v:?}");
    let escape = |c: char| {
        c != ' ' && !matches!(c, '@' | '#') && crate::swim::message::refused_in_identity(c)
    };
    if !debug.chars().any(escape) {
        return debug;
    }
    let mut out = String::with_capacity(debug.len() + 8);
    for c in debug.chars() {
        if escape(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Encoding or decoding a [`Message`](crate::swim::Message) failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// postcard could not encode the message.
    #[error("encode: {0}")]
    Encode(postcard::Error),
    /// The bytes are not a valid message.
    #[error("decode: {0}")]
    Decode(postcard::Error),
    /// A valid message was followed by extra bytes.
    #[error("{len} trailing bytes after the message")]
    TrailingBytes {
        /// Extra bytes.
        len: usize,
    },
}

/// Result with [`ConfigError`] as the default error.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;
