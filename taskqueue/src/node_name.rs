//! Interned node names: one shared allocation per distinct name.
//!
//! A node holds up to millions of completed tasks, each naming the node that
//! computed it, while a cluster has few nodes. Each task keeps an
//! `Arc<str>` (16 bytes) to one allocation per name instead of its own
//! `String` (24 bytes plus a heap block). Names are interned both when a
//! result arrives from the worker pool and when a replica deserializes a
//! task, so owners and replicas share the same way.
//!
//! The intern table is process-wide and bounded: past
//! [`MAX_INTERNED_NAMES`] distinct names (which only a misbehaving peer could
//! cause), new names get their own allocation instead of growing it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most distinct names the intern table holds.
pub(crate) const MAX_INTERNED_NAMES: usize = 4096;

/// The process-wide intern table.
static NAMES: LazyLock<Mutex<HashSet<Arc<str>>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

thread_local! {
    /// The name this thread interned last: nearly every task names the
    /// same node (this one on an owner, a few peers on a replica), so a
    /// compare with it saves the table's lock and hash.
    static LAST: RefCell<Option<NodeName>> = const { RefCell::new(None) };
}

/// A node name shared between every task that names it.
///
/// Serialized as a plain string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeName(Arc<str>);

impl NodeName {
    /// The interned name `name`.
    pub(crate) fn intern(name: &str) -> NodeName {
        let last = LAST.with_borrow(|last| last.as_ref().filter(|n| n.as_str() == name).cloned());
        if let Some(hit) = last {
            return hit;
        }
        let interned = NodeName::intern_shared(name);
        LAST.set(Some(interned.clone()));
        interned
    }

    /// [`NodeName::intern`] through the process-wide table.
    fn intern_shared(name: &str) -> NodeName {
        // The table is a cache: a panic while holding the lock cannot leave
        // it inconsistent, so a poisoned lock is used as is.
        let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = names.get(name) {
            return NodeName(Arc::clone(shared));
        }
        let shared: Arc<str> = Arc::from(name);
        if names.len() < MAX_INTERNED_NAMES {
            names.insert(Arc::clone(&shared));
        }
        NodeName(shared)
    }

    /// The name.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` and `other` share one allocation.
    #[cfg(test)]
    pub(crate) fn shares_with(&self, other: &NodeName) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for NodeName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NodeName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeName, E> {
                Ok(NodeName::intern(v))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_interned_in_turn_each_keep_their_own_text() {
        // The per-thread shortcut must not answer one name with another.
        for name in ["node-turn-a", "node-turn-b", "node-turn-a", "node-turn-b"] {
            assert_eq!(NodeName::intern(name).as_str(), name);
        }
        let a = NodeName::intern("node-turn-a");
        let b = NodeName::intern("node-turn-b");
        assert!(a.shares_with(&NodeName::intern("node-turn-a")));
        assert!(!a.shares_with(&b));
    }

    #[test]
    fn same_name_shares_one_allocation() {
        let a = NodeName::intern("node-intern-test");
        let b = NodeName::intern("node-intern-test");
        assert!(a.shares_with(&b));
        assert_eq!(a.as_str(), "node-intern-test");
    }

    #[test]
    fn deserialized_names_are_interned() {
        let a = NodeName::intern("node-intern-serde");
        let bytes = postcard::to_allocvec(&a).unwrap();
        let b: NodeName = postcard::from_bytes(&bytes).unwrap();
        assert!(a.shares_with(&b));
    }
}
