//! The HTTP routes a VirtualService contributes, with delegation resolved (Istio's
//! `delegate`): a root VirtualService's HTTP route hands the requests it matches to the HTTP
//! routes of a delegate VirtualService, one without hosts. As istiod does before translating
//! (`mergeVirtualServices`, `MergeHTTPRoutes`, `mergeHTTPRoute`, `mergeHTTPMatchRequest`,
//! `hasConflict` in pilot/pkg/model), the root route is replaced by the delegate's routes,
//! each merged with it:
//!
//! - the match conditions are ANDed: every delegate match is combined with every root match
//!   it can hold together with; a delegate route with a match that holds together with no
//!   root match is left out (Istio calls this a conflict);
//! - what a delegate route leaves unset (`rewrite`, `directResponse`, `timeout`, `retries`,
//!   `fault`, `mirror`, `mirrors`, `mirrorPercent(age)`, `corsPolicy`, `headers`) is the root
//!   route's, and the route's name is `root-delegate`;
//! - short names (destination and mirror hosts, match `gateways`) are resolved in the
//!   namespace of the VirtualService that wrote them.
//!
//! The delegate is `delegate.namespace` (default: the root's) / `delegate.name`; it must have
//! no hosts and be exported to the root's namespace, else the root route is left out, noted.
//! Delegates take effect only through a root: scopes and gateways skip them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::networking::VirtualService;
use weft_api::networking::virtual_service::{
    Delegate, HttpMatchRequest, HttpRoute, Matcher, StringMatch,
};

use super::Notes;
use super::http::{RouteCx, qualify_gateway};
use crate::host::{exported_to, resolve_host};

/// One HTTP route to translate, and where its fields are written.
pub(crate) struct SiteRoute<'a> {
    pub route: Cow<'a, HttpRoute>,
    pub site: Site<'a>,
}

/// Where a route's fields are written, so notes name the resource and field the user wrote:
/// the VirtualService route itself, or for a merged route, the delegate's route and, for the
/// fields it took from it, the root's.
pub(crate) struct Site<'a> {
    /// The VirtualService holding the route (the delegate, for a merged route).
    resource: &'a Resource,
    /// `spec.http[i]` in `resource`.
    at: String,
    root: Option<Root<'a>>,
}

/// The root side of a merged route.
struct Root<'a> {
    resource: &'a Resource,
    /// `spec.http[i]` of the root route.
    at: String,
    /// The fields (camelCase, as written) the merged route took from the root route.
    inherited: Vec<&'static str>,
    /// Per merged match: the resource and path of the match its `statPrefix` comes from.
    stat_prefix_sites: Vec<(&'a Resource, String)>,
}

impl<'a> Site<'a> {
    /// The route at `spec.http[i]` of `resource`.
    pub(crate) fn own(resource: &'a Resource, i: usize) -> Site<'a> {
        Site {
            resource,
            at: format!("spec.http[{i}]"),
            root: None,
        }
    }

    /// The namespace short names in the route resolve in. A merged route's names are
    /// resolved already, each in its own VirtualService's namespace.
    pub(crate) fn namespace(&self) -> &'a str {
        self.resource.namespace()
    }

    /// Notes `field` (relative to the route: `redirect.prefixRewrite`, `route[0].headers`).
    pub(crate) fn note(&self, notes: &mut Notes, field: &str, reason: impl Into<String>) {
        let top = field.split(['.', '[']).next().unwrap_or(field);
        match &self.root {
            Some(root) if root.inherited.contains(&top) => {
                notes.add(Some(root.resource), format!("{}.{field}", root.at), reason);
            }
            _ => notes.add(Some(self.resource), format!("{}.{field}", self.at), reason),
        }
    }

    /// Notes the `statPrefix` of the route's match `j`.
    pub(crate) fn note_stat_prefix(&self, notes: &mut Notes, j: usize, reason: impl Into<String>) {
        match self.root.as_ref().and_then(|r| r.stat_prefix_sites.get(j)) {
            Some((r, at)) => notes.add(Some(*r), format!("{at}.statPrefix"), reason),
            None => notes.add(
                Some(self.resource),
                format!("{}.match[{j}].statPrefix", self.at),
                reason,
            ),
        }
    }
}

/// The HTTP routes of `vs` in order, each route with a `delegate` replaced by the delegate's
/// routes merged with it (none when the delegate cannot be used; noted).
pub(crate) fn resolved_routes<'a>(
    cx: &RouteCx<'a>,
    r: &'a Resource,
    vs: &'a VirtualService,
    notes: &mut Notes,
) -> Vec<SiteRoute<'a>> {
    let mut out = Vec::with_capacity(vs.http.len());
    for (i, http) in vs.http.iter().enumerate() {
        let Some(delegate) = &http.delegate else {
            out.push(SiteRoute {
                route: Cow::Borrowed(http),
                site: Site::own(r, i),
            });
            continue;
        };
        let (dr, dvs) = match find_delegate(cx, r, delegate) {
            Ok(found) => found,
            Err(why) => {
                notes.add(
                    Some(r),
                    format!("spec.http[{i}].delegate"),
                    format!("{why}; the route is left out"),
                );
                continue;
            }
        };
        let mut root = http.clone();
        resolve_names(&mut root, r.namespace());
        let root_at = format!("spec.http[{i}]");
        for (j, written) in dvs.http.iter().enumerate() {
            let mut leaf = written.clone();
            resolve_names(&mut leaf, dr.namespace());
            let leaf_at = format!("spec.http[{j}]");
            match merge_route(&root, leaf) {
                Ok(merged) => {
                    let stat_prefix_sites = merged
                        .matches
                        .iter()
                        .map(|o| match (o.delegate, o.root) {
                            (Some(l), _) if has_stat_prefix(written, l) => {
                                (dr, format!("{leaf_at}.match[{l}]"))
                            }
                            (_, Some(k)) => (r, format!("{root_at}.match[{k}]")),
                            (Some(l), None) => (dr, format!("{leaf_at}.match[{l}]")),
                            (None, None) => (dr, leaf_at.clone()),
                        })
                        .collect();
                    out.push(SiteRoute {
                        route: Cow::Owned(merged.route),
                        site: Site {
                            resource: dr,
                            at: leaf_at,
                            root: Some(Root {
                                resource: r,
                                at: root_at.clone(),
                                inherited: merged.inherited,
                                stat_prefix_sites,
                            }),
                        },
                    });
                }
                Err(l) => notes.add(
                    Some(dr),
                    format!("{leaf_at}.match[{l}]"),
                    format!(
                        "cannot hold together with any match of its root route ({} {root_at}), \
                         so the route is left out there, as Istio does",
                        r.reference()
                    ),
                ),
            }
        }
    }
    out
}

fn has_stat_prefix(route: &HttpRoute, j: usize) -> bool {
    route
        .matches
        .get(j)
        .is_some_and(|m| !m.stat_prefix.is_empty())
}

/// The delegate VirtualService `delegate` names from `root`, or why there is none to use.
fn find_delegate<'a>(
    cx: &RouteCx<'a>,
    root: &Resource,
    delegate: &Delegate,
) -> Result<(&'a Resource, &'a VirtualService), String> {
    let namespace = if delegate.namespace.is_empty() {
        root.namespace()
    } else {
        &delegate.namespace
    };
    let name = &delegate.name;
    let Some((r, vs)) = cx.view.virtual_service(namespace, name) else {
        return Err(format!(
            "the delegate VirtualService {namespace}/{name} does not exist"
        ));
    };
    if !vs.is_delegate() {
        return Err(format!(
            "VirtualService {namespace}/{name} has hosts, so it is not a delegate (a delegate \
             VirtualService has none)"
        ));
    }
    let export = if vs.export_to.is_empty() {
        &cx.mesh.default_virtual_service_export_to
    } else {
        &vs.export_to
    };
    if !exported_to(export, namespace, root.namespace()) {
        return Err(format!(
            "the delegate VirtualService {namespace}/{name} is not exported to namespace {} \
             (its exportTo)",
            root.namespace()
        ));
    }
    Ok((r, vs))
}

/// Istio's `ResolveVirtualServiceShortnames` for one route: destination and mirror hosts to
/// FQDNs, match gateways to `namespace/name`, both in `namespace`.
fn resolve_names(http: &mut HttpRoute, namespace: &str) {
    for m in &mut http.matches {
        for g in &mut m.gateways {
            *g = qualify_gateway(g, namespace);
        }
    }
    for d in &mut http.route {
        d.destination.host = resolve_host(&d.destination.host, namespace);
    }
    if let Some(m) = &mut http.mirror {
        m.host = resolve_host(&m.host, namespace);
    }
    for m in &mut http.mirrors {
        m.destination.host = resolve_host(&m.destination.host, namespace);
    }
}

/// A root route merged with one delegate route.
#[derive(Debug)]
struct Merged {
    route: HttpRoute,
    /// The fields taken from the root route.
    inherited: Vec<&'static str>,
    /// Per match of `route`: the root and delegate matches it was made from.
    matches: Vec<MatchOrigin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MatchOrigin {
    root: Option<usize>,
    delegate: Option<usize>,
}

/// Istio's `mergeHTTPRoute`. `Err(l)`: the delegate's match `l` holds together with no root
/// match, so the route is left out.
fn merge_route(root: &HttpRoute, delegate: HttpRoute) -> Result<Merged, usize> {
    // Every field is named, so a field added to HttpRoute has to be decided on here.
    let HttpRoute {
        name,
        matches,
        route,
        redirect,
        direct_response,
        delegate: _,
        rewrite,
        timeout,
        retries,
        fault,
        mirror,
        mirrors,
        mirror_percent,
        mirror_percentage,
        cors_policy,
        headers,
    } = delegate;
    let (matches, origins) = merge_matches(&root.matches, &matches)?;
    let mut inherited = Vec::new();
    let i = &mut inherited;
    let route = HttpRoute {
        name: joined_name(&root.name, &name),
        matches,
        route,
        redirect,
        direct_response: or_root(direct_response, &root.direct_response, "directResponse", i),
        delegate: None,
        rewrite: or_root(rewrite, &root.rewrite, "rewrite", i),
        timeout: or_root(timeout, &root.timeout, "timeout", i),
        retries: or_root(retries, &root.retries, "retries", i),
        fault: or_root(fault, &root.fault, "fault", i),
        mirror: or_root(mirror, &root.mirror, "mirror", i),
        mirrors: if mirrors.is_empty() && !root.mirrors.is_empty() {
            i.push("mirrors");
            root.mirrors.clone()
        } else {
            mirrors
        },
        mirror_percent: or_root(mirror_percent, &root.mirror_percent, "mirrorPercent", i),
        mirror_percentage: or_root(
            mirror_percentage,
            &root.mirror_percentage,
            "mirrorPercentage",
            i,
        ),
        cors_policy: or_root(cors_policy, &root.cors_policy, "corsPolicy", i),
        headers: or_root(headers, &root.headers, "headers", i),
    };
    Ok(Merged {
        route,
        inherited,
        matches: origins,
    })
}

/// The delegate route's field `own`, else the root route's (recorded in `inherited`).
fn or_root<T: Clone>(
    own: Option<T>,
    root: &Option<T>,
    field: &'static str,
    inherited: &mut Vec<&'static str>,
) -> Option<T> {
    if own.is_none() && root.is_some() {
        inherited.push(field);
        return root.clone();
    }
    own
}

/// Istio's names of merged routes and matches: `root-delegate`, or whichever is set.
fn joined_name(root: &str, delegate: &str) -> String {
    match (root.is_empty(), delegate.is_empty()) {
        (_, true) => root.to_owned(),
        (true, false) => delegate.to_owned(),
        (false, false) => format!("{root}-{delegate}"),
    }
}

/// Istio's `mergeHTTPMatchRequests`: with matches on both sides, each delegate match is
/// combined with every root match it does not conflict with. `Err(l)`: delegate match `l`
/// conflicts with all of them.
fn merge_matches(
    root: &[HttpMatchRequest],
    delegate: &[HttpMatchRequest],
) -> Result<(Vec<HttpMatchRequest>, Vec<MatchOrigin>), usize> {
    if root.is_empty() {
        let origins = (0..delegate.len())
            .map(|l| MatchOrigin {
                root: None,
                delegate: Some(l),
            })
            .collect();
        return Ok((delegate.to_vec(), origins));
    }
    if delegate.is_empty() {
        let origins = (0..root.len())
            .map(|k| MatchOrigin {
                root: Some(k),
                delegate: None,
            })
            .collect();
        return Ok((root.to_vec(), origins));
    }
    let mut out = Vec::new();
    let mut origins = Vec::new();
    for (l, leaf) in delegate.iter().enumerate() {
        let before = out.len();
        for (k, r) in root.iter().enumerate() {
            if has_conflict(r, leaf) {
                continue;
            }
            out.push(merge_match(r, leaf));
            origins.push(MatchOrigin {
                root: Some(k),
                delegate: Some(l),
            });
        }
        if out.len() == before {
            return Err(l);
        }
    }
    Ok((out, origins))
}

/// Istio's `mergeHTTPMatchRequest`: the delegate's conditions, with the root's where the
/// delegate sets none; maps are joined (the delegate's value wins on a shared key).
fn merge_match(root: &HttpMatchRequest, delegate: &HttpMatchRequest) -> HttpMatchRequest {
    // Every field is named, so a field added to HttpMatchRequest has to be decided on here.
    let HttpMatchRequest {
        name,
        uri,
        scheme,
        method,
        authority,
        headers,
        port,
        source_labels,
        gateways,
        query_params,
        ignore_uri_case,
        without_headers,
        source_namespace,
        stat_prefix,
    } = delegate;
    let either = |own: &Option<StringMatch>, root: &Option<StringMatch>| {
        own.clone().or_else(|| root.clone())
    };
    let text = |own: &String, root: &String| if own.is_empty() { root } else { own }.clone();
    HttpMatchRequest {
        name: joined_name(&root.name, name),
        uri: either(uri, &root.uri),
        scheme: either(scheme, &root.scheme),
        method: either(method, &root.method),
        authority: either(authority, &root.authority),
        headers: joined(&root.headers, headers),
        port: if *port == 0 { root.port } else { *port },
        source_labels: joined(&root.source_labels, source_labels),
        gateways: if gateways.is_empty() {
            root.gateways.clone()
        } else {
            gateways.clone()
        },
        query_params: joined(&root.query_params, query_params),
        // Equal on both sides, or the matches conflict.
        ignore_uri_case: *ignore_uri_case,
        without_headers: joined(&root.without_headers, without_headers),
        source_namespace: text(source_namespace, &root.source_namespace),
        stat_prefix: text(stat_prefix, &root.stat_prefix),
    }
}

fn joined<V: Clone>(
    root: &BTreeMap<String, V>,
    delegate: &BTreeMap<String, V>,
) -> BTreeMap<String, V> {
    let mut out = root.clone();
    out.extend(delegate.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// Istio's `hasConflict`: the delegate's match `leaf` cannot narrow the root's `root` (it
/// would match requests outside the root's, or none).
fn has_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let map_conflict = |root: &BTreeMap<String, StringMatch>,
                        leaf: &BTreeMap<String, StringMatch>| {
        leaf.iter()
            .any(|(k, l)| string_match_conflict(root.get(k), Some(l)))
    };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if root.port > 0 && leaf.port > 0 && root.port != leaf.port {
        return true;
    }
    if !root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    // The root's gateways must include the delegate's (names are resolved already).
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        return root.gateways.len() < leaf.gateways.len()
            || leaf.gateways.iter().any(|g| !root.gateways.contains(g));
    }
    false
}

/// Istio's `stringMatchConflict`: whether a delegate's string match fails to narrow the
/// root's. Unset on either side never conflicts; a regex on either side conflicts with any
/// other match; an exact root admits only the same exact value; a prefix root admits prefixes
/// and exact values under it; anything else conflicts. As in Istio, an empty value counts as
/// not set.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let (root, leaf) = (Parts::of(root), Parts::of(leaf));
    if !root.regex.is_empty() || !leaf.regex.is_empty() {
        return true;
    }
    if !root.exact.is_empty() {
        return !leaf.prefix.is_empty() || leaf.exact != root.exact;
    }
    if !root.prefix.is_empty() {
        if !leaf.prefix.is_empty() {
            return !leaf.prefix.starts_with(root.prefix);
        }
        if !leaf.exact.is_empty() {
            return !leaf.exact.starts_with(root.prefix);
        }
    }
    true
}

/// A string match as Go's getters read it: the value of the kind that is set, "" for the
/// others.
struct Parts<'a> {
    exact: &'a str,
    prefix: &'a str,
    regex: &'a str,
}

impl<'a> Parts<'a> {
    fn of(m: &'a StringMatch) -> Parts<'a> {
        let mut p = Parts {
            exact: "",
            prefix: "",
            regex: "",
        };
        match m.matcher() {
            Some(Matcher::Exact(v)) => p.exact = v,
            Some(Matcher::Prefix(v)) => p.prefix = v,
            Some(Matcher::Regex(v)) => p.regex = v,
            None => {}
        }
        p
    }
}

#[cfg(test)]
mod tests;
