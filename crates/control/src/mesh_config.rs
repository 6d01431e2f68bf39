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

    // --- Distributed tracing (crate::translate::trace_config) ---
    /// Istio's `enableTracing`: false turns off the legacy `defaultConfig.tracing.zipkin`
    /// tracing (not `defaultProviders`), as in Istio. Default true.
    pub enable_tracing: Option<bool>,
    /// Istio's `extensionProviders`: the tracing providers (zipkin, opentelemetry) by name.
    pub extension_providers: Vec<crate::trace_mesh::ExtensionProvider>,
    /// Istio's `defaultProviders`: which providers apply when no Telemetry says.
    pub default_providers: crate::trace_mesh::DefaultProviders,
}

/// Istio's ProxyConfig, reduced to what weft reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    pub gateway_topology: Option<GatewayTopology>,
    /// Istio's `defaultConfig.tracing`: sampling, custom tags, and the legacy Zipkin address.
    pub tracing: Option<crate::trace_mesh::ProxyTracing>,
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
            enable_tracing: None,
            extension_providers: Vec::new(),
            default_providers: crate::trace_mesh::DefaultProviders::default(),
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
        crate::trace_mesh::check(self, &mut cx);
        cx.into_findings()
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
}
