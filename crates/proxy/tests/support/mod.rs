//! Test harness: real backends on 127.0.0.1 and the real `weft-proxy` binary.

#![allow(dead_code)] // each test binary uses part of the harness

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A port free on 127.0.0.1 for a listener the test configures by number. Taken below
/// Linux's ephemeral range (32768-60999): a port-0 bind would hand out one of those, and an
/// outgoing connection of a test running alongside may take it before the proxy binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(7, Ordering::Relaxed));
        let port = 20_000 + (n % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999 on 127.0.0.1");
}

/// Binds 127.0.0.1:0 and serves every accepted connection with `serve` on its own task.
async fn spawn_server<F, Fut>(what: &str, serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// A backend that answers `name path` and echoes request headers as `x-echo-<name>`;
/// `/slow?ms=N` waits N ms first; `/status/N` answers status N.
pub async fn backend(name: &'static str) -> SocketAddr {
    spawn_server("backend", move |stream| async move {
        let svc = service_fn(move |req: Request<Incoming>| async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            if let Some(ms) = path.strip_prefix("/slow?ms=").and_then(|v| v.parse().ok()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let status = path
                .strip_prefix("/status/")
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(200);
            let mut resp = Response::builder().status(status);
            for (k, v) in req.headers() {
                resp = resp.header(format!("x-echo-{k}"), v);
            }
            let version = format!("{:?}", req.version());
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = format!("{name} {path} {version} {}", String::from_utf8_lossy(&body));
            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(text))).expect("response"))
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

/// A running weft-proxy; killed on drop.
pub struct Proxy {
    pub child: Child,
    pub listeners: std::collections::HashMap<String, SocketAddr>,
    pub admin: SocketAddr,
    pub health: SocketAddr,
    pub config: PathBuf,
    pub stderr: mpsc::Receiver<String>,
    _dir: TempDir,
}

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Proxy {
    /// Starts weft-proxy with `config` (YAML; admin and health on port 0 are added).
    pub fn start(config: &str) -> Proxy {
        Proxy::start_with_admin("", config)
    }

    /// As [`Proxy::start`], with `extra` (`, field: value...`) added to the admin settings.
    pub fn start_with_admin(extra: &str, config: &str) -> Proxy {
        let dir = std::env::temp_dir().join(format!(
            "weft-proxy-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bootstrap.yaml");
        let full = format!(
            "admin: {{address: \"127.0.0.1:0\", healthAddress: \"127.0.0.1:0\", drainTimeout: 5s{extra}}}\n{config}"
        );
        std::fs::write(&path, full).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
            .arg("--config")
            .arg(&path)
            .arg("--concurrency")
            .arg("2")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weft-proxy");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut listeners = std::collections::HashMap::new();
        let (mut admin, mut health) = (None, None);
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("weft-proxy did not become ready");
            if line == "weft-proxy: ready" {
                break;
            }
            let addr = |s: &str| {
                s.rsplit(' ')
                    .next()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            if let Some(rest) = line.strip_prefix("weft-proxy: listener ") {
                let name = rest.split(' ').next().unwrap_or_default().to_owned();
                listeners.insert(name, addr(rest).expect("listener address"));
            } else if let Some(rest) = line.strip_prefix("weft-proxy: admin on ") {
                admin = addr(rest);
            } else if let Some(rest) = line.strip_prefix("weft-proxy: health on ") {
                health = addr(rest);
            }
        }
        Proxy {
            child,
            listeners,
            admin: admin.expect("admin address"),
            health: health.expect("health address"),
            config: path,
            stderr: rx,
            _dir: TempDir(dir),
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners[listener]
    }

    /// Replaces the config file (the proxy reloads it within a second or so).
    pub fn rewrite_config(&self, config: &str) {
        let full = format!(
            "admin: {{address: \"127.0.0.1:0\", healthAddress: \"127.0.0.1:0\", drainTimeout: 5s}}\n{config}"
        );
        std::fs::write(&self.config, full).expect("rewrite config");
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A response as a test sees it.
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// Sends `GET http://{addr}{path}` with `Host: host` and extra headers.
pub async fn get(
    client: &Client,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let mut req = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(Full::new(Bytes::new())).expect("request")).await
}

pub async fn send(client: &Client, req: Request<Full<Bytes>>) -> Got {
    let resp = client.request(req).await.expect("request through proxy");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A backend that accepts `Upgrade` requests (101) and then echoes raw bytes.
pub async fn upgrade_backend() -> SocketAddr {
    spawn_server("upgrade backend", move |stream| async move {
        let svc = service_fn(|mut req: Request<Incoming>| async move {
            let protocol = req.headers().get("upgrade").cloned();
            let Some(protocol) = protocol else {
                let r = Response::builder()
                    .status(400)
                    .body(Full::new(Bytes::from("expected an upgrade")));
                return Ok::<_, Infallible>(r.expect("response"));
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let r = Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", protocol)
                .body(Full::new(Bytes::new()));
            Ok::<_, Infallible>(r.expect("response"))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
    })
    .await
}

/// An HTTP/2 (prior knowledge) backend that answers like a gRPC server: the request body's
/// frames are echoed back as separate data frames, then trailers `grpc-status: 0` and
/// `grpc-message: echoed-<n>` (n = frames seen).
pub async fn grpc_like_backend() -> SocketAddr {
    use hyper::body::Frame;
    spawn_server("grpc backend", move |stream| async move {
        let svc = service_fn(|req: Request<Incoming>| async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(16);
            let mut body = req.into_body();
            tokio::spawn(async move {
                let mut frames = 0;
                while let Some(Ok(frame)) = body.frame().await {
                    // END_STREAM may come as an empty DATA frame: not a message.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        frames += 1;
                        let _ = tx.send(Frame::data(data)).await;
                    }
                }
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                if let Ok(v) = http::HeaderValue::from_str(&format!("echoed-{frames}")) {
                    trailers.insert("grpc-message", v);
                }
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            let resp = Response::builder()
                .header("content-type", "application/grpc")
                .body(ChannelBody(rx))
                .expect("response");
            Ok::<_, Infallible>(resp)
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

/// A response body fed frame by frame from a channel.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<hyper::body::Frame<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// An HTTP/2-only (prior knowledge) backend: an HTTP/1 request fails the handshake. Answers
/// `name path version authority` (the request's `:authority`, `-` when absent) and echoes
/// request headers as `x-echo-<name>`, like [`backend`].
pub async fn h2_backend(name: &'static str) -> SocketAddr {
    spawn_server("h2 backend", move |stream| async move {
        let svc = service_fn(move |req: Request<Incoming>| async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let authority = req
                .uri()
                .authority()
                .map_or_else(|| "-".to_owned(), |a| a.to_string());
            let mut resp = Response::builder();
            for (k, v) in req.headers() {
                resp = resp.header(format!("x-echo-{k}"), v);
            }
            let text = format!("{name} {path} {:?} {authority}", req.version());
            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(text))).expect("response"))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

/// Holds a [`gated_backend`]'s `/hold` requests until opened.
pub struct Gate {
    /// `/hold` requests that have arrived (answered or not).
    held: tokio::sync::watch::Sender<usize>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    /// `/hold` requests that have arrived (answered or not).
    pub fn held(&self) -> usize {
        *self.held.borrow()
    }

    /// Resolves once more than `n` `/hold` requests have arrived.
    pub async fn held_more_than(&self, n: usize) {
        let _ = self.held.subscribe().wait_for(|&h| h > n).await;
    }

    /// Answers every held request, and every later one at once.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// A backend that answers `name path` at once, except `/hold`, which waits until
/// [`Gate::open`]: a request kept in flight without depending on time.
pub async fn gated_backend(name: &'static str) -> (SocketAddr, std::sync::Arc<Gate>) {
    let gate = std::sync::Arc::new(Gate {
        held: tokio::sync::watch::channel(0).0,
        open: tokio::sync::watch::channel(false).0,
    });
    let shared = gate.clone();
    let addr = spawn_server("gated backend", move |stream| {
        let gate = shared.clone();
        async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let gate = gate.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    if path == "/hold" {
                        let mut open = gate.open.subscribe();
                        gate.held.send_modify(|h| *h += 1);
                        let _ = open.wait_for(|&o| o).await;
                    }
                    let body = Full::new(Bytes::from(format!("{name} {path}")));
                    Ok::<_, Infallible>(Response::new(body))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await;
    (addr, gate)
}

/// A fresh directory (removed when the guard drops) and the access log path in it.
pub fn access_log_file(name: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let log = dir.0.join("access.log");
    (dir, log)
}

/// The access log's text once it holds `lines` lines (or after 5 s, whatever it holds then).
pub async fn access_log_lines(log: &std::path::Path, lines: usize) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().count() >= lines {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text
}
