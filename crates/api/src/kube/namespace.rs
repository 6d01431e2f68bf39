//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Namespace {}
impl crate::validate::Validate for Namespace { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceAccount {}
impl crate::validate::Validate for ServiceAccount { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
