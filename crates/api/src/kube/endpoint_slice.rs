//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointSlice {}
impl crate::validate::Validate for EndpointSlice { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
