//! A raw HTTP/1.1 client: the request bytes are the scenario's, exactly, and the response is
//! read as bytes, so framing, interim responses and tunnels are all visible.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the client saw.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    /// Statuses of interim (1xx other than 101) responses before the final one.
    pub interim: Vec<u16>,
    /// In the order received, names lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// After a 101 or a 2xx to CONNECT: what came back through the tunnel for [`TUNNEL_PROBE`].
    pub tunnel: Option<String>,
}

/// Sent through an established tunnel; the far end echoes it.
pub const TUNNEL_PROBE: &str = "ping-through-the-tunnel";

/// Sends `request` to `addr` and reads one response (bounded: 10 s in all). An error is the
/// reason no response could be read (connection closed, timeout, garbage). With `linger`, the
/// connection stays open 300 ms after the response, for a proxy to serve what followed it.
pub async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    connect: bool,
    linger: bool,
) -> Result<Response, String> {
    let exchanged = tokio::time::timeout(
        Duration::from_secs(10),
        exchange_inner(addr, request, connect, linger),
    );
    exchanged
        .await
        .map_err(|_| "no response within 10s".to_owned())?
}

async fn exchange_inner(
    addr: SocketAddr,
    request: &[u8],
    connect: bool,
    linger: bool,
) -> Result<Response, String> {
    let mut stream = connect_from_client_address(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // A proxy may answer before reading the whole request (an early 4xx): a failed write is
    // not the result, the response is.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let mut resp = Response::default();
    loop {
        let (status, headers, used) = read_head(&mut stream, &mut buf).await?;
        buf.drain(..used);
        if (100..200).contains(&status) && status != 101 {
            resp.interim.push(status);
            continue;
        }
        resp.status = status;
        resp.headers = headers;
        break;
    }
    let tunnel = resp.status == 101 || (connect && (200..300).contains(&resp.status));
    if tunnel {
        resp.tunnel = Some(probe_tunnel(&mut stream, buf).await);
        return Ok(resp);
    }
    // A response to HEAD has no body, whatever its headers say.
    let head = request.starts_with(b"HEAD ");
    let body = if head {
        Vec::new()
    } else {
        read_body(&mut stream, &mut buf, &resp.headers, resp.status).await?
    };
    resp.body = String::from_utf8_lossy(&body).into_owned();
    if linger {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(resp)
}

/// Connects from 127.0.0.2 when the machine allows it: Envoy writes its host's own address
/// into `x-forwarded-for` for a peer at exactly 127.0.0.1 (a same-host caller), which would
/// make gateway results depend on the machine.
async fn connect_from_client_address(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if socket
        .bind("127.0.0.2:0".parse().expect("address"))
        .is_err()
    {
        return TcpStream::connect(addr).await;
    }
    socket.connect(addr).await
}

/// Reads until a response head is complete; returns (status, headers, bytes used).
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(u16, Vec<(String, String)>, usize), String> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {status_line:?}"))?;
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            return Ok((status, headers, end + 4));
        }
        if buf.len() > 1 << 20 {
            return Err("response head over 1 MiB".into());
        }
        if read_more(stream, buf).await? == 0 {
            return Err(if buf.is_empty() {
                "connection closed without a response".into()
            } else {
                format!(
                    "connection closed in a response head: {:?}",
                    String::from_utf8_lossy(buf)
                )
            });
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        // A reset after the response (a proxy closing a connection it refused) ends it.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
        Err(e) => Err(format!("read: {e}")),
    }
}

async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    headers: &[(String, String)],
    status: u16,
) -> Result<Vec<u8>, String> {
    if status == 204 || status == 304 {
        return Ok(Vec::new());
    }
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        return read_chunked(stream, buf).await;
    }
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| format!("content-length {len:?}"))?;
        while buf.len() < len {
            if read_more(stream, buf).await? == 0 {
                return Err(format!("closed after {} of {len} body bytes", buf.len()));
            }
        }
        return Ok(buf[..len].to_vec());
    }
    // Neither: the body runs to the end of the connection.
    while read_more(stream, buf).await? != 0 {}
    Ok(std::mem::take(buf))
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[at..], b"\r\n") {
                break at + i;
            }
            if read_more(stream, buf).await? == 0 {
                return Err("closed in a chunked body".into());
            }
        };
        let size_text = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        at = line_end + 2;
        if size == 0 {
            return Ok(body);
        }
        while buf.len() < at + size + 2 {
            if read_more(stream, buf).await? == 0 {
                return Err("closed in a chunk".into());
            }
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

/// Writes [`TUNNEL_PROBE`] and reads what comes back within a second (whatever arrived after
/// the response head counts too).
async fn probe_tunnel(stream: &mut TcpStream, mut buf: Vec<u8>) -> String {
    if stream.write_all(TUNNEL_PROBE.as_bytes()).await.is_err() {
        return "<write failed>".into();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !String::from_utf8_lossy(&buf).contains(TUNNEL_PROBE) {
        match tokio::time::timeout_at(deadline, read_more(stream, &mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends one HTTP/2 request (prior knowledge; `:authority` is `authority`) and reads its
/// response (bounded: 10 s).
pub async fn exchange_h2(
    addr: SocketAddr,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response, String> {
    use http_body_util::{BodyExt, Full};
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{authority}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .map_err(|e| format!("request: {e}"))?;
    let exchanged = async {
        let stream = connect_from_client_address(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("h2: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("h2 body: {e}"))?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            ..Response::default()
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchanged)
        .await
        .map_err(|_| "no response within 10s".to_owned())?
}
