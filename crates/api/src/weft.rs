//! weft's own kinds (apiVersion `weft.dev/v1alpha1`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadSpec {}
impl crate::validate::Validate for WorkloadSpec { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
