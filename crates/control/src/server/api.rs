//! The JSON the monitoring endpoints answer with, shared with the CLI that reads it
//! (`weft proxy-status`, `weft proxy-config`). Field names are camelCase.

use serde::{Deserialize, Serialize};

/// `/debug/syncz`: one entry per connected xDS stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// `name.namespace`, as `istioctl proxy-status` names proxies.
    pub proxy: String,
    pub node_id: String,
    /// RFC 3339, seconds.
    pub connected_since: String,
    /// Every type is SYNCED.
    pub in_sync: bool,
    pub clusters: TypeSync,
    pub listeners: TypeSync,
    pub routes: TypeSync,
}

/// One type URL of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeSync {
    pub state: SyncState,
    /// The type version the control plane has for the proxy now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_version: Option<String>,
    /// The last NACK, until a later response is ACKed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<NackInfo>,
}

/// istioctl's words for a type's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncState {
    /// The proxy ACKed the latest version.
    #[serde(rename = "SYNCED")]
    Synced,
    /// Sent, not (yet) ACKed; or ACKed an older version.
    #[serde(rename = "STALE")]
    Stale,
    /// Nothing of this type was sent on this stream.
    #[serde(rename = "NOT SENT")]
    NotSent,
    /// The proxy rejected the latest version it was sent.
    #[serde(rename = "NACK")]
    Nack,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "SYNCED",
            SyncState::Stale => "STALE",
            SyncState::NotSent => "NOT SENT",
            SyncState::Nack => "NACK",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NackInfo {
    pub version: String,
    pub reason: String,
    /// RFC 3339, seconds.
    pub at: String,
}

/// `/debug/config_errors`: what is not in force, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigErrors {
    /// Config files whose latest version was rejected.
    pub files: Vec<FileErrorInfo>,
    /// The instances file, when its latest version was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<FileErrorInfo>,
    /// The mesh config file, when its latest version was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_config: Option<FileErrorInfo>,
    /// Fields translation could not express in proxy config (ignored, behaviour differs).
    pub unsupported: Vec<UnsupportedInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileErrorInfo {
    pub path: String,
    /// True when the file's previous good version is still in force.
    pub previous_in_force: bool,
    /// RFC 3339, seconds: when the rejected version was read.
    pub since: String,
    /// weft-api's findings, one line each (`file:line:col: error[WA0003] ...`).
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnsupportedInfo {
    /// `Kind namespace/name`; absent for mesh-wide settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub field: String,
    pub reason: String,
    /// `file:line:col`, when the resource came from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}
