//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sidecar {}
impl crate::validate::Validate for Sidecar { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
