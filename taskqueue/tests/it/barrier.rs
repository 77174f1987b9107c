//! The barrier: n distinct nodes, duplicates count once, late arrivals pass.

use sharding::Handled;
use taskqueue::{BarrierEntity, BarrierMsg, BarrierReply};

use crate::deliver;

fn arrive(state: &mut Option<BarrierEntity>, node: &str, n: u32) -> Handled<BarrierReply> {
    deliver(
        node,
        "exit",
        state,
        BarrierMsg::Arrive {
            node: node.to_owned(),
            n,
        },
    )
    .0
}

#[test]
fn releases_when_n_distinct_nodes_arrived_and_duplicates_count_once() {
    let mut state = None;
    assert_eq!(arrive(&mut state, "node-1", 3), Handled::Wait);
    assert_eq!(arrive(&mut state, "node-2", 3), Handled::Wait);
    // node-1 again (a redelivery or a retry): still two nodes.
    assert_eq!(arrive(&mut state, "node-1", 3), Handled::Wait);
    assert_eq!(state.as_ref().unwrap().arrived_count(), 2);
    assert!(!state.as_ref().unwrap().is_released());
    assert_eq!(
        arrive(&mut state, "node-3", 3),
        Handled::Reply(BarrierReply::Released { arrived: 3 })
    );
    // The region redelivers the waiting arrivals after the change: released.
    for node in ["node-1", "node-2"] {
        assert_eq!(
            arrive(&mut state, node, 3),
            Handled::Reply(BarrierReply::Released { arrived: 3 })
        );
    }
}

#[test]
fn late_arrivals_after_the_release_pass_at_once() {
    let mut state = None;
    arrive(&mut state, "node-1", 2);
    arrive(&mut state, "node-2", 2);
    assert!(state.as_ref().unwrap().is_released());
    // A latecomer passes even if it expects more nodes than arrived.
    assert_eq!(
        arrive(&mut state, "node-3", 10),
        Handled::Reply(BarrierReply::Released { arrived: 3 })
    );
    assert_eq!(
        arrive(&mut state, "node-3", 10),
        Handled::Reply(BarrierReply::Released { arrived: 3 })
    );
}

#[test]
fn n_of_zero_or_one_releases_the_first_arrival() {
    for n in [0, 1] {
        let mut state = None;
        assert_eq!(
            arrive(&mut state, "node-1", n),
            Handled::Reply(BarrierReply::Released { arrived: 1 })
        );
    }
}

#[test]
fn a_promoted_replica_keeps_the_arrivals_and_the_release() {
    let mut state = None;
    arrive(&mut state, "node-1", 2);
    let copy: BarrierEntity =
        postcard::from_bytes(&postcard::to_allocvec(state.as_ref().unwrap()).unwrap()).unwrap();
    let mut replica = Some(copy);
    assert_eq!(arrive(&mut replica, "node-1", 2), Handled::Wait);
    assert_eq!(
        arrive(&mut replica, "node-2", 2),
        Handled::Reply(BarrierReply::Released { arrived: 2 })
    );
    let copy: BarrierEntity =
        postcard::from_bytes(&postcard::to_allocvec(replica.as_ref().unwrap()).unwrap()).unwrap();
    assert!(copy.is_released());
    assert_eq!(
        copy.arrived()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["node-1", "node-2"]
    );
}

/// An arrival of a node that has since died cannot stand in for a live
/// member that has not arrived.
#[test]
fn arriving_among_named_members_waits_for_each_of_them() {
    let mut state = None;
    let among = |node: &str| BarrierMsg::ArriveAmong {
        node: node.to_owned(),
        members: vec!["node-1".into(), "node-2".into()],
    };
    // node-3 arrives (and later dies), node-1 arrives: two arrivals, but
    // node-2 has not come.
    assert_eq!(arrive(&mut state, "node-3", 5), Handled::Wait);
    assert_eq!(
        deliver("node-1", "exit", &mut state, among("node-1")).0,
        Handled::Wait
    );
    assert!(!state.as_ref().unwrap().is_released());
    assert_eq!(
        deliver("node-2", "exit", &mut state, among("node-2")).0,
        Handled::Reply(BarrierReply::Released { arrived: 3 })
    );
    assert_eq!(
        deliver("node-1", "exit", &mut state, among("node-1")).0,
        Handled::Reply(BarrierReply::Released { arrived: 3 })
    );
}
