//! Telemetry: which access logging, tracing and metrics settings one proxy's listeners get,
//! with Istio's scoping. Pure: resources and mesh config in, settings out.
//!
//! Scopes, broadest first: the mesh (a Telemetry without selector in the root namespace), the
//! proxy's namespace (without selector), its workload (a selector matching its labels). The
//! narrower scope wins field by field: a scope that names providers replaces the providers of
//! the scope above; `disabled`, `filter`, `randomSamplingPercentage`, ... set in a narrower
//! scope override the same field above, and are inherited when unset. Metric overrides add up
//! (applied broadest first, so the narrower one has the last word). Where several Telemetries
//! compete in one scope Istio takes the oldest; weft has no creation times and takes the
//! first by name (as for PeerAuthentication).
//!
//! Each setting has a `match.mode` (CLIENT, SERVER, CLIENT_AND_SERVER): a sidecar's outbound
//! listener is the client side, its inbound listeners the server side; a gateway's listeners
//! are both, as Istio's.
//!
//! Access logging is applied here ([`apply_access_logs`]), metrics too ([`apply_metrics`]:
//! each listener's `stats`), and tracing becomes the per-listener override of
//! `trace_config` ([`tracing_override`]). What is read and not applied (targetRefs, tag
//! upserts, custom metrics, ...) is reported ([`not_applied`]).

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::common::selector_matches;
use weft_api::resource::Spec;
use weft_api::telemetry::filter::{self, Attribute, CmpOp, Literal};
use weft_api::telemetry::{CustomTag, IstioMetric, TagOperation, Telemetry, WorkloadMode};
use weft_xds::proto;

use super::Notes;
use crate::mesh_config::{AccessLogEncoding, MeshConfig, access_log_proto};
use crate::unsupported::Unsupported;
use crate::view::ConfigView;

/// Which side of the traffic a listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerClass {
    /// A sidecar's outbound listener: CLIENT.
    SidecarOutbound,
    /// A sidecar's inbound listeners: SERVER.
    SidecarInbound,
    /// A gateway's listeners: CLIENT and SERVER.
    Gateway,
}

impl ListenerClass {
    fn matches(self, mode: WorkloadMode) -> bool {
        match self {
            ListenerClass::SidecarOutbound => mode.applies(true),
            ListenerClass::SidecarInbound => mode.applies(false),
            ListenerClass::Gateway => true,
        }
    }
}

/// The Telemetries that apply to one workload, one per scope, broadest first.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scoped<'a> {
    pub mesh: Option<(&'a Resource, &'a Telemetry)>,
    pub namespace: Option<(&'a Resource, &'a Telemetry)>,
    pub workload: Option<(&'a Resource, &'a Telemetry)>,
}

impl<'a> Scoped<'a> {
    fn levels(&self) -> impl Iterator<Item = (&'a Resource, &'a Telemetry)> {
        [self.mesh, self.namespace, self.workload]
            .into_iter()
            .flatten()
    }
}

fn telemetries(view: &ConfigView) -> impl Iterator<Item = (&Resource, &Telemetry)> {
    view.resources().iter().filter_map(|r| match &r.spec {
        Spec::Telemetry(t) => Some((r, t.as_ref())),
        _ => None,
    })
}

/// The Telemetries of a workload in `namespace` with `labels`. Ones with `targetRef(s)` are
/// not scoped to workloads here (reported by [`not_applied`]).
pub fn for_workload<'a>(
    view: &'a ConfigView,
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Scoped<'a> {
    let mut out = Scoped::default();
    let take = |slot: &mut Option<(&'a Resource, &'a Telemetry)>, r: &'a Resource, t| {
        if slot.is_none_or(|(old, _)| r.metadata.name < old.metadata.name) {
            *slot = Some((r, t));
        }
    };
    for (r, t) in telemetries(view) {
        if t.target_ref.is_some() || !t.target_refs.is_empty() {
            continue;
        }
        let ns = r.metadata.namespace();
        match &t.selector {
            None if ns == mesh.root_namespace => take(&mut out.mesh, r, t),
            None if ns == namespace => take(&mut out.namespace, r, t),
            Some(s) if ns == namespace && selector_matches(&s.match_labels, labels) => {
                take(&mut out.workload, r, t)
            }
            _ => {}
        }
    }
    // In the root namespace, the mesh-wide Telemetry is the namespace's too.
    if namespace == mesh.root_namespace {
        out.namespace = None;
    }
    out
}

/// Where a setting came from: the resource and the field path, for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Source<'a> {
    pub resource: &'a Resource,
    pub field: String,
}

/// One access log provider in force.
#[derive(Debug, Clone, PartialEq)]
pub struct LogProvider<'a> {
    pub name: String,
    pub disabled: bool,
    /// The filter expression, and the field it was written at.
    pub filter: Option<(String, Source<'a>)>,
}

/// Access logging for one listener class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessLogging<'a> {
    /// Whether any Telemetry configures access logging here: then it decides, and
    /// `meshConfig.accessLogFile` does not (as Istio).
    pub configured: bool,
    pub providers: Vec<LogProvider<'a>>,
    /// The fields that decided, for notes.
    pub sources: Vec<Source<'a>>,
}

/// Tracing for one listener class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracing<'a> {
    pub providers: Vec<String>,
    pub random_sampling_percentage: Option<f64>,
    pub disable_span_reporting: Option<bool>,
    /// Tag name -> literal, environment or header, narrower scopes overriding by name.
    pub custom_tags: BTreeMap<String, CustomTag>,
    pub sources: Vec<Source<'a>>,
}

/// One metrics override in force.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricOverride {
    /// None: every metric (ALL_METRICS).
    pub metric: Option<IstioMetric>,
    pub custom_metric: Option<String>,
    pub disabled: Option<bool>,
    /// Tag -> None to remove it, Some(CEL value expression) to upsert it.
    pub tag_overrides: BTreeMap<String, Option<String>>,
}

/// Metrics for one listener class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics<'a> {
    pub providers: Vec<String>,
    /// Broadest scope first: apply in order.
    pub overrides: Vec<MetricOverride>,
    pub sources: Vec<Source<'a>>,
}

/// Everything Telemetry says for one listener class of one proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective<'a> {
    pub access_logging: AccessLogging<'a>,
    pub tracing: Tracing<'a>,
    pub metrics: Metrics<'a>,
}

/// The settings in force for listeners of `class` of a workload whose Telemetries are
/// `scoped`.
pub fn effective<'a>(
    scoped: &Scoped<'a>,
    mesh: &MeshConfig,
    class: ListenerClass,
) -> Effective<'a> {
    let mut out = Effective {
        tracing: Tracing {
            providers: mesh.default_providers.tracing.clone(),
            ..Default::default()
        },
        metrics: Metrics {
            providers: if mesh.default_providers.metrics.is_empty() {
                vec!["prometheus".to_owned()]
            } else {
                mesh.default_providers.metrics.clone()
            },
            ..Default::default()
        },
        access_logging: AccessLogging {
            providers: mesh
                .default_providers
                .access_logging
                .iter()
                .map(|name| LogProvider {
                    name: name.clone(),
                    disabled: false,
                    filter: None,
                })
                .collect(),
            configured: !mesh.default_providers.access_logging.is_empty(),
            sources: Vec::new(),
        },
    };
    for (r, t) in scoped.levels() {
        logging_level(&mut out.access_logging, r, t, class);
        tracing_level(&mut out.tracing, r, t, class);
        metrics_level(&mut out.metrics, r, t, class);
    }
    out
}

fn logging_level<'a>(
    out: &mut AccessLogging<'a>,
    r: &'a Resource,
    t: &'a Telemetry,
    class: ListenerClass,
) {
    for (i, l) in t.access_logging.iter().enumerate() {
        if !class.matches(l.match_.map(|m| m.mode).unwrap_or_default()) {
            continue;
        }
        let at = format!("spec.accessLogging[{i}]");
        out.configured = true;
        out.sources.push(Source {
            resource: r,
            field: at.clone(),
        });
        if !l.providers.is_empty() {
            let before = std::mem::take(&mut out.providers);
            out.providers = l
                .providers
                .iter()
                .map(|p| {
                    before
                        .iter()
                        .find(|b| b.name == p.name)
                        .cloned()
                        .unwrap_or(LogProvider {
                            name: p.name.clone(),
                            disabled: false,
                            filter: None,
                        })
                })
                .collect();
        } else if out.providers.is_empty() {
            // Nothing inherited and no default providers: Istio's built-in `envoy`.
            out.providers.push(LogProvider {
                name: "envoy".into(),
                disabled: false,
                filter: None,
            });
        }
        for p in &mut out.providers {
            if let Some(d) = l.disabled {
                p.disabled = d;
            }
            if let Some(f) = &l.filter {
                p.filter = Some((
                    f.expression.clone(),
                    Source {
                        resource: r,
                        field: format!("{at}.filter.expression"),
                    },
                ));
            }
        }
    }
}

fn tracing_level<'a>(
    out: &mut Tracing<'a>,
    r: &'a Resource,
    t: &'a Telemetry,
    class: ListenerClass,
) {
    for (i, tr) in t.tracing.iter().enumerate() {
        if !class.matches(tr.match_.map(|m| m.mode).unwrap_or_default()) {
            continue;
        }
        out.sources.push(Source {
            resource: r,
            field: format!("spec.tracing[{i}]"),
        });
        if !tr.providers.is_empty() {
            out.providers = tr.providers.iter().map(|p| p.name.clone()).collect();
        }
        if tr.random_sampling_percentage.is_some() {
            out.random_sampling_percentage = tr.random_sampling_percentage;
        }
        if tr.disable_span_reporting.is_some() {
            out.disable_span_reporting = tr.disable_span_reporting;
        }
        for (k, v) in &tr.custom_tags {
            out.custom_tags.insert(k.clone(), v.clone());
        }
    }
}

fn metrics_level<'a>(
    out: &mut Metrics<'a>,
    r: &'a Resource,
    t: &'a Telemetry,
    class: ListenerClass,
) {
    for (i, m) in t.metrics.iter().enumerate() {
        out.sources.push(Source {
            resource: r,
            field: format!("spec.metrics[{i}]"),
        });
        if !m.providers.is_empty() {
            out.providers = m.providers.iter().map(|p| p.name.clone()).collect();
        }
        for o in &m.overrides {
            let sel = o.match_.clone().unwrap_or_default();
            if !class.matches(sel.mode) {
                continue;
            }
            out.overrides.push(MetricOverride {
                metric: match (&sel.custom_metric, sel.metric) {
                    (Some(_), _) | (None, None | Some(IstioMetric::AllMetrics)) => None,
                    (None, m) => m,
                },
                custom_metric: sel.custom_metric.clone(),
                disabled: o.disabled,
                tag_overrides: o
                    .tag_overrides
                    .iter()
                    .map(|(k, v)| {
                        let value = match v.operation {
                            TagOperation::Remove => None,
                            TagOperation::Upsert => Some(v.value.clone().unwrap_or_default()),
                        };
                        (k.clone(), value)
                    })
                    .collect(),
            });
        }
    }
}

/// The access log a listener of `class` gets: from Telemetry when one configures access
/// logging for it, else from `meshConfig.accessLogFile`. Providers weft cannot apply are
/// noted; when no provider can be written (an unknown name, a kind weft does not write) and
/// none is disabled, the mesh's log stays in force rather than logging silently stopping.
pub(crate) fn access_log(
    effective: &AccessLogging<'_>,
    mesh: &MeshConfig,
    notes: &mut Notes,
) -> Option<proto::AccessLog> {
    let mesh_log = || {
        (!mesh.access_log_file.is_empty()).then(|| {
            access_log_proto(
                &mesh.access_log_file,
                mesh.access_log_encoding,
                &mesh.access_log_format,
            )
        })
    };
    if !effective.configured {
        return mesh_log();
    }
    let logs: Vec<proto::AccessLog> = effective
        .providers
        .iter()
        .filter(|p| !p.disabled)
        .filter_map(|p| provider_log(p, mesh, effective, notes))
        .collect();
    if logs.is_empty() && effective.providers.iter().any(|p| !p.disabled) {
        // Only providers weft cannot write (noted): what logged before keeps logging.
        return mesh_log();
    }
    let mut logs = logs.into_iter();
    let first = logs.next();
    for extra in logs {
        let at = effective.sources.last();
        notes.add(
            at.map(|s| s.resource),
            at.map_or_else(
                || "spec.accessLogging".to_owned(),
                |s| format!("{}.providers", s.field),
            ),
            format!(
                "a listener writes one access log in weft: the log to {:?} is not written",
                extra.path
            ),
        );
    }
    first
}

/// The access log of one provider, or None (noted) when weft cannot write it.
fn provider_log(
    p: &LogProvider<'_>,
    mesh: &MeshConfig,
    effective: &AccessLogging<'_>,
    notes: &mut Notes,
) -> Option<proto::AccessLog> {
    let at = effective.sources.last();
    let note = |notes: &mut Notes, why: String| {
        notes.add(
            at.map(|s| s.resource),
            at.map_or_else(
                || "spec.accessLogging".to_owned(),
                |s| format!("{}.providers", s.field),
            ),
            why,
        );
    };
    let mut log = if p.name == "envoy" {
        // Istio's built-in provider: stdout, in the mesh's format.
        access_log_proto(
            "/dev/stdout",
            mesh.access_log_encoding,
            &mesh.access_log_format,
        )
    } else {
        let Some(provider) = mesh.extension_providers.iter().find(|e| e.name == p.name) else {
            note(
                notes,
                format!(
                    "provider {:?} is not in meshConfig.extensionProviders",
                    p.name
                ),
            );
            return None;
        };
        let Some(file) = &provider.envoy_file_access_log else {
            note(
                notes,
                format!(
                    "provider {:?} ({}) is not an access log weft writes (only \
                     envoyFileAccessLog)",
                    p.name,
                    provider.kind().unwrap_or("no kind")
                ),
            );
            return None;
        };
        let path = if file.path.is_empty() {
            "/dev/stdout"
        } else {
            &file.path
        };
        match file.log_format.as_ref() {
            Some(f) if f.labels.is_some() => {
                let mut log = access_log_proto(path, AccessLogEncoding::Json, "");
                log.json_format = f.labels.clone().unwrap_or_default().into_iter().collect();
                log
            }
            Some(f) if f.text.is_some() => access_log_proto(
                path,
                AccessLogEncoding::Text,
                f.text.as_deref().unwrap_or_default(),
            ),
            _ => access_log_proto(path, mesh.access_log_encoding, &mesh.access_log_format),
        }
    };
    if let Some((expression, source)) = &p.filter {
        match filter::parse(expression) {
            Ok(f) => log.filter = Some(filter_proto(&f, expression)),
            Err(e) => {
                // Validation refuses such a Telemetry; never log unfiltered silently.
                notes.add(Some(source.resource), source.field.clone(), e.to_string());
                return None;
            }
        }
    }
    Some(log)
}

/// A parsed filter as the proxy evaluates it.
pub fn filter_proto(f: &filter::Filter, expression: &str) -> proto::AccessLogFilter {
    use proto::access_log_condition::{Attribute as A, Op};
    proto::AccessLogFilter {
        expression: expression.to_owned(),
        any_of: f
            .any_of
            .iter()
            .map(|all| proto::AccessLogConditions {
                all_of: all
                    .iter()
                    .map(|c| {
                        let (attribute, header) = match &c.attribute {
                            Attribute::ResponseCode => (A::ResponseCode, String::new()),
                            Attribute::RequestMethod => (A::RequestMethod, String::new()),
                            Attribute::RequestHeader(h) => (A::RequestHeader, h.clone()),
                            Attribute::RequestPath => (A::RequestPath, String::new()),
                            Attribute::RequestHost => (A::RequestHost, String::new()),
                        };
                        let op = match c.op {
                            CmpOp::Eq => Op::Eq,
                            CmpOp::Ne => Op::Ne,
                            CmpOp::Lt => Op::Lt,
                            CmpOp::Le => Op::Le,
                            CmpOp::Gt => Op::Gt,
                            CmpOp::Ge => Op::Ge,
                            CmpOp::StartsWith => Op::StartsWith,
                        };
                        let (number, text) = match &c.value {
                            Literal::Int(n) => (*n, String::new()),
                            Literal::Str(s) => (0, s.clone()),
                        };
                        proto::AccessLogCondition {
                            attribute: attribute as i32,
                            op: op as i32,
                            header,
                            number,
                            text,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Sets each listener's access log: `classify` says which side each listener is.
pub(crate) fn apply_access_logs(
    listeners: &mut [proto::Listener],
    scoped: &Scoped<'_>,
    mesh: &MeshConfig,
    classify: impl Fn(&proto::Listener) -> ListenerClass,
    notes: &mut Notes,
) {
    for l in listeners {
        let e = effective(scoped, mesh, classify(l));
        l.access_log = access_log(&e.access_logging, mesh, notes);
    }
}

/// Telemetry's tracing for listeners of `class`, as `trace_config` takes it; None when no
/// Telemetry configures tracing for them (the mesh config's then).
pub(crate) fn tracing_override(
    scoped: &Scoped<'_>,
    mesh: &MeshConfig,
    class: ListenerClass,
) -> Option<super::trace_config::TracingOverride> {
    let t = effective(scoped, mesh, class).tracing;
    if t.sources.is_empty() {
        return None;
    }
    use proto::custom_tag::Source;
    let from = |f: &weft_api::telemetry::FromTag| proto::CustomTagFrom {
        name: f.name.clone(),
        default_value: f.default_value.clone(),
    };
    let custom_tags = t
        .custom_tags
        .iter()
        .filter_map(|(name, tag)| {
            let source = if let Some(l) = &tag.literal {
                Source::Literal(l.value.clone())
            } else if let Some(e) = &tag.environment {
                Source::Environment(from(e))
            } else {
                Source::Header(from(tag.header.as_ref()?))
            };
            Some(proto::CustomTag {
                tag: name.clone(),
                source: Some(source),
            })
        })
        .collect();
    Some(super::trace_config::TracingOverride {
        providers: Some(t.providers),
        sampling: t.random_sampling_percentage,
        custom_tags,
        disable_span_reporting: t.disable_span_reporting,
    })
}

/// Sets what each listener reports of the standard metrics: nothing when its metrics
/// providers do not include `prometheus` (the only metrics provider weft has), else the
/// overrides in force (a metric disabled, labels removed). A tag upsert is noted, not applied.
pub(crate) fn apply_metrics(
    listeners: &mut [proto::Listener],
    scoped: &Scoped<'_>,
    mesh: &MeshConfig,
    classify: impl Fn(&proto::Listener) -> ListenerClass,
) {
    for l in listeners {
        let m = effective(scoped, mesh, classify(l)).metrics;
        let stats = l.stats.get_or_insert_with(Default::default);
        if !m.providers.iter().any(|p| p == "prometheus") {
            stats.disabled = true;
            continue;
        }
        for o in &m.overrides {
            // Reported by `not_applied`: custom metrics, gRPC message counts.
            let grpc = matches!(
                o.metric,
                Some(IstioMetric::GrpcRequestMessages | IstioMetric::GrpcResponseMessages)
            );
            if o.custom_metric.is_some() || grpc {
                continue;
            }
            let removed_labels = o
                .tag_overrides
                .iter()
                .filter(|(tag, upsert)| {
                    upsert.is_none() && weft_xds::STANDARD_METRIC_LABELS.contains(&tag.as_str())
                })
                .map(|(tag, _)| tag.clone())
                .collect();
            stats.overrides.push(proto::MetricOverride {
                metric: o
                    .metric
                    .filter(|m| *m != IstioMetric::AllMetrics)
                    .map(|m| metric_name(m).to_owned())
                    .unwrap_or_default(),
                disabled: o.disabled,
                removed_labels,
            });
        }
    }
}

/// A metric's Telemetry name (`REQUEST_COUNT`, ...).
fn metric_name(m: IstioMetric) -> &'static str {
    match m {
        IstioMetric::AllMetrics => "ALL_METRICS",
        IstioMetric::RequestCount => "REQUEST_COUNT",
        IstioMetric::RequestDuration => "REQUEST_DURATION",
        IstioMetric::RequestSize => "REQUEST_SIZE",
        IstioMetric::ResponseSize => "RESPONSE_SIZE",
        IstioMetric::TcpOpenedConnections => "TCP_OPENED_CONNECTIONS",
        IstioMetric::TcpClosedConnections => "TCP_CLOSED_CONNECTIONS",
        IstioMetric::TcpSentBytes => "TCP_SENT_BYTES",
        IstioMetric::TcpReceivedBytes => "TCP_RECEIVED_BYTES",
        IstioMetric::GrpcRequestMessages => "GRPC_REQUEST_MESSAGES",
        IstioMetric::GrpcResponseMessages => "GRPC_RESPONSE_MESSAGES",
    }
}

/// What weft reads of Telemetries but does not apply yet: tracing, metrics, `targetRef(s)`,
/// and the few fields without an effect. Independent of proxies: reported once per resource.
pub fn not_applied(resources: &[Resource]) -> Vec<Unsupported> {
    let mut out = Vec::new();
    for r in resources {
        let Spec::Telemetry(t) = &r.spec else {
            continue;
        };
        if t.target_ref.is_some() || !t.target_refs.is_empty() {
            let field = if t.target_ref.is_some() {
                "spec.targetRef"
            } else {
                "spec.targetRefs"
            };
            out.push(Unsupported::new(
                Some(r),
                field,
                "Telemetry with targetRef(s) is not applied by weft yet; use a selector",
            ));
        }
        for (i, tr) in t.tracing.iter().enumerate() {
            if tr.use_request_id_for_trace_sampling.is_some() || tr.enable_istio_tags.is_some() {
                out.push(Unsupported::new(
                    Some(r),
                    format!("spec.tracing[{i}]"),
                    "useRequestIdForTraceSampling and enableIstioTags are not applied by weft",
                ));
            }
        }
        for (i, m) in t.metrics.iter().enumerate() {
            if m.reporting_interval.is_some() {
                out.push(Unsupported::new(
                    Some(r),
                    format!("spec.metrics[{i}].reportingInterval"),
                    "weft's metrics are read when scraped; reportingInterval is not applied",
                ));
            }
            for (j, o) in m.overrides.iter().enumerate() {
                let at = format!("spec.metrics[{i}].overrides[{j}]");
                if o.match_.as_ref().is_some_and(|s| s.custom_metric.is_some()) {
                    out.push(Unsupported::new(
                        Some(r),
                        format!("{at}.match.customMetric"),
                        "custom metrics are not supported by weft: the override is not applied",
                    ));
                }
                let grpc = o.match_.as_ref().and_then(|s| s.metric).is_some_and(|m| {
                    matches!(
                        m,
                        IstioMetric::GrpcRequestMessages | IstioMetric::GrpcResponseMessages
                    )
                });
                if grpc {
                    out.push(Unsupported::new(
                        Some(r),
                        format!("{at}.match.metric"),
                        "weft reports no gRPC message counts: the override changes nothing",
                    ));
                }
                for (tag, ov) in &o.tag_overrides {
                    if !weft_xds::STANDARD_METRIC_LABELS.contains(&tag.as_str()) {
                        out.push(Unsupported::new(
                            Some(r),
                            format!("{at}.tagOverrides.{tag}"),
                            "not a label of Istio's standard metrics: nothing to remove or add",
                        ));
                    } else if ov.operation == TagOperation::Upsert {
                        out.push(Unsupported::new(
                            Some(r),
                            format!("{at}.tagOverrides.{tag}"),
                            "tag UPSERT (a CEL value) is not applied by weft; REMOVE is",
                        ));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(yaml: &str) -> ConfigView {
        let loaded = weft_api::load_str("t.yaml", yaml);
        assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
        ConfigView::new(loaded.resources, Vec::new())
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_owned(), app.to_owned())])
    }

    const SCOPES: &str = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
  tracing: [{randomSamplingPercentage: 1, customTags: {a: {literal: {value: mesh}}, b: {literal: {value: mesh}}}}]
  metrics:
  - overrides: [{match: {metric: REQUEST_COUNT}, tagOverrides: {x: {value: "'1'"}}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: default}
spec:
  accessLogging: [{filter: {expression: "response.code >= 500"}}]
  tracing: [{customTags: {b: {literal: {value: ns}}}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  accessLogging: [{disabled: true, match: {mode: SERVER}}]
  tracing: [{randomSamplingPercentage: 50}]
  metrics:
  - overrides: [{match: {metric: ALL_METRICS, mode: CLIENT}, disabled: true}]
"#;

    #[test]
    fn the_narrower_scope_wins_field_by_field() {
        let v = view(SCOPES);
        let mesh = MeshConfig::default();
        let reviews = for_workload(&v, &mesh, "default", &labels("reviews"));
        assert_eq!(
            reviews.mesh.map(|(r, _)| r.metadata.name.as_str()),
            Some("mesh-default")
        );
        assert_eq!(
            reviews.namespace.map(|(r, _)| r.metadata.name.as_str()),
            Some("ns")
        );
        assert_eq!(
            reviews.workload.map(|(r, _)| r.metadata.name.as_str()),
            Some("reviews")
        );

        let server = effective(&reviews, &mesh, ListenerClass::SidecarInbound);
        // Provider from the mesh, filter from the namespace, disabled on the server side.
        let p = &server.access_logging.providers[0];
        assert_eq!(p.name, "envoy");
        assert!(p.disabled);
        assert_eq!(
            p.filter.as_ref().map(|f| f.0.as_str()),
            Some("response.code >= 500")
        );
        assert_eq!(
            p.filter.as_ref().map(|f| f.1.field.as_str()),
            Some("spec.accessLogging[0].filter.expression")
        );
        let client = effective(&reviews, &mesh, ListenerClass::SidecarOutbound);
        assert!(!client.access_logging.providers[0].disabled);

        // Tracing: sampling from the workload, tags merged by name.
        assert_eq!(server.tracing.random_sampling_percentage, Some(50.0));
        let tag = |e: &Effective<'_>, k: &str| {
            e.tracing.custom_tags[k]
                .literal
                .as_ref()
                .map(|l| l.value.clone())
        };
        assert_eq!(tag(&server, "a").as_deref(), Some("mesh"));
        assert_eq!(tag(&server, "b").as_deref(), Some("ns"));

        // Metrics: overrides add up, broadest first; mode filters them.
        assert_eq!(client.metrics.providers, vec!["prometheus".to_owned()]);
        assert_eq!(client.metrics.overrides.len(), 2);
        assert_eq!(
            client.metrics.overrides[0].metric,
            Some(IstioMetric::RequestCount)
        );
        assert_eq!(
            client.metrics.overrides[0].tag_overrides.get("x"),
            Some(&Some("'1'".to_owned()))
        );
        assert_eq!(client.metrics.overrides[1].disabled, Some(true));
        assert_eq!(server.metrics.overrides.len(), 1);

        // Another workload: mesh and namespace only.
        let other = for_workload(&v, &mesh, "default", &labels("ratings"));
        assert!(other.workload.is_none());
        let e = effective(&other, &mesh, ListenerClass::SidecarInbound);
        assert!(!e.access_logging.providers[0].disabled);
        assert_eq!(e.tracing.random_sampling_percentage, Some(1.0));
        // Another namespace: the mesh only.
        let elsewhere = for_workload(&v, &mesh, "prod", &labels("reviews"));
        assert!(elsewhere.namespace.is_none() && elsewhere.workload.is_none());
    }

    #[test]
    fn telemetry_decides_over_access_log_file_and_providers_give_path_and_format() {
        let mesh: MeshConfig = yaml_serde::from_str(
            r#"
accessLogFile: /tmp/all.log
extensionProviders:
- name: json-file
  envoyFileAccessLog: {path: /tmp/json.log, logFormat: {labels: {code: "%RESPONSE_CODE%"}}}
- name: otel
  opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4317}
"#,
        )
        .expect("mesh config");
        let mut notes = Notes::default();
        // No Telemetry: the mesh's file, Istio's default text format.
        let none = AccessLogging::default();
        let log = access_log(&none, &mesh, &mut notes).expect("logs");
        assert_eq!(log.path, "/tmp/all.log");
        assert_eq!(
            log.text_format,
            weft_xds::access_log_format::ISTIO_TEXT_FORMAT
        );

        let v = view(
            r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  accessLogging: [{providers: [{name: json-file}], filter: {expression: "request.method == 'POST'"}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: b, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: c, namespace: default}
spec:
  selector: {matchLabels: {app: c}}
  accessLogging: [{providers: [{name: otel}]}]
"#,
        );
        let log_of = |app: &str, notes: &mut Notes| {
            let s = for_workload(&v, &mesh, "default", &labels(app));
            let e = effective(&s, &mesh, ListenerClass::SidecarInbound);
            access_log(&e.access_logging, &mesh, notes)
        };
        let a = log_of("a", &mut notes).expect("a logs");
        assert_eq!(a.path, "/tmp/json.log");
        assert_eq!(
            a.json_format.get("code").map(String::as_str),
            Some("%RESPONSE_CODE%")
        );
        assert_eq!(a.filter.as_ref().map(|f| f.any_of.len()), Some(1));
        assert_eq!(log_of("b", &mut notes), None, "disabled");
        assert!(notes.0.is_empty(), "{:?}", notes.0);
        // Only a provider weft cannot write: the mesh's log stays.
        assert_eq!(
            log_of("c", &mut notes).map(|l| l.path),
            Some("/tmp/all.log".to_owned()),
            "not a file provider"
        );
        let found = notes.finish();
        assert!(
            found
                .iter()
                .any(|n| n.field == "spec.accessLogging[0].providers" && n.reason.contains("otel")),
            "{found:?}"
        );
    }

    #[test]
    fn what_telemetry_cannot_apply_is_reported_and_the_rest_applied() {
        let v = view(SCOPES);
        let found: Vec<String> = not_applied(v.resources())
            .iter()
            .map(ToString::to_string)
            .collect();
        // `x` is no label of the standard metrics.
        assert!(
            found
                .iter()
                .any(|f| f.contains("mesh-default spec.metrics[0].overrides[0].tagOverrides.x")),
            "{found:?}"
        );
        assert!(
            !found
                .iter()
                .any(|f| f.contains("spec.tracing") || f.contains("accessLogging")),
            "{found:?}"
        );

        // Metrics: reviews' client side reports nothing of ALL_METRICS; its server side all.
        let mesh = MeshConfig::default();
        let reviews = for_workload(&v, &mesh, "default", &labels("reviews"));
        let mut listeners = vec![
            proto::Listener {
                name: "outbound".into(),
                ..Default::default()
            },
            proto::Listener {
                name: "inbound|9080".into(),
                ..Default::default()
            },
        ];
        apply_metrics(&mut listeners, &reviews, &mesh, |l| {
            if l.name == "outbound" {
                ListenerClass::SidecarOutbound
            } else {
                ListenerClass::SidecarInbound
            }
        });
        let overrides = |l: &proto::Listener| l.stats.clone().unwrap_or_default().overrides;
        assert!(
            overrides(&listeners[0])
                .iter()
                .any(|o| o.metric.is_empty() && o.disabled == Some(true)),
            "{listeners:?}"
        );
        assert!(
            overrides(&listeners[1])
                .iter()
                .all(|o| o.disabled != Some(true)),
            "{listeners:?}"
        );

        // Tracing: the workload's sampling over the mesh's, custom tags merged by name.
        let over = tracing_override(&reviews, &mesh, ListenerClass::SidecarInbound)
            .expect("Telemetry configures tracing");
        assert_eq!(over.sampling, Some(50.0));
        let b = over
            .custom_tags
            .iter()
            .find(|t| t.tag == "b")
            .expect("tag b");
        assert_eq!(
            b.source,
            Some(proto::custom_tag::Source::Literal("ns".into()))
        );
    }
}
