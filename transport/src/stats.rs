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
    /// Connections closed for a framing error (oversized, truncated, bad header).
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
    /// closed or silent connection, bad magic, an undecodable message, a
    /// refused identity; a refusal for a reason, by reason) is warned at
    /// its 1st, 2nd, 4th, 8th, ... occurrence only.
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

/// Whether the `count`th occurrence of one kind of refusal is warned: the
/// 1st, 2nd, 4th, 8th, ... (so N occurrences give ⌊log2 N⌋ + 1 warnings);
/// the others are logged at debug level.
pub(crate) fn warned_at(count: u64) -> bool {
    count.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::warned_at;

    #[test]
    fn n_occurrences_are_warned_log2_n_plus_one_times() {
        for n in [1u64, 2, 3, 255, 256, 300, 10_000] {
            let warned = (1..=n).filter(|&c| warned_at(c)).count() as u64;
            assert_eq!(warned, u64::from(n.ilog2()) + 1, "{n}");
        }
        assert!(!warned_at(0));
    }
}
