//! Types shared by several kinds: Kubernetes object metadata and Istio's common messages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{Cx, Validate, rules};

/// Kubernetes `metadata`. Tolerant, like the API server's own: fields a mesh does not read
/// (`uid`, `managedFields`, ...) are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset (as `kubectl apply` without `-n` does).
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

impl Validate for ObjectMeta {
    fn validate(&self, cx: &mut Cx) {
        cx.check_at("name", rules::object_name(&self.name));
        if let Some(ns) = &self.namespace {
            cx.check_at("namespace", rules::namespace(ns));
        }
        cx.field("labels", |cx| rules::labels(cx, &self.labels));
        cx.field("annotations", |cx| {
            for k in self.annotations.keys() {
                cx.key(k, |cx| cx.check(rules::label_key(k)));
            }
        });
    }
}

/// Istio's `WorkloadSelector` (istio.type.v1beta1): selects pods/workloads by labels in the
/// resource's namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl Validate for WorkloadSelector {
    fn validate(&self, cx: &mut Cx) {
        cx.field("matchLabels", |cx| {
            for (k, v) in &self.match_labels {
                cx.key(k, |cx| {
                    // One error for a wildcard, not also "invalid label".
                    if k.contains('*') || v.contains('*') {
                        cx.error("wildcard is not supported in selector");
                    } else {
                        cx.check(rules::label_key(k));
                        cx.check(rules::label_value(v));
                    }
                });
            }
        });
    }
}

/// Istio's `PolicyTargetReference` (istio.type.v1beta1): a Gateway API resource a policy
/// attaches to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Validate for PolicyTargetReference {
    fn validate(&self, cx: &mut Cx) {
        if self.kind.is_empty() {
            cx.error_at("kind", "kind is required");
        }
        if self.name.is_empty() {
            cx.error_at("name", "name is required");
        }
    }
}

/// True when every `selector` label is present in `labels` with the same value
/// (Kubernetes equality-based selection; an empty selector selects everything).
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
