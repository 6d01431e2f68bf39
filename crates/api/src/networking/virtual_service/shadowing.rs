//! Rules and matches that can never take traffic because earlier ones take it first. Istio
//! reports these as warnings (`VirtualServiceUnreachableRule`, `VirtualServiceIneffectiveMatch`).

use std::collections::BTreeMap;

use super::{HttpMatchRequest, Matcher, StringMatch};
use crate::validate::Cx;

/// Warns where a rule comes after a catch-all rule (one without matches), and where a match
/// repeats, or is covered by, an earlier match, so that it never takes a request. A rule whose
/// matches are all shadowed is never used.
pub(super) fn unreachable_rules<M>(
    cx: &mut Cx,
    field: &str,
    rules: &[&[M]],
    same: impl Fn(&M, &M) -> bool,
    covers: impl Fn(&M, &M) -> bool,
) {
    let mut catch_all: Option<usize> = None;
    let mut earlier: Vec<(usize, usize, &M)> = Vec::new();
    cx.field(field, |cx| {
        for (i, matches) in rules.iter().enumerate() {
            if let Some(k) = catch_all {
                cx.index(i, |cx| {
                    cx.warn_code(
                        crate::diag::code::UNREACHABLE_RULE,
                        format!(
                        "this rule is never used: {field}[{k}] has no match and takes everything \
                         first (only the last rule may have no match)"
                    ),
                    )
                });
                continue;
            }
            if matches.is_empty() {
                catch_all = Some(i);
                continue;
            }
            let mut shadowed = 0;
            for (j, m) in matches.iter().enumerate() {
                let dup = earlier.iter().find(|(_, _, e)| same(e, m));
                let cover = dup.or_else(|| earlier.iter().find(|(_, _, e)| covers(e, m)));
                let Some(&(ri, mj, _)) = cover else {
                    earlier.push((i, j, m));
                    continue;
                };
                shadowed += 1;
                let why = if dup.is_some() {
                    "is the same"
                } else {
                    "matches everything it does"
                };
                cx.index(i, |cx| {
                    cx.field("match", |cx| {
                        cx.index(j, |cx| {
                            cx.warn_code(
                                crate::diag::code::INEFFECTIVE_MATCH,
                                format!(
                                    "this match is never used: {field}[{ri}].match[{mj}] {why} and \
                                 comes first"
                                ),
                            )
                        })
                    })
                });
            }
            if shadowed == matches.len() {
                cx.index(i, |cx| {
                    cx.warn_code(
                        crate::diag::code::UNREACHABLE_RULE,
                        "this rule is never used: earlier matches take all of its requests",
                    )
                });
            }
        }
    });
}

/// Equal apart from the name, which only labels logs.
pub(super) fn same_http_match(a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
    let unnamed = |m: &HttpMatchRequest| HttpMatchRequest {
        name: String::new(),
        ..m.clone()
    };
    unnamed(a) == unnamed(b)
}

/// Every request `later` matches is also matched by `first`. Conservative: `false` when unsure
/// (regexes, case-insensitive URIs, negative header matches that differ).
pub(super) fn http_match_covers(first: &HttpMatchRequest, later: &HttpMatchRequest) -> bool {
    let field = |a: &Option<StringMatch>, b: &Option<StringMatch>| match (a, b) {
        (None, _) => true,
        (Some(a), None) => a.matcher().is_none(),
        (Some(a), Some(b)) => string_match_covers(a, b),
    };
    let map = |a: &BTreeMap<String, StringMatch>, b: &BTreeMap<String, StringMatch>| {
        a.iter()
            .all(|(k, m)| b.get(k).is_some_and(|n| string_match_covers(m, n)))
    };
    field(&first.uri, &later.uri)
        && (first.uri.is_none() || first.ignore_uri_case == later.ignore_uri_case)
        && field(&first.scheme, &later.scheme)
        && field(&first.method, &later.method)
        && field(&first.authority, &later.authority)
        && (first.port == 0 || first.port == later.port)
        && map(&first.headers, &later.headers)
        && map(&first.query_params, &later.query_params)
        && first
            .without_headers
            .iter()
            .all(|(k, m)| later.without_headers.get(k) == Some(m))
        && first
            .source_labels
            .iter()
            .all(|(k, v)| later.source_labels.get(k) == Some(v))
        && (first.gateways.is_empty()
            || (!later.gateways.is_empty()
                && later.gateways.iter().all(|g| first.gateways.contains(g))))
        && (first.source_namespace.is_empty() || first.source_namespace == later.source_namespace)
}

/// Every value `b` matches, `a` matches too. An empty `a` (`{}`) matches any value.
pub(super) fn string_match_covers(a: &StringMatch, b: &StringMatch) -> bool {
    match (a.matcher(), b.matcher()) {
        (None, _) => true,
        (Some(Matcher::Exact(x)), Some(Matcher::Exact(y))) => x == y,
        (Some(Matcher::Prefix(x)), Some(Matcher::Exact(y) | Matcher::Prefix(y))) => {
            y.starts_with(x)
        }
        (Some(Matcher::Regex(x)), Some(Matcher::Regex(y))) => x == y,
        _ => false,
    }
}
