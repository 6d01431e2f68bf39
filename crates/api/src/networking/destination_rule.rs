//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DestinationRule {}
impl crate::validate::Validate for DestinationRule { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
