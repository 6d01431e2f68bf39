//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceEntry {}
impl crate::validate::Validate for ServiceEntry { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
