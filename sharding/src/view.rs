//! Feeding a region from `membership`: the view as a [`MemberMap`].

use membership::MembershipHandle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use transport::NodeId;

use crate::region::MemberMap;

/// Follows `members`' view and publishes the members that hold shards
/// (alive and suspect, by name) for [`crate::Region::start`]. The map is
/// empty until this node has joined, so a node that has not yet seen the
/// cluster never serves shards as if it were alone. Stops with `stop`.
pub fn follow_membership(
    members: &MembershipHandle,
    stop: CancellationToken,
) -> watch::Receiver<MemberMap> {
    let mut view = members.watch_view();
    let mut status = members.watch_status();
    // Until this node has joined, it holds no shards: a node that has not
    // yet seen the cluster must not serve shards as if it were alone.
    let to_map = |v: &membership::View, s: membership::Status| -> MemberMap {
        if !matches!(s, membership::Status::Joined) {
            return MemberMap::new();
        }
        v.active()
            .map(|m| {
                (
                    m.id.name.clone(),
                    NodeId {
                        name: m.id.name.clone(),
                        addr: m.id.addr.clone(),
                        generation: m.id.generation,
                    },
                )
            })
            .collect()
    };
    let initial = to_map(&view.borrow_and_update(), *status.borrow_and_update());
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = view.changed() => if r.is_err() { return },
                r = status.changed() => if r.is_err() { return },
            }
            let map = to_map(&view.borrow_and_update(), *status.borrow_and_update());
            tx.send_if_modified(|m| {
                if *m != map {
                    *m = map;
                    true
                } else {
                    false
                }
            });
        }
    });
    rx
}
