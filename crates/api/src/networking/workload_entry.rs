//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadEntry {}
impl crate::validate::Validate for WorkloadEntry { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
