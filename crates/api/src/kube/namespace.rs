//! Kubernetes `Namespace` and `ServiceAccount` (core/v1). Everything a mesh reads from them is
//! in `metadata` (read by the loader): a Namespace's labels (`istio-injection`,
//! `istio.io/rev`, `istio.io/dataplane-mode`) and a ServiceAccount's name, which is part of a
//! workload's identity. Their bodies are accepted and ignored.

use serde::{Deserialize, Serialize};

use crate::validate::{Cx, Validate};

/// A Namespace document. `spec` (finalizers) and `status` are not read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Namespace {}

/// A ServiceAccount document. Token and secret settings are not read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceAccount {}

// Nothing beyond metadata, which the loader validates.
impl Validate for Namespace {
    fn validate(&self, _cx: &mut Cx) {}
}

impl Validate for ServiceAccount {
    fn validate(&self, _cx: &mut Cx) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_documents_load() {
        let ns = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: bookinfo
  labels: {istio-injection: enabled}
spec:
  finalizers: [kubernetes]
status:
  phase: Active
"#;
        assert!(yaml_serde::from_str::<Namespace>(ns).is_ok());
        let sa = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-reviews
  labels: {account: reviews}
automountServiceAccountToken: false
imagePullSecrets: [{name: registry}]
secrets: [{name: bookinfo-reviews-token}]
"#;
        assert!(yaml_serde::from_str::<ServiceAccount>(sa).is_ok());
        assert!(serde_json::from_str::<ServiceAccount>("{}").is_ok());
    }
}
