//! Mesh-wide settings: the part of Istio's `MeshConfig` that translation reads.
//!
//! Read from the same YAML Istio's `meshConfig` is written in (camelCase). Fields weft does not
//! read are accepted and ignored, so an existing Istio mesh config loads unchanged.

use serde::{Deserialize, Serialize};
use weft_api::Duration;
use weft_api::networking::destination_rule::{H2UpgradePolicy, LocalityLoadBalancerSetting};
use weft_api::networking::sidecar::OutboundTrafficPolicyMode;
use weft_api::networking::virtual_service::HttpRetry;
use weft_api::validate::Validate;

/// Istio's `MeshConfig`, reduced to what weft's translation uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    /// What sidecars do with traffic to hosts outside the registry. Istio's default: ALLOW_ANY.
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Where mesh-wide Sidecar and DestinationRule defaults live. Default `istio-system`.
    pub root_namespace: String,
    /// The trust domain of workload identities (`spiffe://<trustDomain>/ns/NS/sa/SA`).
    /// Default `cluster.local`, as Istio.
    pub trust_domain: String,
    /// Upstream connect timeout for clusters without a DestinationRule setting one. Unset: the
    /// proxy's default (10s, as Istio).
    pub connect_timeout: Option<Duration>,
    /// Whether HTTP/1.1 upstream connections are upgraded to HTTP/2 by default.
    pub h2_upgrade_policy: H2UpgradePolicy,
    /// Visibility of Services, VirtualServices and DestinationRules without `exportTo`
    /// (`*` when empty).
    pub default_service_export_to: Vec<String>,
    pub default_virtual_service_export_to: Vec<String>,
    pub default_destination_rule_export_to: Vec<String>,
    /// weft: a directory of credentials read from files, the explicit file source of a
    /// gateway's `credentialName` when no Secret of that name exists in the gateway's
    /// namespace: `<credentialDir>/<credentialName>/{tls.crt,tls.key,ca.crt}` (the keys of a
    /// Kubernetes TLS secret as files). Unset (the default): credentials come from Secrets
    /// (and `file://DIR` names) only. A DestinationRule's `credentialName` is still read from
    /// files only, from here or [`DEFAULT_CREDENTIAL_DIR`].
    pub credential_dir: String,
    /// Locality load balancing for destinations whose DestinationRule says nothing of it
    /// (a rule's `localityLbSetting` replaces this whole). Istio's default is
    /// `{enabled: true}`: failover by locality wherever outlier detection is on.
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// How often the control plane resolves the DNS names of ServiceEntries again
    /// ([`crate::dns`]). Istio's default: 60s.
    pub dns_refresh_rate: Option<Duration>,
    /// The retry policy of routes that set no `retries` (Istio's `defaultHttpRetryPolicy`;
    /// unset: Istio's default of 2 retries on connect failures, refused streams and 503).
    pub default_http_retry_policy: Option<HttpRetry>,
    /// How proxies normalize request paths before routing (Istio's `pathNormalization`;
    /// unset or `DEFAULT`: `BASE`).
    pub path_normalization: Option<PathNormalization>,
    /// The proxies' defaults (Istio's `defaultConfig`, a ProxyConfig); weft reads
    /// `gatewayTopology`.
    pub default_config: ProxyConfig,
    /// Where every proxy writes its access log (`/dev/stdout` or a file path). Empty (the
    /// default, as Istio): no access log, unless a Telemetry turns one on.
    pub access_log_file: String,
    /// TEXT (default) or JSON.
    pub access_log_encoding: AccessLogEncoding,
    /// An Envoy format string (TEXT), or a JSON object whose values are format strings
    /// (JSON). Empty: Istio's default format for the encoding.
    pub access_log_format: String,
    /// Istio's `enableTracing`: false turns off the legacy `defaultConfig.tracing.zipkin`
    /// tracing (not `defaultProviders`), as in Istio. Default true.
    pub enable_tracing: Option<bool>,
    /// Providers Telemetry resources name (`envoyFileAccessLog`, `zipkin`, ...).
    pub extension_providers: Vec<ExtensionProvider>,
    /// Providers in force where no Telemetry names any (Istio's `defaultProviders`).
    pub default_providers: DefaultProviders,
}

/// `defaultProviders`: provider names per telemetry kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DefaultProviders {
    pub access_logging: Vec<String>,
    pub tracing: Vec<String>,
    pub metrics: Vec<String>,
}

/// `accessLogEncoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

/// One of `meshConfig.extensionProviders`: a name and one provider kind. weft uses
/// `envoyFileAccessLog` (access logs) and keeps tracing providers' addresses for tracing;
/// other kinds are accepted (an Istio mesh config loads unchanged) and reported as not used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtensionProvider {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<FileAccessLogProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<TracingProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<TracingProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<serde_json::Value>,
    /// Any other kind (`envoyOtelAls`, `datadog`, `envoyExtAuthzHttp`, ...), as written.
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `envoyFileAccessLog`: where and how a Telemetry naming this provider logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FileAccessLogProvider {
    /// `/dev/stdout` or a file. Empty: stdout.
    pub path: String,
    pub log_format: Option<LogFormat>,
}

/// A provider's `logFormat`: a format string (TEXT), or JSON keys (`labels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LogFormat {
    pub text: Option<String>,
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

/// A tracing provider's address (`zipkin`, `opentelemetry`): kept for tracing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TracingProvider {
    /// The collector's host: a service in the registry (`zipkin.istio-system.svc.cluster.local`,
    /// optionally `NAMESPACE/HOST`), an IP address, or a DNS name.
    pub service: String,
    pub port: u32,
    /// Longest tag value kept; 0: 256.
    pub max_tag_length: u32,
    /// OpenTelemetry: OTLP over gRPC (`grpc: {}`, the default); `http` is not supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<serde_json::Value>,
}

impl ExtensionProvider {
    /// The provider's kind, as its key is written (`envoyFileAccessLog`, `zipkin`, ...).
    pub fn kind(&self) -> Option<&str> {
        if self.envoy_file_access_log.is_some() {
            Some("envoyFileAccessLog")
        } else if self.zipkin.is_some() {
            Some("zipkin")
        } else if self.opentelemetry.is_some() {
            Some("opentelemetry")
        } else if self.prometheus.is_some() {
            Some("prometheus")
        } else {
            self.other.keys().next().map(String::as_str)
        }
    }
}

/// How a proxy's listeners log: the proto each listener carries.
pub fn access_log_proto(
    path: &str,
    encoding: AccessLogEncoding,
    format: &str,
) -> weft_xds::proto::AccessLog {
    use weft_xds::access_log_format::{ISTIO_JSON_FORMAT, ISTIO_TEXT_FORMAT};
    use weft_xds::proto::access_log::Format;
    let mut log = weft_xds::proto::AccessLog {
        path: path.to_owned(),
        ..Default::default()
    };
    match encoding {
        AccessLogEncoding::Text => {
            log.text_format = if format.is_empty() {
                ISTIO_TEXT_FORMAT.to_owned()
            } else {
                format.to_owned()
            };
        }
        AccessLogEncoding::Json => {
            log.format = Format::Json as i32;
            log.json_format = json_labels(format).unwrap_or_default();
            if log.json_format.is_empty() {
                log.json_format = ISTIO_JSON_FORMAT
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
            }
        }
    }
    log
}

/// `accessLogFormat` with JSON encoding: a JSON object of format strings (empty: none).
fn json_labels(format: &str) -> Result<std::collections::HashMap<String, String>, String> {
    if format.trim().is_empty() {
        return Ok(Default::default());
    }
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(format)
        .map_err(|e| format!("with JSON encoding, a JSON object of format strings: {e}"))?;
    v.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            other => Ok((k, other.to_string())),
        })
        .collect()
}

/// Checks an Envoy format string as the proxy will compile it.
fn check_format(cx: &mut weft_api::validate::Cx, format: &str) {
    if let Err(e) = weft_xds::access_log_format::parse(format) {
        cx.error(format!("{format:?}: {e}"));
    }
}

/// Istio's ProxyConfig, reduced to what weft reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    pub gateway_topology: Option<GatewayTopology>,
    /// Istio's `defaultConfig.tracing`: sampling, custom tags, and the legacy Zipkin address.
    pub tracing: Option<crate::trace_mesh::ProxyTracing>,
    /// Istio's `defaultConfig.proxyMetadata`: what the agent and proxy read from their
    /// environment. weft reads `ISTIO_META_DNS_CAPTURE` ([`MeshConfig::dns_capture`]).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub proxy_metadata: std::collections::BTreeMap<String, String>,
}

/// Istio's `gatewayTopology`: the network in front of a gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayTopology {
    /// How many trusted proxies (load balancers, CDNs) are in front of the gateway: the
    /// client's address is read that many hops back in `x-forwarded-for`.
    pub num_trusted_proxies: u32,
}

/// Istio's `meshConfig.pathNormalization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PathNormalization {
    pub normalization: Normalization,
}

/// `pathNormalization.normalization`, Istio's names and default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Normalization {
    #[default]
    Default,
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutboundTrafficPolicy {
    pub mode: Mode,
}

/// `outboundTrafficPolicy.mode`. Istio's mesh default is ALLOW_ANY (the Sidecar resource's
/// own field defaults the other way, which is why this is a separate type).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    RegistryOnly,
    #[default]
    AllowAny,
}

impl From<OutboundTrafficPolicyMode> for Mode {
    fn from(m: OutboundTrafficPolicyMode) -> Self {
        match m {
            OutboundTrafficPolicyMode::RegistryOnly => Mode::RegistryOnly,
            OutboundTrafficPolicyMode::AllowAny => Mode::AllowAny,
        }
    }
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            root_namespace: "istio-system".to_owned(),
            trust_domain: "cluster.local".to_owned(),
            connect_timeout: None,
            h2_upgrade_policy: H2UpgradePolicy::DoNotUpgrade,
            default_service_export_to: Vec::new(),
            default_virtual_service_export_to: Vec::new(),
            default_destination_rule_export_to: Vec::new(),
            credential_dir: String::new(),
            locality_lb_setting: Some(LocalityLoadBalancerSetting {
                enabled: Some(true),
                ..LocalityLoadBalancerSetting::default()
            }),
            dns_refresh_rate: None,
            default_http_retry_policy: None,
            path_normalization: None,
            default_config: ProxyConfig::default(),
            access_log_file: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            access_log_format: String::new(),
            extension_providers: Vec::new(),
            default_providers: DefaultProviders::default(),
            enable_tracing: None,
        }
    }
}

/// Where a DestinationRule's `credentialName` is read from when `credentialDir` is unset.
pub const DEFAULT_CREDENTIAL_DIR: &str = "/etc/weft/credentials";

/// `dnsRefreshRate` when unset, as Istio.
pub const DEFAULT_DNS_REFRESH_RATE: std::time::Duration = std::time::Duration::from_secs(60);

impl MeshConfig {
    /// The directory a DestinationRule's `credentialName` is read from.
    pub fn file_credential_dir(&self) -> &str {
        if self.credential_dir.is_empty() {
            DEFAULT_CREDENTIAL_DIR
        } else {
            &self.credential_dir
        }
    }

    /// Whether sidecars answer their workload's DNS queries (Istio's DNS proxying):
    /// `defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE: "true"` (any case, as Istio's
    /// boolean environment variables).
    pub fn dns_capture(&self) -> bool {
        self.default_config
            .proxy_metadata
            .get("ISTIO_META_DNS_CAPTURE")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// `defaultConfig.gatewayTopology.numTrustedProxies`: 0 unless set.
    pub fn num_trusted_proxies(&self) -> u32 {
        self.default_config
            .gateway_topology
            .map_or(0, |t| t.num_trusted_proxies)
    }

    /// The proxies' path normalization: `pathNormalization`, else Istio's default (`BASE`).
    pub fn path_normalization(&self) -> weft_xds::proto::PathNormalization {
        use weft_xds::proto::PathNormalization as P;
        match self.path_normalization.map(|p| p.normalization) {
            None | Some(Normalization::Default | Normalization::Base) => P::Base,
            Some(Normalization::None) => P::None,
            Some(Normalization::MergeSlashes) => P::MergeSlashes,
            Some(Normalization::DecodeAndMergeSlashes) => P::DecodeAndMergeSlashes,
        }
    }

    /// `dnsRefreshRate`, or Istio's default; a value that does not parse or is zero counts
    /// as the default (`check` reports it).
    pub fn dns_refresh_rate(&self) -> std::time::Duration {
        self.dns_refresh_rate
            .as_ref()
            .and_then(|d| d.get().ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_DNS_REFRESH_RATE)
    }

    /// Istio's checks of the fields translation reads (`ValidateMeshConfig`): today the
    /// `localityLbSetting` rules a DestinationRule's follows. Errors and warnings, each with
    /// its field path.
    pub fn check(&self) -> Vec<weft_api::validate::Finding> {
        let mut cx = weft_api::validate::Cx::new("");
        cx.opt("localityLbSetting", &self.locality_lb_setting, |cx, l| {
            // The mesh-wide setting has no outlier detection of its own to require: it applies
            // where rules set one.
            l.check(cx, true)
        });
        cx.opt(
            "defaultHttpRetryPolicy",
            &self.default_http_retry_policy,
            |cx, r| r.validate(cx),
        );
        cx.opt("dnsRefreshRate", &self.dns_refresh_rate, |cx, d| {
            if let Err(e) = d.check() {
                cx.error(e);
            }
        });
        if !self.access_log_format.is_empty() {
            cx.field("accessLogFormat", |cx| match self.access_log_encoding {
                AccessLogEncoding::Text => check_format(cx, &self.access_log_format),
                AccessLogEncoding::Json => match json_labels(&self.access_log_format) {
                    Ok(labels) => {
                        for (k, v) in &labels {
                            cx.key(k, |cx| check_format(cx, v));
                        }
                    }
                    Err(e) => cx.error(e),
                },
            });
        }
        self.check_providers(&mut cx);
        crate::trace_mesh::check(self, &mut cx);
        cx.into_findings()
    }

    /// `extensionProviders`: names given and unique, one kind each, formats that compile.
    fn check_providers(&self, cx: &mut weft_api::validate::Cx) {
        let mut seen = std::collections::HashSet::new();
        cx.each("extensionProviders", &self.extension_providers, |cx, p| {
            if p.name.is_empty() {
                cx.error_at("name", "a provider needs a name");
            } else if !seen.insert(p.name.clone()) {
                cx.error_at("name", format!("provider {:?} is declared twice", p.name));
            }
            let kinds = usize::from(p.envoy_file_access_log.is_some())
                + usize::from(p.zipkin.is_some())
                + usize::from(p.opentelemetry.is_some())
                + usize::from(p.prometheus.is_some())
                + p.other.len();
            if kinds != 1 {
                cx.error("a provider has exactly one kind (envoyFileAccessLog, zipkin, ...)");
            }
            if let Some(kind) = p.other.keys().next() {
                cx.warn_code(
                    weft_api::diag::code::NOT_ENFORCED,
                    format!("provider kind {kind:?} is accepted but not used by weft"),
                );
            }
            cx.opt("envoyFileAccessLog", &p.envoy_file_access_log, |cx, f| {
                cx.opt("logFormat", &f.log_format, |cx, l| {
                    if l.text.is_some() && l.labels.is_some() {
                        cx.error("only one of `text` and `labels` may be set");
                    }
                    cx.opt("text", &l.text, |cx, t| check_format(cx, t));
                    cx.opt("labels", &l.labels, |cx, labels| {
                        for (k, v) in labels {
                            cx.key(k, |cx| check_format(cx, v));
                        }
                    });
                });
            });
        });
    }

    /// The mesh config's warnings (a provider kind weft does not use, ...) as notes for
    /// `/debug/config_errors`: accepted, never silently.
    pub fn notes(&self) -> Vec<crate::unsupported::Unsupported> {
        self.check()
            .into_iter()
            .filter(|f| f.severity == weft_api::diag::Severity::Warning)
            .map(|f| {
                crate::unsupported::Unsupported::new(
                    None,
                    format!("meshConfig.{}", f.path),
                    f.message,
                )
            })
            .collect()
    }

    /// The names Telemetry resources may use as providers: the extension providers and the
    /// built-ins.
    pub fn provider_names(&self) -> Vec<String> {
        self.extension_providers
            .iter()
            .map(|p| p.name.clone())
            .chain(
                weft_api::telemetry::BUILTIN_PROVIDERS
                    .iter()
                    .map(|s| (*s).to_owned()),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_istio_mesh_config_and_ignores_the_rest() {
        let yaml = "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\naccessLogFile: /dev/stdout\n";
        let m: MeshConfig = yaml_serde::from_str(yaml).expect("parses");
        assert_eq!(m.outbound_traffic_policy.mode, Mode::RegistryOnly);
        assert_eq!(m.root_namespace, "istio-system");
        let d: MeshConfig = yaml_serde::from_str("{}").expect("parses");
        assert_eq!(d, MeshConfig::default());
        assert_eq!(d.outbound_traffic_policy.mode, Mode::AllowAny);
    }

    #[test]
    fn num_trusted_proxies_is_read_from_the_default_proxy_config() {
        assert_eq!(MeshConfig::default().num_trusted_proxies(), 0);
        let m: MeshConfig = yaml_serde::from_str(
            "defaultConfig: {gatewayTopology: {numTrustedProxies: 2}, concurrency: 2}",
        )
        .expect("mesh config");
        assert_eq!(m.num_trusted_proxies(), 2);
    }

    #[test]
    fn dns_capture_is_istios_proxy_metadata_switch() {
        assert!(!MeshConfig::default().dns_capture());
        for (value, on) in [("\"true\"", true), ("\"True\"", true), ("\"false\"", false)] {
            let m: MeshConfig = yaml_serde::from_str(&format!(
                "defaultConfig: {{proxyMetadata: {{ISTIO_META_DNS_CAPTURE: {value}}}}}"
            ))
            .expect("mesh config");
            assert_eq!(m.dns_capture(), on, "{value}");
        }
    }

    #[test]
    fn path_normalization_defaults_to_base() {
        use weft_xds::proto::PathNormalization as P;
        assert_eq!(MeshConfig::default().path_normalization(), P::Base);
        for (yaml, want) in [
            ("pathNormalization: {normalization: DEFAULT}", P::Base),
            ("pathNormalization: {}", P::Base),
            ("pathNormalization: {normalization: NONE}", P::None),
            (
                "pathNormalization: {normalization: MERGE_SLASHES}",
                P::MergeSlashes,
            ),
            (
                "pathNormalization: {normalization: DECODE_AND_MERGE_SLASHES}",
                P::DecodeAndMergeSlashes,
            ),
        ] {
            let m: MeshConfig = yaml_serde::from_str(yaml).expect(yaml);
            assert_eq!(m.path_normalization(), want, "{yaml}");
        }
        assert!(
            yaml_serde::from_str::<MeshConfig>("pathNormalization: {normalization: X}").is_err()
        );
    }

    #[test]
    fn locality_lb_setting_defaults_to_enabled_and_is_checked() {
        let d = MeshConfig::default();
        assert_eq!(
            d.locality_lb_setting.as_ref().and_then(|l| l.enabled),
            Some(true)
        );
        assert!(d.check().is_empty());
        let yaml = "localityLbSetting:\n  distribute: [{from: 'us-west/*', to: {us-west: 80, us-east: 10}}]\n  failover: [{from: us-west, to: us-east}]\n";
        let m: MeshConfig = yaml_serde::from_str(yaml).expect("parses");
        let found: Vec<String> = m
            .check()
            .iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect();
        assert!(
            found.iter().any(|f| f.contains("distribute and failover")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("localityLbSetting.distribute[0].to")),
            "{found:?}"
        );
    }

    fn errors(m: &MeshConfig) -> Vec<String> {
        m.check()
            .iter()
            .filter(|f| f.severity == weft_api::diag::Severity::Error)
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect()
    }

    #[test]
    fn access_log_settings_are_read_and_formats_checked() {
        let m: MeshConfig = yaml_serde::from_str(
            "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'\n",
        )
        .expect("parses");
        assert_eq!(m.access_log_encoding, AccessLogEncoding::Json);
        assert!(errors(&m).is_empty(), "{:?}", errors(&m));
        let log = access_log_proto(
            &m.access_log_file,
            m.access_log_encoding,
            &m.access_log_format,
        );
        assert_eq!(
            log.json_format.get("code").map(String::as_str),
            Some("%RESPONSE_CODE%")
        );

        let bad: MeshConfig = yaml_serde::from_str(
            "accessLogFile: /tmp/x\naccessLogFormat: '%RESPONSE_CODE% %NOPE%'\n",
        )
        .expect("parses");
        let found = errors(&bad);
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("accessLogFormat: ") && e.contains("%NOPE%")),
            "{found:?}"
        );
        let bad_json: MeshConfig =
            yaml_serde::from_str("accessLogEncoding: JSON\naccessLogFormat: 'not json'\n")
                .expect("parses");
        assert!(
            errors(&bad_json)
                .iter()
                .any(|e| e.starts_with("accessLogFormat: "))
        );
        assert!(yaml_serde::from_str::<MeshConfig>("accessLogEncoding: XML").is_err());
        // The mesh config file keeps the previous config for a bad one.
        assert!(crate::server::mesh_file::parse("accessLogFormat: '%X%'").is_err());
    }

    #[test]
    fn extension_providers_are_parsed_and_checked() {
        let m: MeshConfig = yaml_serde::from_str(
            r#"
extensionProviders:
- name: file
  envoyFileAccessLog: {path: /tmp/a.log, logFormat: {text: "%RESPONSE_CODE%\n"}}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, maxTagLength: 256}
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}
- name: als
  envoyOtelAls: {service: x, port: 1}
- name: bad
  envoyFileAccessLog: {logFormat: {text: "%BAD%"}}
"#,
        )
        .expect("parses");
        assert_eq!(
            m.extension_providers[1].zipkin.as_ref().map(|z| z.port),
            Some(9411)
        );
        assert_eq!(m.extension_providers[3].kind(), Some("envoyOtelAls"));
        let found = errors(&m);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("extensionProviders[4].envoyFileAccessLog.logFormat.text: "));
        let warnings: Vec<_> = m
            .check()
            .into_iter()
            .filter(|f| f.severity == weft_api::diag::Severity::Warning)
            .collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.path == "extensionProviders[3]" && w.message.contains("envoyOtelAls"))
        );
        assert!(m.provider_names().contains(&"envoy".to_owned()));
        let notes: Vec<String> = m.notes().iter().map(ToString::to_string).collect();
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("meshConfig.extensionProviders[3]: ")),
            "{notes:?}"
        );
    }
}
