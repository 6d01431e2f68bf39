//! VirtualService routes -> proto routes, for one listener port: Istio's
//! `BuildHTTPRoutesForVirtualService` / `TranslateRoute` (pilot/pkg/networking/core/route).
//!
//! Conditions that depend only on the proxy (a match's `sourceLabels`, `sourceNamespace`,
//! `gateways`, `port`) are decided here, as Istio does: a match that cannot hold for this
//! proxy and port is left out, and a route left without matches is dropped.

use std::collections::{HashMap, HashSet};

use weft_api::Resource;
use weft_api::common::selector_matches;
use weft_api::networking::VirtualService;
use weft_api::networking::virtual_service::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, L4MatchAttributes,
    RedirectPortSelection, RouteDestination, StringMatch,
};
use weft_xds::proto;
use weft_xds::proto::string_match::MatchType;

use super::delegate::{self, Site, SiteRoute};
use super::names::outbound_cluster;
use super::scope::Scope;
use super::{Notes, cors, route_policy};
use crate::host::resolve_host;
use crate::mesh_config::MeshConfig;
use crate::node::ProxyNode;
use crate::view::ConfigView;

/// What routes are built for.
pub(crate) struct RouteCx<'a> {
    pub node: &'a ProxyNode,
    /// The listener (service) port the routes serve.
    pub port: u32,
    /// `mesh`, or the `ns/name` of the Gateway being built.
    pub gateway: &'a str,
    /// The listener terminates TLS (redirects default to https).
    pub tls: bool,
    /// The services the proxy sees (a destination without port takes its service's only one).
    pub scope: &'a Scope<'a>,
    /// The mesh's config: where root VirtualServices find their delegates.
    pub view: &'a ConfigView,
    pub mesh: &'a MeshConfig,
    /// The outbound clusters that balance by consistent hash (their routes' retries keep to
    /// the hashed endpoint, as Istio's do).
    pub hashed: &'a HashSet<String>,
}

/// The names of `clusters` that balance by consistent hash.
pub(crate) fn hashed_clusters(clusters: &[proto::Cluster]) -> HashSet<String> {
    clusters
        .iter()
        .filter(|c| c.consistent_hash.is_some())
        .map(|c| c.name.clone())
        .collect()
}

/// The cluster for a destination: its port, else the service's only port, else the listener
/// port (Istio's `GetDestinationCluster`).
pub(crate) fn destination_cluster(
    dest: &Destination,
    namespace: &str,
    port: u32,
    scope: &Scope<'_>,
) -> String {
    let host = resolve_host(&dest.host, namespace);
    let port = destination_port(dest, &host, port, scope);
    outbound_cluster(port, &dest.subset, &host)
}

/// The port of a destination whose host resolved to `host`: its own, else the service's only
/// port, else the listener port.
fn destination_port(dest: &Destination, host: &str, port: u32, scope: &Scope<'_>) -> u32 {
    match &dest.port {
        Some(p) if p.number != 0 => p.number,
        _ => match scope.service(host) {
            Some(s) if s.ports.len() == 1 => s.ports[0].port,
            _ => port,
        },
    }
}

/// A VirtualService gateway reference, qualified: `mesh`, or `namespace/name`.
pub(crate) fn qualify_gateway(reference: &str, vs_namespace: &str) -> String {
    if reference == "mesh" || reference.contains('/') {
        reference.to_owned()
    } else {
        format!("{vs_namespace}/{reference}")
    }
}

/// The routes of `vs`'s `http` section for this proxy and port, delegates merged in
/// ([`delegate`]). Empty: the VirtualService does not apply here.
pub(crate) fn http_routes<'a>(
    cx: &RouteCx<'a>,
    r: &'a Resource,
    vs: &'a VirtualService,
    notes: &mut Notes,
) -> Vec<proto::Route> {
    let mut out = Vec::new();
    for SiteRoute { route: http, site } in delegate::resolved_routes(cx, r, vs, notes) {
        let mut matches = Vec::new();
        let mut catch_all = http.matches.is_empty();
        for (j, m) in http.matches.iter().enumerate() {
            if !match_applies(cx, m, site.namespace()) {
                continue;
            }
            if !m.stat_prefix.is_empty() {
                site.note_stat_prefix(notes, j, "per-route stats are not supported");
            }
            let pm = route_match(m);
            catch_all |= is_catch_all(&pm);
            matches.push(pm);
        }
        if !http.matches.is_empty() && matches.is_empty() {
            continue;
        }
        if catch_all {
            matches.clear();
        }
        if let Some(route) = translate_route(cx, &site, &http, matches, notes) {
            out.push(route);
        }
        // Routes after one that matches everything can never be reached.
        if catch_all {
            break;
        }
    }
    out
}

fn match_applies(cx: &RouteCx<'_>, m: &HttpMatchRequest, vs_namespace: &str) -> bool {
    if m.port != 0 && m.port != cx.port {
        return false;
    }
    source_applies(
        cx,
        &m.gateways,
        &m.source_labels,
        &m.source_namespace,
        vs_namespace,
    )
}

/// Istio's `sourceMatchHTTP`: a match naming gateways holds on those; otherwise its source
/// labels and namespace must be the proxy's.
pub(crate) fn source_applies(
    cx: &RouteCx<'_>,
    gateways: &[String],
    source_labels: &std::collections::BTreeMap<String, String>,
    source_namespace: &str,
    vs_namespace: &str,
) -> bool {
    if !gateways.is_empty() {
        return gateways
            .iter()
            .any(|g| qualify_gateway(g, vs_namespace) == cx.gateway);
    }
    selector_matches(source_labels, &cx.node.labels)
        && (source_namespace.is_empty() || source_namespace == cx.node.namespace)
}

fn string_match(m: &StringMatch) -> proto::StringMatch {
    let match_type = if let Some(v) = &m.exact {
        Some(MatchType::Exact(v.clone()))
    } else if let Some(v) = &m.prefix {
        Some(MatchType::Prefix(v.clone()))
    } else {
        m.regex.clone().map(MatchType::Regex)
    };
    proto::StringMatch { match_type }
}

fn string_matches(
    m: &std::collections::BTreeMap<String, StringMatch>,
) -> HashMap<String, proto::StringMatch> {
    m.iter()
        .map(|(k, v)| (k.clone(), string_match(v)))
        .collect()
}

fn route_match(m: &HttpMatchRequest) -> proto::RouteMatch {
    proto::RouteMatch {
        uri: m.uri.as_ref().map(string_match),
        ignore_uri_case: m.ignore_uri_case,
        scheme: m.scheme.as_ref().map(string_match),
        method: m.method.as_ref().map(string_match),
        authority: m.authority.as_ref().map(string_match),
        headers: string_matches(&m.headers),
        without_headers: string_matches(&m.without_headers),
        query_params: string_matches(&m.query_params),
        ..Default::default()
    }
}

/// A match that holds for every request (no conditions, or only `uri: {prefix: /}`).
fn is_catch_all(m: &proto::RouteMatch) -> bool {
    let uri_all = match &m.uri {
        None => true,
        Some(sm) => matches!(&sm.match_type, Some(MatchType::Prefix(p)) if p == "/"),
    };
    uri_all
        && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.without_headers.is_empty()
        && m.query_params.is_empty()
}

fn translate_route(
    cx: &RouteCx<'_>,
    site: &Site<'_>,
    http: &HttpRoute,
    matches: Vec<proto::RouteMatch>,
    notes: &mut Notes,
) -> Option<proto::Route> {
    // timeout, retries, fault and mirrors: see `route_policy`. Istio applies them to forwarding
    // routes only; validation rejects a fault with a redirect or direct response. corsPolicy
    // (see `cors`) applies to every route, as Istio's per-route CORS filter config does.
    let (request_headers, response_headers, mut authority) =
        header_operations(http.headers.as_ref());
    let action = if let Some(redirect) = &http.redirect {
        if !redirect.prefix_rewrite.is_empty() {
            site.note(
                notes,
                "redirect.prefixRewrite",
                "prefix rewrites in redirects are not supported; the path is kept",
            );
        }
        let code = match redirect.redirect_code {
            0 => 0,
            c @ (301 | 302 | 303 | 307 | 308) => c,
            c => {
                site.note(
                    notes,
                    "redirect.redirectCode",
                    format!("redirect code {c} is not supported; the route is left out"),
                );
                return None;
            }
        };
        proto::route::Action::Redirect(proto::Redirect {
            uri: redirect.uri.clone(),
            authority: redirect.authority.clone(),
            port: redirect_port(cx, redirect.port, redirect.derive_port, &redirect.scheme),
            scheme: redirect.scheme.clone(),
            code,
        })
    } else if let Some(direct) = &http.direct_response {
        let body = match direct.body.as_ref().map(|b| b.to_bytes()) {
            None => String::new(),
            Some(Ok(bytes)) => match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => {
                    site.note(
                        notes,
                        "directResponse.body.bytes",
                        "binary bodies are not supported; invalid UTF-8 was replaced",
                    );
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                }
            },
            Some(Err(_)) => String::new(),
        };
        proto::route::Action::DirectResponse(proto::DirectResponse {
            status: direct.status,
            body,
        })
    } else {
        if http.route.is_empty() {
            return None;
        }
        let several = http.route.len() > 1;
        let mut clusters = Vec::new();
        for (k, d) in http.route.iter().enumerate() {
            // Zero-weight destinations among several take no traffic (Istio leaves them out).
            if several && d.weight <= 0 {
                continue;
            }
            let (req, resp, dest_authority) = header_operations(d.headers.as_ref());
            if let Some(a) = dest_authority {
                if several {
                    site.note(
                        notes,
                        &format!("route[{k}].headers"),
                        "an authority rewrite per weighted destination is not supported",
                    );
                } else if authority.is_none() {
                    authority = Some(a);
                }
            }
            clusters.push(proto::WeightedCluster {
                cluster: destination_cluster(&d.destination, site.namespace(), cx.port, cx.scope),
                weight: if several {
                    u32::try_from(d.weight).unwrap_or(0)
                } else {
                    0
                },
                request_headers: req,
                response_headers: resp,
            });
        }
        if clusters.is_empty() {
            return None;
        }
        let rewrite = http.rewrite.as_ref().map(|rw| proto::Rewrite {
            uri: rw.uri.clone(),
            uri_regex: rw.uri_regex_rewrite.as_ref().map(|rr| proto::RegexRewrite {
                pattern: rr.pattern.clone(),
                substitution: rr.rewrite.clone(),
            }),
            authority: if rw.authority.is_empty() {
                authority.clone().unwrap_or_default()
            } else {
                rw.authority.clone()
            },
        });
        let rewrite = rewrite.or_else(|| {
            authority.clone().map(|a| proto::Rewrite {
                authority: a,
                ..Default::default()
            })
        });
        let mut action = proto::RouteAction {
            clusters,
            rewrite,
            ..Default::default()
        };
        route_policy::apply(&mut action, cx, site, http, notes);
        proto::route::Action::Route(action)
    };
    Some(proto::Route {
        name: http.name.clone(),
        matches,
        action: Some(action),
        request_headers,
        response_headers,
        cors: http.cors_policy.as_ref().map(cors::cors_policy),
        ..Default::default()
    })
}

/// Istio's redirect port: explicit, or the request's port (the listener's), with the
/// scheme's default port left implicit.
fn redirect_port(
    cx: &RouteCx<'_>,
    port: Option<u32>,
    derive: Option<RedirectPortSelection>,
    scheme: &str,
) -> u32 {
    let port = match (port, derive) {
        (Some(p), _) => p,
        (None, Some(RedirectPortSelection::FromRequestPort)) => cx.port,
        _ => return 0,
    };
    let scheme = match scheme {
        "" if cx.tls => "https",
        "" => "http",
        s => s,
    };
    match (port, scheme) {
        (80, "http") | (443, "https") => 0,
        (p, _) => p,
    }
}

/// Header operations without the headers a proxy may not set (`:`-pseudo headers, `host`),
/// and the authority a `set`/`add` of `:authority` or `host` asks for (set wins over add).
fn header_operations(
    headers: Option<&Headers>,
) -> (
    Option<proto::HeaderOperations>,
    Option<proto::HeaderOperations>,
    Option<String>,
) {
    let Some(h) = headers else {
        return (None, None, None);
    };
    let authority = h.request.as_ref().and_then(|req| {
        let find = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .find(|(k, _)| is_authority(k))
                .map(|(_, v)| v.clone())
        };
        find(&req.set).or_else(|| find(&req.add))
    });
    (
        h.request.as_ref().and_then(operations),
        h.response.as_ref().and_then(operations),
        authority,
    )
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn is_internal(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn operations(ops: &HeaderOperations) -> Option<proto::HeaderOperations> {
    let keep = |m: &std::collections::BTreeMap<String, String>| -> HashMap<String, String> {
        m.iter()
            .filter(|(k, _)| !is_internal(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let out = proto::HeaderOperations {
        set: keep(&ops.set),
        add: keep(&ops.add),
        remove: ops
            .remove
            .iter()
            .filter(|k| !is_internal(k))
            .cloned()
            .collect(),
    };
    let empty = out.set.is_empty() && out.add.is_empty() && out.remove.is_empty();
    (!empty).then_some(out)
}

/// The weighted clusters of the first `tcp` (or `tls`) route of `vs` that applies to this
/// proxy and port: what a TCP listener, or a CONNECT through the explicit proxy, goes to.
pub(crate) fn l4_destinations(
    cx: &RouteCx<'_>,
    r: &Resource,
    vs: &VirtualService,
    sni_host: Option<&str>,
    notes: &mut Notes,
) -> Option<Vec<proto::WeightedCluster>> {
    let tcp = vs.tcp.iter().enumerate().map(|(i, t)| {
        let ms: Vec<_> = t.matches.iter().map(L4Match::Tcp).collect();
        (format!("spec.tcp[{i}]"), ms, &t.route)
    });
    let tls = vs.tls.iter().enumerate().map(|(i, t)| {
        let ms: Vec<_> = t.matches.iter().map(L4Match::Tls).collect();
        (format!("spec.tls[{i}]"), ms, &t.route)
    });
    let routes: Vec<_> = if sni_host.is_some() {
        tls.collect()
    } else {
        tcp.collect()
    };
    for (at, ms, route) in routes {
        let applies = ms.is_empty()
            || ms
                .iter()
                .enumerate()
                .any(|(j, m)| m.applies(cx, r, &format!("{at}.match[{j}]"), sni_host, notes));
        if applies {
            return Some(weighted(cx, r, route));
        }
    }
    None
}

enum L4Match<'a> {
    Tcp(&'a L4MatchAttributes),
    Tls(&'a weft_api::networking::virtual_service::TlsMatchAttributes),
}

impl L4Match<'_> {
    fn applies(
        &self,
        cx: &RouteCx<'_>,
        r: &Resource,
        at: &str,
        sni_host: Option<&str>,
        notes: &mut Notes,
    ) -> bool {
        let (port, subnets, gateways, labels, ns) = match self {
            L4Match::Tcp(m) => {
                if !m.source_subnet.is_empty() {
                    notes.add(
                        Some(r),
                        format!("{at}.sourceSubnet"),
                        "L4 source subnets are not supported; the match is skipped",
                    );
                    return false;
                }
                (
                    m.port,
                    &m.destination_subnets,
                    &m.gateways,
                    &m.source_labels,
                    &m.source_namespace,
                )
            }
            L4Match::Tls(m) => {
                if let Some(host) = sni_host
                    && !m.sni_hosts.is_empty()
                    && !m.sni_hosts.iter().any(|s| crate::host::subset_of(host, s))
                {
                    return false;
                }
                (
                    m.port,
                    &m.destination_subnets,
                    &m.gateways,
                    &m.source_labels,
                    &m.source_namespace,
                )
            }
        };
        if !subnets.is_empty() {
            notes.add(
                Some(r),
                format!("{at}.destinationSubnets"),
                "L4 destination subnets are not supported; the match is skipped",
            );
            return false;
        }
        (port == 0 || port == cx.port) && source_applies(cx, gateways, labels, ns, r.namespace())
    }
}

/// Weighted clusters of L4 route destinations (zero weights left out among several).
pub(crate) fn weighted(
    cx: &RouteCx<'_>,
    r: &Resource,
    route: &[RouteDestination],
) -> Vec<proto::WeightedCluster> {
    let several = route.len() > 1;
    route
        .iter()
        .filter(|d| !several || d.weight > 0)
        .map(|d| proto::WeightedCluster {
            cluster: destination_cluster(&d.destination, r.namespace(), cx.port, cx.scope),
            weight: if several {
                u32::try_from(d.weight).unwrap_or(0)
            } else {
                0
            },
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_references_are_qualified() {
        assert_eq!(qualify_gateway("mesh", "default"), "mesh");
        assert_eq!(
            qualify_gateway("bookinfo-gateway", "default"),
            "default/bookinfo-gateway"
        );
        assert_eq!(
            qualify_gateway("istio-system/gw", "default"),
            "istio-system/gw"
        );
    }

    #[test]
    fn redirect_ports_follow_istio() {
        let view = crate::ConfigView::new(Vec::new(), Vec::new());
        let mesh = crate::MeshConfig::default();
        let node =
            ProxyNode::parse_id("router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local")
                .expect("node");
        let scope = Scope::for_gateway(&node, &mesh, &view);
        let hashed = HashSet::new();
        let cx = |port, tls| RouteCx {
            node: &node,
            port,
            gateway: "istio-system/gw",
            tls,
            scope: &scope,
            view: &view,
            mesh: &mesh,
            hashed: &hashed,
        };
        let from_request = Some(RedirectPortSelection::FromRequestPort);
        let from_default = Some(RedirectPortSelection::FromProtocolDefault);
        // (listener port, tls, port, derivePort, scheme) -> port in the redirect
        let cases = [
            (8080, false, None, None, "", 0),
            (8080, false, Some(9090), None, "", 9090),
            (8080, false, None, from_request, "", 8080),
            (80, false, None, from_request, "", 0),
            (443, true, None, from_request, "", 0),
            (443, false, None, from_request, "https", 0),
            (443, false, None, from_request, "", 443),
            (8080, false, None, from_default, "", 0),
            (8080, false, Some(80), None, "http", 0),
        ];
        for (port, tls, explicit, derive, scheme, want) in cases {
            assert_eq!(
                redirect_port(&cx(port, tls), explicit, derive, scheme),
                want,
                "{port} {tls} {explicit:?} {derive:?} {scheme:?}"
            );
        }
    }

    #[test]
    fn header_operations_move_authority_to_rewrite() {
        let mut set = std::collections::BTreeMap::new();
        set.insert(":authority".to_owned(), "a.example".to_owned());
        set.insert("x-a".to_owned(), "1".to_owned());
        let mut add = std::collections::BTreeMap::new();
        add.insert("host".to_owned(), "b.example".to_owned());
        let headers = Headers {
            request: Some(HeaderOperations {
                set,
                add,
                remove: vec!["x-b".into(), ":path".into()],
            }),
            response: None,
        };
        let (req, resp, authority) = header_operations(Some(&headers));
        let req = req.expect("request ops");
        assert_eq!(req.set.len(), 1);
        assert!(req.add.is_empty());
        assert_eq!(req.remove, vec!["x-b".to_owned()]);
        assert!(resp.is_none());
        assert_eq!(authority.as_deref(), Some("a.example"));
    }

    #[test]
    fn catch_all_matches() {
        assert!(is_catch_all(&proto::RouteMatch::default()));
        let prefix = |p: &str| proto::RouteMatch {
            uri: Some(proto::StringMatch {
                match_type: Some(MatchType::Prefix(p.into())),
            }),
            ..Default::default()
        };
        assert!(is_catch_all(&prefix("/")));
        assert!(!is_catch_all(&prefix("/api")));
    }
}
