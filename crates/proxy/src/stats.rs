//! Counters for the admin `/stats` page. Plain atomics, looked up when config is built, never
//! by name per request. A cluster's counters outlive config reloads (keyed by name).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Proxy-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub downstream_cx_total: AtomicU64,
    pub downstream_cx_active: AtomicU64,
    pub downstream_rq_total: AtomicU64,
    pub downstream_rq_active: AtomicU64,
    /// Responses by class: index 0 = 1xx ... 4 = 5xx.
    pub downstream_rq_xx: [AtomicU64; 5],
    /// Local replies by response flag code.
    local_replies: Mutex<BTreeMap<&'static str, u64>>,
    clusters: Mutex<BTreeMap<Arc<str>, Arc<ClusterStats>>>,
    pub config_reloads: AtomicU64,
    pub config_rejections: AtomicU64,
    /// Downstream TLS handshakes that completed, and those that failed (any reason, timeouts
    /// included), with the failures of client certificate verification apart (Envoy's
    /// `ssl.*` counters).
    pub ssl_handshake: AtomicU64,
    pub ssl_connection_error: AtomicU64,
    pub ssl_fail_verify_no_cert: AtomicU64,
    pub ssl_fail_verify_error: AtomicU64,
    pub ssl_fail_verify_san: AtomicU64,
    /// Authorization decisions (Envoy's `rbac.allowed` / `rbac.denied`), HTTP and TCP.
    pub rbac_allowed: AtomicU64,
    pub rbac_denied: AtomicU64,
    /// JWT checks (Envoy's `jwt_authn.allowed` / `jwt_authn.denied`).
    pub jwt_authn_allowed: AtomicU64,
    pub jwt_authn_denied: AtomicU64,
    /// DNS queries received by `dns` listeners, those forwarded upstream (one per upstream
    /// asked), and those no upstream answered (SERVFAIL): Istio's agent's `dns_requests`,
    /// `dns_upstream_requests` and `dns_upstream_failures`.
    pub dns_requests: AtomicU64,
    pub dns_upstream_requests: AtomicU64,
    pub dns_upstream_failures: AtomicU64,
    /// 1 while the xDS stream is up.
    pub xds_connected: AtomicU64,
    /// The version of each xDS type in force (type URL -> version).
    xds_versions: Mutex<BTreeMap<String, String>>,
}

/// Per-cluster counters.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub upstream_rq_total: AtomicU64,
    pub upstream_rq_active: AtomicU64,
    pub upstream_rq_xx: [AtomicU64; 5],
    pub upstream_cx_connect_fail: AtomicU64,
    pub upstream_rq_retry: AtomicU64,
    pub upstream_rq_timeout: AtomicU64,
    /// Refused by the circuit breaker (Envoy counts pending and request overflows apart).
    pub upstream_rq_pending_overflow: AtomicU64,
    pub upstream_rq_retry_overflow: AtomicU64,
}

pub fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

impl Stats {
    /// The counters of cluster `name`, created on first use (at config build time).
    pub fn cluster(&self, name: &Arc<str>) -> Arc<ClusterStats> {
        let mut map = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.clone()).or_default().clone()
    }

    /// Drops the counters of clusters the config no longer has (called when a new snapshot is
    /// put in force), so that a mesh whose clusters come and go does not grow this map for
    /// ever. A cluster that comes back starts from zero, as in Envoy.
    pub fn retain_clusters(&self, keep: &std::collections::HashSet<Arc<str>>) {
        let mut map = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| keep.contains(name));
    }

    /// Counts a failed downstream TLS handshake; `None` when it timed out.
    pub fn ssl_failure(&self, why: Option<crate::tls::HandshakeFailure>) {
        use crate::tls::HandshakeFailure as F;
        self.ssl_connection_error.fetch_add(1, Relaxed);
        let cause = match why {
            Some(F::NoCertificate) => &self.ssl_fail_verify_no_cert,
            Some(F::SubjectAltName) => &self.ssl_fail_verify_san,
            Some(F::Certificate) => &self.ssl_fail_verify_error,
            Some(F::Other) | None => return,
        };
        cause.fetch_add(1, Relaxed);
    }

    /// Notes the version of an xDS type put in force.
    pub fn xds_version(&self, type_url: &str, version: &str) {
        let mut map = self.xds_versions.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(type_url.to_owned(), version.to_owned());
    }

    pub fn xds_versions(&self) -> BTreeMap<String, String> {
        self.xds_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn local_reply(&self, flag: &'static str) {
        let mut map = self.local_replies.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(flag).or_default() += 1;
    }

    /// Envoy-style `name: value` lines, sorted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let g = |a: &AtomicU64| a.load(Relaxed);
        for (name, counter) in [
            ("downstream_cx_total", &self.downstream_cx_total),
            ("downstream_cx_active", &self.downstream_cx_active),
            ("downstream_rq_total", &self.downstream_rq_total),
            ("downstream_rq_active", &self.downstream_rq_active),
        ] {
            let _ = writeln!(out, "http.{name}: {}", g(counter));
        }
        for (i, c) in self.downstream_rq_xx.iter().enumerate() {
            let _ = writeln!(out, "http.downstream_rq_{}xx: {}", i + 1, g(c));
        }
        for (flag, n) in self
            .local_replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "http.local_reply.{flag}: {n}");
        }
        for (name, c) in self
            .clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let counters = [
                ("upstream_rq_total", &c.upstream_rq_total),
                ("upstream_rq_active", &c.upstream_rq_active),
            ];
            for (stat, counter) in counters {
                let _ = writeln!(out, "cluster.{name}.{stat}: {}", g(counter));
            }
            for (i, x) in c.upstream_rq_xx.iter().enumerate() {
                let _ = writeln!(out, "cluster.{name}.upstream_rq_{}xx: {}", i + 1, g(x));
            }
            for (stat, counter) in [
                ("upstream_cx_connect_fail", &c.upstream_cx_connect_fail),
                ("upstream_rq_retry", &c.upstream_rq_retry),
                ("upstream_rq_timeout", &c.upstream_rq_timeout),
                (
                    "upstream_rq_pending_overflow",
                    &c.upstream_rq_pending_overflow,
                ),
                ("upstream_rq_retry_overflow", &c.upstream_rq_retry_overflow),
            ] {
                let _ = writeln!(out, "cluster.{name}.{stat}: {}", g(counter));
            }
        }
        for (name, counter) in [
            ("handshake", &self.ssl_handshake),
            ("connection_error", &self.ssl_connection_error),
            ("fail_verify_no_cert", &self.ssl_fail_verify_no_cert),
            ("fail_verify_error", &self.ssl_fail_verify_error),
            ("fail_verify_san", &self.ssl_fail_verify_san),
        ] {
            let _ = writeln!(out, "listener.ssl.{name}: {}", g(counter));
        }
        for (name, counter) in [
            ("rbac.allowed", &self.rbac_allowed),
            ("rbac.denied", &self.rbac_denied),
            ("jwt_authn.allowed", &self.jwt_authn_allowed),
            ("jwt_authn.denied", &self.jwt_authn_denied),
        ] {
            let _ = writeln!(out, "http.{name}: {}", g(counter));
        }
        for (name, counter) in [
            ("requests", &self.dns_requests),
            ("upstream_requests", &self.dns_upstream_requests),
            ("upstream_failures", &self.dns_upstream_failures),
        ] {
            let _ = writeln!(out, "dns.{name}: {}", g(counter));
        }
        let _ = writeln!(out, "server.config_reloads: {}", g(&self.config_reloads));
        let _ = writeln!(
            out,
            "server.config_rejections: {}",
            g(&self.config_rejections)
        );
        out
    }
}
