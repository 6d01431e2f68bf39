//! The mesh-wide settings some findings depend on (`weft analyze --mesh-config FILE`, as
//! `istioctl analyze --meshConfigFile`): read from Istio's `MeshConfig` YAML, of which only
//! the fields below matter here; every other field is accepted and ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What `weft analyze` reads of Istio's `MeshConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshSettings {
    /// Where mesh-wide Sidecars and policies live (Istio's default: `istio-system`).
    pub root_namespace: String,
    /// Visibility of resources that set no `exportTo` (empty: every namespace).
    pub default_service_export_to: Vec<String>,
    pub default_virtual_service_export_to: Vec<String>,
    pub default_destination_rule_export_to: Vec<String>,
    pub default_config: ProxyDefaults,
    /// The providers Telemetries may name (`extensionProviders`): name and kind.
    pub extension_providers: Vec<ProviderDecl>,
}

/// One of `extensionProviders`: its name, and its kind (the other key: `envoyFileAccessLog`,
/// `zipkin`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderDecl {
    pub name: String,
    #[serde(flatten)]
    pub kinds: BTreeMap<String, yaml_serde::Value>,
}

impl ProviderDecl {
    /// Its kind, as the key is written.
    pub fn kind(&self) -> &str {
        self.kinds.keys().next().map_or("", String::as_str)
    }
}

/// `defaultConfig`: the proxies' defaults; only `proxyMetadata` is read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyDefaults {
    pub proxy_metadata: BTreeMap<String, String>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            root_namespace: "istio-system".to_owned(),
            default_service_export_to: Vec::new(),
            default_virtual_service_export_to: Vec::new(),
            default_destination_rule_export_to: Vec::new(),
            default_config: ProxyDefaults::default(),
            extension_providers: Vec::new(),
        }
    }
}

/// A mesh config file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read mesh config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("mesh config {path} is not a valid MeshConfig: {source}")]
    Parse {
        path: String,
        source: yaml_serde::Error,
    },
}

impl MeshSettings {
    /// Reads Istio's `MeshConfig` YAML (the `mesh` key of the `istio` ConfigMap).
    pub fn from_file(path: &std::path::Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|source| SettingsError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Self, yaml_serde::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        yaml_serde::from_str(text)
    }

    /// Whether the sidecars answer DNS queries themselves (`ISTIO_META_DNS_CAPTURE`): then a
    /// TCP ServiceEntry needs no address, the proxy allocates one.
    pub fn dns_capture(&self) -> bool {
        self.proxy_flag("ISTIO_META_DNS_CAPTURE")
    }

    /// Whether the sidecars give ServiceEntries without `addresses` one of their own: DNS
    /// capture with `ISTIO_META_DNS_AUTO_ALLOCATE` (or `PILOT_ENABLE_IP_AUTOALLOCATE`).
    pub fn auto_allocates_addresses(&self) -> bool {
        self.dns_capture()
            && (self.proxy_flag("ISTIO_META_DNS_AUTO_ALLOCATE")
                || self.proxy_flag("PILOT_ENABLE_IP_AUTOALLOCATE"))
    }

    fn proxy_flag(&self, name: &str) -> bool {
        self.default_config
            .proxy_metadata
            .get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_matters_and_ignores_the_rest() {
        let s = MeshSettings::from_yaml(
            "accessLogFile: /dev/stdout\ndefaultConfig:\n  proxyMetadata:\n    ISTIO_META_DNS_CAPTURE: \"true\"\ndefaultVirtualServiceExportTo: [\".\"]\n",
        )
        .unwrap();
        assert!(s.dns_capture());
        assert!(!s.auto_allocates_addresses());
        assert_eq!(s.default_virtual_service_export_to, vec![".".to_owned()]);
        assert_eq!(s.root_namespace, "istio-system");
        assert!(!MeshSettings::default().dns_capture());
    }
}
