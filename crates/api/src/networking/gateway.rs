//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gateway {}
impl crate::validate::Validate for Gateway { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
