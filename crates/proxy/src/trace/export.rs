//! Sending finished spans: a bounded queue per collector, drained by one task that batches
//! and sends. A request only ever `try_send`s: when the queue is full the span is dropped and
//! counted, the request never waits for a collector.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use weft_xds::proto::tracing::Provider;

/// Spans waiting for their batch, per collector. At a few hundred bytes a span, a few MiB at
/// most; a collector that is down costs no more than this.
const QUEUE: usize = 8192;
/// Spans sent in one request to the collector.
const BATCH: usize = 512;
/// How long a span waits for its batch to fill before it is sent anyway.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// How long one send may take before its batch is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Spans handed to a collector (accepted with a 2xx / gRPC OK).
pub static SPANS_SENT: AtomicU64 = AtomicU64::new(0);
/// Spans lost: the queue was full, or their batch could not be delivered.
pub static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// A span's kind, as Zipkin and OTLP name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
}

/// A finished span, as both exporters read it.
#[derive(Debug, Clone)]
pub struct Finished {
    pub trace: u128,
    pub id: u64,
    pub parent: Option<u64>,
    pub kind: Kind,
    pub name: String,
    pub start: SystemTime,
    pub duration: Duration,
    pub service: Arc<str>,
    pub local_ip: IpAddr,
    pub error: bool,
    pub tags: Vec<(Arc<str>, String)>,
}

/// One collector's queue and the task that drains it.
pub struct Exporter {
    provider: Provider,
    collector: String,
    tx: mpsc::Sender<Finished>,
    /// Taken by the first span: the task starts on the runtime that serves requests.
    rx: Mutex<Option<mpsc::Receiver<Finished>>>,
    /// Set once the task runs: the fast path of every later span.
    started: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} exporter to {}", self.provider, self.collector)
    }
}

/// Exporters in use, by provider and collector: a config reload that keeps the collector
/// keeps its queue and task (the task ends when the last listener using it is gone).
type Registry = HashMap<(i32, String), Weak<Exporter>>;
static EXPORTERS: Mutex<Option<Registry>> = Mutex::new(None);

impl Exporter {
    /// The exporter of `provider` to `collector`, shared with every listener naming the same.
    pub fn get(provider: Provider, collector: &str) -> Arc<Exporter> {
        let key = (provider as i32, collector.to_owned());
        let mut registry = EXPORTERS.lock().unwrap_or_else(|p| p.into_inner());
        let registry = registry.get_or_insert_with(HashMap::new);
        registry.retain(|_, e| e.strong_count() > 0);
        if let Some(e) = registry.get(&key).and_then(Weak::upgrade) {
            return e;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let e = Arc::new(Exporter {
            provider,
            collector: collector.to_owned(),
            tx,
            rx: Mutex::new(Some(rx)),
            started: std::sync::atomic::AtomicBool::new(false),
        });
        registry.insert(key, Arc::downgrade(&e));
        e
    }

    /// Queues `span`, or drops and counts it when the queue is full. Never waits.
    pub fn submit(&self, span: Finished) {
        if self.tx.try_send(span).is_err() {
            SPANS_DROPPED.fetch_add(1, Relaxed);
        }
        self.start();
    }

    /// Starts the draining task once (the first span; a snapshot may be built where there is
    /// no runtime, a request never is).
    fn start(&self) {
        if self.started.load(Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(mut rx) = self.rx.try_lock() else {
            return;
        };
        let Some(rx) = rx.take() else { return };
        self.started.store(true, Relaxed);
        let sender = Sender::new(self.provider, &self.collector);
        runtime.spawn(drain(rx, sender));
    }
}

/// Batches spans and sends them until every sender is gone (then what is left is sent).
async fn drain(mut rx: mpsc::Receiver<Finished>, mut sender: Sender) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match tokio::time::timeout(SEND_TIMEOUT, sender.send(&batch)).await {
            Ok(Ok(())) => {
                SPANS_SENT.fetch_add(n, Relaxed);
            }
            Ok(Err(e)) => {
                SPANS_DROPPED.fetch_add(n, Relaxed);
                tracing::warn!(collector = %sender.collector, spans = n, "trace export failed: {e}");
            }
            Err(_) => {
                SPANS_DROPPED.fetch_add(n, Relaxed);
                tracing::warn!(collector = %sender.collector, spans = n, "trace export timed out after {SEND_TIMEOUT:?}");
            }
        }
        batch.clear();
    }
}

/// The wire side of one exporter.
struct Sender {
    collector: String,
    how: How,
}

enum How {
    Zipkin(Box<super::zipkin::Client>),
    Otlp(super::otlp::Client),
}

impl Sender {
    fn new(provider: Provider, collector: &str) -> Sender {
        let how = match provider {
            Provider::Zipkin => How::Zipkin(Box::new(super::zipkin::Client::new(collector))),
            Provider::Opentelemetry => How::Otlp(super::otlp::Client::new(collector)),
        };
        Sender {
            collector: collector.to_owned(),
            how,
        }
    }

    async fn send(&mut self, batch: &[Finished]) -> Result<(), String> {
        match &mut self.how {
            How::Zipkin(c) => c.send(batch).await,
            How::Otlp(c) => c.send(batch).await,
        }
    }
}

/// The span counters, as `/stats` lines.
pub fn render_stats(out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "tracing.spans_sent: {}", SPANS_SENT.load(Relaxed));
    let _ = writeln!(
        out,
        "tracing.spans_dropped: {}",
        SPANS_DROPPED.load(Relaxed)
    );
}
