//! Hostile clients for the chaos run: each attack against an HTTP listener, and what the
//! listener answered. One line per attack:
//!
//! ```text
//! HOSTILE attack=oversized-headers ok=yes outcome="431 Request Header Fields Too Large, connection closed"
//! ```
//!
//! `ok` says whether the listener gave the answer Envoy gives (the error, the closed
//! connection); whether other clients kept being served is the caller's to measure (the chaos
//! script runs a steady load beside the attacks and samples the target's memory).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Attack {
    /// Many connections trickling a request's headers a byte a second: the listener must
    /// close them (header read timeout) rather than wait forever.
    Slowloris,
    /// One request with about 80 KiB of headers: 431, as Envoy's 60 KiB limit answers.
    OversizedHeaders,
    /// HTTP/2 (prior knowledge) streams opened and reset at once, as fast as possible
    /// (CVE-2023-44487): the listener must end the connection.
    RapidReset,
    /// Many new connections at once, each sending one request: all are served.
    Burst,
    /// Content-Length and Transfer-Encoding in one request, a second request after the
    /// chunked body: one response and the connection closed (Envoy: 400; RFC 9112 6.1 also
    /// allows reading it chunked and closing), the second request never read.
    SmuggleClTe,
    /// Two equal Content-Length headers, a second request after the body: Envoy answers 400
    /// and closes; a listener that reads them as one (RFC 9110 8.6) answers the two requests
    /// apart. Either way each hop reads the same requests.
    SmuggleDoubleCl,
}

#[derive(Debug, clap::Args, Clone)]
pub struct Options {
    /// Listener to attack.
    #[arg(long)]
    addr: SocketAddr,
    /// Host header of the requests.
    #[arg(long, default_value = "bench")]
    host: String,
    /// Connections for slowloris and burst.
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// Streams for rapid-reset.
    #[arg(long, default_value_t = 20_000)]
    streams: usize,
    /// The longest one attack may take, in seconds.
    #[arg(long, default_value_t = 90)]
    limit: u64,
    /// Attacks to run, in order (all when none is given).
    #[arg(value_enum)]
    attacks: Vec<Attack>,
}

/// What one attack saw.
struct Finding {
    ok: bool,
    outcome: String,
}

pub async fn run(o: Options) -> Result<bool, String> {
    use clap::ValueEnum;
    let attacks = if o.attacks.is_empty() {
        Attack::value_variants().to_vec()
    } else {
        o.attacks.clone()
    };
    let mut all_ok = true;
    for attack in attacks {
        let limit = Duration::from_secs(o.limit);
        let finding = match tokio::time::timeout(limit, one(&o, attack)).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => Finding {
                ok: false,
                outcome: format!("attack failed: {e}"),
            },
            Err(_) => Finding {
                ok: false,
                outcome: format!("still going after {limit:?}"),
            },
        };
        all_ok &= finding.ok;
        let name = attack
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        println!(
            "HOSTILE attack={name} ok={} outcome={:?}",
            if finding.ok { "yes" } else { "no" },
            finding.outcome
        );
    }
    Ok(all_ok)
}

async fn one(o: &Options, attack: Attack) -> Result<Finding, String> {
    match attack {
        Attack::Slowloris => slowloris(o).await,
        Attack::OversizedHeaders => oversized(o).await,
        Attack::RapidReset => rapid_reset(o).await,
        Attack::Burst => burst(o).await,
        Attack::SmuggleClTe => {
            let (codes, closed) = smuggle(
                o,
                "POST /post HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
                 GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n",
            )
            .await?;
            Ok(Finding {
                ok: codes.len() == 1 && closed,
                outcome: format!("responses {codes:?}, {}", closed_or_open(closed)),
            })
        }
        Attack::SmuggleDoubleCl => {
            let (codes, closed) = smuggle(
                o,
                "POST /post HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\
                 Content-Length: 0\r\n\r\n\
                 GET /smuggled HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            )
            .await?;
            Ok(Finding {
                ok: (codes == [400] && closed) || codes.len() == 2,
                outcome: format!(
                    "responses {codes:?}, {}{}",
                    closed_or_open(closed),
                    if codes.len() == 2 {
                        " (the two requests read apart)"
                    } else {
                        ""
                    }
                ),
            })
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// Reads until the peer closes or `limit` passes; returns what was read and whether the peer
/// closed (EOF or reset).
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// The status codes of the HTTP/1.1 responses in `bytes`, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

async fn slowloris(o: &Options) -> Result<Finding, String> {
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..o.connections {
        let (addr, host) = (o.addr, o.host.clone());
        set.spawn(async move {
            let mut s = connect(addr).await?;
            s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            // One byte a second of a header that never ends.
            let trickle = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for b in trickle.iter().cycle() {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                let (got, closed) = read_to_close(&mut s, Duration::from_secs(1)).await;
                if closed || !got.is_empty() {
                    return Ok::<_, String>((started.elapsed(), statuses(&got)));
                }
            }
            Ok((started.elapsed(), Vec::new()))
        });
    }
    let mut closed_after = Vec::new();
    let mut answered = 0;
    while let Some(r) = set.join_next().await {
        let (after, codes) = r.map_err(|e| e.to_string())??;
        closed_after.push(after);
        answered += usize::from(!codes.is_empty());
    }
    closed_after.sort();
    let last = closed_after.last().copied().unwrap_or_default();
    Ok(Finding {
        ok: closed_after.len() == o.connections,
        outcome: format!(
            "{} connections trickling headers: all closed by the listener, the first after {:.0?}, the last after {:.0?}; {answered} with a response",
            o.connections,
            closed_after.first().copied().unwrap_or_default(),
            last
        ),
    })
}

async fn oversized(o: &Options) -> Result<Finding, String> {
    let mut s = connect(o.addr).await?;
    let mut req = format!("GET / HTTP/1.1\r\nHost: {}\r\n", o.host);
    for i in 0..10 {
        req.push_str(&format!("X-Big-{i}: {}\r\n", "a".repeat(8 * 1024)));
    }
    req.push_str("\r\n");
    // The listener may answer and close before reading it all.
    let _ = s.write_all(req.as_bytes()).await;
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    let codes = statuses(&got);
    Ok(Finding {
        ok: codes == [431] && closed,
        outcome: format!("80 KiB of headers: {codes:?}, {}", closed_or_open(closed)),
    })
}

async fn burst(o: &Options) -> Result<Finding, String> {
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..o.connections {
        let (addr, host) = (o.addr, o.host.clone());
        set.spawn(async move {
            let mut s = connect(addr).await?;
            s.write_all(
                format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let (got, _) = read_to_close(&mut s, Duration::from_secs(30)).await;
            Ok::<_, String>(statuses(&got).first().copied())
        });
    }
    let mut ok = 0;
    let mut other = std::collections::BTreeMap::<String, usize>::new();
    while let Some(r) = set.join_next().await {
        match r.map_err(|e| e.to_string())? {
            Ok(Some(200)) => ok += 1,
            Ok(Some(code)) => *other.entry(code.to_string()).or_default() += 1,
            Ok(None) => *other.entry("no response".into()).or_default() += 1,
            Err(e) => *other.entry(e).or_default() += 1,
        }
    }
    Ok(Finding {
        ok: ok == o.connections,
        outcome: format!(
            "{} connections at once: {ok} answered 200 in {:.1?}{}",
            o.connections,
            started.elapsed(),
            if other.is_empty() {
                String::new()
            } else {
                format!(", others: {other:?}")
            }
        ),
    })
}

/// Sends `template` (`{host}` replaced) on a new connection: the statuses answered, and
/// whether the listener closed the connection.
async fn smuggle(o: &Options, template: &str) -> Result<(Vec<u16>, bool), String> {
    let mut s = connect(o.addr).await?;
    let req = template.replace("{host}", &o.host);
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    Ok((statuses(&got), closed))
}

fn closed_or_open(closed: bool) -> &'static str {
    if closed {
        "connection closed"
    } else {
        "connection left open"
    }
}

async fn rapid_reset(o: &Options) -> Result<Finding, String> {
    let tcp = connect(o.addr).await?;
    let (mut client, conn) = h2::client::handshake(tcp)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    let mut sent = 0;
    let mut ended = None;
    for _ in 0..o.streams {
        if let Err(e) = std::future::poll_fn(|cx| client.poll_ready(cx)).await {
            ended = Some(e.to_string());
            break;
        }
        let req = http::Request::get(format!("http://{}/", o.host))
            .body(())
            .map_err(|e| e.to_string())?;
        match client.send_request(req, true) {
            Ok((response, _)) => {
                // Dropping the only handles of an open stream resets it (CANCEL).
                drop(response);
                sent += 1;
            }
            Err(e) => {
                ended = Some(e.to_string());
                break;
            }
        }
        if sent % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    drop(client);
    let closed = match tokio::time::timeout(Duration::from_secs(10), conn).await {
        Ok(Ok(Ok(()))) => "the connection ended cleanly".to_owned(),
        Ok(Ok(Err(e))) => format!("the connection ended: {e}"),
        Ok(Err(e)) => format!("connection task: {e}"),
        Err(_) => "the connection was still open 10 s after the last stream".to_owned(),
    };
    Ok(Finding {
        ok: ended.is_some(),
        outcome: format!(
            "{sent} streams opened and reset in {:.1?}; {}; {closed}",
            started.elapsed(),
            ended.map_or(
                "the listener let every one through".to_owned(),
                |e| format!("the listener stopped them: {e}")
            )
        ),
    })
}
