//! The backends both proxies forward to: one recording HTTP server per endpoint kind, and a
//! TCP echo server for CONNECT tunnels. Every request is recorded under the test's request id
//! (`x-diff-id`), so the test can compare what each proxy sent upstream, attempt by attempt.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The header carrying the test's id for a request (scenario, request, proxy).
pub const ID_HEADER: &str = "x-diff-id";
/// The header telling the backend how to answer: comma-separated `status=N`, `delay=MS`,
/// `fail-first=N` (503 to the first N attempts of this id), `slow-first=N:MS` (the first N
/// attempts wait MS first), `reset-first=N` (the first N attempts get the connection closed
/// without a response), `chunked` (the body without a length), `grpc-fail-first=N:CODE` (the
/// first N attempts answer as a gRPC server failing with status CODE). Proxies pass it like
/// any other header.
pub const BEHAVE_HEADER: &str = "x-diff-behave";

/// One request as a backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The backend's name: which endpoint the proxy chose.
    pub backend: &'static str,
    pub method: String,
    /// The request target as received (path and query).
    pub target: String,
    pub version: String,
    /// In the order received, names lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Requests seen by every backend, by request id, in arrival order.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<HashMap<String, Vec<Seen>>>>);

impl Recorder {
    fn record(&self, id: String, seen: Seen) -> usize {
        let mut all = self.0.lock().expect("recorder lock");
        let attempts = all.entry(id).or_default();
        attempts.push(seen);
        attempts.len()
    }

    /// The attempts that reached a backend for `id`.
    pub fn attempts(&self, id: &str) -> Vec<Seen> {
        self.0
            .lock()
            .expect("recorder lock")
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (bounded) until at least one attempt for `id` has arrived.
    pub async fn wait_for(&self, id: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if !self.attempts(id).is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

/// How one request asks to be answered (see [`BEHAVE_HEADER`]).
#[derive(Default)]
struct Behave {
    status: Option<u16>,
    delay: Option<Duration>,
    fail_first: usize,
    slow_first: Option<(usize, Duration)>,
    reset_first: usize,
    chunked: bool,
    grpc_fail_first: Option<(usize, u32)>,
}

impl Behave {
    fn parse(value: &str) -> Behave {
        let mut b = Behave::default();
        for item in value.split(',').map(str::trim) {
            if item == "chunked" {
                b.chunked = true;
            }
            let Some((k, v)) = item.split_once('=') else {
                continue;
            };
            match k {
                "status" => b.status = v.parse().ok(),
                "delay" => b.delay = v.parse().ok().map(Duration::from_millis),
                "fail-first" => b.fail_first = v.parse().unwrap_or(0),
                "reset-first" => b.reset_first = v.parse().unwrap_or(0),
                "grpc-fail-first" => {
                    if let Some((n, code)) = v.split_once(':')
                        && let (Ok(n), Ok(code)) = (n.parse(), code.parse())
                    {
                        b.grpc_fail_first = Some((n, code));
                    }
                }
                "slow-first" => {
                    if let Some((n, ms)) = v.split_once(':')
                        && let (Ok(n), Ok(ms)) = (n.parse(), ms.parse())
                    {
                        b.slow_first = Some((n, Duration::from_millis(ms)));
                    }
                }
                _ => {}
            }
        }
        b
    }
}

/// A recording backend named `name`. It answers 200 (or `status` when set: a failing
/// endpoint), `<name> <method> <target>` as the body, with `x-backend: <name>`, its own
/// `server` and an `x-backend-extra` header a route may remove. A request with `Upgrade` gets
/// 101 and its bytes echoed, so that a proxy that tunnels what it should refuse is seen.
pub async fn recording(name: &'static str, status: Option<u16>, rec: Recorder) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind recording backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(name, status, rec.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A response body, sent with Content-Length or (`chunked`) without a known length.
pub struct Reply {
    body: Full<Bytes>,
    chunked: bool,
}

impl Reply {
    fn new(body: impl Into<Bytes>, chunked: bool) -> Reply {
        Reply {
            body: Full::new(body.into()),
            chunked,
        }
    }
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.chunked {
            hyper::body::SizeHint::default()
        } else {
            self.body.size_hint()
        }
    }
}

/// The backend's answer; an error makes hyper close the connection without a response.
async fn answer(
    name: &'static str,
    fixed_status: Option<u16>,
    rec: Recorder,
    mut req: Request<Incoming>,
) -> Result<Response<Reply>, std::io::Error> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let id = header(ID_HEADER).unwrap_or_default();
    let behave = Behave::parse(&header(BEHAVE_HEADER).unwrap_or_default());
    let upgrade = header("upgrade");
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    let on_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let body = match upgrade {
        Some(_) => Bytes::new(),
        None => req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default(),
    };
    let seen = Seen {
        backend: name,
        method: method.clone(),
        target: target.clone(),
        version,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let attempt = rec.record(id, seen);

    if let (Some(protocol), Some(on_upgrade)) = (upgrade, on_upgrade) {
        tokio::spawn(echo_upgraded(on_upgrade));
        let resp = Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", protocol)
            .header("x-backend", name)
            .body(Reply::new(Bytes::new(), false));
        return Ok(resp.expect("101 response"));
    }
    if attempt <= behave.reset_first {
        return Err(std::io::Error::other("reset as asked"));
    }

    let mut delay = behave.delay;
    if let Some((n, d)) = behave.slow_first
        && attempt <= n
    {
        delay = Some(d);
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let status = if attempt <= behave.fail_first {
        503
    } else {
        fixed_status.or(behave.status).unwrap_or(200)
    };
    if let Some((n, code)) = behave.grpc_fail_first
        && attempt <= n
    {
        // A gRPC failure without a body (Trailers-Only: the status in the headers).
        let resp = Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", code.to_string())
            .header("x-backend", name)
            .body(Reply::new(Bytes::new(), false));
        return Ok(resp.expect("grpc response"));
    }
    // 204 and 304 have no body.
    let text = if status == 204 || status == 304 {
        String::new()
    } else {
        format!("{name} {method} {target}")
    };
    let resp = Response::builder()
        .status(status)
        .header("server", "diff-backend")
        .header("x-backend", name)
        .header("x-backend-extra", "yes")
        .header("content-type", "text/plain")
        .body(Reply::new(text, behave.chunked));
    Ok(resp.expect("response"))
}

async fn echo_upgraded(on_upgrade: hyper::upgrade::OnUpgrade) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut io = TokioIo::new(upgraded);
    let mut buf = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), io.read(&mut buf)).await {
        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// A TCP server echoing what it reads (a CONNECT tunnel's far end), prefixed with `echo:` once
/// per connection so that a proxy answering by itself cannot pass for it.
pub async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let mut first = true;
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    let prefix: &[u8] = if first { b"echo:" } else { b"" };
                    first = false;
                    if stream
                        .write_all(&[prefix, &buf[..n]].concat())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A port nothing listens on (bound, read, closed): connecting fails at once.
pub fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a port to close")
}
