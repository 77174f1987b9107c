//! Sharded counters across three nodes in one process: each node runs a
//! transport, membership and a counter region; increments and reads go
//! through any node and land on the counter's owner.
//!
//! Run with `cargo run -p sharding --example counter`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sharding::{Context, Entity, Handled, Region, RegionConfig, RegionHandle, WorkerPool};
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

/// A counter entity: its state is its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counter(u64);

/// Messages to a counter.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum CounterMsg {
    /// Adds to the counter (creating it) and answers the new value.
    Add(u64),
    /// Answers the value; 0 for a counter never incremented (not created).
    Get,
}

impl Entity for Counter {
    type Msg = CounterMsg;
    type Reply = u64;
    const TYPE_NAME: &'static str = "counter";

    fn handle(
        _: &mut Context<CounterMsg>,
        _: &str,
        state: &mut Option<Self>,
        msg: CounterMsg,
    ) -> Handled<u64> {
        match msg {
            CounterMsg::Add(n) => {
                let c = state.get_or_insert(Counter(0));
                c.0 += n;
                Handled::Reply(c.0)
            }
            CounterMsg::Get => Handled::Reply(state.as_ref().map_or(0, |c| c.0)),
        }
    }
}

/// Starts one node: transport, membership joining `seed`, a counter region.
async fn node(
    name: &str,
    seed: Option<String>,
    stop: &CancellationToken,
) -> anyhow::Result<(Transport, RegionHandle<Counter>)> {
    // What every node must share goes into the handshake: a node with
    // another shard count or replication factor is refused at once instead
    // of routing messages where the others do not.
    let config = RegionConfig::default();
    let transport = Transport::bind(
        LocalNode {
            cluster: "counter-example".into(),
            settings: config.cluster_settings(),
            name: name.into(),
            generation: 1,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig::default(),
        stop.clone(),
    )
    .await?;
    let seeds = vec![seed.unwrap_or_else(|| transport.identity().addr.clone())];
    let members = membership::start(&transport, Default::default(), seeds, stop.clone())?;
    members.wait_joined(Duration::from_secs(10)).await?;
    // The region follows the active members of the membership view.
    let rx = sharding::follow_membership(&members, stop.clone());
    let region = Region::start::<Counter>(
        &transport,
        20,
        config,
        rx,
        WorkerPool::new(1, 0),
        stop.clone(),
    )?;
    Ok((transport, region))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let (a, ra) = node("a", None, &stop).await?;
    let seed = a.identity().addr.clone();
    let (_b, rb) = node("b", Some(seed.clone()), &stop).await?;
    let (_c, rc) = node("c", Some(seed), &stop).await?;
    let regions = [ra, rb, rc];
    // Wait until every node sees all three members.
    for r in &regions {
        while r.routing().members.len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let t = Duration::from_secs(5);
    for i in 0..30u64 {
        let id = format!("counter-{}", i % 10);
        regions[(i % 3) as usize]
            .ask(&id, CounterMsg::Add(1), t)
            .await?;
    }
    for i in 0..10 {
        let id = format!("counter-{i}");
        let owner = regions[0]
            .routing()
            .owner_of(&id)
            .map(|n| n.name.clone())
            .unwrap_or_default();
        let values = [
            regions[0].ask(&id, CounterMsg::Get, t).await?,
            regions[1].ask(&id, CounterMsg::Get, t).await?,
            regions[2].ask(&id, CounterMsg::Get, t).await?,
        ];
        println!("{id} on {owner}: read {values:?} from a, b, c");
    }
    stop.cancel();
    Ok(())
}
