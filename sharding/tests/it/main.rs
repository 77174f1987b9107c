//! The sharding crate's integration tests, one binary (see STYLE.md).
#![allow(clippy::unwrap_used)]

mod alloc;
mod lanes;
mod region;
mod shard;

/// A transport for node `name` of the cluster `test` on a free loopback
/// port.
async fn bind(
    name: &str,
    config: transport::TransportConfig,
    stop: &tokio_util::sync::CancellationToken,
) -> transport::Transport {
    transport::Transport::bind(
        transport::LocalNode {
            cluster: "test".into(),
            settings: String::new(),
            name: name.into(),
            generation: 1,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        config,
        stop.clone(),
    )
    .await
    .unwrap()
}
