//! Request matching: Istio's HTTPMatchRequest, evaluated as Envoy evaluates the RouteMatch Istio
//! generates for it (<https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest>).

use std::borrow::Cow;

use http::HeaderName;
use regex::bytes::Regex;
use weft_xds::proto;
use weft_xds::proto::string_match::MatchType;

use super::{Cx, RequestView};
use crate::config::ConfigError;

/// The parts of a request target that matching reads, split once per request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'r> {
    /// Without query and fragment, as Envoy's path matchers see it.
    pub(super) path: &'r str,
    /// Between `?` and any `#`; empty when there is none.
    pub(super) query: &'r str,
}

impl<'r> Target<'r> {
    pub(super) fn of(path_and_query: &'r str) -> Self {
        let end = path_and_query
            .find(['?', '#'])
            .unwrap_or(path_and_query.len());
        let (path, rest) = path_and_query.split_at(end);
        let query = rest.strip_prefix('?').unwrap_or("");
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        Target { path, query }
    }
}

/// A StringMatch against a value: `exact`, `prefix`, `regex` (whole value), or presence.
#[derive(Debug)]
pub(super) enum StringMatch {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(Regex),
    Present,
}

/// A `uri` match; `ignoreUriCase` applies to exact and prefix only (Envoy ignores
/// `case_sensitive` for regexes; Istio documents the same).
#[derive(Debug)]
enum UriMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Regex),
}

/// Where a header match reads its value. Envoy keeps the request line in pseudo-headers and
/// HTTP/1's `Host` in `:authority`, so matches on those names read the request's parts.
#[derive(Debug)]
enum HeaderSource {
    Header(HeaderName),
    Method,
    Scheme,
    Authority,
    Path,
    /// `:status`: never present on a request.
    Never,
}

#[derive(Debug)]
struct HeaderMatch {
    source: HeaderSource,
    matcher: StringMatch,
    /// From `withoutHeaders`: holds when the match does not.
    invert: bool,
}

/// One HTTPMatchRequest: holds when all its set conditions hold.
#[derive(Debug)]
pub(super) struct RouteMatch {
    uri: Option<UriMatch>,
    ignore_uri_case: bool,
    port: Option<u16>,
    method: Option<StringMatch>,
    scheme: Option<StringMatch>,
    authority: Option<StringMatch>,
    headers: Vec<HeaderMatch>,
    query_params: Vec<(Box<[u8]>, StringMatch)>,
    source_labels: Vec<(String, String)>,
}

impl RouteMatch {
    pub(super) fn build(
        m: &proto::RouteMatch,
        cx: &Cx<'_>,
        at: &str,
    ) -> Result<RouteMatch, ConfigError> {
        let uri = match m.uri.as_ref().and_then(|u| u.match_type.as_ref()) {
            None => None,
            Some(MatchType::Exact(s)) => Some(UriMatch::Exact(s.as_str().into())),
            Some(MatchType::Prefix(s)) => Some(UriMatch::Prefix(s.as_str().into())),
            Some(MatchType::Regex(re)) => {
                Some(UriMatch::Regex(full_match_regex(re).map_err(|reason| {
                    cx.error(format!("{at}.uri.regex"), reason)
                })?))
            }
        };
        let port = match m.port {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| {
                cx.error(format!("{at}.port"), format!("port {p} is not in 1-65535"))
            })?),
        };
        let optional = |field: &str, sm: Option<&proto::StringMatch>| {
            sm.map(|sm| StringMatch::build(sm, cx, &format!("{at}.{field}")))
                .transpose()
        };

        let mut headers = Vec::new();
        for (field, map, invert) in [
            ("headers", &m.headers, false),
            ("withoutHeaders", &m.without_headers, true),
        ] {
            for (name, sm) in sorted(map) {
                let at = format!("{at}.{field}[{name}]");
                headers.push(HeaderMatch {
                    source: HeaderSource::parse(name)
                        .map_err(|reason| cx.error(at.as_str(), reason))?,
                    matcher: StringMatch::build(sm, cx, &at)?,
                    invert,
                });
            }
        }
        let mut query_params = Vec::new();
        for (name, sm) in sorted(&m.query_params) {
            let at = format!("{at}.queryParams[{name}]");
            if name.is_empty() {
                return Err(cx.error(at, "query parameter name cannot be empty"));
            }
            query_params.push((name.as_bytes().into(), StringMatch::build(sm, cx, &at)?));
        }
        let source_labels = sorted(&m.source_labels)
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        Ok(RouteMatch {
            uri,
            ignore_uri_case: m.ignore_uri_case,
            port,
            method: optional("method", m.method.as_ref())?,
            scheme: optional("scheme", m.scheme.as_ref())?,
            authority: optional("authority", m.authority.as_ref())?,
            headers,
            query_params,
            source_labels,
        })
    }

    /// Whether every set condition holds for `req`. Cheap checks first.
    pub(super) fn holds(&self, req: &RequestView<'_>, target: &Target<'_>) -> bool {
        self.port.is_none_or(|p| p == req.port)
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(req.method.as_str().as_bytes()))
            && self
                .scheme
                .as_ref()
                .is_none_or(|m| m.matches(req.scheme.as_bytes()))
            && self.uri_holds(target.path)
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(req.authority.as_bytes()))
            && self.headers.iter().all(|h| h.holds(req))
            && self.query_params.iter().all(|(name, m)| {
                query_param(target.query.as_bytes(), name).is_some_and(|value| m.matches(value))
            })
            && self
                .source_labels
                .iter()
                .all(|(k, v)| req.source_labels.get(k) == Some(v))
    }

    fn uri_holds(&self, path: &str) -> bool {
        match &self.uri {
            None => true,
            Some(UriMatch::Exact(exact)) if self.ignore_uri_case => {
                path.eq_ignore_ascii_case(exact)
            }
            Some(UriMatch::Exact(exact)) => path == &**exact,
            Some(UriMatch::Prefix(prefix)) => {
                let head = path.as_bytes().get(..prefix.len());
                if self.ignore_uri_case {
                    head.is_some_and(|h| h.eq_ignore_ascii_case(prefix.as_bytes()))
                } else {
                    head == Some(prefix.as_bytes())
                }
            }
            Some(UriMatch::Regex(re)) => re.is_match(path.as_bytes()),
        }
    }

    /// How many leading bytes of the path this match matched, for `rewrite.uri`: the prefix for
    /// a prefix match, the whole path for exact and regex, `/` when there is no uri match.
    pub(super) fn matched_len(&self, target: &Target<'_>) -> usize {
        match &self.uri {
            Some(UriMatch::Prefix(prefix)) => prefix.len().min(target.path.len()),
            Some(UriMatch::Exact(_) | UriMatch::Regex(_)) => target.path.len(),
            None => implicit_prefix_len(target),
        }
    }
}

/// What Envoy's `prefix: /` (Istio's translation of "no uri match") matched of the path.
pub(super) fn implicit_prefix_len(target: &Target<'_>) -> usize {
    usize::from(target.path.starts_with('/'))
}

impl StringMatch {
    /// Converts a StringMatch at field path `at`. Istio's `regex: "*"` means presence, as Istio
    /// translates it (istio/istio#20629).
    pub(super) fn build(
        sm: &proto::StringMatch,
        cx: &Cx<'_>,
        at: &str,
    ) -> Result<StringMatch, ConfigError> {
        Ok(match &sm.match_type {
            None => StringMatch::Present,
            Some(MatchType::Exact(s)) => StringMatch::Exact(s.as_bytes().into()),
            Some(MatchType::Prefix(s)) => StringMatch::Prefix(s.as_bytes().into()),
            Some(MatchType::Regex(re)) if re == "*" => StringMatch::Present,
            Some(MatchType::Regex(re)) => StringMatch::Regex(
                full_match_regex(re).map_err(|reason| cx.error(format!("{at}.regex"), reason))?,
            ),
        })
    }

    pub(super) fn matches(&self, value: &[u8]) -> bool {
        match self {
            StringMatch::Exact(exact) => value == &**exact,
            StringMatch::Prefix(prefix) => value.starts_with(prefix),
            StringMatch::Regex(re) => re.is_match(value),
            StringMatch::Present => true,
        }
    }
}

impl HeaderSource {
    fn parse(name: &str) -> Result<HeaderSource, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            ":method" => HeaderSource::Method,
            ":scheme" => HeaderSource::Scheme,
            ":authority" | "host" => HeaderSource::Authority,
            ":path" => HeaderSource::Path,
            ":status" => HeaderSource::Never,
            _ => HeaderSource::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!(
                    "{name:?} is not a valid header name: use letters, digits and !#$%&'*+-.^_`|~"
                )
            })?),
        })
    }

    /// The value Envoy matches: the request part, or a header's values joined with `,` when it
    /// appears more than once.
    fn value<'r>(&self, req: &RequestView<'r>) -> Option<Cow<'r, [u8]>> {
        let part = |s: &'r str| Some(Cow::Borrowed(s.as_bytes()));
        match self {
            HeaderSource::Method => part(req.method.as_str()),
            HeaderSource::Scheme => part(req.scheme),
            HeaderSource::Authority => part(req.authority),
            HeaderSource::Path => part(req.path_and_query),
            HeaderSource::Never => None,
            HeaderSource::Header(name) => {
                let mut values = req.headers.get_all(name).iter();
                let first = values.next()?;
                let Some(second) = values.next() else {
                    return Some(Cow::Borrowed(first.as_bytes()));
                };
                let mut joined = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.push(b',');
                    joined.extend_from_slice(v.as_bytes());
                }
                Some(Cow::Owned(joined))
            }
        }
    }
}

impl HeaderMatch {
    fn holds(&self, req: &RequestView<'_>) -> bool {
        let value = self.source.value(req);
        if !self.invert {
            return value.is_some_and(|v| self.matcher.matches(&v));
        }
        match self.matcher {
            // withoutHeaders with presence: the header must be absent.
            StringMatch::Present => value.is_none(),
            // Istio sets treat_missing_header_as_empty on inverted value matches: an absent
            // header is matched as "" and the result inverted.
            _ => !self.matcher.matches(value.as_deref().unwrap_or_default()),
        }
    }
}

/// The raw (undecoded) value of the first `name` parameter in `query`, as Envoy's
/// `parseQueryString` reads it; a parameter without `=` has the value "".
fn query_param<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        (key == name).then_some(value)
    })
}

/// Compiles `pattern` to match whole values, as Envoy's `safe_regex` does.
pub(super) fn full_match_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err("regex must not be empty".into());
    }
    // Check the pattern alone first: wrapped in a group, an unbalanced `a)|(b` would parse and
    // escape the anchors.
    Regex::new(pattern).map_err(|e| regex_error(pattern, &e))?;
    Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(|e| regex_error(pattern, &e))
}

/// regex's message is multi-line with a caret diagram; keep the last line.
pub(super) fn regex_error(pattern: &str, e: &regex::Error) -> String {
    let detail = e.to_string();
    let last = detail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    format!(
        "invalid regex {pattern:?}: {}",
        last.trim().trim_start_matches("error: ")
    )
}

fn sorted<V>(map: &std::collections::HashMap<String, V>) -> Vec<(&String, &V)> {
    // Maps arrive in hash order; sorting makes evaluation and the first error reported stable.
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_path_query_and_fragment() {
        let cases = [
            ("/a/b", "/a/b", ""),
            ("/a?x=1&y", "/a", "x=1&y"),
            ("/a?x=1#frag", "/a", "x=1"),
            ("/a#frag?x", "/a", ""),
            ("/", "/", ""),
            ("*", "*", ""),
        ];
        for (input, path, query) in cases {
            let t = Target::of(input);
            assert_eq!((t.path, t.query), (path, query), "{input:?}");
        }
    }

    #[test]
    fn query_params_read_raw_and_first() {
        let q = b"a=1&b=x%20y&flag&a=2&=odd&c=";
        assert_eq!(query_param(q, b"a"), Some(&b"1"[..]));
        assert_eq!(query_param(q, b"b"), Some(&b"x%20y"[..]));
        assert_eq!(query_param(q, b"flag"), Some(&b""[..]));
        assert_eq!(query_param(q, b"c"), Some(&b""[..]));
        assert_eq!(query_param(q, b"d"), None);
    }

    #[test]
    fn regexes_match_whole_values_only() {
        let re = full_match_regex("a+").expect("valid");
        assert!(re.is_match(b"aaa"));
        assert!(!re.is_match(b"baaa"));
        assert!(!re.is_match(b"aaab"));
        let alt = full_match_regex("a|b").expect("valid");
        assert!(alt.is_match(b"b"));
        assert!(!alt.is_match(b"ab"));
        assert!(full_match_regex("a)|(b").is_err());
        assert!(full_match_regex("").is_err());
        let err = full_match_regex("(unclosed").expect_err("invalid");
        assert!(err.starts_with("invalid regex \"(unclosed\": "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
