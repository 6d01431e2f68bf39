//! One line per request, in a listener's format: an Envoy format string (Istio's
//! `accessLogFormat`), JSON keys whose values are format strings, or weft's built-in line.
//!
//! A listener's [`Sink`] is built once, when the listener is: its format is parsed into
//! parts ([`weft_xds::access_log_format`]), the request and response headers it reads are
//! looked up once, and its file is opened. Per request, [`Entry::begin`] copies only the headers
//! the format names, and the line is formatted on the request's task when its response ends.
//! Lines are written by one thread per file, shared by every listener logging there, so a slow
//! terminal never blocks a request; when the writer falls behind, lines are dropped and
//! counted ([`dropped`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Instant, SystemTime};

use http::HeaderMap;
use http::header::HeaderName;
use http::request::Parts;
use weft_xds::access_log_format::{self as fmt_parse, Operator, Part, TimePart};
use weft_xds::proto;
use weft_xds::proto::access_log_condition::{Attribute, Op};

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
    /// The listener's address the request came to.
    pub local: SocketAddr,
    /// The SNI the client sent, on TLS listeners.
    pub sni: Option<Box<str>>,
    /// Whether the listener terminated TLS (`:scheme` https).
    pub https: bool,
    /// The headers the format and filter read, in [`Sink::request_headers`] order.
    pub request_headers: Vec<Option<String>>,
    /// The response headers the format reads, in [`Sink::response_headers`] order.
    pub response_headers: Vec<Option<String>>,
    /// Where the line goes, and how it looks.
    pub sink: Arc<Sink>,
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
    /// What the access log keeps of a request as it arrives on connection `cx`.
    pub fn begin(parts: &Parts, cx: &crate::http::ConnContext, sink: &Arc<Sink>) -> Entry {
        let peer = cx.peer;
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
            peer_identity: cx.peer_identity.clone(),
            local: cx.local,
            sni: cx.tls.as_ref().and_then(|t| t.sni.clone()),
            https: cx.tls.is_some(),
            request_headers: sink
                .request_headers
                .iter()
                .map(|h| {
                    parts
                        .headers
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })
                .collect(),
            response_headers: Vec::new(),
            sink: sink.clone(),
        }
    }

    /// What the access log keeps of a TCP connection (a TCP or TLS passthrough listener's,
    /// or a captured one that is not HTTP), as Envoy's TCP proxy logs it: no request, so
    /// `"- - -"` and status 0; the caller fills in bytes, upstream, cluster and flags.
    pub fn connection(
        sink: &Arc<Sink>,
        (start_time, started): (SystemTime, Instant),
        peer: SocketAddr,
        local: SocketAddr,
        peer_identity: Option<Arc<str>>,
    ) -> Entry {
        let dash = || "-".to_owned();
        Entry {
            start_time,
            started,
            method: dash(),
            path: dash(),
            protocol: "-",
            status: 0,
            flags: crate::error::Flags::default(),
            bytes_received: Arc::default(),
            bytes_sent: 0,
            upstream_ms: None,
            forwarded_for: dash(),
            user_agent: dash(),
            request_id: dash(),
            authority: dash(),
            upstream_host: dash(),
            cluster: dash(),
            route: dash(),
            peer,
            details: String::new(),
            peer_identity,
            local,
            sni: None,
            https: false,
            request_headers: vec![None; sink.request_headers.len()],
            response_headers: vec![None; sink.response_headers.len()],
            sink: sink.clone(),
        }
    }

    /// Keeps the response headers the format reads, once the response is known.
    pub fn response(&mut self, headers: &HeaderMap) {
        self.response_headers = self
            .sink
            .response_headers
            .iter()
            .map(|h| {
                headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .collect();
    }

    /// Writes the line, unless the sink's filter leaves this request out. Never blocks.
    pub fn write(&self) {
        let sink = &self.sink;
        if sink.filter.as_ref().is_some_and(|f| !f.matches(self)) {
            return;
        }
        let line = sink.line(self);
        if sink.writer.tx.try_send(line).is_err() {
            DROPPED.fetch_add(1, Relaxed);
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

/// Lines dropped because a writer fell behind, across all access logs (`/stats`).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped so far because a writer fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

/// Lines that may wait for the writer before new ones are dropped.
const BACKLOG: usize = 16 * 1024;

/// The thread writing one file's lines. Shared by every sink writing to that file (the
/// registry holds it weakly: the thread ends when the last listener logging there is gone).
struct Writer {
    tx: mpsc::SyncSender<String>,
}

/// Open writers by path, so that listeners (and the config updates rebuilding them) share one
/// file handle and one thread per file.
static WRITERS: Mutex<Option<HashMap<String, Weak<Writer>>>> = Mutex::new(None);

/// Where `path` writes: stdout for "", "-" and `/dev/stdout`, stderr for `/dev/stderr`.
fn destination(path: &str) -> &str {
    match path {
        "" | "-" | "/dev/stdout" => "-",
        other => other,
    }
}

impl Writer {
    fn open(path: &str) -> std::io::Result<Arc<Writer>> {
        let key = destination(path);
        let mut writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
        let writers = writers.get_or_insert_with(HashMap::new);
        if let Some(w) = writers.get(key).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let out: Box<dyn Write + Send> = match key {
            "-" => Box::new(std::io::stdout()),
            "/dev/stderr" => Box::new(std::io::stderr()),
            file => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel::<String>(BACKLOG);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(out, rx))?;
        let w = Arc::new(Writer { tx });
        writers.retain(|_, w| w.strong_count() > 0);
        writers.insert(key.to_owned(), Arc::downgrade(&w));
        Ok(w)
    }
}

/// How long the writer lets lines gather while requests keep coming. While it sleeps
/// (rather than waiting in `recv`), a request queuing a line wakes no thread: one wake-up per
/// batch instead of one per request, which is most of what an access log costs under load.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// The writer thread: batches what is queued into one write, until every sender is gone.
/// Idle, it waits in `recv` (no wake-ups); busy, it drains, writes, and sleeps [`GATHER`].
fn write_lines(mut out: Box<dyn Write + Send>, rx: mpsc::Receiver<String>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Ok(line) = rx.recv() {
        buf.extend_from_slice(line.as_bytes());
        loop {
            let mut gone = false;
            loop {
                match rx.try_recv() {
                    Ok(l) => {
                        buf.extend_from_slice(l.as_bytes());
                        if buf.len() >= 60 * 1024 && !write_out(out.as_mut(), &mut buf) {
                            return;
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        gone = true;
                        break;
                    }
                }
            }
            if buf.is_empty() {
                // Nothing came while gathering: back to waiting.
                break;
            }
            if !write_out(out.as_mut(), &mut buf) || gone {
                return;
            }
            std::thread::sleep(GATHER);
        }
    }
}

/// Writes what `buf` holds; false when the destination is gone.
fn write_out(out: &mut dyn Write, buf: &mut Vec<u8>) -> bool {
    let ok = out.write_all(buf).and_then(|()| out.flush()).is_ok();
    buf.clear();
    ok
}

/// A listener's access log: its format compiled, its filter, its file.
pub struct Sink {
    format: Format,
    filter: Option<Filter>,
    /// The request headers the format and filter read.
    request_headers: Vec<HeaderName>,
    /// The response headers the format reads.
    response_headers: Vec<HeaderName>,
    writer: Arc<Writer>,
    path: String,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("path", &self.path).finish()
    }
}

enum Format {
    /// weft's built-in line (no `textFormat`), text or JSON.
    Builtin {
        json: bool,
    },
    Text(Vec<Piece>),
    /// Each key pre-escaped as a JSON string, with its value's pieces.
    Json(Vec<(String, Vec<Piece>)>),
}

/// A compiled part of a format.
enum Piece {
    Literal(String),
    Value {
        value: Value,
        max_len: Option<usize>,
    },
}

/// An operator, with headers resolved to their slot in the entry.
enum Value {
    StartTime(Option<Vec<TimePart>>),
    Request(HeaderSlot, Option<HeaderSlot>),
    Response(usize, Option<usize>),
    Op(Operator),
}

#[derive(Clone, Copy)]
enum HeaderSlot {
    Method,
    Path,
    Authority,
    Scheme,
    Protocol,
    Header(usize),
}

/// What an operator gives for one request.
enum Val<'a> {
    Str(Cow<'a, str>),
    Num(u64),
    Absent,
}

/// Why a listener's `accessLog` is refused: the field and the reason.
pub type SinkError = (String, String);

impl Sink {
    /// Compiles `cfg` and opens its file. Errors name the `accessLog` field.
    pub fn build(cfg: &proto::AccessLog) -> Result<Sink, SinkError> {
        let mut headers = Headers::default();
        let json = cfg.format() == proto::access_log::Format::Json;
        let format = if json && !cfg.json_format.is_empty() {
            let mut keys = Vec::with_capacity(cfg.json_format.len());
            // Keys in name order, as Envoy writes a json_format: the same line layout on every
            // proxy and every build.
            let mut labels: Vec<(&String, &String)> = cfg.json_format.iter().collect();
            labels.sort();
            for (k, v) in labels {
                let parts = fmt_parse::parse(v)
                    .map_err(|e| (format!("jsonFormat[{k}]"), format!("{v:?}: {e}")))?;
                let key = serde_json::to_string(k).unwrap_or_default();
                keys.push((key, compile(parts, &mut headers)));
            }
            Format::Json(keys)
        } else if !cfg.text_format.is_empty() {
            let parts = fmt_parse::parse(&cfg.text_format)
                .map_err(|e| ("textFormat".to_owned(), e.to_string()))?;
            let mut pieces = compile(parts, &mut headers);
            // Istio adds the newline a format does not end with.
            if !cfg.text_format.ends_with('\n') {
                pieces.push(Piece::Literal("\n".into()));
            }
            if json {
                // A format string with JSON: Envoy refuses it (json needs keys).
                return Err((
                    "textFormat".into(),
                    "a format string needs TEXT; JSON takes `jsonFormat` keys".into(),
                ));
            }
            Format::Text(pieces)
        } else {
            Format::Builtin { json }
        };
        let filter = match &cfg.filter {
            Some(f) => Some(Filter::build(f, &mut headers)?),
            None => None,
        };
        let writer = Writer::open(&cfg.path)
            .map_err(|e| ("path".to_owned(), format!("{:?}: {e}", cfg.path)))?;
        Ok(Sink {
            format,
            filter,
            request_headers: headers.request,
            response_headers: headers.response,
            writer,
            path: cfg.path.clone(),
        })
    }

    fn line(&self, e: &Entry) -> String {
        match &self.format {
            Format::Builtin { json: false } => e.text(),
            Format::Builtin { json: true } => e.json(),
            Format::Text(pieces) => {
                let mut out = String::with_capacity(256);
                for p in pieces {
                    match p {
                        Piece::Literal(l) => out.push_str(l),
                        Piece::Value { value, max_len } => {
                            push_text(&mut out, value.of(e), *max_len);
                        }
                    }
                }
                out
            }
            Format::Json(keys) => {
                let mut out = String::with_capacity(512);
                out.push('{');
                for (i, (key, pieces)) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(key);
                    out.push(':');
                    json_value(&mut out, pieces, e);
                }
                out.push_str("}\n");
                out
            }
        }
    }
}

/// The header names a sink reads, each once.
#[derive(Default)]
struct Headers {
    request: Vec<HeaderName>,
    response: Vec<HeaderName>,
}

impl Headers {
    fn request(&mut self, name: &str) -> HeaderSlot {
        match name {
            ":method" => HeaderSlot::Method,
            ":path" => HeaderSlot::Path,
            ":authority" | "host" => HeaderSlot::Authority,
            ":scheme" => HeaderSlot::Scheme,
            ":protocol" => HeaderSlot::Protocol,
            _ => HeaderSlot::Header(slot(&mut self.request, name)),
        }
    }
}

/// The slot of header `name` in `list`, added when new. A name that is not a valid header
/// name gets a slot that is never filled (its value is always absent).
fn slot(list: &mut Vec<HeaderName>, name: &str) -> usize {
    let header = HeaderName::from_bytes(name.as_bytes())
        .unwrap_or_else(|_| HeaderName::from_static("x-weft-invalid-header-name"));
    match list.iter().position(|h| *h == header) {
        Some(i) => i,
        None => {
            list.push(header);
            list.len() - 1
        }
    }
}

fn compile(parts: Vec<Part>, headers: &mut Headers) -> Vec<Piece> {
    parts
        .into_iter()
        .map(|p| match p {
            Part::Literal(l) => Piece::Literal(l),
            Part::Op { op, max_len } => {
                let value = match op {
                    Operator::StartTime(t) => Value::StartTime(t),
                    Operator::Req { name, alt } => {
                        Value::Request(headers.request(&name), alt.map(|a| headers.request(&a)))
                    }
                    Operator::Resp { name, alt } => Value::Response(
                        slot(&mut headers.response, &name),
                        alt.map(|a| slot(&mut headers.response, &a)),
                    ),
                    // Read once: the environment does not change under a running proxy.
                    Operator::Environment(var) => {
                        let v = std::env::var(&var).unwrap_or_else(|_| "-".into());
                        return Piece::Literal(truncate(&v, max_len).to_owned());
                    }
                    Operator::Hostname => {
                        let v = hostname();
                        return Piece::Literal(truncate(&v, max_len).to_owned());
                    }
                    other => Value::Op(other),
                };
                Piece::Value { value, max_len }
            }
        })
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "-".into())
}

/// At most `max_len` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max_len: Option<usize>) -> &str {
    match max_len {
        Some(n) if s.len() > n => {
            let mut end = n;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &s[..end]
        }
        _ => s,
    }
}

fn push_text(out: &mut String, v: Val<'_>, max_len: Option<usize>) {
    match v {
        Val::Str(s) => out.push_str(truncate(&s, max_len)),
        Val::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Val::Absent => out.push('-'),
    }
}

/// A JSON key's value: one operator alone keeps its type (number, or null when absent), as
/// Envoy's json_format; anything else is a string.
fn json_value(out: &mut String, pieces: &[Piece], e: &Entry) {
    if let [Piece::Value { value, max_len }] = pieces {
        match value.of(e) {
            Val::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Val::Absent => out.push_str("null"),
            Val::Str(s) => push_json_str(out, truncate(&s, *max_len)),
        }
        return;
    }
    let mut s = String::new();
    for p in pieces {
        match p {
            Piece::Literal(l) => s.push_str(l),
            Piece::Value { value, max_len } => push_text(&mut s, value.of(e), *max_len),
        }
    }
    push_json_str(out, &s);
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn opt_str(s: &str) -> Val<'_> {
    if s.is_empty() || s == "-" {
        Val::Absent
    } else {
        Val::Str(Cow::Borrowed(s))
    }
}

impl Value {
    fn of<'a>(&self, e: &'a Entry) -> Val<'a> {
        match self {
            Value::StartTime(None) => Val::Str(Cow::Owned(
                humantime::format_rfc3339_millis(e.start_time).to_string(),
            )),
            Value::StartTime(Some(parts)) => Val::Str(Cow::Owned(strftime(parts, e.start_time))),
            Value::Request(main, alt) => match request_header(e, *main) {
                Val::Absent => alt.map_or(Val::Absent, |a| request_header(e, a)),
                v => v,
            },
            Value::Response(main, alt) => {
                let get = |i: usize| {
                    e.response_headers
                        .get(i)
                        .and_then(|v| v.as_deref())
                        .map_or(Val::Absent, |v| Val::Str(Cow::Borrowed(v)))
                };
                match get(*main) {
                    Val::Absent => alt.map_or(Val::Absent, get),
                    v => v,
                }
            }
            Value::Op(op) => operator(op, e),
        }
    }
}

fn request_header(e: &Entry, slot: HeaderSlot) -> Val<'_> {
    match slot {
        HeaderSlot::Method => Val::Str(Cow::Borrowed(&e.method)),
        HeaderSlot::Path => Val::Str(Cow::Borrowed(&e.path)),
        HeaderSlot::Authority => opt_str(&e.authority),
        HeaderSlot::Scheme => Val::Str(Cow::Borrowed(if e.https { "https" } else { "http" })),
        HeaderSlot::Protocol => Val::Absent,
        HeaderSlot::Header(i) => e
            .request_headers
            .get(i)
            .and_then(|v| v.as_deref())
            .map_or(Val::Absent, |v| Val::Str(Cow::Borrowed(v))),
    }
}

fn operator<'a>(op: &Operator, e: &'a Entry) -> Val<'a> {
    match op {
        Operator::Protocol => Val::Str(Cow::Borrowed(e.protocol)),
        Operator::ResponseCode => Val::Num(u64::from(e.status)),
        Operator::ResponseFlags => Val::Str(Cow::Owned(e.flags.to_string())),
        Operator::ResponseCodeDetails => {
            if e.details.is_empty() {
                // Envoy names an upstream's answer `via_upstream`.
                if e.upstream_ms.is_some() {
                    Val::Str(Cow::Borrowed("via_upstream"))
                } else {
                    Val::Absent
                }
            } else {
                Val::Str(Cow::Owned(e.details.replace(' ', "_")))
            }
        }
        Operator::ConnectionTerminationDetails
        | Operator::UpstreamTransportFailureReason
        | Operator::UpstreamLocalAddress => Val::Absent,
        Operator::BytesReceived => Val::Num(e.bytes_received.load(Relaxed)),
        Operator::BytesSent => Val::Num(e.bytes_sent),
        Operator::Duration => Val::Num(e.started.elapsed().as_millis() as u64),
        Operator::UpstreamHost => opt_str(&e.upstream_host),
        Operator::UpstreamCluster => opt_str(&e.cluster),
        Operator::DownstreamLocalAddress => Val::Str(Cow::Owned(e.local.to_string())),
        Operator::DownstreamLocalAddressWithoutPort => {
            Val::Str(Cow::Owned(e.local.ip().to_string()))
        }
        Operator::DownstreamLocalPort => Val::Num(u64::from(e.local.port())),
        Operator::DownstreamRemoteAddress => Val::Str(Cow::Owned(e.peer.to_string())),
        Operator::DownstreamRemoteAddressWithoutPort => {
            Val::Str(Cow::Owned(e.peer.ip().to_string()))
        }
        Operator::DownstreamRemotePort => Val::Num(u64::from(e.peer.port())),
        Operator::RequestedServerName => e
            .sni
            .as_deref()
            .map_or(Val::Absent, |s| Val::Str(Cow::Borrowed(s))),
        Operator::RouteName => opt_str(&e.route),
        Operator::DownstreamPeerUriSan => e.peer_identity.as_deref().map_or(Val::Absent, |p| {
            Val::Str(Cow::Owned(format!("spiffe://{p}")))
        }),
        // Resolved when compiled.
        Operator::StartTime(_)
        | Operator::Req { .. }
        | Operator::Resp { .. }
        | Operator::Environment(_)
        | Operator::Hostname => Val::Absent,
    }
}

/// `%START_TIME(...)%` in UTC.
fn strftime(parts: &[TimePart], t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut out = String::with_capacity(32);
    for p in parts {
        let _ = match p {
            TimePart::Literal(l) => {
                out.push_str(l);
                Ok(())
            }
            TimePart::Year => write!(out, "{year:04}"),
            TimePart::Month => write!(out, "{month:02}"),
            TimePart::Day => write!(out, "{day:02}"),
            TimePart::Hour => write!(out, "{:02}", rem / 3600),
            TimePart::Minute => write!(out, "{:02}", rem % 3600 / 60),
            TimePart::Second => write!(out, "{:02}", rem % 60),
            TimePart::EpochSeconds => write!(out, "{secs}"),
            TimePart::Offset => write!(out, "+0000"),
            TimePart::Fraction(n) => {
                let nanos = format!("{:09}", since.subsec_nanos());
                write!(out, "{}", &nanos[..usize::from(*n).min(9)])
            }
        };
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A Telemetry `accessLogging.filter`, as the control plane compiled its expression: any of
/// the alternatives, each all of its conditions.
struct Filter {
    any_of: Vec<Vec<Condition>>,
}

struct Condition {
    attribute: Attr,
    op: Op,
    number: i64,
    text: String,
}

enum Attr {
    ResponseCode,
    Method,
    Header(usize),
    Path,
    Host,
    Flags,
}

impl Filter {
    fn build(f: &proto::AccessLogFilter, headers: &mut Headers) -> Result<Filter, SinkError> {
        let mut any_of = Vec::with_capacity(f.any_of.len());
        for (i, all) in f.any_of.iter().enumerate() {
            let mut conds = Vec::with_capacity(all.all_of.len());
            for (j, c) in all.all_of.iter().enumerate() {
                let field = || format!("filter.anyOf[{i}].allOf[{j}]");
                let attribute = match Attribute::try_from(c.attribute) {
                    Ok(Attribute::ResponseCode) => Attr::ResponseCode,
                    Ok(Attribute::RequestMethod) => Attr::Method,
                    Ok(Attribute::RequestHeader) if !c.header.is_empty() => {
                        Attr::Header(slot(&mut headers.request, &c.header.to_ascii_lowercase()))
                    }
                    Ok(Attribute::RequestHeader) => {
                        return Err((field(), "REQUEST_HEADER needs `header`".into()));
                    }
                    Ok(Attribute::RequestPath) => Attr::Path,
                    Ok(Attribute::RequestHost) => Attr::Host,
                    Ok(Attribute::ResponseFlags) => Attr::Flags,
                    Err(_) => {
                        return Err((field(), format!("{} is not an attribute", c.attribute)));
                    }
                };
                let op = Op::try_from(c.op)
                    .map_err(|_| (field(), format!("{} is not an operator", c.op)))?;
                let numeric = matches!(attribute, Attr::ResponseCode);
                let ordering = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
                if (ordering && !numeric) || (op == Op::StartsWith && numeric) {
                    return Err((field(), format!("{op:?} does not apply to this attribute")));
                }
                conds.push(Condition {
                    attribute,
                    op,
                    number: c.number,
                    text: c.text.clone(),
                });
            }
            any_of.push(conds);
        }
        Ok(Filter { any_of })
    }

    fn matches(&self, e: &Entry) -> bool {
        self.any_of.iter().any(|all| all.iter().all(|c| c.holds(e)))
    }
}

impl Condition {
    fn holds(&self, e: &Entry) -> bool {
        if let Attr::ResponseCode = self.attribute {
            let code = i64::from(e.status);
            return match self.op {
                Op::Eq => code == self.number,
                Op::Ne => code != self.number,
                Op::Lt => code < self.number,
                Op::Le => code <= self.number,
                Op::Gt => code > self.number,
                Op::Ge => code >= self.number,
                Op::StartsWith => false,
            };
        }
        let flags;
        let value: Option<&str> = match &self.attribute {
            Attr::Method => Some(&e.method),
            Attr::Header(i) => e.request_headers.get(*i).and_then(|v| v.as_deref()),
            Attr::Path => Some(e.path.split('?').next().unwrap_or("")),
            Attr::Host => Some(&e.authority)
                .filter(|a| !a.is_empty() && *a != "-")
                .map(|a| a.as_str()),
            Attr::Flags => {
                flags = e.flags.to_string();
                Some(flags.as_str())
            }
            Attr::ResponseCode => None,
        };
        match self.op {
            // A missing header equals nothing (CEL errors, and an erroring filter logs nothing).
            Op::Eq => value == Some(self.text.as_str()),
            Op::Ne => value.is_some_and(|v| v != self.text),
            Op::StartsWith => value.is_some_and(|v| v.starts_with(&self.text)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(cfg: proto::AccessLog) -> Arc<Sink> {
        Arc::new(Sink::build(&cfg).unwrap_or_else(|e| panic!("{e:?}")))
    }

    fn text(format: &str) -> Arc<Sink> {
        sink(proto::AccessLog {
            text_format: format.into(),
            path: "/dev/null".into(),
            ..Default::default()
        })
    }

    /// A request as `Entry::begin` and the request path would have noted it.
    fn entry(sink: &Arc<Sink>) -> Entry {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("/api/v1?x=1")
            .header("user-agent", "curl/8")
            .header("x-request-id", "abc")
            .header("x-b3-traceid", "t1")
            .body(())
            .expect("request");
        let (parts, ()) = std::mem::replace(&mut req, http::Request::new(())).into_parts();
        let mut e = Entry {
            start_time: SystemTime::UNIX_EPOCH
                + std::time::Duration::from_millis(1_700_000_000_123),
            started: Instant::now(),
            method: "POST".into(),
            path: "/api/v1?x=1".into(),
            protocol: "HTTP/1.1",
            status: 503,
            flags: crate::error::Flags::default(),
            bytes_received: Arc::new(AtomicU64::new(12)),
            bytes_sent: 34,
            upstream_ms: Some(5),
            forwarded_for: "-".into(),
            user_agent: "curl/8".into(),
            request_id: "abc".into(),
            authority: "reviews:9080".into(),
            upstream_host: "10.0.0.7:9080".into(),
            cluster: "outbound|9080||reviews.default.svc.cluster.local".into(),
            route: "default".into(),
            peer: "10.0.0.1:5555".parse().expect("addr"),
            details: String::new(),
            peer_identity: Some("cluster.local/ns/default/sa/productpage".into()),
            local: "10.0.0.2:15001".parse().expect("addr"),
            sni: None,
            https: false,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            sink: sink.clone(),
        };
        e.request_headers = sink
            .request_headers
            .iter()
            .map(|h| {
                parts
                    .headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .collect();
        let mut resp = HeaderMap::new();
        resp.insert(
            "x-envoy-upstream-service-time",
            http::HeaderValue::from_static("5"),
        );
        e.response(&resp);
        e
    }

    #[test]
    fn istio_default_text_format_renders_every_operator() {
        let s = text(fmt_parse::ISTIO_TEXT_FORMAT);
        let line = s.line(&entry(&s));
        assert_eq!(
            line,
            "[2023-11-14T22:13:20.123Z] \"POST /api/v1?x=1 HTTP/1.1\" 503 - via_upstream - \"-\" \
             12 34 0 5 \"-\" \"curl/8\" \"abc\" \"reviews:9080\" \"10.0.0.7:9080\" \
             outbound|9080||reviews.default.svc.cluster.local - 10.0.0.2:15001 10.0.0.1:5555 - \
             default\n"
        );
    }

    #[test]
    fn headers_alternatives_truncation_and_start_time_formats() {
        let s = text(
            "%REQ(X-MISSING?USER-AGENT)% %REQ(X-B3-TRACEID)% %REQ(USER-AGENT):3% \
             %START_TIME(%Y/%m/%d %T.%3f %s)% %DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_LOCAL_PORT% \
             %REQ(:SCHEME)% %RESP(X-NONE)%",
        );
        assert_eq!(
            s.line(&entry(&s)),
            "curl/8 t1 cur 2023/11/14 22:13:20.123 1700000000 \
             spiffe://cluster.local/ns/default/sa/productpage 15001 http -\n"
        );
    }

    #[test]
    fn json_keys_keep_types_of_single_operators() {
        let s = sink(proto::AccessLog {
            format: proto::access_log::Format::Json as i32,
            path: "/dev/null".into(),
            json_format: [
                ("code", "%RESPONSE_CODE%"),
                ("sni", "%REQUESTED_SERVER_NAME%"),
                ("ua", "%REQ(USER-AGENT)%"),
                ("both", "%RESPONSE_CODE% %REQUESTED_SERVER_NAME%"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Default::default()
        });
        let line = s.line(&entry(&s));
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!(v["code"], 503);
        assert_eq!(v["sni"], serde_json::Value::Null);
        assert_eq!(v["ua"], "curl/8");
        assert_eq!(v["both"], "503 -");
        assert!(line.ends_with("}\n"));
        assert!(line.starts_with("{\"both\":"), "keys in name order: {line}");
    }

    #[test]
    fn bad_formats_are_refused_naming_the_field() {
        let e = Sink::build(&proto::AccessLog {
            text_format: "%RESPONSE_CODE% %BOGUS%".into(),
            ..Default::default()
        })
        .expect_err("unknown operator");
        assert_eq!(e.0, "textFormat");
        assert!(e.1.contains("%BOGUS%"), "{e:?}");
        let e = Sink::build(&proto::AccessLog {
            format: proto::access_log::Format::Json as i32,
            json_format: [("k".to_owned(), "%NOPE%".to_owned())].into(),
            ..Default::default()
        })
        .expect_err("unknown operator in a JSON key");
        assert_eq!(e.0, "jsonFormat[k]");
    }

    fn cond(
        attribute: Attribute,
        op: Op,
        number: i64,
        text: &str,
        header: &str,
    ) -> proto::AccessLogCondition {
        proto::AccessLogCondition {
            attribute: attribute as i32,
            op: op as i32,
            number,
            text: text.into(),
            header: header.into(),
        }
    }

    #[test]
    fn filters_match_on_code_method_and_headers() {
        let with = |any_of: Vec<Vec<proto::AccessLogCondition>>| {
            let s = sink(proto::AccessLog {
                path: "/dev/null".into(),
                filter: Some(proto::AccessLogFilter {
                    any_of: any_of
                        .into_iter()
                        .map(|all_of| proto::AccessLogConditions { all_of })
                        .collect(),
                    expression: String::new(),
                }),
                ..Default::default()
            });
            let e = entry(&s);
            s.filter.as_ref().expect("filter").matches(&e)
        };
        assert!(with(vec![vec![cond(
            Attribute::ResponseCode,
            Op::Ge,
            500,
            "",
            ""
        )]]));
        assert!(!with(vec![vec![cond(
            Attribute::ResponseCode,
            Op::Lt,
            400,
            "",
            ""
        )]]));
        assert!(with(vec![vec![
            cond(Attribute::RequestMethod, Op::Eq, 0, "POST", ""),
            cond(Attribute::RequestHeader, Op::Eq, 0, "t1", "X-B3-TraceId"),
        ]]));
        assert!(!with(vec![vec![
            cond(Attribute::RequestMethod, Op::Eq, 0, "POST", ""),
            cond(Attribute::RequestHeader, Op::Eq, 0, "x", "x-absent"),
        ]]));
        assert!(with(vec![
            vec![cond(Attribute::RequestMethod, Op::Eq, 0, "GET", "")],
            vec![cond(Attribute::RequestPath, Op::StartsWith, 0, "/api/", "")],
        ]));
        assert!(
            Sink::build(&proto::AccessLog {
                filter: Some(proto::AccessLogFilter {
                    any_of: vec![proto::AccessLogConditions {
                        all_of: vec![cond(Attribute::RequestMethod, Op::Gt, 0, "GET", "")]
                    }],
                    expression: String::new(),
                }),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
