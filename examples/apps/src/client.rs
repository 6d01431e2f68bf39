//! A small HTTP/1.1 client for the apps and `weft load`: direct, or through an HTTP proxy
//! (the sidecar's outbound listener) with absolute-form request targets, as `HTTP_PROXY`
//! asks (RFC 9112 section 3.2.2).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HOST;
// Re-exported: the types callers (`weft load`) need, without depending on hyper themselves.
pub use bytes::Bytes;
pub use hyper::header::{HeaderMap, HeaderName, HeaderValue};
pub use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest response body read; a demo app never sends more.
const MAX_BODY: usize = 16 << 20;

/// An `http://host:port/path` URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path_and_query: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}`: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = split_host_port(authority, 80)
            .ok_or_else(|| format!("`{url}`: bad host or port `{authority}`"))?;
        Ok(Target {
            host,
            port,
            path_and_query: path,
        })
    }

    /// `host:port`, as the Host header and the proxy's authority carry it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority(), self.path_and_query)
    }
}

/// Splits `host[:port]` (IPv6 in brackets), with `default_port` when none is given.
fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, default_port),
    };
    if host.is_empty() || host.contains(['@', ' ', '/']) {
        return None;
    }
    Some((host.to_owned(), port))
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Opens connections straight to the target, or to `proxy` when one is set.
#[derive(Clone, Debug, Default)]
pub struct Client {
    /// `host:port` of the HTTP proxy.
    proxy: Option<(String, u16)>,
}

impl Client {
    /// `proxy` as `HTTP_PROXY` spells it: `http://127.0.0.2:15001`, or `127.0.0.2:15001`.
    /// An unreadable value is ignored (calls go direct) after a warning.
    pub fn new(proxy: Option<&str>) -> Client {
        let proxy = proxy.and_then(|value| {
            let authority = value
                .strip_prefix("http://")
                .unwrap_or(value)
                .trim_end_matches('/');
            let parsed = split_host_port(authority, 80);
            if parsed.is_none() {
                tracing::warn!(proxy = value, "ignoring an unreadable HTTP proxy");
            }
            parsed
        });
        Client { proxy }
    }

    pub fn is_proxied(&self) -> bool {
        self.proxy.is_some()
    }

    /// Opens one keep-alive connection for requests to `target`'s authority.
    pub async fn connect(&self, target: &Target) -> Result<Connection, String> {
        let (host, port) = match &self.proxy {
            Some((host, port)) => (host.as_str(), *port),
            None => (target.host.as_str(), target.port),
        };
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        // Requests are small and latency is what is measured.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {host}:{port}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended");
            }
        });
        Ok(Connection {
            sender,
            proxied: self.proxy.is_some(),
        })
    }

    /// One GET on a fresh connection, bounded by `timeout` from connect to the last byte.
    /// Like the original bookinfo, the apps do not pool connections, so every call is
    /// balanced afresh by the mesh.
    pub async fn get(
        &self,
        url: &str,
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let target = Target::parse(url)?;
        let call = async {
            let mut conn = self.connect(&target).await?;
            conn.send(Method::GET, &target, headers, Bytes::new()).await
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("GET {url}: timed out after {timeout:?}"))?
    }
}

/// One HTTP/1.1 connection, reused for sequential requests (keep-alive).
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    proxied: bool,
}

impl Connection {
    /// False once the peer closed the connection or it failed; open a new one then.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    pub async fn send(
        &mut self,
        method: Method,
        target: &Target,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Reply, String> {
        let uri = if self.proxied {
            target.url()
        } else {
            target.path_and_query.clone()
        };
        let mut request = Request::builder()
            .method(method)
            .uri(&uri)
            .body(Full::new(body))
            .map_err(|e| format!("request to {uri}: {e}"))?;
        *request.headers_mut() = headers.clone();
        if !request.headers().contains_key(HOST) {
            let host = HeaderValue::from_str(&target.authority())
                .map_err(|e| format!("Host `{}`: {e}", target.authority()))?;
            request.headers_mut().insert(HOST, host);
        }
        self.sender
            .ready()
            .await
            .map_err(|e| format!("{}: connection closed: {e}", target.url()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("{}: {e}", target.url()))?;
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("{}: reading the body: {e}", target.url()))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let cases = [
            (
                "http://reviews:9080/reviews/0",
                Some(("reviews", 9080, "/reviews/0")),
            ),
            ("http://reviews:9080", Some(("reviews", 9080, "/"))),
            ("http://httpbin/get?a=1", Some(("httpbin", 80, "/get?a=1"))),
            ("http://h:1?x", Some(("h", 1, "/?x"))),
            ("http://[::1]:8000/x", Some(("::1", 8000, "/x"))),
            ("https://a/", None),
            ("http://:80/", None),
            ("http://a:99999/", None),
            ("http://u@a/", None),
        ];
        for (url, want) in cases {
            let got = Target::parse(url).ok();
            let want = want.map(|(h, p, path)| Target {
                host: h.to_owned(),
                port: p,
                path_and_query: path.to_owned(),
            });
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn reads_proxy_values() {
        assert_eq!(
            Client::new(Some("http://127.0.0.2:15001")).proxy,
            Some(("127.0.0.2".to_owned(), 15001))
        );
        assert_eq!(
            Client::new(Some("127.0.0.2:15001/")).proxy,
            Some(("127.0.0.2".to_owned(), 15001))
        );
        assert_eq!(Client::new(Some("http://:x")).proxy, None);
        assert_eq!(Client::new(None).proxy, None);
    }
}
