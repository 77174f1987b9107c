//! Two transports in one process ping each other over loopback, print the
//! round trips and shut down. A starting point for using `transport` alone.
//!
//! Run: `cargo run -p transport --example ping`

use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use transport::{Channel, Lane, LocalNode, Transport, TransportConfig};

/// The messages of our one channel.
#[derive(Debug, Serialize, Deserialize)]
enum Probe {
    Ping(u32),
    Pong(u32),
}

/// The channel id both sides register (any id below `MAX_CHANNELS`).
const PROBES: u8 = 1;

/// Binds a transport named `name` on a free loopback port and answers
/// every `Ping(n)` on the probe channel with `Pong(n)`.
async fn start(name: &str) -> Result<(Transport, Channel<Probe>), Box<dyn Error>> {
    let generation = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let transport = Transport::bind(
        LocalNode {
            cluster: "example".into(),
            settings: String::new(),
            name: name.into(),
            generation,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig::default(),
        CancellationToken::new(),
    )
    .await?;
    // Probes go on the control lane, which bulk traffic never delays.
    let (probes, mut inbox) = Channel::<Probe>::register(&transport, PROBES, Lane::Control)?;
    tokio::spawn(async move {
        while let Some(received) = inbox.recv().await {
            if let (Probe::Ping(n), Some(responder)) = (received.msg, received.responder) {
                // Fails only if the asker is gone; it then sees an error.
                let _ = responder.reply_msg(&Probe::Pong(n));
            }
        }
    });
    Ok((transport, probes))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (a, probes_a) = start("a").await?;
    let (b, probes_b) = start("b").await?;
    println!("a is {}, b is {}", a.identity(), b.identity());
    for n in 0..3 {
        for (probes, to) in [(&probes_a, &b), (&probes_b, &a)] {
            let from = probes.transport().identity();
            let started = Instant::now();
            let reply: Probe = probes
                .ask(
                    &to.identity().addr,
                    &Probe::Ping(n),
                    Duration::from_millis(500),
                )
                .await?;
            println!(
                "{} -> {}: {reply:?} in {:?}",
                from.name,
                to.identity().name,
                started.elapsed()
            );
        }
    }
    a.shutdown().await;
    b.shutdown().await;
    println!(
        "a sent {} frames, b sent {}",
        a.stats().frames_sent,
        b.stats().frames_sent
    );
    Ok(())
}
