//! What one client holds of one type, as far as its stream knows: name -> version.
//!
//! A server with thousands of streams keeps thousands of these, and most clients hold
//! exactly a set of resources shared with many others (a sidecar's outbound clusters). So
//! the state is the shared sets the client was last brought up to ([`Held::rebase`]) plus
//! the names where it differs from them: a client in sync costs a few pointers, not a map
//! of a thousand entries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::resource::{Layers, ResourceMap, compact_version};

/// Up to this many differences are looked up by scanning.
const SCAN: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Sets whose every resource the client holds at the set's version.
    bases: Vec<Arc<ResourceMap>>,
    /// Where the client differs from `bases`, consulted first: `Some(v)` held at `v`,
    /// `None` not held.
    delta: HashMap<Arc<str>, Option<u64>>,
}

impl Held {
    /// The version the client holds of `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        match self.delta_get(name) {
            Some(v) => *v,
            None => self
                .bases
                .iter()
                .find_map(|b| b.get(name))
                .map(|r| compact_version(&r.version)),
        }
    }

    /// The difference booked for `name`. A client in sync has only its own few resources
    /// here, and a push asks for every name it holds: a short scan beats hashing then.
    fn delta_get(&self, name: &str) -> Option<&Option<u64>> {
        if self.delta.len() <= SCAN {
            self.delta
                .iter()
                .find_map(|(k, v)| (**k == *name).then_some(v))
        } else {
            self.delta.get(name)
        }
    }

    /// Books `name` as held at `version`; returns what was held before.
    pub fn insert(&mut self, name: Arc<str>, version: u64) -> Option<u64> {
        let before = self.get(&name);
        self.set(name, Some(version));
        before
    }

    /// Books `name` as not held; returns what was held before.
    pub fn remove(&mut self, name: &Arc<str>) -> Option<u64> {
        let before = self.get(name);
        if before.is_some() {
            self.set(name.clone(), None);
        }
        before
    }

    fn set(&mut self, name: Arc<str>, version: Option<u64>) {
        let base = self
            .bases
            .iter()
            .find_map(|b| b.get(&*name))
            .map(|r| compact_version(&r.version));
        if base == version {
            self.delta.remove(&*name);
        } else {
            self.delta.insert(name, version);
        }
    }

    /// Every name held, once.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.names_except(&[])
    }

    /// Every name held except those of the bases in `skip` (sets whose names the caller
    /// knows about already), once.
    pub fn names_except(&self, skip: &[Arc<ResourceMap>]) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self
            .delta
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        // Names of several bases may repeat; with one, only the delta can hold them again.
        let mut seen: Option<HashSet<&str>> = (self.bases.len() > 1).then(HashSet::new);
        for base in &self.bases {
            if skip.iter().any(|s| Arc::ptr_eq(s, base)) {
                continue;
            }
            for name in base.keys() {
                let fresh = self.delta_get(name).is_none()
                    && seen.as_mut().is_none_or(|seen| seen.insert(name));
                if fresh {
                    out.push(name.clone());
                }
            }
        }
        out
    }

    /// The client now holds exactly `layers`' resources (every one, each at its version,
    /// and nothing else): its shared sets become the bases and only its own resources are
    /// kept by name.
    pub fn rebase(&mut self, layers: Option<&Layers>) {
        // Not `clear`: that keeps the capacity, and a first push books thousands of names
        // here before they fold into a base.
        self.delta = HashMap::new();
        self.bases.clear();
        let Some(layers) = layers else {
            return;
        };
        self.bases = layers.shared().to_vec();
        for (name, r) in layers.own().iter() {
            self.set(name.clone(), Some(compact_version(&r.version)));
        }
        // A name of a later base hidden by an earlier one is held at the earlier's
        // version; `get` already looks bases up in order, and own names are in `delta`.
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.names().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use crate::resource::{CLUSTER_TYPE_URL, ProxyResources, versioned};

    fn cluster(name: &str, policy: proto::LbPolicy) -> proto::Cluster {
        proto::Cluster {
            name: name.into(),
            lb_policy: policy as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_rebased_client_differs_only_where_booked() {
        let shared: ResourceMap = ["a", "b"]
            .iter()
            .map(|n| versioned(&cluster(n, proto::LbPolicy::Random)))
            .collect();
        let shared = Arc::new(shared);
        let mut snap = ProxyResources::new();
        snap.share(CLUSTER_TYPE_URL, shared.clone());
        snap.insert(&cluster("own", proto::LbPolicy::Random));

        let mut held = Held::default();
        held.rebase(snap.layers(CLUSTER_TYPE_URL));
        let version = |n: &str| compact_version(&snap.get(CLUSTER_TYPE_URL, n).unwrap().version);
        assert_eq!(held.get("a"), Some(version("a")));
        assert_eq!(held.get("own"), Some(version("own")));
        assert_eq!(held.get("zzz"), None);
        let mut names: Vec<String> = held.names().iter().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(names, ["a", "b", "own"]);
        assert!(
            held.names_except(std::slice::from_ref(&shared))
                .iter()
                .all(|n| &**n == "own")
        );

        // Booked changes show through; undoing one restores the base's version.
        let a: Arc<str> = Arc::from("a");
        assert_eq!(held.insert(a.clone(), 7), Some(version("a")));
        assert_eq!(held.get("a"), Some(7));
        assert_eq!(held.remove(&Arc::from("b")), Some(version("b")));
        assert_eq!(held.get("b"), None);
        assert_eq!(held.len(), 2);
        held.insert(a, version("a"));
        // Only the own resource and b are held by name.
        assert_eq!(held.delta.len(), 2);
        assert_eq!(held.delta.get("b"), Some(&None));
    }
}
