//! `/stats/prometheus`: the standard metrics and the proxy's health, written by
//! prometheus-client's encoders (Prometheus text 0.0.4, or OpenMetrics).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::labels::{UNKNOWN, value};
use super::{Edge, Metrics, Protocol, Reporter, RequestKey, Security, TcpKey};
use crate::state::Shared;

/// Which exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus's text format 0.0.4 (what Prometheus and Envoy's `/stats/prometheus` use).
    Text,
    /// OpenMetrics 1.0 text, for an `Accept: application/openmetrics-text` scraper.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The page's text.
pub fn encode(shared: &Arc<Shared>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(Arc::clone(shared))));
    let mut out = String::new();
    let written = match format {
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    // Writing to a String cannot fail; an encoder error would be a bug in a label or name.
    if let Err(e) = written {
        tracing::error!("encoding metrics: {e}");
    }
    out
}

struct Scrape(Arc<Shared>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        standard(&self.0.metrics, &mut encoder)?;
        health(&self.0, &mut encoder)
    }
}

fn standard(m: &Metrics, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let requests = m.requests.read().unwrap_or_else(|p| p.into_inner());
    if !requests.is_empty() {
        let mut e = encoder.encode_descriptor(
            "istio_requests",
            "Requests, as Istio's proxies count them.",
            None,
            MetricType::Counter,
        )?;
        for (key, s) in requests.iter() {
            e.encode_family(&RequestLabels(key))?
                .encode_counter::<NoLabelSet, _, u64>(&s.count.load(Relaxed), None)?;
        }
        for (name, help, pick) in [
            (
                "istio_request_duration_milliseconds",
                "Request durations, from the request's first byte to the response's last.",
                (|s| &s.duration_ms) as fn(&super::RequestSeries) -> &super::Histogram,
            ),
            ("istio_request_bytes", "Request body sizes.", |s| {
                &s.request_bytes
            }),
            ("istio_response_bytes", "Response body sizes.", |s| {
                &s.response_bytes
            }),
        ] {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (key, s) in requests.iter() {
                let (sum, count, buckets) = pick(s).snapshot();
                e.encode_family(&RequestLabels(key))?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
    }
    drop(requests);
    let tcp = m.tcp.read().unwrap_or_else(|p| p.into_inner());
    if !tcp.is_empty() {
        type Pick = fn(&super::TcpSeries) -> &AtomicU64;
        let families: [(&str, &str, Pick); 4] = [
            (
                "istio_tcp_sent_bytes",
                "Bytes sent to the downstream of TCP connections.",
                |s| &s.sent_bytes,
            ),
            (
                "istio_tcp_received_bytes",
                "Bytes received from the downstream of TCP connections.",
                |s| &s.received_bytes,
            ),
            (
                "istio_tcp_connections_opened",
                "TCP connections opened.",
                |s| &s.opened,
            ),
            (
                "istio_tcp_connections_closed",
                "TCP connections closed.",
                |s| &s.closed,
            ),
        ];
        for (name, help, pick) in families {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (key, s) in tcp.iter() {
                e.encode_family(&TcpLabels(key))?
                    .encode_counter::<NoLabelSet, _, u64>(&pick(s).load(Relaxed), None)?;
            }
        }
    }
    Ok(())
}

/// The proxy's own health, under names of its own (never `istio_*` or `envoy_*`).
fn health(shared: &Shared, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let s = &shared.stats;
    let g = |a: &AtomicU64| a.load(Relaxed);
    for (name, help, v) in [
        (
            "weft_proxy_downstream_connections_active",
            "Downstream connections open now.",
            g(&s.downstream_cx_active),
        ),
        (
            "weft_proxy_downstream_requests_active",
            "Requests in flight now.",
            g(&s.downstream_rq_active),
        ),
        (
            "weft_proxy_xds_connected",
            "1 while the proxy's xDS stream to its control plane is up.",
            g(&s.xds_connected),
        ),
    ] {
        encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&(v as i64))?;
    }
    for (name, help, v) in [
        (
            "weft_proxy_downstream_connections",
            "Downstream connections accepted.",
            g(&s.downstream_cx_total),
        ),
        (
            "weft_proxy_downstream_requests",
            "Requests received.",
            g(&s.downstream_rq_total),
        ),
        (
            "weft_proxy_config_applied",
            "Configurations put in force (a file reload, an accepted xDS update).",
            g(&s.config_reloads),
        ),
        (
            "weft_proxy_config_rejected",
            "Configurations rejected (xDS NACKs, bad files); the last good one kept serving.",
            g(&s.config_rejections),
        ),
    ] {
        encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    let versions = s.xds_versions();
    if !versions.is_empty() {
        let mut e = encoder.encode_descriptor(
            "weft_proxy_xds_config_version",
            "The version of each xDS type in force.",
            None,
            MetricType::Info,
        )?;
        for (type_url, version) in &versions {
            let labels = [
                ("type_url", type_url.as_str()),
                ("version", version.as_str()),
            ];
            e.encode_info(&labels)?;
        }
    }
    Ok(())
}

struct RequestLabels<'a>(&'a RequestKey);

impl EncodeLabelSet for RequestLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let k = self.0;
        edge_labels(&k.edge, encoder)?;
        let protocol = match k.protocol {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        };
        let code = itoa_u16(k.code);
        let grpc = k.grpc_status.map(itoa_u16);
        let flags = k.flags.to_string();
        for (key, v) in [
            ("request_protocol", protocol),
            ("response_code", code.as_str()),
            ("grpc_response_status", grpc.as_deref().unwrap_or("")),
            ("response_flags", flags.as_str()),
            ("connection_security_policy", security(k.edge.security)),
        ] {
            (key, v).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

struct TcpLabels<'a>(&'a TcpKey);

impl EncodeLabelSet for TcpLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        edge_labels(&self.0.edge, encoder)?;
        let flags = self.0.flags.to_string();
        for (key, v) in [
            ("request_protocol", "tcp"),
            ("response_flags", flags.as_str()),
            ("connection_security_policy", security(self.0.edge.security)),
        ] {
            (key, v).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

fn security(s: Security) -> &'static str {
    match s {
        Security::MutualTls => "mutual_tls",
        Security::None => "none",
        Security::Unknown => UNKNOWN,
    }
}

fn itoa_u16(v: u16) -> String {
    v.to_string()
}

/// The labels of who talks to whom, in Istio's order.
fn edge_labels(edge: &Edge, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
    let reporter = match edge.reporter {
        Reporter::Source => "source",
        Reporter::Destination => "destination",
    };
    let (src, dst, svc) = (&edge.source, &edge.destination, &edge.service);
    for (key, v) in [
        ("reporter", reporter),
        ("source_workload", &src.name),
        ("source_canonical_service", &src.canonical_service),
        ("source_canonical_revision", &src.canonical_revision),
        ("source_workload_namespace", &src.namespace),
        ("source_principal", &src.principal),
        ("source_app", &src.app),
        ("source_version", &src.version),
        ("source_cluster", &src.cluster),
        ("destination_workload", &dst.name),
        ("destination_workload_namespace", &dst.namespace),
        ("destination_principal", &dst.principal),
        ("destination_app", &dst.app),
        ("destination_version", &dst.version),
        ("destination_service", &svc.host),
        ("destination_canonical_service", &dst.canonical_service),
        ("destination_canonical_revision", &dst.canonical_revision),
        ("destination_service_name", &svc.name),
        ("destination_service_namespace", &svc.namespace),
        ("destination_cluster", &dst.cluster),
    ] {
        (key, value(v)).encode(encoder.encode_label())?;
    }
    Ok(())
}

// prometheus-client's label encoding of a (key, value) pair.
use prometheus_client::encoding::EncodeLabel as _;
