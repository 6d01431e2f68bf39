//! security.istio.io (v1beta1, v1: one schema): PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication. Each type here is the resource's `spec`.

pub mod authorization_policy;
pub mod peer_authentication;
pub mod request_authentication;

pub use authorization_policy::AuthorizationPolicy;
pub use peer_authentication::PeerAuthentication;
pub use request_authentication::RequestAuthentication;
