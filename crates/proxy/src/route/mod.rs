//! The route table: which virtual host, route and destination a request goes to, with Istio's
//! VirtualService semantics as Envoy executes them.
//!
//! ```text
//! authority --host.rs--> virtual host --routes in order, matcher.rs--> route --> Action
//!                                                                       Forward: weighted pick, rewrite.rs
//!                                                                       Redirect: Location, action.rs
//!                                                                       Direct: status + body
//! ```
//!
//! [`RouteTable::build`] converts one `proto::RouteConfiguration` once: regexes are compiled,
//! header names parsed, domains indexed (Kubernetes short names included). [`RouteTable::route`]
//! then answers per request from those indexes without allocating on the common path.

mod action;
pub mod cors;
mod headers;
mod host;
mod matcher;
pub mod policy;
mod rewrite;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_xds::proto;

pub use action::{Action, Destination, DirectResponse, Forward, Redirect};
pub use headers::HeaderOps;
pub(crate) use host::split_port;

use crate::config::{ConfigError, NodeInfo};
use crate::ratelimit::Buckets;

/// One `RouteConfiguration`, converted and indexed. Immutable; shared by every request that
/// arrives while its snapshot is current.
#[derive(Debug)]
pub struct RouteTable {
    name: Box<str>,
    virtual_hosts: Vec<VirtualHost>,
    hosts: host::HostIndex,
}

#[derive(Debug)]
struct VirtualHost {
    name: Box<str>,
    routes: Vec<Route>,
}

#[derive(Debug)]
struct Route {
    name: Box<str>,
    /// Any one must hold; empty matches every request.
    matches: Vec<matcher::RouteMatch>,
    action: Action,
    request_headers: HeaderOps,
    response_headers: HeaderOps,
    cors: Option<Box<cors::Cors>>,
    rate_limit: Option<Arc<crate::ratelimit::TokenBucket>>,
    /// For CONNECT requests only, and the only routes CONNECT matches.
    connect: bool,
}

/// What routing reads from a request. Borrowed, so the data path builds it for free.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a http::Method,
    /// `"http"` or `"https"`.
    pub scheme: &'a str,
    /// The Host header or `:authority`, possibly with `:port`.
    pub authority: &'a str,
    /// `/a/b?x=1`.
    pub path_and_query: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The listener port the request arrived on.
    pub port: u16,
    /// Labels of the downstream workload (sidecars); empty when unknown.
    pub source_labels: &'a BTreeMap<String, String>,
}

/// The route a request matched, and which of the route's matches held (a prefix rewrite
/// replaces what that match matched).
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    virtual_host: &'a VirtualHost,
    route: &'a Route,
    /// `None` when the route has no matches (it matches everything).
    held: Option<&'a matcher::RouteMatch>,
}

/// Where a conversion is: the resource named in every error, and the node that resolves
/// Kubernetes short names.
struct Cx<'a> {
    resource: String,
    node: &'a NodeInfo,
}

impl Cx<'_> {
    fn error(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.resource.as_str(), field, reason)
    }
}

impl RouteTable {
    /// Converts and validates `cfg` once. Errors name the field in proto JSON names
    /// (`virtualHosts[0].routes[2].matches[0].uri.regex`) and the resource
    /// (`route_config "<name>"`).
    pub fn build(
        cfg: &proto::RouteConfiguration,
        node: &NodeInfo,
    ) -> Result<RouteTable, ConfigError> {
        Self::build_with(cfg, node, &Buckets::default())
    }

    /// As [`RouteTable::build`], taking rate limit buckets over from `buckets` (the previous
    /// snapshot's) where a route's limit is unchanged.
    pub fn build_with(
        cfg: &proto::RouteConfiguration,
        node: &NodeInfo,
        buckets: &Buckets,
    ) -> Result<RouteTable, ConfigError> {
        let cx = Cx {
            resource: format!("route_config {:?}", cfg.name),
            node,
        };
        let hosts = host::HostIndex::build(&cfg.virtual_hosts, &cx)?;
        let virtual_hosts = cfg
            .virtual_hosts
            .iter()
            .enumerate()
            .map(|(i, vh)| VirtualHost::build(vh, &cx, &format!("virtualHosts[{i}]"), buckets))
            .collect::<Result<_, _>>()?;
        Ok(RouteTable {
            name: cfg.name.as_str().into(),
            virtual_hosts,
            hosts,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The virtual host for the request's authority, then the first of its routes whose matches
    /// hold (CONNECT: of its CONNECT routes). `None` means no route: the caller answers 404
    /// with response flag NR, as Envoy does.
    pub fn route<'a>(&'a self, req: &RequestView<'_>) -> Option<Matched<'a>> {
        let virtual_host = self.virtual_hosts.get(self.hosts.find(req.authority)?)?;
        let target = matcher::Target::of(req.path_and_query);
        let connect = req.method == http::Method::CONNECT;
        virtual_host.routes.iter().find_map(|route| {
            if route.connect != connect {
                return None;
            }
            if route.matches.is_empty() {
                return Some(Matched {
                    virtual_host,
                    route,
                    held: None,
                });
            }
            let held = route.matches.iter().find(|m| m.holds(req, &target))?;
            Some(Matched {
                virtual_host,
                route,
                held: Some(held),
            })
        })
    }
}

impl VirtualHost {
    fn build(
        vh: &proto::VirtualHost,
        cx: &Cx<'_>,
        at: &str,
        buckets: &Buckets,
    ) -> Result<VirtualHost, ConfigError> {
        let routes = vh
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                // A route's bucket belongs to it by virtual host and route name (its position
                // when unnamed), not by position in the table, so that virtual hosts added or
                // removed around it leave it alone.
                let route = if r.name.is_empty() {
                    format!("#{i}")
                } else {
                    format!("{:?}", r.name)
                };
                let owner = format!("{} {:?} {route}", cx.resource, vh.name);
                Route::build(r, cx, &format!("{at}.routes[{i}]"), buckets, owner)
            })
            .collect::<Result<_, _>>()?;
        Ok(VirtualHost {
            name: vh.name.as_str().into(),
            routes,
        })
    }
}

impl Route {
    fn build(
        r: &proto::Route,
        cx: &Cx<'_>,
        at: &str,
        buckets: &Buckets,
        owner: String,
    ) -> Result<Route, ConfigError> {
        let matches = r
            .matches
            .iter()
            .enumerate()
            .map(|(i, m)| matcher::RouteMatch::build(m, cx, &format!("{at}.matches[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Route {
            name: r.name.as_str().into(),
            matches,
            action: Action::build(r.action.as_ref(), cx, at)?,
            request_headers: HeaderOps::build(
                r.request_headers.as_ref(),
                cx,
                &format!("{at}.requestHeaders"),
            )?,
            response_headers: HeaderOps::build(
                r.response_headers.as_ref(),
                cx,
                &format!("{at}.responseHeaders"),
            )?,
            cors: match &r.cors {
                Some(c) => Some(Box::new(cors::Cors::build(c, cx, &format!("{at}.cors"))?)),
                None => None,
            },
            rate_limit: buckets.bucket(
                owner,
                r.rate_limit.as_ref(),
                &cx.resource,
                &format!("{at}.rateLimit"),
            )?,
            connect: r.connect,
        })
    }
}

impl<'a> Matched<'a> {
    pub fn route_name(&self) -> &'a str {
        &self.route.name
    }

    pub fn action(&self) -> &'a Action {
        &self.route.action
    }

    pub fn cors(&self) -> Option<&'a cors::Cors> {
        self.route.cors.as_deref()
    }

    pub fn rate_limit(&self) -> Option<&'a crate::ratelimit::TokenBucket> {
        self.route.rate_limit.as_deref()
    }

    pub fn virtual_host_name(&self) -> &'a str {
        &self.virtual_host.name
    }

    /// Route-level request header operations (a destination's own come from [`Destination`]).
    pub fn request_headers(&self) -> &'a HeaderOps {
        &self.route.request_headers
    }

    /// Route-level response header operations.
    pub fn response_headers(&self) -> &'a HeaderOps {
        &self.route.response_headers
    }

    /// The new path and query for a forwarded request whose route rewrites the path; `None` when
    /// it does not (or the action is not a forward). `rewrite.uri` replaces what the held match's
    /// `uri` matched: the prefix for a prefix match, the whole path for exact and regex matches,
    /// and the leading `/` when the match has no `uri` (Envoy's implicit `prefix: /`).
    /// `uriRegex` substitutes every match of its pattern in the path. The query is kept.
    pub fn rewritten_path(&self, req: &RequestView<'_>) -> Option<String> {
        let Action::Forward(forward) = &self.route.action else {
            return None;
        };
        let rewrite = forward.path_rewrite()?;
        let target = matcher::Target::of(req.path_and_query);
        let replaced = match self.held {
            Some(m) => m.matched_len(&target),
            None => matcher::implicit_prefix_len(&target),
        };
        Some(rewrite.apply(req.path_and_query, replaced))
    }

    /// For a redirect route: the status and the `Location` value, built from the request as
    /// Envoy does (the configured uri, authority, port and scheme replace their parts).
    pub fn redirect(&self, req: &RequestView<'_>) -> Option<(http::StatusCode, String)> {
        match &self.route.action {
            Action::Redirect(redirect) => Some((redirect.status(), redirect.location(req))),
            _ => None,
        }
    }
}
