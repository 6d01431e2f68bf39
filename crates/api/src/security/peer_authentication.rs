//! `PeerAuthentication` (security.istio.io): which mutual-TLS mode a workload's sidecar accepts
//! for incoming traffic, for the whole mesh (in the root namespace, no selector), a namespace (no
//! selector), or the workloads a selector picks, optionally per port.
//!
//! ```yaml
//! apiVersion: security.istio.io/v1
//! kind: PeerAuthentication
//! metadata: {name: default, namespace: istio-system}
//! spec:
//!   mtls: {mode: STRICT}
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::common::WorkloadSelector;
use crate::validate::{Cx, Validate, rules};

/// The `spec` of a PeerAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// The workloads (in the policy's namespace) this policy applies to. Without it the policy
    /// applies to the whole namespace, or to the whole mesh when in the root namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode for every port not listed in `portLevelMtls`. Unset inherits from the parent
    /// scope (namespace, then mesh); the mesh default is `PERMISSIVE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port overrides, keyed by the workload's (container) port number. Only allowed with a
    /// `selector`, since port numbers only mean something for a specific workload. `None` when
    /// the field is absent, so that an empty map written out can be reported. Keys may be
    /// written as YAML numbers (`8080:`) or strings (`"8080":`, as JSON must).
    #[serde(
        default,
        deserialize_with = "port_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub port_level_mtls: Option<BTreeMap<u32, MutualTls>>,
}

/// Istio's `PeerAuthentication.MutualTLS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// How a sidecar treats incoming plaintext and mutual-TLS connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit the mode of the parent scope (namespace, then mesh).
    #[default]
    Unset,
    /// Plaintext only; mutual TLS is not offered.
    Disable,
    /// Both plaintext and mutual TLS are accepted.
    Permissive,
    /// Only mutual TLS is accepted; plaintext connections are refused.
    Strict,
}

/// A `portLevelMtls` key: a port number written as a YAML integer or as a string of digits.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct PortKey(u32);

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = PortKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortKey, E> {
                u32::try_from(v)
                    .map(PortKey)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortKey, E> {
                u32::try_from(v)
                    .map(PortKey)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortKey, E> {
                // Digits only: Go's map-key parsing accepts no sign or spaces either.
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::invalid_value(de::Unexpected::Str(v), &self));
                }
                v.parse()
                    .map(PortKey)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

fn port_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<u32, MutualTls>>, D::Error> {
    let map = Option::<BTreeMap<PortKey, MutualTls>>::deserialize(d)?;
    Ok(map.map(|m| m.into_iter().map(|(k, v)| (k.0, v)).collect()))
}

impl Validate for PeerAuthentication {
    fn validate(&self, cx: &mut Cx) {
        if let Some(selector) = &self.selector {
            cx.field("selector", |cx| {
                selector.validate(cx);
                if selector.match_labels.is_empty() {
                    cx.warn(
                        "selector has no labels, so it selects every workload in the namespace",
                    );
                }
            });
        }
        let Some(ports) = &self.port_level_mtls else {
            return;
        };
        cx.field("portLevelMtls", |cx| {
            let has_labels = self
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty());
            if !has_labels {
                cx.error(
                    "portLevelMtls requires a `selector` with labels: a mesh- or namespace-wide \
                     PeerAuthentication cannot set port-level mTLS",
                );
            }
            if ports.is_empty() {
                cx.error("portLevelMtls, when set, must list at least one port");
            }
            for port in ports.keys() {
                cx.key(&port.to_string(), |cx| cx.check(rules::port(*port)));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{errors, warnings};

    fn parse(yaml: &str) -> PeerAuthentication {
        crate::validate::test_support::parse(yaml)
    }

    #[test]
    fn valid_examples() {
        let cases = [
            // Mesh-wide strict mTLS (in the root namespace).
            "mtls: {mode: STRICT}",
            // A namespace in permissive mode.
            "mtls:\n  mode: PERMISSIVE",
            // Strict for a workload, but plaintext on one port (Istio's docs example).
            "selector:\n  matchLabels:\n    app: reviews\nmtls:\n  mode: STRICT\nportLevelMtls:\n  8080:\n    mode: DISABLE\n",
            "{}",
            "mtls: {}",
        ];
        for yaml in cases {
            assert_eq!(errors(&parse(yaml)), [], "{yaml}");
        }
    }

    #[test]
    fn port_keys_are_numbers() {
        let spec = parse(
            "selector: {matchLabels: {app: reviews}}\nportLevelMtls:\n  8080: {mode: DISABLE}\n  \"9080\": {mode: STRICT}\n",
        );
        let ports = spec.port_level_mtls.unwrap_or_default();
        assert_eq!(ports.get(&8080).map(|m| m.mode), Some(MtlsMode::Disable));
        assert_eq!(ports.get(&9080).map(|m| m.mode), Some(MtlsMode::Strict));
        // Through the loader's untyped document too.
        let value: yaml_serde::Value = yaml_serde::from_str(
            "selector: {matchLabels: {app: a}}\nportLevelMtls: {8080: {mode: STRICT}}",
        )
        .unwrap_or(yaml_serde::Value::Null);
        let spec: Option<PeerAuthentication> = yaml_serde::from_value(value).ok();
        assert_eq!(
            spec.and_then(|s| s.port_level_mtls)
                .map(|p| p.contains_key(&8080)),
            Some(true)
        );
        // JSON keys are always strings.
        let json: PeerAuthentication = serde_json::from_str(
            r#"{"selector":{"matchLabels":{"app":"a"}},"portLevelMtls":{"80":{"mode":"STRICT"}}}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            json.port_level_mtls.map(|p| p.contains_key(&80)),
            Some(true)
        );
    }

    #[test]
    fn invalid_examples() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "mtls: {mode: STRICT}\nportLevelMtls:\n  8080: {mode: DISABLE}",
                &[("spec.portLevelMtls", "requires a `selector` with labels")],
            ),
            (
                "selector: {matchLabels: {}}\nportLevelMtls:\n  8080: {mode: DISABLE}",
                &[("spec.portLevelMtls", "requires a `selector` with labels")],
            ),
            (
                "selector: {matchLabels: {app: a}}\nportLevelMtls: {}",
                &[("spec.portLevelMtls", "at least one port")],
            ),
            (
                "selector: {matchLabels: {app: a}}\nportLevelMtls:\n  0: {mode: STRICT}\n  70000: {mode: STRICT}",
                &[
                    ("spec.portLevelMtls[0]", "1..65535"),
                    ("spec.portLevelMtls[70000]", "1..65535"),
                ],
            ),
            (
                "selector: {matchLabels: {app: \"rev*\"}}",
                &[("spec.selector.matchLabels[app]", "wildcard")],
            ),
        ];
        for (yaml, want) in cases {
            let got = errors(&parse(yaml));
            assert_eq!(got.len(), want.len(), "{yaml}: {got:?}");
            for ((path, msg), (want_path, want_msg)) in got.iter().zip(want.iter()) {
                assert_eq!(path, want_path, "{yaml}");
                assert!(msg.contains(want_msg), "{yaml}: {msg}");
            }
        }
    }

    #[test]
    fn empty_selector_warns() {
        let got = warnings(&parse("selector: {}"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "spec.selector");
    }

    #[test]
    fn schema_errors() {
        let cases = [
            ("mtls: {mode: strict}", "unknown variant"),
            ("mtls: {mode: STRICT, foo: 1}", "unknown field"),
            ("mtl: {mode: STRICT}", "unknown field"),
            (
                "selector: {matchLabels: {app: a}}\nportLevelMtls: {http: {mode: STRICT}}",
                "a port number",
            ),
            (
                "selector: {matchLabels: {app: a}}\nportLevelMtls: {-1: {mode: STRICT}}",
                "a port number",
            ),
        ];
        for (yaml, want) in cases {
            match yaml_serde::from_str::<PeerAuthentication>(yaml) {
                Ok(spec) => panic!("{yaml} parsed: {spec:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{yaml}: {e}"),
            }
        }
    }
}
