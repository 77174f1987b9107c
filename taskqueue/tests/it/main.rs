//! Integration tests of the `taskqueue` crate: the entities driven directly
//! through `sharding::Entity::handle` with a test `Context`, as a region
//! would drive them.

#![allow(clippy::unwrap_used)]

mod barrier;
mod config;
mod handoff;
mod limits;
mod mix;
mod report;
mod task;
mod task_model;
mod vectors;
mod wire;

use sharding::{Context, Entity, Handled};

/// Delivers `msg` to entity `id` on node `node`, returning the handler's
/// answer and the jobs it queued.
pub fn deliver<E: Entity>(
    node: &str,
    id: &str,
    state: &mut Option<E>,
    msg: E::Msg,
) -> (Handled<E::Reply>, Vec<sharding::Job<E::Msg>>) {
    let mut ctx = Context::new(node);
    let handled = E::handle(&mut ctx, id, state, msg);
    (handled, ctx.take_jobs())
}
mod queue;
