//! The HTTP/1.1 server every app shares: one accept loop, one task per connection, the whole
//! request body read before the app sees it, and an access-log line per request on stdout
//! (the mirroring task reads httpbin v2's log to see the copies arrive).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{App, Env, details, httpbin, productpage, ratings, reviews};

/// The largest request body an app reads.
const MAX_BODY: usize = 1 << 20;

/// A request, read whole.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub version: hyper::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

impl Req {
    /// The value of header `name`, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) type Resp = Response<Full<Bytes>>;

/// A response with `body` and its content type.
pub(crate) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Resp {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    // Serializing a `Value` cannot fail; an empty object is a safe fallback anyway.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    reply(status, "application/json", body)
}

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    reply(status, "text/plain; charset=utf-8", body)
}

pub(crate) fn not_found() -> Resp {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// One app with its configuration, built once at start-up.
pub(crate) enum Service {
    Productpage(productpage::Productpage),
    Details,
    Reviews(reviews::Reviews),
    Ratings(ratings::Ratings),
    Httpbin(httpbin::Httpbin),
}

impl Service {
    /// The HTTP service of `app`; None for tcp-echo, which is no HTTP service.
    pub fn new(app: App, env: Env) -> Option<Service> {
        Some(match app {
            App::Productpage => Service::Productpage(productpage::Productpage::new(&env)),
            App::Details => Service::Details,
            App::Reviews => Service::Reviews(reviews::Reviews::new(&env)),
            App::Ratings => Service::Ratings(ratings::Ratings::new(&env)),
            App::Httpbin => Service::Httpbin(httpbin::Httpbin::new(&env)),
            App::TcpEcho => return None,
        })
    }

    async fn handle(&self, req: Req) -> Resp {
        match self {
            Service::Productpage(app) => app.handle(req).await,
            Service::Details => details::handle(&req),
            Service::Reviews(app) => app.handle(req).await,
            Service::Ratings(app) => app.handle(&req),
            Service::Httpbin(app) => app.handle(req).await,
        }
    }
}

pub(crate) async fn serve(listener: TcpListener, service: Service) -> Result<(), String> {
    let service = Arc::new(service);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving the connections we have.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let handler = service_fn(move |request: Request<Incoming>| {
                let service = Arc::clone(&service);
                async move { Ok::<_, std::convert::Infallible>(handle(&service, request, peer).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(service: &Service, request: Request<Incoming>, peer: SocketAddr) -> Resp {
    let (parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            );
        }
    };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        version: parts.version,
        headers: parts.headers,
        body,
        peer,
    };
    let line = format!("{} {} {:?}", req.method, parts.uri, req.version);
    let response = service.handle(req).await;
    println!("{peer} \"{line}\" {}", response.status().as_u16());
    response
}

/// Splits a `k=v&k2=v2` form or query into decoded pairs (`+` is a space, `%XX` a byte).
pub(crate) fn form_pairs(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` and `+`; invalid escapes are kept as they are, invalid UTF-8 replaced.
pub(crate) fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub(crate) fn html_escape(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms() {
        assert_eq!(
            form_pairs("username=jason&passwd=a+b%21&x"),
            vec![
                ("username".to_owned(), "jason".to_owned()),
                ("passwd".to_owned(), "a b!".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41%"), "A%");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
