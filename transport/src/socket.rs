//! Options every connection gets, dialled or accepted.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use crate::config::TransportConfig;

/// Sets `TCP_NODELAY` (frames leave at once; the transport batches them
/// itself) and, when `tcp_user_timeout_ms` is not 0, bounds how long a
/// connection survives a peer that stopped acknowledging: a link cut by a
/// firewall that drops packets, or a host that vanished, otherwise keeps
/// "working" for TCP's retransmission timeout (about 15 minutes on Linux)
/// and only then breaks and redials.
///
/// - `TCP_USER_TIMEOUT` (Linux, RFC 5482): data unacknowledged for that long
///   closes the connection.
/// - TCP keepalive, for connections with nothing to send: the first probe
///   after half of it idle, then one every sixth, three probes; so a silent
///   dead peer is noticed within about the same time.
///
/// Failures are ignored (the options are an optimisation of failure
/// detection, not needed for correctness) and logged at `debug`.
pub(crate) fn tune(stream: &TcpStream, config: &TransportConfig) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    if config.tcp_user_timeout_ms == 0 {
        return;
    }
    let timeout = Duration::from_millis(config.tcp_user_timeout_ms);
    let sock = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time((timeout / 2).max(Duration::from_secs(1)))
        .with_interval((timeout / 6).max(Duration::from_secs(1)))
        .with_retries(3);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Err(e) = sock.set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn options_are_set_on_both_ends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialled, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (dialled, (accepted, _)) = (dialled.unwrap(), accepted.unwrap());
        let config = TransportConfig {
            tcp_user_timeout_ms: 6_000,
            ..TransportConfig::default()
        };
        for s in [&dialled, &accepted] {
            tune(s, &config);
            let sock = SockRef::from(s);
            assert!(s.nodelay().unwrap());
            assert!(sock.keepalive().unwrap());
            assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(3));
            assert_eq!(
                sock.tcp_keepalive_interval().unwrap(),
                Duration::from_secs(1)
            );
            assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
            #[cfg(target_os = "linux")]
            assert_eq!(
                sock.tcp_user_timeout().unwrap(),
                Some(Duration::from_secs(6))
            );
        }
        let off = TransportConfig {
            tcp_user_timeout_ms: 0,
            ..TransportConfig::default()
        };
        let (d2, a2) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let d2 = d2.unwrap();
        drop(a2);
        tune(&d2, &off);
        assert!(d2.nodelay().unwrap());
        assert!(!SockRef::from(&d2).keepalive().unwrap());
    }
}
