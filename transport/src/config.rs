//! Transport configuration: the `[transport]` section of `casty.toml`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Limits and timers of the transport. Every field has a default; see
/// [`TransportConfig::validate`] for the invariants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Largest frame accepted or sent, in bytes, length prefix excluded
    /// (default 8 MiB). A longer length prefix closes the connection before
    /// anything is allocated. Range 1 KiB ..= 1 GiB.
    pub max_frame_bytes: usize,
    /// Frames queued per peer and lane (default 65,536; at least 1). Past
    /// it a `tell` is refused with [`crate::SendError::QueueFull`]; a
    /// `send` or an `ask` waits for room.
    pub outbound_queue_frames: usize,
    /// Bytes queued per peer and lane, bounded as `outbound_queue_frames`
    /// is (default 64 MiB; at least 1). A frame is always accepted into an
    /// empty queue, so one frame of up to `max_frame_bytes` always fits.
    pub outbound_queue_bytes: usize,
    /// Frames queued per channel on the receiving side before the connection
    /// stops reading (TCP back-pressure; default 8,192).
    pub inbound_queue_frames: usize,
    /// Message bytes queued per channel on the receiving side before the
    /// connections stop reading, as for `inbound_queue_frames` (default
    /// 64 MiB; a typed channel's queue may exceed either bound by one read's
    /// worth of frames).
    pub inbound_queue_bytes: usize,
    /// Largest write handed to one syscall, in bytes (default 256 KiB); queued
    /// frames beyond it go out in further writes. Write buffers up to this
    /// size are kept for reuse.
    pub max_batch_bytes: usize,
    /// Dial timeout, in ms (default 2,000).
    pub connect_timeout_ms: u64,
    /// Time a new connection has to complete its handshake, in ms (default 2,000).
    pub handshake_timeout_ms: u64,
    /// First reconnect delay after a failed dial, in ms (default 50).
    pub reconnect_backoff_min_ms: u64,
    /// Largest reconnect delay, in ms (default 2,000). Each delay is
    /// doubled from the minimum, capped here, then jittered to 50–100 %.
    pub reconnect_backoff_max_ms: u64,
    /// How long shutdown waits for queued frames to be written, in ms (default 1,000).
    pub flush_deadline_ms: u64,
    /// Inbound connections allowed to be in their handshake at once; more are
    /// closed at accept with a `warn` (default 256).
    pub max_handshaking_connections: usize,
    /// Inbound connections allowed at once after their handshake (default 4,096).
    pub max_inbound_connections: usize,
    /// Time an inbound connection may stay silent after its handshake, in
    /// ms (default 60,000; 0 never closes a silent connection). A
    /// connection from which no byte arrived for this long, and that has
    /// no ask waiting for its answer, is closed: replies already queued are
    /// written, then the write side is closed (FIN); frames the dialer sent
    /// before it noticed are still read and delivered for up to
    /// `flush_deadline_ms`. Counted in `idle_closed`, logged at `info`. The
    /// dialer's link redials on its next frame. Frees the slots (and file
    /// descriptors) of peers that vanished without closing, and of clients
    /// that handshake and then hold connections open.
    pub idle_timeout_ms: u64,
    /// How long a connection survives a peer that stopped acknowledging,
    /// in ms (default 10,000; 0 leaves the system's settings). Sets
    /// `TCP_USER_TIMEOUT` (Linux) to it and TCP keepalive to probe after
    /// half of it idle, every sixth, three times; the broken connection is
    /// then redialled as any other. Without it, a link cut by a firewall
    /// that drops packets stays "up" for TCP's retransmission timeout
    /// (about 15 minutes).
    pub tcp_user_timeout_ms: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: 8 * 1024 * 1024,
            outbound_queue_frames: 65_536,
            outbound_queue_bytes: 64 * 1024 * 1024,
            inbound_queue_frames: 8_192,
            inbound_queue_bytes: 64 * 1024 * 1024,
            max_batch_bytes: 256 * 1024,
            connect_timeout_ms: 2_000,
            handshake_timeout_ms: 2_000,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 2_000,
            flush_deadline_ms: 1_000,
            max_handshaking_connections: 256,
            max_inbound_connections: 4_096,
            idle_timeout_ms: 60_000,
            tcp_user_timeout_ms: 10_000,
        }
    }
}

impl TransportConfig {
    /// Checks the invariants.
    ///
    /// # Errors
    /// A message naming the offending key when a value is out of range:
    /// `max_frame_bytes` in 1 KiB ..= 1 GiB, queues and batch size non-zero,
    /// timeouts non-zero (`idle_timeout_ms` and `tcp_user_timeout_ms` may
    /// be 0: disabled, the system's), backoff min ≤ max.
    pub fn validate(&self) -> Result<(), String> {
        if !(1024..=(1 << 30)).contains(&self.max_frame_bytes) {
            return Err(format!(
                "transport.max_frame_bytes = {} is outside 1024 ..= 1073741824",
                self.max_frame_bytes
            ));
        }
        for (key, v) in [
            ("outbound_queue_frames", self.outbound_queue_frames),
            ("outbound_queue_bytes", self.outbound_queue_bytes),
            ("inbound_queue_frames", self.inbound_queue_frames),
            ("inbound_queue_bytes", self.inbound_queue_bytes),
            ("max_batch_bytes", self.max_batch_bytes),
            (
                "max_handshaking_connections",
                self.max_handshaking_connections,
            ),
            ("max_inbound_connections", self.max_inbound_connections),
        ] {
            if v == 0 {
                return Err(format!("transport.{key} must be at least 1"));
            }
        }
        for (key, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("reconnect_backoff_min_ms", self.reconnect_backoff_min_ms),
            ("flush_deadline_ms", self.flush_deadline_ms),
        ] {
            if v == 0 {
                return Err(format!("transport.{key} must be at least 1"));
            }
        }
        if self.reconnect_backoff_min_ms > self.reconnect_backoff_max_ms {
            return Err(format!(
                "transport.reconnect_backoff_min_ms ({}) exceeds transport.reconnect_backoff_max_ms ({})",
                self.reconnect_backoff_min_ms, self.reconnect_backoff_max_ms
            ));
        }
        Ok(())
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// `idle_timeout_ms` as a duration; `None` when 0 (disabled).
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }
}
