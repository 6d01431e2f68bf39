//! Distributed tracing, as Envoy does it under Istio: each HTTP request a listener with
//! `tracing` serves gets one span (CLIENT on a sidecar's outbound listener and on gateways,
//! SERVER on a sidecar's inbound listeners), a child of the context the request arrived with
//! (B3 or W3C headers, [`context`]); the request goes on with this span's context in its
//! headers. A request without a sampling decision is sampled at the listener's percentage
//! (where the trace starts: at the edge), and the decision travels with the trace. Spans end
//! with the response body and go to a collector through a bounded queue ([`export`]): Zipkin
//! v2 JSON ([`zipkin`]) or OTLP/gRPC ([`otlp`]).
//!
//! On the request path this is two calls: [`start`] after the downstream checks (which also
//! writes the headers the next hop reads), and [`Active::end`] when the response body ends;
//! [`Active::upstream_cluster`] notes where the request was routed.

pub mod context;
pub mod export;
mod otlp;
mod zipkin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderMap;
use http::header::HeaderName;
use weft_xds::proto;

use crate::config::ConfigError;
use context::{Incoming, Outgoing, Prefer};
use export::{Exporter, Finished, Kind};

/// Tag values longer than this are cut, unless the listener says otherwise (Envoy's
/// max_path_tag_length and Zipkin's maxTagLength default, as Istio sets them).
pub const DEFAULT_MAX_TAG_LENGTH: usize = 256;

/// A listener's tracing, compiled at config time.
#[derive(Debug)]
pub struct Tracer {
    /// None with `disableReporting`: spans are made, headers written, nothing sent.
    exporter: Option<Arc<Exporter>>,
    /// Percentage of undecided requests sampled, 0 to 100.
    sampling: f64,
    kind: Kind,
    /// A CLIENT child span for the request upstream (gateways).
    spawn_upstream: bool,
    prefer: Prefer,
    service: Arc<str>,
    max_tag: usize,
    /// Tags every span of the listener carries: Istio's (component, node id, canonical
    /// service, namespace) and the literal and environment custom tags.
    fixed: Vec<(Arc<str>, String)>,
    /// Custom tags read from the request's headers: tag, header, default.
    from_headers: Vec<(Arc<str>, HeaderName, String)>,
}

impl Tracer {
    /// Compiles `t`; errors name `resource` and `field`.
    pub fn build(
        t: &proto::Tracing,
        workload: Option<&proto::WorkloadMetadata>,
        node_id: &str,
        resource: &str,
        field: &str,
    ) -> Result<Tracer, ConfigError> {
        let err = |f: &str, why: String| ConfigError::new(resource, format!("{field}.{f}"), why);
        if !(0.0..=100.0).contains(&t.sampling) {
            return Err(err(
                "sampling",
                format!("{} is not a percentage from 0 to 100", t.sampling),
            ));
        }
        check_collector(&t.collector).map_err(|why| err("collector", why))?;
        let provider = proto::tracing::Provider::try_from(t.provider)
            .map_err(|_| err("provider", format!("{} is not a provider", t.provider)))?;
        let kind = match proto::tracing::SpanKind::try_from(t.span_kind) {
            Ok(proto::tracing::SpanKind::Client) => Kind::Client,
            Ok(proto::tracing::SpanKind::Server) => Kind::Server,
            Err(_) => {
                return Err(err(
                    "spanKind",
                    format!("{} is not a span kind", t.span_kind),
                ));
            }
        };
        let max_tag = match t.max_tag_length {
            0 => DEFAULT_MAX_TAG_LENGTH,
            n => n as usize,
        };
        let mut fixed: Vec<(Arc<str>, String)> = vec![
            (Arc::from("component"), "proxy".to_owned()),
            (Arc::from("node_id"), node_id.to_owned()),
        ];
        if let Some(w) = workload {
            fixed.push((
                Arc::from("istio.canonical_service"),
                w.canonical_service.clone(),
            ));
            fixed.push((
                Arc::from("istio.canonical_revision"),
                w.canonical_revision.clone(),
            ));
            fixed.push((Arc::from("istio.namespace"), w.namespace.clone()));
        }
        let mut from_headers = Vec::new();
        for (i, c) in t.custom_tags.iter().enumerate() {
            let at = |f: &str| format!("customTags[{i}].{f}");
            if c.tag.is_empty() {
                return Err(err(&at("tag"), "a custom tag needs a name".into()));
            }
            let tag: Arc<str> = Arc::from(c.tag.as_str());
            use proto::custom_tag::Source;
            match &c.source {
                Some(Source::Literal(v)) => fixed.push((tag, v.clone())),
                Some(Source::Environment(e)) => {
                    let v = std::env::var(&e.name).unwrap_or_else(|_| e.default_value.clone());
                    fixed.push((tag, v));
                }
                Some(Source::Header(h)) => {
                    let name = HeaderName::try_from(h.name.as_str()).map_err(|_| {
                        err(
                            &at("header.name"),
                            format!("{:?} is not a header name", h.name),
                        )
                    })?;
                    from_headers.push((tag, name, h.default_value.clone()));
                }
                None => {
                    return Err(err(
                        &at("tag"),
                        "one of literal, environment or header is required".into(),
                    ));
                }
            }
        }
        for (_, v) in &mut fixed {
            truncate(v, max_tag);
        }
        Ok(Tracer {
            exporter: (!t.disable_reporting).then(|| Exporter::get(provider, &t.collector)),
            sampling: t.sampling,
            kind,
            spawn_upstream: t.spawn_upstream_span,
            prefer: match provider {
                proto::tracing::Provider::Zipkin => Prefer::B3,
                proto::tracing::Provider::Opentelemetry => Prefer::W3c,
            },
            service: Arc::from(t.service_name.as_str()),
            max_tag,
            fixed,
            from_headers,
        })
    }

    /// Whether a request that arrived with `incoming` is sampled: its decision, else a draw.
    fn sampled(&self, incoming: &Incoming) -> bool {
        incoming
            .sampled
            .unwrap_or_else(|| self.sampling >= 100.0 || fastrand::f64() * 100.0 < self.sampling)
    }
}

/// `host:port`, the host an IP address or a DNS name.
fn check_collector(c: &str) -> Result<(), String> {
    let bad = || format!("{c:?} is not host:port");
    if let Ok(a) = c.parse::<SocketAddr>() {
        return (a.port() != 0).then_some(()).ok_or_else(bad);
    }
    let (host, port) = c.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    (port_ok && host_ok).then_some(()).ok_or_else(bad)
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// What a span records of its request when it starts.
pub struct RequestInfo<'a> {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub scheme: &'a str,
    pub authority: &'a str,
    /// Path and query.
    pub path: &'a str,
}

/// When and as what a spawned upstream span started: wall clock, monotonic clock, name.
type UpstreamStart = (SystemTime, Instant, String);

/// A sampled request's span, until its response ends.
pub struct Active {
    tracer: Arc<Tracer>,
    /// The request's span (its id, its parent).
    ctx: Outgoing,
    /// With `spawn_upstream`: the upstream span's id, and when it started (when the request
    /// was routed; None: it never went upstream, and has no such span).
    upstream: Option<(u64, Option<UpstreamStart>)>,
    start: SystemTime,
    started: Instant,
    name: String,
    local_ip: std::net::IpAddr,
    tags: Vec<(Arc<str>, String)>,
}

/// Starts the request's span: reads the context `headers` arrived with, decides sampling,
/// and writes this span's context into `headers` for the next hop (also when not sampled:
/// the decision travels). None without a tracer or when the request is not sampled.
pub fn start(
    tracer: Option<&Arc<Tracer>>,
    headers: &mut HeaderMap,
    method: &http::Method,
    version: http::Version,
    req: &RequestInfo<'_>,
) -> Option<Box<Active>> {
    let tracer = tracer?;
    let incoming = context::extract(headers, tracer.prefer);
    let sampled = tracer.sampled(&incoming);
    let span = nonzero_u64();
    let (trace, parent) = match incoming.parent {
        Some((trace, parent)) => (trace, Some(parent)),
        None => (
            u128::from(nonzero_u64()) << 64 | u128::from(fastrand::u64(..)),
            None,
        ),
    };
    let ctx = Outgoing {
        trace,
        span,
        parent,
        sampled,
    };
    // The next hop's parent: the upstream span when there is one, else the request's span.
    let upstream = tracer.spawn_upstream.then(nonzero_u64);
    let next = match upstream {
        Some(id) => Outgoing {
            span: id,
            parent: Some(span),
            ..ctx
        },
        None => ctx,
    };
    context::inject(headers, &next);
    if !sampled {
        return None;
    }
    let path = req.path.split('?').next().unwrap_or(req.path);
    let mut name = format!("{}{}", req.authority, path);
    truncate(&mut name, tracer.max_tag);
    let mut url = format!("{}://{}{}", req.scheme, req.authority, req.path);
    truncate(&mut url, tracer.max_tag);
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut tags: Vec<(Arc<str>, String)> = Vec::with_capacity(tracer.fixed.len() + 12);
    tags.extend(tracer.fixed.iter().cloned());
    let mut push = |k: &'static str, v: String| tags.push((Arc::from(k), v));
    push("http.method", method.to_string());
    push("http.url", url);
    push("http.protocol", format!("{version:?}"));
    push("peer.address", req.peer.ip().to_string());
    push("downstream_cluster", "-".to_owned());
    if let Some(id) = header("x-request-id") {
        push("guid:x-request-id", id);
    }
    if let Some(ua) = header("user-agent") {
        push("user_agent", ua);
    }
    for (tag, name, default) in &tracer.from_headers {
        let v = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| default.clone(), str::to_owned);
        tags.push((tag.clone(), v));
    }
    for (_, v) in &mut tags {
        truncate(v, tracer.max_tag);
    }
    Some(Box::new(Active {
        tracer: tracer.clone(),
        ctx,
        upstream: upstream.map(|id| (id, None)),
        start: SystemTime::now(),
        started: Instant::now(),
        name,
        local_ip: req.local.ip(),
        tags,
    }))
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

impl Active {
    /// Where the request was routed (Envoy's `upstream_cluster` tag). The upstream span, when
    /// the listener spawns one, starts here, named as Envoy's router names it.
    pub fn upstream_cluster(&mut self, cluster: &str) {
        self.tags
            .push((Arc::from("upstream_cluster"), cluster.to_owned()));
        if let Some((_, started)) = &mut self.upstream {
            let name = format!("router {cluster} egress");
            *started = Some((SystemTime::now(), Instant::now(), name));
        }
    }

    /// Ends the span with the response: status and response flags; queued for export.
    pub fn end(self: Box<Self>, status: u16, flags: &str) {
        let Active {
            tracer,
            ctx,
            upstream,
            start,
            started,
            name,
            local_ip,
            mut tags,
        } = *self;
        // As Envoy: a 5xx, or a request the proxy itself failed, is an error.
        let error = status >= 500 || status == 0;
        tags.push((Arc::from("http.status_code"), status.to_string()));
        tags.push((Arc::from("response_flags"), flags.to_owned()));
        if error {
            tags.push((Arc::from("error"), "true".to_owned()));
        }
        let Some(exporter) = &tracer.exporter else {
            return;
        };
        if let Some((id, Some((at, started, name)))) = upstream {
            exporter.submit(Finished {
                trace: ctx.trace,
                id,
                parent: Some(ctx.span),
                kind: Kind::Client,
                name,
                start: at,
                duration: started.elapsed(),
                service: tracer.service.clone(),
                local_ip,
                error,
                tags: tags.clone(),
            });
        }
        exporter.submit(Finished {
            trace: ctx.trace,
            id: ctx.span,
            parent: ctx.parent,
            kind: tracer.kind,
            name,
            start,
            duration: started.elapsed(),
            service: tracer.service.clone(),
            local_ip,
            error,
            tags,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(sampling: f64) -> Arc<Tracer> {
        let t = proto::Tracing {
            collector: "127.0.0.1:9411".into(),
            sampling,
            service_name: "productpage.default".into(),
            disable_reporting: true,
            ..Default::default()
        };
        Arc::new(
            Tracer::build(
                &t,
                None,
                "sidecar~1.2.3.4~p.default~default.svc.cluster.local",
                "l",
                "http.tracing",
            )
            .unwrap(),
        )
    }

    fn run(t: &Arc<Tracer>, headers: &mut HeaderMap) -> Option<Box<Active>> {
        let req = RequestInfo {
            peer: "127.0.0.9:5555".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            scheme: "http",
            authority: "details:9080",
            path: "/details/0?x=1",
        };
        start(
            Some(t),
            headers,
            &http::Method::GET,
            http::Version::HTTP_11,
            &req,
        )
    }

    #[test]
    fn a_trace_starts_here_when_none_arrived_at_the_sampling_rate() {
        let all = tracer(100.0);
        let mut h = HeaderMap::new();
        let span = run(&all, &mut h).expect("100%: sampled");
        let sent = context::extract(&h, Prefer::B3);
        assert_eq!(sent.parent, Some((span.ctx.trace, span.ctx.span)));
        assert_eq!(sent.sampled, Some(true));
        assert_eq!(span.ctx.parent, None, "a root span");
        assert_eq!(span.name, "details:9080/details/0");

        let none = tracer(0.0);
        let mut h = HeaderMap::new();
        assert!(run(&none, &mut h).is_none());
        // The decision not to sample still travels, with a trace id.
        let sent = context::extract(&h, Prefer::B3);
        assert_eq!(sent.sampled, Some(false));
        assert!(sent.parent.is_some());

        // 10%: about 1000 of 10000 (sd 30; 8 sd either side).
        let some = tracer(10.0);
        let n = (0..10_000)
            .filter(|_| run(&some, &mut HeaderMap::new()).is_some())
            .count();
        assert!((760..=1240).contains(&n), "{n} of 10000 sampled at 10%");
    }

    #[test]
    fn a_spawned_upstream_span_is_the_next_hops_parent() {
        let t = proto::Tracing {
            collector: "127.0.0.1:9411".into(),
            sampling: 100.0,
            spawn_upstream_span: true,
            span_kind: proto::tracing::SpanKind::Server as i32,
            disable_reporting: true,
            ..Default::default()
        };
        let t = Arc::new(Tracer::build(&t, None, "router~x", "l", "http.tracing").unwrap());
        let mut h = HeaderMap::new();
        let mut span = run(&t, &mut h).unwrap();
        let (upstream, started) = span.upstream.clone().unwrap();
        assert!(started.is_none(), "not routed yet");
        let sent = context::extract(&h, Prefer::B3);
        assert_eq!(sent.parent, Some((span.ctx.trace, upstream)));
        assert_eq!(
            h.get("x-b3-parentspanid").unwrap().to_str().unwrap(),
            format!("{:016x}", span.ctx.span)
        );
        span.upstream_cluster("outbound|9080||productpage.default.svc.cluster.local");
        let (_, started) = span.upstream.clone().unwrap();
        assert_eq!(
            started.unwrap().2,
            "router outbound|9080||productpage.default.svc.cluster.local egress"
        );
    }

    #[test]
    fn an_upstream_decision_wins_over_the_sampling_rate() {
        let none = tracer(0.0);
        let mut h: HeaderMap = [
            (
                context::TRACE_ID.clone(),
                "463ac35c9f6413ad48485a3953bb6124".parse().unwrap(),
            ),
            (
                context::SPAN_ID.clone(),
                "a2fb4a1d1a96d312".parse().unwrap(),
            ),
            (context::SAMPLED.clone(), "1".parse().unwrap()),
        ]
        .into_iter()
        .collect();
        let span = run(&none, &mut h).expect("sampled upstream");
        assert_eq!(span.ctx.trace, 0x463ac35c9f6413ad48485a3953bb6124);
        assert_eq!(span.ctx.parent, Some(0xa2fb4a1d1a96d312));
        assert_ne!(span.ctx.span, 0xa2fb4a1d1a96d312, "a span of its own");
        assert_eq!(h.get("x-b3-parentspanid").unwrap(), "a2fb4a1d1a96d312");

        let all = tracer(100.0);
        let mut h: HeaderMap = [(context::SAMPLED.clone(), "0".parse().unwrap())]
            .into_iter()
            .collect();
        assert!(run(&all, &mut h).is_none(), "x-b3-sampled: 0 is honoured");
    }

    #[test]
    fn istio_tags_are_on_the_span_and_long_values_cut() {
        let t = proto::Tracing {
            collector: "zipkin.istio-system:9411".into(),
            sampling: 100.0,
            max_tag_length: 20,
            disable_reporting: true,
            custom_tags: vec![
                proto::CustomTag {
                    tag: "team".into(),
                    source: Some(proto::custom_tag::Source::Literal("books".into())),
                },
                proto::CustomTag {
                    tag: "user".into(),
                    source: Some(proto::custom_tag::Source::Header(proto::CustomTagFrom {
                        name: "end-user".into(),
                        default_value: "anonymous".into(),
                    })),
                },
            ],
            ..Default::default()
        };
        let w = proto::WorkloadMetadata {
            canonical_service: "productpage".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let t = Arc::new(Tracer::build(&t, Some(&w), "router~x", "l", "http.tracing").unwrap());
        let mut span = run(&t, &mut HeaderMap::new()).unwrap();
        span.upstream_cluster("outbound|9080||details.default.svc.cluster.local");
        let tags: std::collections::BTreeMap<_, _> = span
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(tags["component"], "proxy");
        assert_eq!(tags["node_id"], "router~x");
        assert_eq!(tags["istio.canonical_service"], "productpage");
        assert_eq!(tags["istio.namespace"], "default");
        assert_eq!(tags["http.method"], "GET");
        assert_eq!(tags["http.url"], "http://details:9080/", "cut at 20 bytes");
        assert_eq!(tags["peer.address"], "127.0.0.9");
        assert_eq!(tags["team"], "books");
        assert_eq!(tags["user"], "anonymous");
        assert_eq!(
            tags["upstream_cluster"],
            "outbound|9080||details.default.svc.cluster.local"
        );
    }

    #[test]
    fn bad_tracing_config_is_refused_naming_the_field() {
        let build = |t: proto::Tracing| {
            Tracer::build(&t, None, "n", "listener \"x\"", "http.tracing")
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let ok = proto::Tracing {
            collector: "zipkin.istio-system.svc.cluster.local:9411".into(),
            disable_reporting: true,
            ..Default::default()
        };
        assert_eq!(build(ok.clone()), Ok(()));
        for (bad, field) in [
            (
                proto::Tracing {
                    collector: "zipkin".into(),
                    ..ok.clone()
                },
                "http.tracing.collector",
            ),
            (
                proto::Tracing {
                    collector: "a b:1".into(),
                    ..ok.clone()
                },
                "http.tracing.collector",
            ),
            (
                proto::Tracing {
                    collector: "1.2.3.4:0".into(),
                    ..ok.clone()
                },
                "http.tracing.collector",
            ),
            (
                proto::Tracing {
                    sampling: 101.0,
                    ..ok.clone()
                },
                "http.tracing.sampling",
            ),
            (
                proto::Tracing {
                    custom_tags: vec![proto::CustomTag {
                        tag: "t".into(),
                        source: Some(proto::custom_tag::Source::Header(proto::CustomTagFrom {
                            name: "bad header".into(),
                            default_value: String::new(),
                        })),
                    }],
                    ..ok.clone()
                },
                "http.tracing.customTags[0].header.name",
            ),
        ] {
            let e = build(bad).expect_err("refused");
            assert!(e.contains(field), "{e}");
        }
    }
}
