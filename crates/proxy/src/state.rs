//! What the data path shares: the config in force and the counters (access logs belong to
//! their listeners). Every
//! connection and request holds it; nothing here is about running the process (that is
//! [`crate::server::Proxy`]'s).

use arc_swap::ArcSwap;

use crate::snapshot::Snapshot;
use crate::stats::Stats;

pub struct Shared {
    /// The config in force, swapped whole by a reload or an xDS update.
    pub snapshot: ArcSwap<Snapshot>,
    pub stats: Stats,
    /// Istio's standard metrics.
    pub metrics: crate::metrics::Metrics,
}

impl Shared {
    pub fn new(snapshot: Snapshot, stats: Stats) -> Shared {
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            stats,
            metrics: crate::metrics::Metrics::default(),
        }
    }
}

#[cfg(test)]
impl Shared {
    /// An empty config.
    pub(crate) fn for_test() -> std::sync::Arc<Shared> {
        let stats = Stats::default();
        let snapshot = Snapshot::build(Default::default(), None, &stats)
            .unwrap_or_else(|e| panic!("an empty config builds: {e:?}"));
        std::sync::Arc::new(Shared::new(snapshot, stats))
    }
}
