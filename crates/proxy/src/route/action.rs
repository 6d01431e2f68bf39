//! What a matched route does: forward to weighted destinations, redirect, or answer directly.

use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use weft_xds::proto;

use super::policy::Policy;
use super::rewrite::{PathRewrite, is_path};
use super::{Cx, HeaderOps, RequestView, host};
use crate::config::ConfigError;

/// Istio's limit on a direct response body (what its webhook validates).
const MAX_DIRECT_BODY: usize = 1024 * 1024;

#[derive(Debug)]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    Direct(DirectResponse),
}

/// Forward upstream to one of weighted destinations, maybe rewriting path and authority.
#[derive(Debug)]
pub struct Forward {
    /// Never empty.
    destinations: Box<[Destination]>,
    /// Running sums of the weights: destination `i` owns `[ends[i-1], ends[i])`.
    ends: Box<[u64]>,
    total: u64,
    path_rewrite: Option<PathRewrite>,
    authority: Option<HeaderValue>,
    /// Boxed: most routes have none, and it would make every `Action` large.
    policy: Box<Policy>,
}

/// One weighted destination: a cluster and the header operations for requests sent to it.
#[derive(Debug, Clone)]
pub struct Destination {
    pub cluster: Arc<str>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// Answer with a redirect; the `Location` is built from the request (see
/// [`super::Matched::redirect`]).
#[derive(Debug)]
pub struct Redirect {
    status: StatusCode,
    /// Lower-case.
    scheme: Option<Box<str>>,
    authority: Option<Box<str>>,
    port: Option<u16>,
    /// Starts with `/`.
    path: Option<Box<str>>,
    path_has_query: bool,
}

/// Answer with this status and body, without going upstream.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Action {
    /// The action of the route at field path `at`.
    pub(super) fn build(
        action: Option<&proto::route::Action>,
        cx: &Cx<'_>,
        at: &str,
    ) -> Result<Action, ConfigError> {
        use proto::route::Action as P;
        match action {
            None => Err(cx.error(at, "one of route, redirect or directResponse is required")),
            Some(P::Route(r)) => Forward::build(r, cx, &format!("{at}.route")).map(Action::Forward),
            Some(P::Redirect(r)) => {
                Redirect::build(r, cx, &format!("{at}.redirect")).map(Action::Redirect)
            }
            Some(P::DirectResponse(d)) => {
                DirectResponse::build(d, cx, &format!("{at}.directResponse")).map(Action::Direct)
            }
        }
    }
}

impl Forward {
    fn build(action: &proto::RouteAction, cx: &Cx<'_>, at: &str) -> Result<Forward, ConfigError> {
        if action.clusters.is_empty() {
            return Err(cx.error(
                format!("{at}.clusters"),
                "at least one destination is required",
            ));
        }
        let mut destinations = Vec::with_capacity(action.clusters.len());
        let mut weights = Vec::with_capacity(action.clusters.len());
        for (i, wc) in action.clusters.iter().enumerate() {
            let at = format!("{at}.clusters[{i}]");
            if wc.cluster.is_empty() {
                return Err(cx.error(format!("{at}.cluster"), "cluster is required"));
            }
            destinations.push(Destination {
                cluster: wc.cluster.as_str().into(),
                request_headers: HeaderOps::build(
                    wc.request_headers.as_ref(),
                    cx,
                    &format!("{at}.requestHeaders"),
                )?,
                response_headers: HeaderOps::build(
                    wc.response_headers.as_ref(),
                    cx,
                    &format!("{at}.responseHeaders"),
                )?,
            });
            weights.push(u64::from(wc.weight));
        }
        // A lone destination takes everything whatever its weight; several with no weight at
        // all send everything to the first.
        if weights.iter().all(|&w| w == 0) {
            weights[0] = 1;
        }
        let ends: Box<[u64]> = weights
            .iter()
            .scan(0u64, |sum, w| {
                *sum += w;
                Some(*sum)
            })
            .collect();
        let total = ends.last().copied().unwrap_or(1);

        let (path_rewrite, authority) = match &action.rewrite {
            None => (None, None),
            Some(rw) => {
                let at = format!("{at}.rewrite");
                let authority = match rw.authority.as_str() {
                    "" => None,
                    a => Some(
                        authority_value(a)
                            .map_err(|reason| cx.error(format!("{at}.authority"), reason))?,
                    ),
                };
                (PathRewrite::build(rw, cx, &at)?, authority)
            }
        };
        let policy = Box::new(Policy::build(action, &cx.resource, at)?);
        Ok(Forward {
            destinations: destinations.into(),
            ends,
            total,
            path_rewrite,
            authority,
            policy,
        })
    }

    /// The weighted choice for a uniformly random `random` (supplied by the caller, so tests
    /// are deterministic). Weights are relative; a zero-weight destination is never chosen
    /// unless every weight is zero, when the first is.
    pub fn pick(&self, random: u32) -> &Destination {
        // Scale into [0, total) by multiply-shift: no modulo bias, no division.
        let point = ((u128::from(random) * u128::from(self.total)) >> 32) as u64;
        let i = self.ends.partition_point(|&end| end <= point);
        // `i` is in range for every `random`; the clamp keeps that true without a panic path.
        &self.destinations[i.min(self.destinations.len() - 1)]
    }

    /// Every destination, in config order.
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// The new authority (Host) for the upstream request, from `rewrite.authority`.
    /// Timeout, retries and faults.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn authority_rewrite(&self) -> Option<&HeaderValue> {
        self.authority.as_ref()
    }

    pub(super) fn path_rewrite(&self) -> Option<&PathRewrite> {
        self.path_rewrite.as_ref()
    }
}

impl Redirect {
    fn build(r: &proto::Redirect, cx: &Cx<'_>, at: &str) -> Result<Redirect, ConfigError> {
        let status = match r.code {
            0 => StatusCode::MOVED_PERMANENTLY,
            c @ (301 | 302 | 303 | 307 | 308) => StatusCode::from_u16(c as u16)
                .map_err(|e| cx.error(format!("{at}.code"), e.to_string()))?,
            c => {
                return Err(cx.error(
                    format!("{at}.code"),
                    format!("redirect code {c} is not one of 301, 302, 303, 307, 308"),
                ));
            }
        };
        let scheme = match r.scheme.as_str() {
            "" => None,
            s if is_scheme(s) => Some(s.to_ascii_lowercase().into()),
            s => return Err(cx.error(format!("{at}.scheme"), format!("{s:?} is not a URI scheme"))),
        };
        let authority = match r.authority.as_str() {
            "" => None,
            a => {
                http::uri::Authority::try_from(a).map_err(|_| {
                    cx.error(
                        format!("{at}.authority"),
                        format!("{a:?} is not a valid authority"),
                    )
                })?;
                Some(a.into())
            }
        };
        let port = match r.port {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| {
                cx.error(format!("{at}.port"), format!("port {p} is not in 1-65535"))
            })?),
        };
        let path = match r.uri.as_str() {
            "" => None,
            uri => {
                if !is_path(uri) {
                    return Err(
                        cx.error(format!("{at}.uri"), format!("{uri:?} is not a valid path"))
                    );
                }
                // Envoy puts a missing leading `/` in front.
                Some(if uri.starts_with('/') {
                    uri.into()
                } else {
                    format!("/{uri}").into()
                })
            }
        };
        Ok(Redirect {
            status,
            scheme,
            authority,
            port,
            path_has_query: path.as_deref().is_some_and(|p: &str| p.contains('?')),
            path,
        })
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Location` for `req`, composed as Envoy's redirect does: scheme, then the host (the
    /// configured authority, or the request's, dropping its port when a new port is set or when
    /// the scheme changes away from a default port), then the port, then the path (the
    /// configured uri keeps the request's query unless it has its own).
    pub(super) fn location(&self, req: &RequestView<'_>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        let host = match &self.authority {
            Some(authority) => authority,
            None => {
                let (host, port) = host::split_port(req.authority);
                let port = port.and_then(|p| p.parse::<u16>().ok());
                let default_dropped =
                    scheme != req.scheme && port.is_some() && port == default_port(req.scheme);
                if self.port.is_some() || default_dropped {
                    host
                } else {
                    req.authority
                }
            }
        };
        let mut out =
            String::with_capacity(scheme.len() + host.len() + req.path_and_query.len() + 16);
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        // A port that is the scheme's default is left out, as Istio does when it translates.
        if let Some(port) = self.port
            && default_port(scheme) != Some(port)
        {
            let _ = write!(out, ":{port}");
        }
        match &self.path {
            Some(path) => {
                out.push_str(path);
                if !self.path_has_query
                    && let Some(q) = req.path_and_query.find('?')
                {
                    out.push_str(&req.path_and_query[q..]);
                }
            }
            None => {
                if !req.path_and_query.starts_with('/') {
                    out.push('/');
                }
                out.push_str(req.path_and_query);
            }
        }
        out
    }
}

impl DirectResponse {
    fn build(
        d: &proto::DirectResponse,
        cx: &Cx<'_>,
        at: &str,
    ) -> Result<DirectResponse, ConfigError> {
        let status = u16::try_from(d.status)
            .ok()
            .filter(|s| (200..=599).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| {
                cx.error(
                    format!("{at}.status"),
                    format!("status {} is not in 200-599", d.status),
                )
            })?;
        if d.body.len() > MAX_DIRECT_BODY {
            return Err(cx.error(
                format!("{at}.body"),
                format!(
                    "body is {} bytes; at most {MAX_DIRECT_BODY} are allowed",
                    d.body.len()
                ),
            ));
        }
        Ok(DirectResponse {
            status,
            body: Bytes::from(d.body.clone()),
        })
    }
}

/// A `rewrite.authority` value: a well-formed authority, usable as a Host header.
fn authority_value(a: &str) -> Result<HeaderValue, String> {
    http::uri::Authority::try_from(a).map_err(|_| format!("{a:?} is not a valid authority"))?;
    HeaderValue::from_str(a).map_err(|_| format!("{a:?} is not a valid header value"))
}

/// RFC 3986: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}
