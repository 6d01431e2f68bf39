//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Deployment {}
impl crate::validate::Validate for Deployment { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pod {}
impl crate::validate::Validate for Pod { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
