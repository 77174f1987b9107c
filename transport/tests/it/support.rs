//! Shared helpers: transports on port 0 and condition polling.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

/// A transport named `name` in `cluster`, on a free loopback port.
pub async fn node(name: &str, cluster: &str) -> Transport {
    node_with(name, cluster, TransportConfig::default()).await
}

/// As [`node`], with a config.
pub async fn node_with(name: &str, cluster: &str, config: TransportConfig) -> Transport {
    node_at(name, cluster, "127.0.0.1:0", 1, config).await
}

/// A transport listening on `listen` with `generation`.
pub async fn node_at(
    name: &str,
    cluster: &str,
    listen: &str,
    generation: u64,
    config: TransportConfig,
) -> Transport {
    Transport::bind(
        LocalNode {
            cluster: cluster.into(),
            settings: String::new(),
            name: name.into(),
            generation,
            listen: listen.into(),
            advertise_host: "127.0.0.1".into(),
        },
        config,
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// Polls `cond` every few milliseconds until it holds or `within` passes;
/// panics with `what` on timeout.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
