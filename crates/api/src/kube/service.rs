//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Service {}
impl crate::validate::Validate for Service { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
