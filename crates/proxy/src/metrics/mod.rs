//! Istio's standard metrics, as its proxies report them: `istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes` for
//! HTTP and gRPC, `istio_tcp_*` for TCP, with Istio's labels, and the proxy's own health under
//! `weft_proxy_*`. Served on `/stats/prometheus` (Istio's 15090) in Prometheus's text format,
//! or OpenMetrics when asked, through prometheus-client's encoders.
//!
//! A request's labels are a few interned pointers ([`labels`]), so recording looks its series
//! up by address and adds to atomics: no allocation once a label set has been seen.

mod encode;
mod histogram;
pub mod labels;
pub mod peer;

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use histogram::Histogram;
use labels::{ServiceRef, WorkloadRef};

pub use encode::{Format, encode};

/// Who reports (Istio's `reporter` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client side: a sidecar's outbound listener, a gateway.
    Source,
    /// The server side: a sidecar's inbound listeners.
    Destination,
}

/// `connection_security_policy`: whether the reporting server's connection was mTLS. Istio
/// writes it on the destination's reports only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Security {
    MutualTls,
    None,
    Unknown,
}

/// `request_protocol` of HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Grpc,
}

/// Who talks to whom, as one report sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Edge {
    pub reporter: Reporter,
    pub source: WorkloadRef,
    pub destination: WorkloadRef,
    pub service: ServiceRef,
    pub security: Security,
}

/// A request's full label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub edge: Edge,
    pub protocol: Protocol,
    pub code: u16,
    /// gRPC's status (`grpc-status`), for gRPC requests that got one.
    pub grpc_status: Option<u16>,
    pub flags: crate::error::Flags,
}

/// A TCP connection's label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpKey {
    pub edge: Edge,
    pub flags: crate::error::Flags,
}

#[derive(Debug)]
struct RequestSeries {
    count: AtomicU64,
    duration_ms: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl RequestSeries {
    fn new() -> Self {
        RequestSeries {
            count: AtomicU64::new(0),
            duration_ms: Histogram::new(histogram::DURATION_MS),
            request_bytes: Histogram::new(histogram::BYTES),
            response_bytes: Histogram::new(histogram::BYTES),
        }
    }
}

#[derive(Debug, Default)]
struct TcpSeries {
    opened: AtomicU64,
    closed: AtomicU64,
    sent_bytes: AtomicU64,
    received_bytes: AtomicU64,
}

/// What one request adds to its series.
#[derive(Debug, Clone, Copy)]
pub struct RequestSample {
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// The proxy's standard metrics. Series are kept for the life of the process, as Envoy keeps
/// its stats: their number is bounded by the mesh's workloads, services and response codes.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: RwLock<HashMap<RequestKey, RequestSeries>>,
    tcp: RwLock<HashMap<TcpKey, TcpSeries>>,
}

impl Metrics {
    pub fn request(&self, key: RequestKey, sample: RequestSample) {
        with_series(&self.requests, key, RequestSeries::new, |s| {
            s.count.fetch_add(1, Relaxed);
            s.duration_ms.observe(sample.duration_ms);
            s.request_bytes.observe(sample.request_bytes as f64);
            s.response_bytes.observe(sample.response_bytes as f64);
        });
    }

    pub fn tcp_opened(&self, key: TcpKey) {
        with_series(&self.tcp, key, TcpSeries::default, |s| {
            s.opened.fetch_add(1, Relaxed);
        });
    }

    /// A TCP connection closed, having moved `sent` bytes to its downstream and `received`
    /// from it (Istio's sent/received are the reporting proxy's downstream view).
    pub fn tcp_closed(&self, key: TcpKey, sent: u64, received: u64) {
        with_series(&self.tcp, key, TcpSeries::default, |s| {
            s.closed.fetch_add(1, Relaxed);
            s.sent_bytes.fetch_add(sent, Relaxed);
            s.received_bytes.fetch_add(received, Relaxed);
        });
    }
}

/// Runs `f` on `key`'s series, made on first use. The common case takes the read lock only.
fn with_series<K: Eq + std::hash::Hash, S>(
    map: &RwLock<HashMap<K, S>>,
    key: K,
    new: impl FnOnce() -> S,
    f: impl FnOnce(&S),
) {
    {
        let read = map.read().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = read.get(&key) {
            f(s);
            return;
        }
    }
    let mut write = map.write().unwrap_or_else(|p| p.into_inner());
    f(write.entry(key).or_insert_with(new));
}
