//! `Telemetry` (telemetry.istio.io/v1, v1alpha1): access logging, tracing and metrics settings
//! for the whole mesh (root namespace, no selector), a namespace (no selector) or the workloads
//! a selector picks. Which settings a proxy ends up with is resolved by the control plane.
//!
//! ```yaml
//! apiVersion: telemetry.istio.io/v1
//! kind: Telemetry
//! metadata: {name: mesh-default, namespace: istio-system}
//! spec:
//!   accessLogging:
//!   - providers: [{name: envoy}]
//!     filter: {expression: "response.code >= 400"}
//! ```

pub mod filter;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::validate::{Cx, Validate};

/// The `spec` of a Telemetry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

/// A provider by name: one of `meshConfig.extensionProviders`, or a built-in (`envoy`,
/// `prometheus`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

/// Which side of the traffic a setting is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    #[default]
    ClientAndServer,
    Client,
    Server,
}

impl WorkloadMode {
    /// Whether the setting applies to a listener of `client` side (outbound) or not.
    pub fn applies(self, client: bool) -> bool {
        match self {
            WorkloadMode::ClientAndServer => true,
            WorkloadMode::Client => client,
            WorkloadMode::Server => !client,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModeSelector {
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// `tracing[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
}

/// A span tag: one of `literal`, `environment`, `header`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<FromTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<FromTag>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

/// An environment variable or a request header, with a value when it is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

/// `metrics[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Which metrics an override is for: one of Istio's standard metrics (or all), or a custom
/// metric by name; on which side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// Istio's standard metrics, by their Telemetry names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    #[default]
    AllMetrics,
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

impl IstioMetric {
    /// The Prometheus name of the metric (`istio_requests_total`, ...); None for ALL_METRICS.
    pub fn prometheus_name(self) -> Option<&'static str> {
        Some(match self {
            IstioMetric::AllMetrics => return None,
            IstioMetric::RequestCount => "istio_requests_total",
            IstioMetric::RequestDuration => "istio_request_duration_milliseconds",
            IstioMetric::RequestSize => "istio_request_bytes",
            IstioMetric::ResponseSize => "istio_response_bytes",
            IstioMetric::TcpOpenedConnections => "istio_tcp_connections_opened_total",
            IstioMetric::TcpClosedConnections => "istio_tcp_connections_closed_total",
            IstioMetric::TcpSentBytes => "istio_tcp_sent_bytes_total",
            IstioMetric::TcpReceivedBytes => "istio_tcp_received_bytes_total",
            IstioMetric::GrpcRequestMessages => "istio_request_messages_total",
            IstioMetric::GrpcResponseMessages => "istio_response_messages_total",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    #[serde(default)]
    pub operation: TagOperation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    #[default]
    Upsert,
    Remove,
}

/// `accessLogging[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    #[serde(default)]
    pub expression: String,
}

/// Providers every mesh has without declaring them: Envoy's stdout access log and Prometheus
/// metrics, as Istio's defaults.
pub const BUILTIN_PROVIDERS: &[&str] = &["envoy", "prometheus"];

impl Validate for Telemetry {
    fn validate(&self, cx: &mut Cx) {
        crate::security::authorization_policy::validate_policy_target(
            cx,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        if self.tracing.len() > 1 {
            // As Istio: one tracing configuration per resource.
            cx.error_at("tracing", "multiple tracing is not currently supported");
        }
        cx.each("tracing", &self.tracing, |cx, t| t.validate(cx));
        cx.each("metrics", &self.metrics, |cx, m| m.validate(cx));
        cx.each("accessLogging", &self.access_logging, |cx, a| {
            a.validate(cx)
        });
    }
}

fn providers(cx: &mut Cx, providers: &[ProviderRef]) {
    cx.each("providers", providers, |cx, p| {
        if p.name.is_empty() {
            cx.error_at("name", "a provider needs a name");
        }
    });
}

impl Validate for Tracing {
    fn validate(&self, cx: &mut Cx) {
        if self.providers.len() > 1 {
            cx.error_at("providers", "multiple providers is not currently supported");
        }
        providers(cx, &self.providers);
        if let Some(p) = self.random_sampling_percentage
            && !(0.0..=100.0).contains(&p)
        {
            cx.error_at(
                "randomSamplingPercentage",
                format!("{p} is not a percentage between 0 and 100"),
            );
        }
        cx.field("customTags", |cx| {
            for (name, tag) in &self.custom_tags {
                cx.key(name, |cx| {
                    let set = usize::from(tag.literal.is_some())
                        + usize::from(tag.environment.is_some())
                        + usize::from(tag.header.is_some());
                    if set != 1 {
                        cx.error(
                            "exactly one of `literal`, `environment` and `header` is required",
                        );
                    }
                    for (field, from) in
                        [("environment", &tag.environment), ("header", &tag.header)]
                    {
                        if from.as_ref().is_some_and(|f| f.name.is_empty()) {
                            cx.error_at(field, "`name` is required");
                        }
                    }
                });
            }
        });
    }
}

impl Validate for Metrics {
    fn validate(&self, cx: &mut Cx) {
        providers(cx, &self.providers);
        cx.opt("reportingInterval", &self.reporting_interval, |cx, d| {
            if let Err(e) = d.check() {
                cx.error(e);
            }
        });
        cx.each("overrides", &self.overrides, |cx, o| {
            if let Some(m) = &o.match_
                && m.metric.is_some()
                && m.custom_metric.is_some()
            {
                cx.error_at(
                    "match",
                    "only one of `metric` and `customMetric` may be set",
                );
            }
            cx.field("tagOverrides", |cx| {
                for (tag, t) in &o.tag_overrides {
                    cx.key(tag, |cx| match (t.operation, &t.value) {
                        (TagOperation::Upsert, None) => {
                            cx.error_at("value", "must be set when operation is UPSERT");
                        }
                        (TagOperation::Remove, Some(_)) => {
                            cx.error_at("value", "must be empty when operation is REMOVE");
                        }
                        _ => {}
                    });
                }
            });
        });
    }
}

impl Validate for AccessLogging {
    fn validate(&self, cx: &mut Cx) {
        providers(cx, &self.providers);
        cx.opt("filter", &self.filter, |cx, f| {
            cx.field("expression", |cx| {
                if let Err(e) = filter::parse(&f.expression) {
                    cx.error(e.to_string());
                }
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{errors, parse};

    #[test]
    fn istio_examples_decode_and_validate() {
        let t: Telemetry = parse(
            r#"
selector: {matchLabels: {app: reviews}}
tracing:
- providers: [{name: zipkin}]
  randomSamplingPercentage: 10.5
  customTags:
    team: {literal: {value: a}}
    pod: {environment: {name: POD_NAME, defaultValue: x}}
    user: {header: {name: x-user}}
metrics:
- providers: [{name: prometheus}]
  overrides:
  - match: {metric: REQUEST_COUNT, mode: CLIENT}
    tagOverrides:
      request_protocol: {operation: REMOVE}
      env: {value: "'prod'"}
  - match: {metric: ALL_METRICS}
    disabled: true
accessLogging:
- providers: [{name: envoy}]
  filter: {expression: "response.code >= 400"}
"#,
        );
        assert_eq!(errors(&t), Vec::<(String, String)>::new());
        assert_eq!(t.tracing[0].random_sampling_percentage, Some(10.5));
        assert_eq!(t.metrics[0].overrides[1].disabled, Some(true));
    }

    #[test]
    fn bad_fields_are_named() {
        let t: Telemetry = parse(
            r#"
selector: {matchLabels: {app: a}}
targetRef: {kind: Service, name: a}
tracing:
- randomSamplingPercentage: 120
  providers: [{name: a}, {name: b}]
  customTags:
    t: {literal: {value: a}, header: {name: h}}
metrics:
- overrides:
  - tagOverrides:
      x: {operation: UPSERT}
      y: {operation: REMOVE, value: v}
accessLogging:
- filter: {expression: "has(request.headers.x)"}
"#,
        );
        let found = errors(&t);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "spec",
            "spec.tracing[0].randomSamplingPercentage",
            "spec.tracing[0].providers",
            "spec.tracing[0].customTags[t]",
            "spec.metrics[0].overrides[0].tagOverrides[x].value",
            "spec.metrics[0].overrides[0].tagOverrides[y].value",
            "spec.accessLogging[0].filter.expression",
        ] {
            assert!(paths.contains(&want), "{want} not in {found:?}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<Telemetry, _> = yaml_serde::from_str("accessLogging: [{provider: x}]");
        assert!(r.is_err());
    }
}
