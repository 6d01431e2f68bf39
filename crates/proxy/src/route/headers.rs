//! Header operations of a route or destination (Istio's `headers.request` / `headers.response`).

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_xds::proto;

use super::Cx;
use crate::config::ConfigError;

/// Headers to remove, set (replace) and add (append), applied in that order as Envoy's header
/// parser does. Names and values are parsed once, when config arrives.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

impl HeaderOps {
    /// Removes, then sets (replacing every value), then appends.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Converts the operations at field path `at` (`...requestHeaders`); absent means none.
    pub(super) fn build(
        ops: Option<&proto::HeaderOperations>,
        cx: &Cx<'_>,
        at: &str,
    ) -> Result<HeaderOps, ConfigError> {
        let Some(ops) = ops else {
            return Ok(HeaderOps::default());
        };
        let remove = ops
            .remove
            .iter()
            .enumerate()
            .map(|(i, name)| {
                header_name(name).map_err(|reason| cx.error(format!("{at}.remove[{i}]"), reason))
            })
            .collect::<Result<_, _>>()?;
        Ok(HeaderOps {
            remove,
            set: pairs(&ops.set, cx, &format!("{at}.set"))?,
            add: pairs(&ops.add, cx, &format!("{at}.add"))?,
        })
    }
}

fn pairs(
    map: &std::collections::HashMap<String, String>,
    cx: &Cx<'_>,
    at: &str,
) -> Result<Box<[(HeaderName, HeaderValue)]>, ConfigError> {
    // Sorted by name, as Istio orders them: map order is random and `set` of two spellings of
    // one name must resolve the same way every time.
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
        .into_iter()
        .map(|(name, value)| {
            let err = |reason: String| cx.error(format!("{at}[{name}]"), reason);
            let name = header_name(name).map_err(err)?;
            let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
                err(format!(
                    "header value {value:?} contains a control character"
                ))
            })?;
            Ok((name, value))
        })
        .collect()
}

/// A header a route may change: a valid name, lower-cased, and neither a pseudo-header nor
/// `host` (Envoy refuses to modify those; the authority changes through `rewrite.authority`).
fn header_name(name: &str) -> Result<HeaderName, String> {
    if name.starts_with(':') {
        return Err(format!(
            "header {name:?} cannot be changed: pseudo-headers belong to the proxy"
        ));
    }
    if name.eq_ignore_ascii_case("host") {
        return Err("the Host header cannot be changed here; use rewrite.authority".into());
    }
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        format!("{name:?} is not a valid header name: use letters, digits and !#$%&'*+-.^_`|~")
    })
}
