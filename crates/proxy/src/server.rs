//! Running the proxy: its process-level state ([`Proxy`]), and config changes: reading the
//! bootstrap, building a snapshot, putting it in force with the listeners it needs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use weft_xds::proto;

use crate::listeners::Listeners;
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::stats::Stats;

/// Sets the log filter from a directive string (`debug`, `weft_proxy=trace`).
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The running proxy: the data path's [`Shared`] state, the listeners serving it, and the
/// process's own state, each with one owner. The admin endpoint, the xDS client and the
/// config file watcher act on it.
pub struct Proxy {
    pub shared: Arc<Shared>,
    /// The listeners serving now, kept in line with the snapshot.
    pub listeners: Listeners,
    /// True once a complete config is serving (`/healthz/ready`).
    pub ready: AtomicBool,
    /// Flips to true to stop: the listeners drain, the xDS stream ends.
    pub stopping: watch::Sender<bool>,
    /// Changes the log filter (`/logging`).
    pub set_log_level: SetLogLevel,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>, drain_timeout: Duration, set_log_level: SetLogLevel) -> Proxy {
        Proxy {
            shared,
            listeners: Listeners::new(drain_timeout),
            ready: AtomicBool::new(false),
            stopping: watch::channel(false).0,
            set_log_level,
        }
    }

    /// Starts stopping (SIGTERM, `/quitquitquit`).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once stopping has started.
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|s| *s).await;
    }
}

/// Reads a bootstrap file: YAML or JSON in the proto3 JSON mapping.
pub fn read_bootstrap(path: &std::path::Path) -> Result<proto::Bootstrap, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    yaml_serde::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Builds the first snapshot, or every reason it cannot be built.
pub fn first_snapshot(bootstrap: proto::Bootstrap, stats: &Stats) -> Result<Snapshot, String> {
    Snapshot::build(bootstrap, None, stats).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("  {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Rebuilds the snapshot from `path` and swaps it in, binding new listeners first; on any
/// error the current config stays whole.
pub async fn reload(proxy: &Proxy, path: &std::path::Path) {
    let result = match read_bootstrap(path) {
        Ok(b) => build(&proxy.shared, b).await,
        Err(e) => Err(e),
    };
    let applied = result.and_then(|next| apply(proxy, next));
    let shared = &proxy.shared;
    match applied {
        Ok(()) => {
            shared.stats.config_reloads.fetch_add(1, Relaxed);
            tracing::info!(path = %path.display(), "config reloaded");
        }
        Err(e) => {
            shared.stats.config_rejections.fetch_add(1, Relaxed);
            tracing::error!(path = %path.display(), "config rejected, the previous config keeps serving: {e}");
        }
    }
}

/// Builds a snapshot after the current one on the blocking pool: compiling regexes, reading
/// certificates and building Maglev tables takes long enough that requests, which may share
/// one worker thread with the caller, must not wait behind it. The error joins every reason.
pub async fn build(shared: &Arc<Shared>, bootstrap: proto::Bootstrap) -> Result<Snapshot, String> {
    let shared = shared.clone();
    let built = tokio::task::spawn_blocking(move || {
        let current = shared.snapshot.load_full();
        Snapshot::build(bootstrap, Some(&current), &shared.stats)
    })
    .await
    .map_err(|e| format!("building the config failed: {e}"))?;
    built.map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Puts a built snapshot in force: listeners first (a bind failure refuses it), then the
/// routes and clusters, atomically. Prints each newly bound listener's address.
pub fn apply(proxy: &Proxy, next: Snapshot) -> Result<(), String> {
    let shared = &proxy.shared;
    let specs = next.listeners.clone();
    let clusters: std::collections::HashSet<Arc<str>> = next.clusters.keys().cloned().collect();
    let commit = || {
        shared.snapshot.store(Arc::new(next));
        shared.stats.retain_clusters(&clusters);
    };
    let bound = proxy
        .listeners
        .apply(shared, &specs, commit)
        .map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    for b in bound {
        // A stable line on stderr, so that scripts and tests learn the bound ports.
        eprintln!("weft-proxy: listener {} on {}", b.name, b.address);
    }
    Ok(())
}

/// The file's modification time, to pass to [`watch_config`]: read it before reading the file,
/// so that no change made after the read can go unnoticed.
pub fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads on SIGHUP and when the file's modification time changes from `last` (checked
/// every second).
pub async fn watch_config(proxy: Arc<Proxy>, path: PathBuf, mut last: Option<SystemTime>) {
    let mtime = |p: &PathBuf| modified(p);
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("SIGHUP reload unavailable: {e}");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let hup_fired = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let changed = tokio::select! {
            _ = hup_fired => true,
            _ = tick.tick() => {
                let now = mtime(&path);
                let changed = now != last;
                last = now;
                changed
            }
            () = proxy.stopped() => return,
        };
        if changed {
            reload(&proxy, &path).await;
        }
    }
}

#[cfg(test)]
impl Proxy {
    /// A proxy with an empty config, no listeners and no access log.
    pub(crate) fn for_test() -> Arc<Proxy> {
        let proxy = Proxy::new(
            Shared::for_test(),
            Duration::from_secs(1),
            Box::new(|_| Ok(())),
        );
        proxy
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Arc::new(proxy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_counters_of_removed_clusters_are_dropped() {
        let proxy = Proxy::for_test();
        let shared = &proxy.shared;
        let build = |clusters: &[&str]| {
            let yaml: String = clusters
                .iter()
                .map(|c| format!("- {{name: {c}, endpoints: [{{address: \"127.0.0.1:1\"}}]}}\n"))
                .collect();
            let bootstrap: proto::Bootstrap =
                yaml_serde::from_str(&format!("clusters:\n{yaml}")).expect("config");
            let current = shared.snapshot.load();
            Snapshot::build(bootstrap, Some(&current), &shared.stats).expect("builds")
        };
        apply(&proxy, build(&["a", "b"])).expect("applies");
        let stats = shared.stats.render();
        assert!(stats.contains("cluster.b.upstream_rq_total"), "{stats}");
        apply(&proxy, build(&["a", "c"])).expect("applies");
        let stats = shared.stats.render();
        assert!(stats.contains("cluster.a.upstream_rq_total"), "{stats}");
        assert!(stats.contains("cluster.c.upstream_rq_total"), "{stats}");
        assert!(!stats.contains("cluster.b."), "{stats}");
    }
}
