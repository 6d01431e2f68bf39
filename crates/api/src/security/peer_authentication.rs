//! (being written)
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerAuthentication {}
impl crate::validate::Validate for PeerAuthentication { fn validate(&self, _cx: &mut crate::validate::Cx) {} }
