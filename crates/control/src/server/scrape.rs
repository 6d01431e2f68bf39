//! The control plane scraping its proxies for the service graph: every [`INTERVAL`], each
//! target of a Prometheus file_sd file (the one `weft up` writes; `--scrape-targets`) is
//! asked for `/stats/prometheus`; the scrapes of the last [`KEPT`] are kept, so a graph over
//! any window up to that is the difference of two of them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::telemetry::{self, Scrape, graph::Graph};

/// How often the proxies are scraped.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How far back scrapes are kept: the longest window a graph can cover.
pub const KEPT: Duration = Duration::from_secs(5 * 60);
/// A proxy's metrics page larger than this is not read.
const MAX_BYTES: usize = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(2);

/// The kept scrapes; clones share them.
#[derive(Clone, Default)]
pub struct MeshMetrics {
    scrapes: Arc<Mutex<VecDeque<(Instant, Scrape)>>>,
    /// Whether a targets file is configured (else the graph has nothing to say).
    pub configured: bool,
}

impl MeshMetrics {
    pub fn new(configured: bool) -> Self {
        Self {
            scrapes: Arc::default(),
            configured,
        }
    }

    fn push(&self, at: Instant, scrape: Scrape) {
        let mut s = lock(&self.scrapes);
        s.push_back((at, scrape));
        while s.front().is_some_and(|(t, _)| at.duration_since(*t) > KEPT) {
            s.pop_front();
        }
    }

    /// The graph over about `window` ending at the latest scrape: the difference between it
    /// and the oldest scrape within the window (the oldest kept, while fewer are). None
    /// before two scrapes.
    pub fn graph(&self, window: Duration) -> Option<Graph> {
        let s = lock(&self.scrapes);
        let (last_at, last) = s.back()?;
        // The oldest scrape in the window where every target of the latest answered (at
        // start-up, proxies not yet listening leave early scrapes short), else the one before.
        let covers = |scrape: &Scrape| last.keys().all(|t| scrape.contains_key(t));
        let (first_at, first) = s
            .iter()
            .take(s.len() - 1)
            .find(|(t, sc)| last_at.duration_since(*t) <= window && covers(sc))
            .or_else(|| s.iter().rev().nth(1))?;
        // Only targets in both scrapes: one that appeared in between has no start.
        let last: Scrape = last
            .iter()
            .filter(|(t, _)| first.contains_key(*t))
            .map(|(t, v)| (t.clone(), v.clone()))
            .collect();
        let seconds = last_at.duration_since(*first_at).as_secs_f64();
        Some(telemetry::graph::build(
            &telemetry::increase(first, &last),
            seconds,
        ))
    }
}

/// Scrapes the targets listed in `targets_file` every [`INTERVAL`], forever.
pub async fn scrape_loop(targets_file: PathBuf, metrics: MeshMetrics) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let targets = match read_targets(&targets_file) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!("scrape targets: {e}");
                continue;
            }
        };
        let at = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for t in targets {
            set.spawn(async move { (fetch(&t).await, t) });
        }
        let mut scrape = Scrape::new();
        while let Some(Ok((r, t))) = set.join_next().await {
            match r.and_then(|text| telemetry::parse(&text).map_err(|e| e.to_string())) {
                Ok(samples) => {
                    scrape.insert(t, samples);
                }
                Err(e) => tracing::debug!(target = t, "scrape: {e}"),
            }
        }
        metrics.push(at, scrape);
    }
}

/// The `targets` of every group of a Prometheus file_sd JSON file.
fn read_targets(file: &Path) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Group {
        targets: Vec<String>,
    }
    // A small file on local disk: read inline rather than through tokio's fs feature.
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let groups: Vec<Group> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(groups.into_iter().flat_map(|g| g.targets).collect())
}

/// `GET http://target/stats/prometheus`: the body on a 200.
async fn fetch(target: &str) -> Result<String, String> {
    let go = async {
        let tcp = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get("/stats/prometheus")
            .header(http::header::HOST, target)
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("{target}: status {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{target}: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| format!("{target}: not UTF-8"))
    };
    tokio::time::timeout(TIMEOUT, go)
        .await
        .map_err(|_| format!("{target}: timed out"))?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn scrape(n: u32) -> Scrape {
        let text = format!(
            "istio_requests_total{{reporter=\"source\",source_workload=\"a\",source_workload_namespace=\"ns\",destination_workload=\"b\",destination_workload_namespace=\"ns\",destination_service=\"b.ns.svc.cluster.local\",response_code=\"200\"}} {n}\n"
        );
        BTreeMap::from([("t".to_owned(), telemetry::parse(&text).unwrap())])
    }

    #[test]
    fn the_graph_is_the_difference_over_the_window() {
        let m = MeshMetrics::new(true);
        let t0 = Instant::now();
        assert!(m.graph(Duration::from_secs(10)).is_none());
        m.push(t0, scrape(100));
        assert!(m.graph(Duration::from_secs(10)).is_none());
        m.push(t0 + Duration::from_secs(10), scrape(120));
        m.push(t0 + Duration::from_secs(20), scrape(160));
        // 10 s window: 120 -> 160.
        let g = m.graph(Duration::from_secs(10)).unwrap();
        assert_eq!(g.window_seconds, 10.0);
        assert_eq!(g.edges[0].requests, 40.0);
        assert_eq!(g.edges[0].rps, 4.0);
        // 60 s asked, 20 s kept: 100 -> 160.
        let g = m.graph(Duration::from_secs(60)).unwrap();
        assert_eq!((g.window_seconds, g.edges[0].requests), (20.0, 60.0));
        // A window shorter than the scrape interval: the last two.
        let g = m.graph(Duration::from_secs(1)).unwrap();
        assert_eq!(g.edges[0].requests, 40.0);
        // A scrape where the target did not answer is no baseline.
        m.push(t0 + Duration::from_secs(30), Scrape::new());
        m.push(t0 + Duration::from_secs(40), scrape(200));
        let g = m.graph(Duration::from_secs(60)).unwrap();
        assert_eq!((g.window_seconds, g.edges[0].requests), (40.0, 100.0));
        // Old scrapes go.
        m.push(t0 + KEPT + Duration::from_secs(15), scrape(270));
        assert_eq!(lock(&m.scrapes).len(), 4);
    }
}
