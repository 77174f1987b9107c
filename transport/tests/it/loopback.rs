use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use transport::{AskError, Channel, Lane, LocalNode, Transport, TransportConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Pong(u64),
}

async fn node(name: &str, cluster: &str) -> Transport {
    Transport::bind(
        LocalNode {
            cluster: cluster.into(),
            name: name.into(),
            generation: 1,
            listen: "127.0.0.1:0".into(),
            advertise_host: "127.0.0.1".into(),
        },
        TransportConfig::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn tell_and_ask_between_two_transports() {
    let a = node("a", "c").await;
    let b = node("b", "c").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 5, Lane::Bulk).unwrap();
    let (_cb, mut ib) = Channel::<Msg>::register(&b, 5, Lane::Bulk).unwrap();
    let b_addr = b.identity().addr.clone();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(r) = ib.recv().await {
            assert_eq!(r.from.name, "a");
            match (r.msg, r.responder) {
                (Msg::Ping(n), Some(resp)) => {
                    resp.reply_msg(&Msg::Pong(n)).unwrap();
                    break;
                }
                (Msg::Ping(n), None) => seen.push(n),
                (m, _) => panic!("unexpected {m:?}"),
            }
        }
        seen
    });
    for i in 0..1000 {
        ca.tell(&b_addr, &Msg::Ping(i)).unwrap();
    }
    let reply: Msg = ca
        .ask(&b_addr, &Msg::Ping(7), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, Msg::Pong(7));
    let seen = server.await.unwrap();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn wrong_cluster_is_refused_with_reason() {
    let a = node("a", "one").await;
    let b = node("b", "two").await;
    let (ca, _ia) = Channel::<Msg>::register(&a, 5, Lane::Bulk).unwrap();
    let (_cb, _ib) = Channel::<Msg>::register(&b, 5, Lane::Bulk).unwrap();
    let err = ca
        .ask::<Msg>(&b.identity().addr, &Msg::Ping(1), Duration::from_secs(5))
        .await
        .unwrap_err();
    match err {
        AskError::Unreachable { reason, .. } => {
            assert!(reason.contains("cluster name"), "reason: {reason}")
        }
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(b.stats().handshakes_refused, 1);
}
