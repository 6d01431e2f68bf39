//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuthorizationPolicy {}
impl crate::validate::Validate for AuthorizationPolicy { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
