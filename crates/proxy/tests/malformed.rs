//! weft-proxy end to end against malformed input: bytes no well-behaved client sends, written
//! raw to a TCP socket. Each must get the status HTTP defines for it (or a closed connection,
//! or for HTTP/2 a GOAWAY with the error code RFC 9113 names), never reach an upstream as a
//! complete request, and leave the proxy serving everyone else.
//!
//! (`routing.rs` covers a garbage request line, a header line without a colon, and one
//! 100 KiB header.)

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Proxy, backend, client, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every wait in these tests: long enough never to be reached on a loaded machine, short enough
/// that a proxy which stopped answering fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// A proxy with a listener at the default header limit, one at 16 KiB and one at 128 KiB;
/// `ok.test` goes to an echoing backend, `record.test` to [`recording_backend`].
async fn setup() -> (Proxy, Recorder) {
    let ok = backend("ok").await;
    let (record, recorder) = recording_backend().await;
    let config = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", http: {{routeConfig: main}}}}
- {{name: small, address: "127.0.0.1:0", http: {{routeConfig: main, maxRequestHeadersKb: 16}}}}
- {{name: large, address: "127.0.0.1:0", http: {{routeConfig: main, maxRequestHeadersKb: 128}}}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: record, domains: ["record.test"], routes: [{{route: {{clusters: [{{cluster: record}}]}}}}]}}
  - {{name: ok, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: ok}}]}}}}]}}
clusters:
- {{name: ok, endpoints: [{{address: "{ok}"}}]}}
- {{name: record, endpoints: [{{address: "{record}"}}]}}
"#
    );
    (Proxy::start(&config), recorder)
}

/// What [`recording_backend`] saw of one request.
#[derive(Debug)]
struct Seen {
    /// The request line.
    line: String,
    /// `Content-Length`, or `None` for a chunked body.
    declared: Option<usize>,
    /// Body bytes received (chunked: raw bytes, framing included).
    received: usize,
    /// The whole body arrived (Content-Length bytes, or chunked up to its last chunk).
    complete: bool,
}

/// The reports of [`recording_backend`].
struct Recorder {
    /// The request line of each request, as soon as its head has arrived.
    heads: mpsc::UnboundedReceiver<String>,
    /// Each request once its body has ended.
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Recorder {
    async fn head(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.heads.recv())
            .await
            .expect("no request reached the upstream")
            .expect("backend running")
    }

    async fn seen(&mut self) -> Seen {
        tokio::time::timeout(PATIENCE, self.seen.recv())
            .await
            .expect("the upstream request was neither completed nor aborted")
            .expect("backend running")
    }
}

/// A raw HTTP/1.1 backend that reports each request's head when it arrives, then its body: how
/// much arrived, and whether the connection ended before all of it did. A complete request is
/// answered `200 ok` and the connection closed; one request per connection.
async fn recording_backend() -> (SocketAddr, Recorder) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (heads_tx, heads) = mpsc::unbounded_channel();
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads_tx = heads_tx.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = find(&buf, b"\r\n\r\n") {
                        break i + 4;
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let line = head.lines().next().unwrap_or_default().to_owned();
                let _ = heads_tx.send(line.clone());
                let declared = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let chunked = head
                    .lines()
                    .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
                let mut body = buf.split_off(head_end);
                let done = |body: &[u8]| match declared {
                    Some(n) => body.len() >= n,
                    None if !chunked => true,
                    None => {
                        body.starts_with(b"0\r\n\r\n") || find(body, b"\r\n0\r\n\r\n").is_some()
                    }
                };
                while !done(&body) {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => body.extend_from_slice(&chunk[..n]),
                    }
                }
                let complete = done(&body);
                if complete {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                }
                let _ = tx.send(Seen {
                    line,
                    declared,
                    received: body.len(),
                    complete,
                });
            });
        }
    });
    (addr, Recorder { heads, seen })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the proxy answered on a raw connection: the status of its first response, if any, and
/// the response head.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    head: String,
}

/// Writes `bytes` on a new connection and reads the proxy's answer: up to the end of the first
/// response head, or to the close. Write errors are ignored (the proxy may answer and close
/// before it has read everything).
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    let _ = s.write_all(bytes).await;
    read_head(&mut s).await
}

async fn read_head(s: &mut TcpStream) -> Answer {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        while find(&out, b"\r\n\r\n").is_none() {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the proxy neither answered nor closed the connection");
    let head = String::from_utf8_lossy(&out).into_owned();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    Answer { status, head }
}

/// The proxy process is still running and a normal request through it succeeds.
async fn assert_serving(proxy: &mut Proxy, after: &str) {
    assert!(
        matches!(proxy.child.try_wait(), Ok(None)),
        "weft-proxy exited after {after}"
    );
    let ok = get(&client(), proxy.addr("http"), "ok.test", "/fine", &[]).await;
    assert_eq!(ok.status, 200, "after {after}: {}", ok.body);
    assert!(
        ok.body.starts_with("ok /fine"),
        "after {after}: {}",
        ok.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_heads_get_400() {
    let (mut proxy, _recorder) = setup().await;
    let addr = proxy.addr("http");
    let get =
        |headers: &str| format!("GET / HTTP/1.1\r\nHost: ok.test\r\n{headers}\r\n").into_bytes();
    // RFC 9112 and RFC 9110: each of these is a malformed request, answered 400.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("NUL in a header value", get("x-a: b\0c\r\n")),
        (
            "control character in a header value",
            get("x-a: b\x01c\r\n"),
        ),
        ("DEL in a header value", get("x-a: b\x7fc\r\n")),
        ("space in a header name", get("x a: b\r\n")),
        (
            "whitespace before the colon (RFC 9112 5.1)",
            get("x-a : b\r\n"),
        ),
        (
            "obsolete line folding (RFC 9112 5.2)",
            get("x-a: b\r\n c\r\n"),
        ),
        ("empty header name", get(": b\r\n")),
        ("NUL in a header name", get("x\0a: b\r\n")),
        (
            "request line with a fourth part",
            b"GET / HTTP/1.1 x\r\nHost: ok.test\r\n\r\n".to_vec(),
        ),
        (
            "control character in the request target",
            b"GET /a\x01b HTTP/1.1\r\nHost: ok.test\r\n\r\n".to_vec(),
        ),
        (
            "malformed version",
            b"GET / HTTP/1.x\r\nHost: ok.test\r\n\r\n".to_vec(),
        ),
        ("request line without a version", b"GET /\r\n\r\n".to_vec()),
        (
            "authority-form target on GET (RFC 9112 3.2.3: CONNECT only)",
            b"GET other.test HTTP/1.1\r\nHost: ok.test\r\n\r\n".to_vec(),
        ),
        (
            "authority-form target with a port on GET",
            b"GET other.test:80 HTTP/1.1\r\nHost: ok.test\r\n\r\n".to_vec(),
        ),
        (
            "method with a non-token character",
            b"G(T / HTTP/1.1\r\nHost: ok.test\r\n\r\n".to_vec(),
        ),
        (
            "non-ASCII method",
            "G\u{c9}T / HTTP/1.1\r\nHost: ok.test\r\n\r\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "empty method",
            b" / HTTP/1.1\r\nHost: ok.test\r\n\r\n".to_vec(),
        ),
        (
            "invalid Content-Length (RFC 9112 6.3)",
            get("content-length: 1x\r\n"),
        ),
        ("negative Content-Length", get("content-length: -1\r\n")),
        (
            "conflicting Content-Lengths (RFC 9112 6.3)",
            get("content-length: 1\r\ncontent-length: 2\r\n"),
        ),
        (
            "chunked is not the final transfer coding (RFC 9112 6.3)",
            get("transfer-encoding: chunked, gzip\r\n"),
        ),
        (
            "Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1)",
            b"POST / HTTP/1.0\r\nHost: ok.test\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "HTTP/1.1 without Host (RFC 9112 3.2)",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let answer = send_raw(addr, &bytes).await;
        assert_eq!(answer.status, Some(400), "{what}: {:?}", answer.head);
        assert_serving(&mut proxy, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_envoys_http1_codec_refuses_is_refused() {
    let (mut proxy, mut recorder) = setup().await;
    let addr = proxy.addr("http");
    let cases: [(&str, &[u8], u16); 5] = [
        (
            "HTTP/1.0 (Istio leaves accept_http_10 off)",
            b"GET / HTTP/1.0\r\nHost: record.test\r\n\r\n",
            426,
        ),
        (
            "a transfer coding other than chunked",
            b"POST / HTTP/1.1\r\nHost: record.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            "a lowercase method",
            b"get / HTTP/1.1\r\nHost: record.test\r\n\r\n",
            400,
        ),
        (
            "an unknown method",
            b"FETCHALL / HTTP/1.1\r\nHost: record.test\r\n\r\n",
            400,
        ),
        (
            "a known WebDAV method passes",
            b"PROPFIND / HTTP/1.1\r\nHost: ok.test\r\n\r\n",
            200,
        ),
    ];
    for (what, bytes, status) in cases {
        let answer = send_raw(addr, bytes).await;
        assert_eq!(answer.status, Some(status), "{what}: {:?}", answer.head);
        assert_serving(&mut proxy, what).await;
    }
    assert!(
        recorder.heads.try_recv().is_err(),
        "a refused request reached the upstream"
    );

    // Expect: 100-continue is answered by the proxy, and passed on (Istio's
    // proxy_100_continue), with a body the upstream gets without waiting.
    let answer = send_raw(
        addr,
        b"POST /e HTTP/1.1\r\nHost: ok.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    let head = answer.head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 100"), "{head}");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"POST /e HTTP/1.1\r\nHost: ok.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    )
    .await
    .expect("write head");
    let continued = read_head(&mut s).await;
    assert_eq!(continued.status, Some(100), "{:?}", continued.head);
    s.write_all(b"hi").await.expect("write body");
    let answer = read_head(&mut s).await;
    let head = answer.head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("x-echo-expect: 100-continue"),
        "Expect did not reach the upstream: {head}"
    );
}

/// Reads everything until the proxy closes the connection (the test fails if it does not).
async fn read_to_close(s: &mut TcpStream, what: &str) -> String {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        closed.is_ok(),
        "{what}: the proxy left the connection open after {text:?}"
    );
    text
}

/// Request smuggling needs two hops that disagree on where a body ends. The proxy reads each
/// request's framing once and forwards it re-framed, so the upstream sees what the proxy saw:
/// - Content-Length with Transfer-Encoding: chunked wins (RFC 9112 6.1), Content-Length is
///   not forwarded, and the connection closes after the response, so what follows the body
///   is never read (Envoy answers 400 instead);
/// - two equal Content-Lengths are read as one (RFC 9110 8.6 allows it; Envoy answers 400),
///   and what follows the body is the next request, forwarded as a request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_reach_the_upstream_as_the_proxy_read_them() {
    let (mut proxy, mut recorder) = setup().await;
    let addr = proxy.addr("http");
    let hidden = "GET /hidden HTTP/1.1\r\nHost: record.test\r\nConnection: close\r\n\r\n";
    for (what, head) in [
        (
            "Content-Length before Transfer-Encoding",
            "POST /cl-te HTTP/1.1\r\nHost: record.test\r\nContent-Length: 4\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding before Content-Length",
            "POST /te-cl HTTP/1.1\r\nHost: record.test\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: 48\r\n\r\n0\r\n\r\n",
        ),
    ] {
        let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
        let _ = s.write_all(format!("{head}{hidden}").as_bytes()).await;
        let answer = read_to_close(&mut s, what).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{what}: {answer:?}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{what}: {answer:?}");
        let seen = recorder.seen().await;
        assert!(seen.line.starts_with("post /"), "{what}: {seen:?}");
        assert_eq!(seen.declared, None, "{what}: forwarded chunked: {seen:?}");
        assert!(seen.complete, "{what}: {seen:?}");
        assert_serving(&mut proxy, what).await;
    }

    let what = "two equal Content-Lengths";
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    let head = "POST /cl-cl HTTP/1.1\r\nHost: record.test\r\nContent-Length: 0\r\n\
                Content-Length: 0\r\n\r\n";
    let _ = s.write_all(format!("{head}{hidden}").as_bytes()).await;
    let answer = read_to_close(&mut s, what).await;
    assert_eq!(
        answer.matches("HTTP/1.1 200 ").count(),
        2,
        "{what}: {answer:?}"
    );
    let first = recorder.seen().await;
    let second = recorder.seen().await;
    assert_eq!(
        (first.line.as_str(), first.declared),
        ("post /cl-cl http/1.1", Some(0)),
        "{what}"
    );
    assert!(
        second.line.starts_with("get /hidden "),
        "{what}: {second:?}"
    );
    assert_serving(&mut proxy, what).await;
    while let Ok(line) = recorder.heads.try_recv() {
        assert!(
            !line.contains("hidden") || line.starts_with("get /hidden "),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_or_414() {
    let (mut proxy, _recorder) = setup().await;
    let request = |header_bytes: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: ok.test\r\nx-big: {}\r\n\r\n",
            "a".repeat(header_bytes)
        )
        .into_bytes()
    };

    // More header lines than the proxy parses (100, as Envoy's max_headers_count), each small.
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = send_raw(
        proxy.addr("http"),
        format!("GET / HTTP/1.1\r\nHost: ok.test\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.status, Some(431), "150 headers: {:?}", answer.head);
    assert_serving(&mut proxy, "150 headers").await;

    // The listener's own limit (maxRequestHeadersKb: 16) applies, not the default 60 KiB...
    let answer = send_raw(proxy.addr("small"), &request(20 * 1024)).await;
    assert_eq!(
        answer.status,
        Some(431),
        "20 KiB on small: {:?}",
        answer.head
    );
    assert_serving(&mut proxy, "20 KiB header on a 16 KiB listener").await;
    // ...and a head under it passes, there and on the default listener.
    for listener in ["small", "http"] {
        let answer = send_raw(proxy.addr(listener), &request(12 * 1024)).await;
        assert_eq!(
            answer.status,
            Some(200),
            "12 KiB on {listener}: {:?}",
            answer.head
        );
    }

    // The default limit is Envoy's 60 KiB of headers, exactly: 61 KiB gets 431, 59 KiB passes
    // (hyper's read buffer alone would let a head up to 64 KiB through).
    let answer = send_raw(proxy.addr("http"), &request(61 * 1024)).await;
    assert_eq!(answer.status, Some(431), "61 KiB: {:?}", answer.head);
    assert_serving(&mut proxy, "a 61 KiB header on the default listener").await;
    let answer = send_raw(proxy.addr("http"), &request(59 * 1024)).await;
    assert_eq!(answer.status, Some(200), "59 KiB: {:?}", answer.head);

    // A request target longer than 64 KiB within a head the listener accepts: 414.
    let target = format!("/{}", "a".repeat(70 * 1024));
    let answer = send_raw(
        proxy.addr("large"),
        format!("GET {target} HTTP/1.1\r\nHost: ok.test\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.status, Some(414), "70 KiB target: {:?}", answer.head);
    assert_serving(&mut proxy, "a 70 KiB request target").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_aborts_the_upstream_request() {
    let (mut proxy, mut recorder) = setup().await;
    let mut s = TcpStream::connect(proxy.addr("http"))
        .await
        .expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: record.test\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await
    .expect("write");
    // Once the request is on its way upstream, the client goes away with 90 bytes still owed.
    let line = recorder.head().await;
    assert!(line.starts_with("post /upload "), "{line}");
    s.shutdown().await.expect("shutdown");
    drop(s);
    let got = recorder.seen().await;
    assert!(got.line.starts_with("post /upload "), "{got:?}");
    assert_eq!(got.declared, Some(100), "{got:?}");
    assert!(!got.complete && got.received <= 10, "{got:?}");
    assert_serving(&mut proxy, "a truncated body").await;

    // The upstream still takes complete requests.
    let mut s = TcpStream::connect(proxy.addr("http"))
        .await
        .expect("connect");
    s.write_all(b"POST /whole HTTP/1.1\r\nHost: record.test\r\ncontent-length: 4\r\n\r\nfull")
        .await
        .expect("write");
    let answer = read_head(&mut s).await;
    assert_eq!(answer.status, Some(200), "{:?}", answer.head);
    let got = recorder.seen().await;
    assert!(got.complete && got.received == 4, "{got:?}");
}

/// Chunked bodies whose framing is broken after the head was accepted.
const BAD_CHUNKS: [(&str, &[u8]); 3] = [
    ("chunk size not hex", b"zz\r\nhello\r\n0\r\n\r\n"),
    (
        "chunk size overflowing 64 bits",
        b"10000000000000000\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk data longer than its size",
        b"2\r\nhello\r\n0\r\n\r\n",
    ),
];

fn chunked_post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes =
        format!("POST {path} HTTP/1.1\r\nHost: record.test\r\ntransfer-encoding: chunked\r\n\r\n")
            .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunks_never_reach_the_upstream_whole() {
    let (mut proxy, mut recorder) = setup().await;
    for (what, body) in BAD_CHUNKS {
        let answer = send_raw(proxy.addr("http"), &chunked_post("/bad", body)).await;
        // Not a success; the exact status is `downstream_errors_get_400` (ignored for now).
        assert!(
            answer.status.is_none_or(|s| s >= 400),
            "{what}: {:?}",
            answer.head
        );
        assert_serving(&mut proxy, what).await;
    }
    // A valid chunked request to the same upstream, then: whatever reached the upstream from
    // the bad ones arrived incomplete.
    let mut s = TcpStream::connect(proxy.addr("http"))
        .await
        .expect("connect");
    s.write_all(&chunked_post("/good", b"5\r\nhello\r\n0\r\n\r\n"))
        .await
        .expect("write");
    let answer = read_head(&mut s).await;
    assert_eq!(answer.status, Some(200), "{:?}", answer.head);
    loop {
        let got = recorder.seen().await;
        if got.line.starts_with("post /good ") {
            assert!(got.complete, "{got:?}");
            break;
        }
        assert!(
            !got.complete,
            "a bad chunked body reached the upstream whole: {got:?}"
        );
    }
}

/// What RFC 9112 requires and weft-proxy does not do yet: a broken chunked body is the
/// client's error (400, as Envoy answers with flag DPE, or a close), not the upstream's; and
/// more than one Host, or a Host that is not a valid authority, is a 400 (section 3.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_errors_get_400() {
    let (proxy, _recorder) = setup().await;
    for (what, body) in BAD_CHUNKS {
        let answer = send_raw(proxy.addr("http"), &chunked_post("/bad", body)).await;
        assert!(
            matches!(answer.status, None | Some(400)),
            "{what}: {:?}",
            answer.head
        );
    }
    let cases: [(&str, &[u8]); 2] = [
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: ok.test\r\nHost: record.test\r\n\r\n",
        ),
        (
            "a Host that is not an authority",
            b"GET / HTTP/1.1\r\nHost: ok test\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let answer = send_raw(proxy.addr("http"), bytes).await;
        assert_eq!(answer.status, Some(400), "{what}: {:?}", answer.head);
    }
}

// HTTP/2 frames (RFC 9113 section 4.1): length (24 bits), type, flags, stream id (31 bits).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const FRAME_SIZE_ERROR: u32 = 0x6;
const COMPRESSION_ERROR: u32 = 0x9;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small payload");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block for `GET http://ok.test/` from the static table (RFC 7541 appendix A):
/// :method GET (2), :scheme http (6), :path / (4), :authority (1) with a literal value.
const GET_BLOCK: &[u8] = b"\x82\x86\x84\x41\x07ok.test";

/// The preface and an empty SETTINGS, then `bad`; returns the error code of the GOAWAY the
/// proxy answers with. Fails if the connection closes, or stays open, without one.
async fn h2_goaway(addr: SocketAddr, bad: &[u8]) -> u32 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend_from_slice(bad);
    let _ = s.write_all(&out).await;
    let read = async {
        loop {
            let mut header = [0u8; 9];
            s.read_exact(&mut header).await.ok()?;
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.ok()?;
            if header[3] == GOAWAY {
                let code = payload.get(4..8)?;
                return Some(u32::from_be_bytes(code.try_into().ok()?));
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the proxy neither sent GOAWAY nor closed")
        .expect("the proxy closed the connection without a GOAWAY")
}

/// An HTTP/2 (prior knowledge) connection to `addr`, driven in the background.
async fn h2_client(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    send
}

async fn h2_get(send: &mut SendRequest<Full<Bytes>>) -> u16 {
    let req = Request::get("http://ok.test/h2")
        .body(Full::new(Bytes::new()))
        .expect("request");
    send.send_request(req)
        .await
        .expect("request on the established HTTP/2 connection")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_protocol_errors_get_goaway_and_other_connections_go_on() {
    let (mut proxy, _recorder) = setup().await;
    let addr = proxy.addr("http");
    // A well-behaved HTTP/2 client, connected before and used after every bad one.
    let mut good = h2_client(addr).await;
    assert_eq!(h2_get(&mut good).await, 200);

    let mut huge_header = frame(DATA, 0, 1, &[]);
    huge_header[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
    // Each with the error code RFC 9113 names for it; where the h2 crate (which hyper serves
    // HTTP/2 with) answers another, that one is accepted too, as noted.
    let cases: Vec<(&str, Vec<u8>, &[u32])> = vec![
        // RFC 9113 6.2: HEADERS must be on a stream.
        (
            "HEADERS on stream 0",
            frame(HEADERS, END_HEADERS | END_STREAM, 0, GET_BLOCK),
            &[PROTOCOL_ERROR],
        ),
        // 5.1: only HEADERS and PRIORITY may open a stream.
        (
            "DATA on an idle stream",
            frame(DATA, END_STREAM, 1, b"hello"),
            &[PROTOCOL_ERROR],
        ),
        // 5.1.1: streams a client opens are odd.
        (
            "HEADERS on an even stream",
            frame(HEADERS, END_HEADERS | END_STREAM, 2, GET_BLOCK),
            &[PROTOCOL_ERROR],
        ),
        // 6.5: SETTINGS belongs to the connection.
        (
            "SETTINGS on a stream",
            frame(SETTINGS, 0, 1, &[]),
            &[PROTOCOL_ERROR],
        ),
        // 6.7: so does PING.
        (
            "PING on a stream",
            frame(PING, 0, 1, &[0; 8]),
            &[PROTOCOL_ERROR],
        ),
        // 6.9: a zero increment on the connection's window.
        (
            "WINDOW_UPDATE of 0",
            frame(WINDOW_UPDATE, 0, 0, &[0; 4]),
            &[PROTOCOL_ERROR],
        ),
        // 6.10: CONTINUATION only follows HEADERS without END_HEADERS.
        (
            "CONTINUATION out of the blue",
            frame(CONTINUATION, END_HEADERS, 1, GET_BLOCK),
            &[PROTOCOL_ERROR],
        ),
        // 6.5.2: ENABLE_PUSH is 0 or 1.
        (
            "SETTINGS_ENABLE_PUSH of 2",
            frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2]),
            &[PROTOCOL_ERROR],
        ),
        // 6.5.2: INITIAL_WINDOW_SIZE at most 2^31-1, else FLOW_CONTROL_ERROR; h2 answers
        // every invalid setting with PROTOCOL_ERROR.
        (
            "SETTINGS_INITIAL_WINDOW_SIZE of 2^31",
            frame(SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0]),
            &[FLOW_CONTROL_ERROR, PROTOCOL_ERROR],
        ),
        // 6.5: a SETTINGS payload is a multiple of 6 bytes, else FRAME_SIZE_ERROR; h2 answers
        // PROTOCOL_ERROR.
        (
            "SETTINGS of 5 bytes",
            frame(SETTINGS, 0, 0, &[0; 5]),
            &[FRAME_SIZE_ERROR, PROTOCOL_ERROR],
        ),
        // 4.2: larger than SETTINGS_MAX_FRAME_SIZE (16 KiB by default).
        ("a 16 MiB frame header", huge_header, &[FRAME_SIZE_ERROR]),
        // 4.3: a header block that does not decode (index 0 is not an entry) is a
        // COMPRESSION_ERROR; h2 answers PROTOCOL_ERROR when the block is in a HEADERS frame.
        (
            "undecodable HPACK",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x80]),
            &[COMPRESSION_ERROR, PROTOCOL_ERROR],
        ),
    ];
    for (what, bad, want) in cases {
        let code = h2_goaway(addr, &bad).await;
        assert!(
            want.contains(&code),
            "{what}: GOAWAY code {code:#x}, want {want:x?}"
        );
        assert_eq!(
            h2_get(&mut good).await,
            200,
            "the good connection after {what}"
        );
        assert_serving(&mut proxy, what).await;
    }
}
