//! Phase 4, the upstream request: the cluster it goes to (an ORIGINAL_DST cluster resolves
//! the destination the request asked for), then its URI and headers as the route says, the
//! WebSocket offer, `x-forwarded-*`, and its body (counted, mirrored, kept for a retry).

use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::attempts::RequestBody;
use super::decide::Routed;
use super::downstream::Checked;
use super::{ConnContext, Exchange};
use crate::body::{ProxyBody, Replayable};
use crate::cluster::{HashInput, Pick};
use crate::error::{Cause, Error};
use crate::route::policy::Policy;
use crate::snapshot::{ClusterState, Snapshot};

static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
static ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-envoy-original-host");
static EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");

/// The cluster a request goes to: the snapshot's, or the one an ORIGINAL_DST cluster keeps
/// for the destination the request asked for.
pub(super) enum Target<'s> {
    Configured(&'s ClusterState),
    Resolved(Arc<ClusterState>),
}

impl Deref for Target<'_> {
    type Target = ClusterState;
    fn deref(&self) -> &ClusterState {
        match self {
            Target::Configured(c) => c,
            Target::Resolved(c) => c,
        }
    }
}

pub(super) async fn target<'s>(
    cx: &ConnContext,
    snapshot: &'s Snapshot,
    routed: &Routed<'_>,
    request: &Checked,
    deadline: Option<tokio::time::Instant>,
) -> Result<Target<'s>, Error> {
    let name = &routed.destination.cluster;
    let Some(state) = snapshot.clusters.get(name) else {
        let detail = format!("cluster {name:?} is not defined");
        return Err(Error::new(Cause::NoCluster, detail));
    };
    let Some(destinations) = &state.original_dst else {
        return Ok(Target::Configured(state));
    };
    let default_port = if request.scheme == "https" { 443 } else { 80 };
    // A captured connection goes where the application sent it, whatever its Host says.
    let captured = cx.original_dst.map(|dst| dst.to_string());
    let (authority, local) = match &captured {
        Some(dst) => (dst.as_str(), crate::original_dst::CAPTURED),
        None => (request.authority.as_str(), cx.local),
    };
    let lookup = destinations.state_for(state, authority, default_port, local);
    let found = match deadline {
        Some(at) => tokio::time::timeout_at(at, lookup)
            .await
            .map_err(|_| route_timeout(routed.policy()))?,
        None => lookup.await,
    };
    found.map(Target::Resolved).map_err(|why| {
        let cause = match why {
            crate::original_dst::Unavailable::Full => Cause::Overflow,
            crate::original_dst::Unavailable::NoDestination(_) => Cause::NoHealthyUpstream,
        };
        Error::new(cause, format!("cluster {name:?}: {why}"))
    })
}

/// 504 UT: the route's timeout passed.
pub(super) fn route_timeout(policy: &Policy) -> Error {
    let timeout = policy.timeout.unwrap_or_default();
    Error::new(
        Cause::RouteTimeout,
        format!("route timeout of {timeout:?} passed"),
    )
}

/// The request as it goes upstream.
pub(super) struct Outbound {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The downstream connection's extensions: a CONNECT's tunnel to hand over.
    pub extensions: http::Extensions,
    pub downstream_h2: bool,
    /// A WebSocket handshake: the downstream half to join on a 101, and the protocol.
    pub upgrade: Option<(hyper::upgrade::OnUpgrade, HeaderValue)>,
    /// The request's path and query (normalized, before any rewrite): hashing reads the query.
    path_and_query: String,
    source_ip: IpAddr,
}

impl Outbound {
    pub fn is_connect(&self) -> bool {
        self.method == Method::CONNECT
    }

    /// An endpoint of `cluster` by its load balancer (hashing reads the request).
    pub fn pick(&self, cluster: &ClusterState) -> Option<Pick> {
        let query = self.path_and_query.split_once('?').map(|(_, q)| q);
        cluster.cluster.pick(&HashInput {
            headers: &self.headers,
            source_ip: self.source_ip,
            query,
        })
    }
}

/// The upstream request: same method and body, new URI, headers per the route.
pub(super) fn build(
    cx: &ConnContext,
    snapshot: &Snapshot,
    routed: &Routed<'_>,
    cluster: &ClusterState,
    request: Checked,
) -> Result<Outbound, Error> {
    // A rewritten path leaves the original in x-envoy-original-path, as Envoy does.
    let rewritten = routed
        .matched
        .rewritten_path(&super::decide::view(cx, snapshot, &request));
    let Checked {
        mut parts,
        authority,
        scheme,
        path_and_query,
        client,
        ..
    } = request;
    if rewritten.is_some()
        && let Ok(original) = HeaderValue::from_str(&path_and_query)
    {
        parts.headers.insert(ORIGINAL_PATH.clone(), original);
    }
    let path = rewritten.as_deref().unwrap_or(&path_and_query);
    // The Host as the client wrote it (routing went by its lower-case form); a rewritten
    // authority leaves the original in x-envoy-original-host, as Envoy does.
    let client_host = parts
        .headers
        .get(header::HOST)
        .filter(|h| h.as_bytes().eq_ignore_ascii_case(authority.as_bytes()))
        .cloned();
    let rewrite = routed.forward.authority_rewrite().cloned();
    if rewrite.is_some()
        && let Some(original) = client_host
            .clone()
            .or_else(|| HeaderValue::from_str(&authority).ok())
    {
        parts.headers.insert(ORIGINAL_HOST.clone(), original);
    }
    let upstream_authority = rewrite
        .or(client_host)
        .or_else(|| HeaderValue::from_str(&authority).ok());
    let uri = upstream_uri(cluster.upstream.scheme(), upstream_authority.as_ref(), path)
        .map_err(|detail| Error::new(Cause::BadRequest, detail))?;
    let upgrade = websocket_offer(&mut parts)?;
    remove_hop_by_hop(&mut parts.headers);
    if let Some((_, protocol)) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    if let Some(host) = upstream_authority {
        parts.headers.insert(header::HOST, host);
    }
    // Envoy's use_remote_address as Istio sets it: on for gateways, which add their client
    // to x-forwarded-for and say the connection's scheme in x-forwarded-proto; off for
    // sidecars, which leave x-forwarded-for alone and set x-forwarded-proto only when absent.
    let proto = HeaderValue::from_static(scheme);
    if cx.internal_downstream {
        parts.headers.entry(&FORWARDED_PROTO).or_insert(proto);
    } else {
        append_forwarded_for(&mut parts.headers, cx.peer.ip());
        parts.headers.insert(FORWARDED_PROTO.clone(), proto);
        // The client's address, for the mesh behind the gateway (Envoy sets it for requests
        // from outside, and with Istio's settings every gateway request is).
        parts
            .headers
            .insert(EXTERNAL_ADDRESS.clone(), client_value(client));
    }
    forward_client_cert(cx, &mut parts.headers);
    // Envoy's order: the destination's operations, then the route's (which win a conflict).
    routed.destination.request_headers.apply(&mut parts.headers);
    routed.matched.request_headers().apply(&mut parts.headers);
    Ok(Outbound {
        method: parts.method,
        uri,
        headers: parts.headers,
        extensions: parts.extensions,
        downstream_h2: parts.version == Version::HTTP_2,
        upgrade,
        path_and_query,
        source_ip: client,
    })
}

static FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// `x-forwarded-client-cert` per the listener's policy (Envoy's forward_client_cert_details).
fn forward_client_cert(cx: &ConnContext, headers: &mut http::HeaderMap) {
    use super::ForwardClientCert as F;
    let current = cx
        .client_cert_details
        .as_deref()
        .and_then(|d| HeaderValue::from_str(d).ok());
    match (cx.forward_client_cert, current) {
        (F::Sanitize, _) | (F::SanitizeSet, None) => {
            headers.remove(&FORWARDED_CLIENT_CERT);
        }
        (F::AppendForward, None) => {}
        (F::SanitizeSet, Some(value)) => {
            headers.insert(FORWARDED_CLIENT_CERT.clone(), value);
        }
        (F::AppendForward, Some(value)) => {
            let joined = headers
                .get_all(&FORWARDED_CLIENT_CERT)
                .iter()
                .chain(std::iter::once(&value))
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(",");
            if let Ok(v) = HeaderValue::from_str(&joined) {
                headers.insert(FORWARDED_CLIENT_CERT.clone(), v);
            }
        }
    }
}

/// HTTP/1.1 Upgrade to WebSocket, the one upgrade Istio configures: the upgrade headers
/// travel on, and on a 101 both connections are handed over and joined byte for byte.
/// Other protocols get 403, as from Envoy (a raw tunnel past routing and policy).
fn websocket_offer(
    parts: &mut http::request::Parts,
) -> Result<Option<(hyper::upgrade::OnUpgrade, HeaderValue)>, Error> {
    if parts.version > Version::HTTP_11 || !wants_upgrade(&parts.headers) {
        return Ok(None);
    }
    match parts.headers.get(header::UPGRADE) {
        Some(protocol) if protocol.as_bytes().eq_ignore_ascii_case(b"websocket") => {
            let protocol = protocol.clone();
            Ok(parts
                .extensions
                .remove::<hyper::upgrade::OnUpgrade>()
                .map(|on| (on, protocol)))
        }
        // HTTP/2 over cleartext: served as the HTTP/1.1 request it also is; dropping the
        // hop-by-hop headers drops the offer.
        Some(protocol) if protocol.as_bytes().eq_ignore_ascii_case(b"h2c") => Ok(None),
        protocol => {
            let detail = format!(
                "Upgrade: {}: this listener upgrades to websocket only",
                protocol.and_then(|p| p.to_str().ok()).unwrap_or("?")
            );
            Err(Error::new(Cause::UpgradeRefused, detail))
        }
    }
}

/// True for `Connection: upgrade` with an `Upgrade` header.
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request body as the attempts send it: counted for the access log, copied to the
/// route's mirrors, and kept for a retry when the route retries.
pub(super) fn body(
    ex: &mut Exchange,
    snapshot: &Arc<Snapshot>,
    policy: &Policy,
    outbound: &Outbound,
    body: Incoming,
) -> RequestBody {
    let empty = body.is_end_stream();
    // %BYTES_RECEIVED% and istio_request_bytes: the request body's bytes, counted as read.
    let counter = match (ex.log.as_deref_mut(), ex.report.as_mut()) {
        (_, _) if empty => None,
        (Some(l), Some(r)) => {
            let c = r.body_counter();
            l.bytes_received = c.clone();
            Some(c)
        }
        (Some(l), None) => Some(l.bytes_received.clone()),
        (None, Some(r)) => Some(r.body_counter()),
        (None, None) => None,
    };
    let mut body: ProxyBody = match counter {
        Some(received) => body
            .map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    received.fetch_add(data.len() as u64, Relaxed);
                }
                frame
            })
            .map_err(Into::into)
            .boxed_unsync(),
        None => body.map_err(Into::into).boxed_unsync(),
    };
    let upgrading = outbound.upgrade.is_some();
    if !policy.mirrors.is_empty() && !upgrading {
        let original = crate::mirror::Original {
            method: &outbound.method,
            uri: &outbound.uri,
            headers: &outbound.headers,
            downstream_h2: outbound.downstream_h2,
            source_ip: outbound.source_ip,
            empty,
            timeout: policy.timeout,
        };
        body = crate::mirror::start(snapshot, &policy.mirrors, &original, body);
    }
    // An upgrade is never retried: the downstream connection is handed over.
    match &policy.retry {
        _ if empty => RequestBody::Empty,
        Some(r) if !upgrading => RequestBody::Replay(Replayable::new(body, r.buffer_limit)),
        _ => RequestBody::Once(Some(body)),
    }
}

/// The upstream request's URI: the request's (or rewritten) authority, so that HTTP/2 sends
/// it as `:authority`.
fn upstream_uri(
    scheme: Scheme,
    authority: Option<&HeaderValue>,
    path: &str,
) -> Result<Uri, String> {
    // The connection goes to the picked endpoint whatever the URI says; a request whose
    // authority is not a valid URI authority goes with a placeholder (Host is still sent).
    let authority = authority
        .and_then(|a| Authority::try_from(a.as_bytes()).ok())
        .unwrap_or_else(|| Authority::from_static("upstream"));
    let pq = PathAndQuery::try_from(path).map_err(|e| format!("bad path {path:?}: {e}"))?;
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|e| e.to_string())
}

/// RFC 9110 §7.6.1: connection-specific headers are not forwarded (and HTTP/2 forbids them).
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    // `Expect: 100-continue` goes on upstream, as from Envoy with Istio's proxy_100_continue.
    // The client gets its `100 Continue` from the proxy when the body starts on its way up
    // (hyper sends it; the upstream's own 100 is not relayed), and the upstream gets the body
    // without waiting, which RFC 9110 10.1.1 allows.
    // `te: trailers` is how gRPC asks for trailers; anything else is hop-by-hop.
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// Appends the peer to x-forwarded-for, joined with `,` as Envoy joins it.
fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let ip = ip.to_string();
    let value = match headers.get(&FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing},{ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(FORWARDED_FOR.clone(), v);
    }
}

/// An address as a header value.
fn client_value(ip: IpAddr) -> HeaderValue {
    // An IP address's text is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("-"))
}
