//! What `weft proxy-status` shows of each connected proxy: the server's record of what it
//! sent, what was ACKed and why the last NACK happened.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// One connected xDS stream (normally one per proxy; a proxy that reconnects while its old
/// stream is still being torn down may briefly appear twice).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyStatus {
    /// The `Node.id` the proxy sent (`sidecar~IP~name.ns~ns.svc.cluster.local`).
    pub node_id: String,
    /// Unique per stream within this server.
    pub stream_id: u64,
    pub connected_since: SystemTime,
    /// Per type URL the proxy subscribed to.
    pub types: BTreeMap<String, TypeStatus>,
}

/// The state of one type URL on one stream. Versions are type versions
/// ([`crate::resource::ProxyResources::type_version`]), nonces are this stream's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeStatus {
    /// The version of this type in the newest resources the stream has looked at.
    pub latest_version: Option<String>,
    /// The version carried by the last response sent.
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    /// The version of the last response the proxy ACKed. A NACK leaves it as it was.
    pub acked_version: Option<String>,
    /// The last NACK, until a later response is ACKed.
    pub last_nack: Option<Nack>,
}

/// A rejected response.
#[derive(Debug, Clone, PartialEq)]
pub struct Nack {
    /// The type version of the rejected response.
    pub version: String,
    pub nonce: String,
    /// The proxy's `error_detail.message` (bounded in length).
    pub reason: String,
    pub at: SystemTime,
}
