//! Counters of what the transport did and refused, for logs and tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub dropped_on_link_failure: AtomicU64,
    pub late_replies: AtomicU64,
    pub handshakes_refused: AtomicU64,
    pub connections_refused: AtomicU64,
    pub frame_errors: AtomicU64,
    pub decode_errors: AtomicU64,
    pub unknown_channel: AtomicU64,
    pub dropped_unread: AtomicU64,
    pub dial_failures: AtomicU64,
    pub idle_closed: AtomicU64,
    pub links_down: AtomicU64,
    pub warnings_throttled: AtomicU64,
}

/// A copy of the transport's counters at one moment. All counts since bind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Frames written to sockets.
    pub frames_sent: u64,
    /// Frames read from sockets after the handshake.
    pub frames_received: u64,
    /// One-way frames (tells, replies) failed because their link broke or
    /// the peer could not be dialled (asks fail to their caller instead).
    pub dropped_on_link_failure: u64,
    /// Replies that matched no pending ask on their link: they arrived after
    /// the ask had timed out or failed (or answer what was never asked).
    pub late_replies: u64,
    /// Inbound handshakes refused (wrong magic, version, cluster; timeouts).
    pub handshakes_refused: u64,
    /// Inbound connections closed at accept because a connection cap was reached.
    pub connections_refused: u64,
    /// Connections closed for a malformed frame (oversized, bad header,
    /// wrong direction). Not a connection closed mid-frame, which is a
    /// lost connection.
    pub frame_errors: u64,
    /// Message bodies that did not decode as their channel's type.
    pub decode_errors: u64,
    /// Frames for a channel nobody registered (or whose inbox was dropped).
    pub unknown_channel: u64,
    /// Frames received and queued for an inbox but dropped unread because
    /// the inbox or the transport closed first.
    pub dropped_unread: u64,
    /// Failed dial or outbound handshake attempts.
    pub dial_failures: u64,
    /// Inbound connections closed because no byte arrived on them for
    /// `idle_timeout_ms` (and no ask on them awaited its answer).
    pub idle_closed: u64,
    /// Outbound links whose connection was lost after its handshake
    /// (closed by the peer, e.g. for idleness, or broken); each redials on
    /// its next frame.
    pub links_down: u64,
    /// Refusals and closes of a misbehaving connection logged at debug
    /// level instead of warned: each kind (a full handshake table, a
    /// closed or silent connection, bad magic, another cluster name,
    /// other settings, another version, a refused identity, a bad frame,
    /// an undecodable message), whatever values the peer sent, is warned
    /// at its 1st, 2nd, 4th, 8th, ... occurrence only.
    pub warnings_throttled: u64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            frames_sent: self.frames_sent.load(Relaxed),
            frames_received: self.frames_received.load(Relaxed),
            dropped_on_link_failure: self.dropped_on_link_failure.load(Relaxed),
            late_replies: self.late_replies.load(Relaxed),
            handshakes_refused: self.handshakes_refused.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            frame_errors: self.frame_errors.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            unknown_channel: self.unknown_channel.load(Relaxed),
            dropped_unread: self.dropped_unread.load(Relaxed),
            dial_failures: self.dial_failures.load(Relaxed),
            idle_closed: self.idle_closed.load(Relaxed),
            links_down: self.links_down.load(Relaxed),
            warnings_throttled: self.warnings_throttled.load(Relaxed),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// A kind of refusal or close of a misbehaving connection: what
/// [`crate::transport::Inner::throttle`] counts for the rate of its
/// warnings. It names what went wrong, never a value the peer sent (its
/// cluster name, settings, identity or bytes), so a stranger that varies
/// them on every connection is one kind all the same, and the counts are
/// a fixed array of [`RefusalKind::COUNT`], whatever comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    /// A connection refused at accept: the handshake table was full.
    HandshakeTableFull,
    /// A connection refused after its handshake: too many connections.
    TooManyConnections,
    /// A first frame without the protocol's magic bytes.
    BadMagic,
    /// A `Hello` of another protocol version.
    Version,
    /// A `Hello` naming another cluster.
    WrongCluster,
    /// A `Hello` with other cluster settings.
    WrongSettings,
    /// A `Hello` whose name or address breaks the identity rule.
    Identity,
    /// A handshake frame that did not decode.
    UndecodableHandshake,
    /// No handshake within the handshake timeout.
    HandshakeTimeout,
    /// A connection closed before its handshake completed.
    ClosedInHandshake,
    /// A handshake frame that broke the framing.
    BadHandshakeFrame,
    /// A refusal from the peer (not expected of a dialer).
    Refused,
    /// A connection closed for a malformed frame after its handshake.
    BadFrame,
    /// A connection closed for a message its channel could not decode.
    UndecodableMessage,
}

impl RefusalKind {
    /// Every kind, in declaration order: `ALL[k as usize] == k`.
    pub(crate) const ALL: [RefusalKind; 14] = [
        RefusalKind::HandshakeTableFull,
        RefusalKind::TooManyConnections,
        RefusalKind::BadMagic,
        RefusalKind::Version,
        RefusalKind::WrongCluster,
        RefusalKind::WrongSettings,
        RefusalKind::Identity,
        RefusalKind::UndecodableHandshake,
        RefusalKind::HandshakeTimeout,
        RefusalKind::ClosedInHandshake,
        RefusalKind::BadHandshakeFrame,
        RefusalKind::Refused,
        RefusalKind::BadFrame,
        RefusalKind::UndecodableMessage,
    ];

    /// How many kinds there are.
    pub(crate) const COUNT: usize = RefusalKind::ALL.len();

    /// This kind's index in `0..COUNT`.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Whether the `count`th occurrence of one kind of refusal is warned: the
/// 1st, 2nd, 4th, 8th, ... (so N occurrences give ⌊log2 N⌋ + 1 warnings);
/// the others are logged at debug level.
pub(crate) fn warned_at(count: u64) -> bool {
    count.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::{RefusalKind, warned_at};

    #[test]
    fn each_refusal_kind_has_its_own_count() {
        for (i, k) in RefusalKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
    }

    #[test]
    fn n_occurrences_are_warned_log2_n_plus_one_times() {
        for n in [1u64, 2, 3, 255, 256, 300, 10_000] {
            let warned = (1..=n).filter(|&c| warned_at(c)).count() as u64;
            assert_eq!(warned, u64::from(n.ilog2()) + 1, "{n}");
        }
        assert!(!warned_at(0));
    }
}
