//! Consistent hash keys: which part of a request RING_HASH and MAGLEV hash, as Istio's
//! `consistentHash` (`httpHeaderName`, `httpCookie`, `useSourceIp`, `httpQueryParameterName`).
//!
//! Values are hashed with xxHash64, as Envoy's hash policies. A request without the key has no
//! hash (the balancer then picks at random), except that a cookie key with a ttl issues a new
//! cookie and hashes its value, so the client sticks from its next request on.

use std::fmt;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_xds::proto;
use weft_xds::proto::consistent_hash::Key;
use xxhash_rust::xxh64::xxh64;

use super::HashInput;
use crate::config::{ConfigError, duration};

/// What of a request is hashed.
pub(crate) enum HashKey {
    /// The header's value(s).
    Header(HeaderName),
    Cookie(CookieKey),
    /// The downstream IP address, without port.
    SourceIp,
    /// The first value of this query parameter, as sent (not percent-decoded, as Envoy).
    QueryParameter(Box<str>),
}

pub(crate) struct CookieKey {
    name: Box<str>,
    /// Set when the cookie has a ttl: how to write the Set-Cookie of an issued cookie.
    issue: Option<CookieIssue>,
}

/// An issued cookie's `Set-Cookie` is `{prefix}{value}{attributes}`.
struct CookieIssue {
    /// `name=`
    prefix: Box<str>,
    /// `; Path=/; Max-Age=3600; HttpOnly`
    attributes: Box<str>,
}

/// A request's hash, and the cookie to set if one was issued for it.
pub(crate) struct Hashed {
    pub(crate) hash: Option<u64>,
    pub(crate) set_cookie: Option<HeaderValue>,
}

impl HashKey {
    /// Converts `consistentHash.key` of a cluster; errors name fields under `consistentHash`.
    pub(crate) fn from_proto(key: Option<&Key>, resource: &str) -> Result<HashKey, ConfigError> {
        let err = |field: &str, reason: &str| ConfigError::new(resource, field, reason);
        match key {
            None => Err(err(
                "consistentHash",
                "one of header, cookie, sourceIp or queryParameter is required",
            )),
            Some(Key::Header(name)) => {
                if name.is_empty() {
                    return Err(err("consistentHash.header", "must not be empty"));
                }
                HeaderName::from_bytes(name.as_bytes())
                    .map(HashKey::Header)
                    .map_err(|_| err("consistentHash.header", "not a valid header name"))
            }
            Some(Key::Cookie(cookie)) => {
                CookieKey::from_proto(cookie, resource).map(HashKey::Cookie)
            }
            Some(Key::SourceIp(true)) => Ok(HashKey::SourceIp),
            Some(Key::SourceIp(false)) => {
                Err(err("consistentHash.sourceIp", "must be true when set"))
            }
            Some(Key::QueryParameter(name)) => {
                if name.is_empty() {
                    return Err(err("consistentHash.queryParameter", "must not be empty"));
                }
                Ok(HashKey::QueryParameter(name.as_str().into()))
            }
        }
    }

    /// Hashes the request's key, issuing a cookie if the key is a cookie with a ttl that the
    /// request lacks.
    pub(crate) fn hash(&self, input: &HashInput<'_>) -> Hashed {
        let hash = match self {
            HashKey::Header(name) => header_hash(input.headers, name),
            HashKey::Cookie(cookie) => return cookie.hash(input.headers),
            HashKey::SourceIp => Some(ip_hash(input.source_ip)),
            HashKey::QueryParameter(name) => input
                .query
                .and_then(|q| query_value(q, name))
                .map(|v| xxh64(v.as_bytes(), 0)),
        };
        Hashed {
            hash,
            set_cookie: None,
        }
    }
}

impl CookieKey {
    fn from_proto(cookie: &proto::Cookie, resource: &str) -> Result<CookieKey, ConfigError> {
        let err = |field: &str, reason: &str| ConfigError::new(resource, field, reason);
        if cookie.name.is_empty() {
            return Err(err("consistentHash.cookie.name", "required"));
        }
        if !cookie.name.bytes().all(is_token_byte) {
            return Err(err(
                "consistentHash.cookie.name",
                "not a valid cookie name (RFC 6265 token)",
            ));
        }
        // RFC 6265 path-value: any CHAR except controls and ';'.
        if !cookie
            .path
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b';')
        {
            return Err(err(
                "consistentHash.cookie.path",
                "must be printable ASCII without ';'",
            ));
        }
        let issue = match &cookie.ttl {
            None => None,
            Some(ttl) => {
                let ttl = duration(ttl, resource, "consistentHash.cookie.ttl")?;
                let path = if cookie.path.is_empty() {
                    "/"
                } else {
                    cookie.path.as_str()
                };
                // A ttl under a second makes a session cookie, as Envoy: Max-Age counts whole
                // seconds and 0 would tell the client to drop the cookie at once.
                let max_age = match ttl.as_secs() {
                    0 => String::new(),
                    secs => format!("; Max-Age={secs}"),
                };
                Some(CookieIssue {
                    prefix: format!("{}=", cookie.name).into(),
                    attributes: format!("; Path={path}{max_age}; HttpOnly").into(),
                })
            }
        };
        Ok(CookieKey {
            name: cookie.name.as_str().into(),
            issue,
        })
    }

    fn hash(&self, headers: &HeaderMap) -> Hashed {
        // An empty value counts as absent, as Envoy.
        if let Some(value) = cookie_value(headers, &self.name).filter(|v| !v.is_empty()) {
            return Hashed {
                hash: Some(xxh64(value, 0)),
                set_cookie: None,
            };
        }
        let Some(issue) = &self.issue else {
            return Hashed {
                hash: None,
                set_cookie: None,
            };
        };
        // A random value: this request's hash is that of the cookie it is given, so the
        // client's next request, carrying the cookie, lands on the same endpoint.
        let value = format!("{:016x}", fastrand::u64(..));
        let set_cookie = format!("{}{}{}", issue.prefix, value, issue.attributes);
        Hashed {
            hash: Some(xxh64(value.as_bytes(), 0)),
            // Name and path were checked at build; the value is hex.
            set_cookie: HeaderValue::try_from(set_cookie).ok(),
        }
    }
}

/// The hash of a header's values; several values are hashed sorted, each result seeding the
/// next, as Envoy, so their order does not matter.
fn header_hash(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(xxh64(first.as_bytes(), 0));
    };
    let mut all: Vec<&[u8]> = vec![first.as_bytes(), second.as_bytes()];
    all.extend(values.map(HeaderValue::as_bytes));
    all.sort_unstable();
    Some(all.iter().fold(0, |seed, v| xxh64(v, seed)))
}

/// The value of cookie `name` in the request's Cookie headers (first match), without quotes.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|h| h.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (key, value) = pair.split_at(eq);
            (key.trim_ascii() == name.as_bytes()).then(|| unquote(value[1..].trim_ascii()))
        })
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// The first value of query parameter `name` in a raw query string; `""` for a bare `name`.
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// The hash of the textual IP address, as Envoy hashes it. IPv4-mapped IPv6 addresses (from
/// dual-stack listeners) hash as IPv4, so a client keeps its endpoint across address families.
fn ip_hash(ip: IpAddr) -> u64 {
    let mut text = StackText::new();
    // The longest IP address text is 45 bytes, within StackText's 64.
    let _ = fmt::Write::write_fmt(&mut text, format_args!("{}", ip.to_canonical()));
    xxh64(text.as_bytes(), 0)
}

/// A short string on the stack: formatting an address per request without allocating.
struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl StackText {
    fn new() -> StackText {
        StackText {
            buf: [0; 64],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// RFC 7230 tchar, which RFC 6265 cookie names are.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(k, v) in pairs {
            map.append(k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn cookies_are_found_among_others() {
        let h = headers(&[("cookie", "a=1; session=\"abc\"; b=2"), ("cookie", "c=3")]);
        assert_eq!(cookie_value(&h, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(&h, "c"), Some(&b"3"[..]));
        assert_eq!(cookie_value(&h, "sess"), None);
        let h = headers(&[("cookie", "flag; x=")]);
        assert_eq!(cookie_value(&h, "flag"), None);
        assert_eq!(cookie_value(&h, "x"), Some(&b""[..]));
    }

    #[test]
    fn query_parameters_are_found_raw() {
        assert_eq!(query_value("a=1&user=j%20d&user=2", "user"), Some("j%20d"));
        assert_eq!(query_value("a=1&flag", "flag"), Some(""));
        assert_eq!(query_value("a=1&users=2", "user"), None);
        assert_eq!(query_value("", "user"), None);
    }

    #[test]
    fn header_value_order_does_not_matter() {
        let name = HeaderName::from_static("x-user");
        let ab = header_hash(&headers(&[("x-user", "a"), ("x-user", "b")]), &name);
        let ba = header_hash(&headers(&[("x-user", "b"), ("x-user", "a")]), &name);
        assert_eq!(ab, ba);
        assert_ne!(ab, header_hash(&headers(&[("x-user", "a")]), &name));
        assert_eq!(header_hash(&headers(&[]), &name), None);
    }

    #[test]
    fn ip_text_is_hashed() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(ip_hash(v4), xxh64(b"10.1.2.3", 0));
        assert_eq!(ip_hash(mapped), ip_hash(v4));
        let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(
            ip_hash(long),
            xxh64(b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0)
        );
    }
}
