//! Phase 1, downstream checks: what a request must be before it is routed. Envoy's HTTP/1
//! codec rules as Istio configures them, the listener's rate limit, the authority the request
//! is for, its path normalized, and whether the connection's TLS admits that authority.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Uri, Version};

use super::{ConnContext, Exchange};
use crate::error::{Cause, Error};

static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A request that passed the checks, with what routing reads of it.
pub(super) struct Checked {
    pub parts: http::request::Parts,
    /// Lower-case `host[:port]`.
    pub authority: String,
    /// What routing matches when not `authority`: on a captured connection, a Host without a
    /// port with the original destination's port (Envoy routes it in that port's route
    /// configuration).
    pub routing_authority: Option<String>,
    /// The scheme the client used: `http` or `https`.
    pub scheme: &'static str,
    /// The path, normalized ([`crate::path`]), with the query.
    pub path_and_query: String,
    /// The client's address, as far as the proxy trusts x-forwarded-for.
    pub client: IpAddr,
}

pub(super) fn check(
    cx: &ConnContext,
    ex: &mut Exchange,
    parts: http::request::Parts,
) -> Result<Checked, Error> {
    if let Some(refusal) = http1_refusal(&parts) {
        // Envoy's codec closes the connection after these.
        ex.close = true;
        return Err(refusal);
    }
    let size = header_bytes(&parts);
    if size > cx.max_header_bytes {
        ex.close = true;
        let detail = format!(
            "request headers are {size} bytes, over the listener's limit of {}",
            cx.max_header_bytes
        );
        return Err(Error::new(Cause::HeadersTooLarge, detail));
    }
    if let Some(bucket) = &cx.rate_limit
        && !bucket.try_acquire()
    {
        let detail = format!("listener {:?}: local rate limit", cx.listener);
        return Err(Error::new(Cause::RateLimited, detail));
    }
    let authority =
        match request_authority(&parts.method, &parts.uri, &parts.headers, cx.explicit_proxy) {
            Ok(a) => a,
            Err(why) => {
                // A head the codec cannot make sense of: Envoy closes the connection.
                ex.close = true;
                return Err(Error::new(Cause::BadRequest, why));
            }
        };
    ex.note(|l| l.authority.clone_from(&authority));
    let scheme = original_scheme(cx, &parts);
    let received = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let path_and_query = match crate::path::normalize(received, cx.path_normalization) {
        Ok(p) => p.into_owned(),
        Err(why) => {
            return Err(Error::new(
                Cause::BadRequest,
                format!("path {received:?}: {why}"),
            ));
        }
    };
    if let Some(tls) = &cx.tls {
        let (host, _) = crate::route::split_port(&authority);
        if !tls.termination.admits(&tls.served, host) {
            let detail = format!(
                "no route for {authority}: it is served with other client certificate \
                 verification than this connection's SNI selected"
            );
            return Err(Error::new(Cause::NoRoute, detail));
        }
    }
    let client = client_address(
        cx.peer.ip(),
        !cx.internal_downstream,
        cx.xff_num_trusted_hops,
        &parts.headers,
    );
    if client != cx.peer.ip() {
        ex.note(|l| l.peer = std::net::SocketAddr::new(client, 0));
    }
    let routing_authority = cx
        .original_dst
        .filter(|_| crate::route::split_port(&authority).1.is_none())
        .map(|dst| format!("{authority}:{}", dst.port()));
    Ok(Checked {
        parts,
        authority,
        routing_authority,
        scheme,
        path_and_query,
        client,
    })
}

/// The client's address, as Envoy's connection manager works it out: with
/// `use_remote_address` (gateways) the connection's peer, or with `xff_num_trusted_hops` N
/// the Nth address from the right of the x-forwarded-for the request came with (the peer
/// is the last trusted proxy); without it (sidecars) the (N+1)th from the right, the address
/// the proxy in front appended. Too few addresses, or one that does not parse: the peer.
/// Hashing by source IP and the access log's downstream address read it.
pub(super) fn client_address(
    peer: IpAddr,
    use_remote_address: bool,
    trusted_hops: u32,
    headers: &HeaderMap,
) -> IpAddr {
    let hops = trusted_hops as usize;
    let back = if !use_remote_address {
        hops + 1
    } else if hops == 0 {
        return peer;
    } else {
        hops
    };
    let Some(xff) = headers.get(&FORWARDED_FOR).and_then(|v| v.to_str().ok()) else {
        return peer;
    };
    let addresses: Vec<&str> = xff.split(',').map(str::trim).collect();
    addresses
        .len()
        .checked_sub(back)
        .and_then(|i| addresses[i].parse().ok())
        .unwrap_or(peer)
}

/// The size of a request's headers as Envoy counts it against `max_request_headers_kb`: every
/// name and value, the request line's method and target included (its pseudo-headers). The
/// codec's read buffer bounds the head too, but only roughly (hyper's grows in steps).
fn header_bytes(parts: &http::request::Parts) -> usize {
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    let pseudo = parts.method.as_str().len() + target;
    parts.headers.iter().fold(pseudo, |n, (name, value)| {
        n + name.as_str().len() + value.len()
    })
}

/// What Envoy's HTTP/1 codec refuses before routing, as Istio configures it: HTTP/1.0 (426;
/// Istio leaves `accept_http_10` off), a transfer coding other than chunked (501: the
/// coding would be lost on the way, as Transfer-Encoding is hop by hop), and a method that
/// is not a registered one in its registered (upper) case (400).
fn http1_refusal(parts: &http::request::Parts) -> Option<Error> {
    if parts.version == Version::HTTP_10 || parts.version == Version::HTTP_09 {
        let why = "HTTP/1.0 is not served; use HTTP/1.1 or HTTP/2";
        return Some(Error::new(Cause::Http10, why));
    }
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let codings = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    if codings
        .filter(|c| !c.is_empty())
        .any(|c| !c.eq_ignore_ascii_case(b"chunked"))
    {
        let why = "only the chunked transfer coding is implemented";
        return Some(Error::new(Cause::TransferCoding, why));
    }
    if !KNOWN_METHODS.contains(&parts.method.as_str()) {
        let why = "unknown method (methods are case-sensitive: GET, not get)";
        return Some(Error::new(Cause::BadRequest, why));
    }
    None
}

/// The methods Envoy's HTTP/1 parser knows: HTTP's, WebDAV's and a few more.
const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
];

/// Drops every `x-envoy-*` header an outside client sent. They steer proxies (retries,
/// timeouts, `x-envoy-internal`), so only the mesh may set them; Envoy drops its list of
/// them from external requests, weft the whole prefix.
pub(super) fn remove_envoy_headers(headers: &mut HeaderMap) {
    let envoy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for name in envoy {
        headers.remove(&name);
    }
}

/// Drops the `x-envoy-*` headers Envoy drops from a request it does not consider internal
/// and that is not an edge request (a sidecar's: `use_remote_address` off): the ones that
/// steer a proxy (retries, timeouts) and `x-envoy-internal`. Under Istio's configuration (no
/// `internal_address_config`) Envoy considers no caller internal. What a gateway set for the
/// mesh behind it (`x-envoy-external-address`) passes, as do the rest of the prefix.
pub(super) fn remove_envoy_control_headers(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        return;
    }
    for name in ENVOY_CONTROL_HEADERS {
        headers.remove(*name);
    }
}

/// What Envoy's connection manager removes from external requests that are not edge requests.
const ENVOY_CONTROL_HEADERS: &[&str] = &[
    "x-envoy-internal",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// The authority a request is for: the absolute-form URI's (explicit proxy), HTTP/2's
/// :authority, or the Host header. Requests RFC 9112 says to answer with 400 are refused:
/// no Host, several Host headers, a Host that is not an authority, a CONNECT whose target
/// is not `host:port`, a `host:port` target for anything but CONNECT, and `*` for anything
/// but OPTIONS.
fn request_authority(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    explicit_proxy: bool,
) -> Result<String, &'static str> {
    if method == Method::CONNECT && uri.authority().is_none_or(|a| a.port().is_none()) {
        return Err("CONNECT needs a host:port target");
    }
    // `GET example.com HTTP/1.1`: the authority form is CONNECT's alone (RFC 9112 3.2.3);
    // routing it by its target while Host says otherwise would let the two disagree.
    if method != Method::CONNECT && uri.scheme().is_none() && uri.authority().is_some() {
        return Err("only CONNECT takes a host:port request target");
    }
    if uri.path() == "*" && uri.authority().is_none() && method != Method::OPTIONS {
        return Err("the * target is for OPTIONS only");
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("request has more than one Host header");
    }
    if let Some(a) = uri.authority()
        && (explicit_proxy
            || uri.scheme().is_none()
            || uri.scheme() == Some(&Scheme::HTTP)
            || uri.scheme() == Some(&Scheme::HTTPS))
    {
        return Ok(a.as_str().to_ascii_lowercase());
    }
    let host = host.ok_or("request has no Host or :authority")?;
    // RFC 3986 authority characters (reg-name or IP literal, and a port), no userinfo.
    let valid = !host.is_empty()
        && host
            .as_bytes()
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b));
    match host.to_str() {
        Ok(h) if valid => Ok(h.to_ascii_lowercase()),
        _ => Err("the Host header is not a valid authority"),
    }
}

/// The scheme the client used: the request's own (absolute form, HTTP/2 `:scheme`) or the
/// connection's; on a sidecar, an `x-forwarded-proto` of `http` or `https` wins (set by a
/// proxy in front that terminated TLS, which Envoy trusts with use_remote_address off). A
/// gateway's clients are outside: it goes by its own connection. Redirects and `scheme`
/// matches read it.
fn original_scheme(cx: &ConnContext, parts: &http::request::Parts) -> &'static str {
    let https = |s: &[u8]| {
        if s.eq_ignore_ascii_case(b"https") {
            Some("https")
        } else if s.eq_ignore_ascii_case(b"http") {
            Some("http")
        } else {
            None
        }
    };
    let forwarded = cx
        .internal_downstream
        .then(|| parts.headers.get(&FORWARDED_PROTO))
        .flatten()
        .and_then(|v| https(v.as_bytes()));
    forwarded.unwrap_or_else(|| match parts.uri.scheme_str() {
        Some(s) => https(s.as_bytes()).unwrap_or("http"),
        None if cx.tls.is_some() => "https",
        None => "http",
    })
}

pub(super) fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(use_remote_address: bool, hops: u32, xff: Option<&str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(x) = xff {
            headers.insert(&FORWARDED_FOR, HeaderValue::from_str(x).expect("value"));
        }
        let peer: IpAddr = "192.0.2.5".parse().expect("ip");
        client_address(peer, use_remote_address, hops, &headers).to_string()
    }

    #[test]
    fn the_client_address_follows_envoys_trusted_hops() {
        let xff = Some("203.0.113.128, 203.0.113.10, 192.0.2.1");
        // A gateway (use_remote_address): the peer, unless proxies in front are trusted.
        assert_eq!(client(true, 0, xff), "192.0.2.5");
        assert_eq!(client(true, 1, xff), "192.0.2.1");
        assert_eq!(client(true, 2, xff), "203.0.113.10");
        // Fewer addresses than trusted hops: the peer.
        assert_eq!(client(true, 4, xff), "192.0.2.5");
        assert_eq!(client(true, 2, None), "192.0.2.5");
        // A sidecar: what the proxy in front appended, the rightmost address.
        assert_eq!(client(false, 0, xff), "192.0.2.1");
        assert_eq!(client(false, 1, xff), "203.0.113.10");
        assert_eq!(client(false, 0, None), "192.0.2.5");
        // Not an address: the peer.
        assert_eq!(client(false, 0, Some("unknown")), "192.0.2.5");
    }
}
