//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestAuthentication {}
impl crate::validate::Validate for RequestAuthentication { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
