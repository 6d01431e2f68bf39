//! One line per request, in Envoy's default text format or as JSON. Lines are formatted on the
//! request's task and written by one writer task, so a slow terminal never blocks a request;
//! when the writer falls behind, lines are dropped and counted.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime};

use http::request::Parts;
use tokio::sync::mpsc;

/// What is known of a request by the time its response ends.
#[derive(Debug, Clone)]
pub struct Entry {
    pub start_time: SystemTime,
    pub started: Instant,
    pub method: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    pub flags: crate::error::Flags,
    /// Request body bytes read from the client so far (counted as they arrive).
    pub bytes_received: Arc<AtomicU64>,
    pub bytes_sent: u64,
    pub upstream_ms: Option<u128>,
    pub forwarded_for: String,
    pub user_agent: String,
    pub request_id: String,
    pub authority: String,
    pub upstream_host: String,
    pub cluster: String,
    pub route: String,
    pub peer: SocketAddr,
    /// What a local reply's cause was in detail (Envoy's %RESPONSE_CODE_DETAILS%); empty for
    /// upstream responses.
    pub details: String,
    /// The mTLS peer's SPIFFE URI (Envoy's %DOWNSTREAM_PEER_URI_SAN%), on mesh mTLS
    /// connections.
    pub peer_identity: Option<Arc<str>>,
}

fn header(parts: &Parts, name: &str) -> String {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

impl Entry {
    pub fn begin(parts: &Parts, peer: SocketAddr) -> Entry {
        Entry {
            start_time: SystemTime::now(),
            started: Instant::now(),
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.to_string()),
            protocol: match parts.version {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            status: 0,
            flags: crate::error::Flags::default(),
            bytes_received: Arc::default(),
            bytes_sent: 0,
            upstream_ms: None,
            forwarded_for: header(parts, "x-forwarded-for"),
            user_agent: header(parts, "user-agent"),
            request_id: header(parts, "x-request-id"),
            authority: "-".into(),
            upstream_host: "-".into(),
            cluster: "-".into(),
            route: "-".into(),
            peer,
            details: String::new(),
            peer_identity: None,
        }
    }

    fn duration_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    fn or_dash(s: &str) -> &str {
        if s.is_empty() { "-" } else { s }
    }

    /// Envoy's default format, with Istio's additions (cluster, route) at the end:
    /// `[START] "METHOD PATH PROTOCOL" STATUS FLAGS BYTES_RECEIVED BYTES_SENT DURATION
    /// UPSTREAM_TIME "XFF" "UA" "REQUEST_ID" "AUTHORITY" "UPSTREAM_HOST" CLUSTER ROUTE`, and
    /// on a mesh mTLS connection the peer's SPIFFE URI last.
    pub fn text(&self) -> String {
        let mut line = format!(
            "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {}\n",
            humantime::format_rfc3339_millis(self.start_time),
            self.method,
            self.path,
            self.protocol,
            self.status,
            self.flags,
            self.bytes_received.load(Relaxed),
            self.bytes_sent,
            self.duration_ms(),
            self.upstream_ms
                .map_or_else(|| "-".to_owned(), |m| m.to_string()),
            self.forwarded_for,
            self.user_agent,
            self.request_id,
            Self::or_dash(&self.authority),
            self.upstream_host,
            self.cluster,
            self.route,
        );
        if let Some(peer) = &self.peer_identity {
            line.pop();
            line.push_str(&format!(" spiffe://{peer}\n"));
        }
        line
    }

    pub fn json(&self) -> String {
        let mut line = serde_json::json!({
            "start_time": humantime::format_rfc3339_millis(self.start_time).to_string(),
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "response_code": self.status,
            "response_flags": self.flags.to_string(),
            "bytes_received": self.bytes_received.load(Relaxed),
            "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms() as u64,
            "upstream_service_time": self.upstream_ms.map(|m| m as u64),
            "x_forwarded_for": self.forwarded_for,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "authority": self.authority,
            "upstream_host": self.upstream_host,
            "upstream_cluster": self.cluster,
            "route_name": self.route,
            "downstream_remote_address": self.peer.to_string(),
            "response_code_details": Self::or_dash(&self.details),
            "downstream_peer_uri_san": self.peer_identity.as_deref().map(|p| format!("spiffe://{p}")),
        })
        .to_string();
        line.push('\n');
        line
    }
}

/// Where lines go. `write` never blocks.
pub struct AccessLog {
    json: bool,
    tx: Option<mpsc::Sender<String>>,
    pub dropped: AtomicU64,
}

/// Lines that may wait for the writer before new ones are dropped.
const BACKLOG: usize = 16 * 1024;

impl AccessLog {
    /// A log to stdout (`path` empty or `-`) or a file, in text or JSON. Must be called inside
    /// a tokio runtime (it starts the writer task).
    pub fn start(json: bool, path: &str) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn Write + Send> = if path.is_empty() || path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (tx, mut rx) = mpsc::channel::<String>(BACKLOG);
        tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Some(line) = rx.blocking_recv() {
                buf.extend_from_slice(line.as_bytes());
                // Batch what is already queued into one write.
                while buf.len() < 60 * 1024 {
                    match rx.try_recv() {
                        Ok(l) => buf.extend_from_slice(l.as_bytes()),
                        Err(_) => break,
                    }
                }
                if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
                    return;
                }
                buf.clear();
            }
        });
        Ok(AccessLog {
            json,
            tx: Some(tx),
            dropped: AtomicU64::new(0),
        })
    }

    /// A log that writes nothing.
    pub fn disabled() -> AccessLog {
        AccessLog {
            json: false,
            tx: None,
            dropped: AtomicU64::new(0),
        }
    }

    pub fn write(&self, entry: &Entry) {
        let Some(tx) = &self.tx else { return };
        let line = if self.json {
            entry.json()
        } else {
            entry.text()
        };
        if tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }
}
