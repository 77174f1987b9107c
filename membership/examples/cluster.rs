//! A cluster node that uses only `transport` and `membership`: it joins
//! through a seed and prints every membership event until Ctrl-C, then
//! leaves gracefully.
//!
//! ```sh
//! cargo run -p membership --example cluster -- 127.0.0.1:7000 a
//! cargo run -p membership --example cluster -- 127.0.0.1:7001 b 127.0.0.1:7000
//! cargo run -p membership --example cluster -- 127.0.0.1:7002 c 127.0.0.1:7000
//! ```
//!
//! With no argument it runs a self-contained demo: three nodes in this
//! process form a cluster, one stops without leaving and the others see it
//! suspect and then down.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use membership::{Event, MembershipConfig, MembershipHandle};
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

async fn start(
    listen: &str,
    name: &str,
    seed: Option<String>,
    stop: &CancellationToken,
) -> anyhow::Result<(Transport, MembershipHandle)> {
    let (host, _) = listen.rsplit_once(':').unwrap_or(("127.0.0.1", "0"));
    let generation = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let transport = Transport::bind(
        LocalNode {
            cluster: "membership-example".into(),
            name: name.into(),
            generation,
            listen: listen.into(),
            advertise_host: host.into(),
        },
        TransportConfig::default(),
        stop.clone(),
    )
    .await?;
    let seeds = vec![seed.unwrap_or_else(|| transport.identity().addr.clone())];
    let members = membership::start(&transport, MembershipConfig::default(), seeds, stop.clone())?;
    Ok((transport, members))
}

fn print_event(who: &str, ev: &Event) {
    match ev {
        Event::MemberUp(m) => println!("[{who}] up       {}", m.id),
        Event::MemberSuspect(m) => println!("[{who}] suspect  {}", m.id),
        Event::MemberAlive(m) => println!("[{who}] alive    {}", m.id),
        Event::MemberDown(m) => println!("[{who}] down     {}", m.id),
        Event::MemberLeft(m) => println!("[{who}] left     {}", m.id),
        other => println!("[{who}] {other:?}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stop = CancellationToken::new();
    if let [listen, name, rest @ ..] = args.as_slice() {
        let (_t, members) = start(listen, name, rest.first().cloned(), &stop).await?;
        let mut events = members.subscribe();
        members.wait_joined(Duration::from_secs(30)).await?;
        println!("[{name}] joined as {}", members.local());
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                ev = events.recv() => match ev {
                    Ok(ev) => print_event(name, &ev),
                    Err(_) => break,
                },
            }
        }
        members.leave(Duration::from_secs(5)).await?;
        stop.cancel();
        return Ok(());
    }
    // Demo: three nodes; c stops without leaving.
    let (a, ma) = start("127.0.0.1:0", "a", None, &stop).await?;
    let seed = a.identity().addr.clone();
    let stop_c = stop.child_token();
    let (_b, mb) = start("127.0.0.1:0", "b", Some(seed.clone()), &stop).await?;
    let (c, mc) = start("127.0.0.1:0", "c", Some(seed), &stop_c).await?;
    let mut events = ma.subscribe();
    for m in [&ma, &mb, &mc] {
        m.wait_for(3, Duration::from_secs(10)).await?;
    }
    println!(
        "[a] sees {} members: {:?}",
        ma.view().active_count(),
        ma.view().members.keys().collect::<Vec<_>>()
    );
    stop_c.cancel();
    c.shutdown().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        print_event("a", &ev);
        if matches!(ev, Event::MemberDown(ref m) if m.id.name == "c") {
            break;
        }
    }
    stop.cancel();
    Ok(())
}
