//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VirtualService {}
impl crate::validate::Validate for VirtualService { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
