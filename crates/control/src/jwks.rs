//! JSON Web Key Sets named by RequestAuthentications' `jwksUri`: which to fetch, and the
//! table of what was fetched that translation reads. The control plane fetches them
//! (`server::jwks`), keeps the last good keys of a URI whose refresh fails, and pushes keys
//! inline to the proxies, which never fetch anything themselves.

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::resource::Spec;

/// What the fetches of one URI gave: the last good keys (a JWKS document), and why the last
/// fetch failed if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    pub keys: Option<String>,
    pub error: Option<String>,
}

/// The keys of each URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwksTable {
    keys: BTreeMap<String, Fetched>,
}

impl JwksTable {
    pub fn insert(&mut self, uri: String, fetched: Fetched) {
        self.keys.insert(uri, fetched);
    }

    /// `None`: not fetched yet.
    pub fn get(&self, uri: &str) -> Option<&Fetched> {
        self.keys.get(uri)
    }
}

/// How long a fetch may take when the rule does not say (Istio's default `timeout`).
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Every `jwksUri` of a rule without inline `jwks`, with the longest `timeout` its rules give.
pub fn uris<'a>(
    resources: impl IntoIterator<Item = &'a Resource>,
) -> BTreeMap<String, std::time::Duration> {
    let mut out: BTreeMap<String, std::time::Duration> = BTreeMap::new();
    let rules = resources
        .into_iter()
        .filter_map(|r| match &r.spec {
            Spec::RequestAuthentication(ra) => Some(ra),
            _ => None,
        })
        .flat_map(|ra| &ra.jwt_rules)
        .filter(|rule| rule.jwks.is_empty() && !rule.jwks_uri.is_empty());
    for rule in rules {
        let timeout = rule
            .timeout
            .as_ref()
            .and_then(|t| t.get().ok())
            .unwrap_or(DEFAULT_TIMEOUT);
        let e = out.entry(rule.jwks_uri.clone()).or_insert(timeout);
        *e = (*e).max(timeout);
    }
    out
}

/// Whether `text` is a JSON Web Key Set: an object with a `keys` list.
pub fn check(text: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("keys") {
        Some(serde_json::Value::Array(_)) => Ok(()),
        _ => Err("not a JSON Web Key Set: no \"keys\" list".into()),
    }
}
