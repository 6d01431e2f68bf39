//! `weft load`: a fortio-like load client with fixed concurrency. `-c` keep-alive
//! connections send requests back to back (or at `-q` requests per second in total, as
//! fortio's `-qps`), either `-n` in total (shared across connections, as fortio's `-n`) or
//! for `-t`; at the end it prints latency percentiles and a
//! response-code histogram in fortio's words (`Code 503 : 13 (43.3 %)`), which Istio's
//! circuit-breaking task reads. Honours `HTTP_PROXY` like the demo apps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weft_examples::client::{
    Bytes, Client, Connection, HeaderMap, HeaderName, HeaderValue, Method, Target,
};

/// fortio reports failures to connect or to get a response as code -1.
const SOCKET_ERROR: i32 = -1;
/// The run length when neither `-n` nor `-t` is given (fortio's default).
const DEFAULT_DURATION: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of connections, each sending its next request as soon as a response arrives.
    #[arg(short = 'c', long = "connections", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Total number of requests, shared across the connections.
    #[arg(short = 'n', long = "requests", conflicts_with = "duration")]
    requests: Option<u64>,
    /// How long to run (`10s`, `500ms`, `1m`); default 5s when -n is not given.
    #[arg(short = 't', long = "duration", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Requests per second over all connections (fortio's `-qps`); 0, the default, sends
    /// each connection's next request as soon as its response arrives. A server slower than
    /// the rate lowers it: each connection waits for its response before the next request.
    #[arg(short = 'q', long = "qps", default_value_t = 0.0, value_parser = parse_qps)]
    qps: f64,
    /// Extra request header `name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Send as this workload of the local mesh (`sleep`, `productpage-v1-0`): through its
    /// sidecar's outbound port, so that mesh names (`http://httpbin:8000`) resolve and its
    /// routing rules apply, as from inside the mesh. Otherwise HTTP_PROXY is honoured.
    #[arg(long, value_name = "WORKLOAD")]
    from: Option<String>,
    /// The local mesh's state directory, for --from (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR", requires = "from")]
    state_dir: Option<std::path::PathBuf>,
    /// The http:// URL to GET.
    url: String,
}

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    Requests(u64),
    Duration(Duration),
}

/// What one run is asked to do.
#[derive(Clone, Debug)]
pub struct Plan {
    pub target: Target,
    pub headers: HeaderMap,
    pub connections: u32,
    pub budget: Budget,
    /// Requests per second over all connections; 0 for as fast as responses come.
    pub qps: f64,
    pub client: Client,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Status code (or [`SOCKET_ERROR`]) to count.
    pub codes: BTreeMap<i32, u64>,
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
    pub sockets: u64,
    pub connections: u32,
    pub elapsed: Duration,
}

impl Report {
    pub fn calls(&self) -> u64 {
        self.codes.values().sum()
    }
}

pub fn run(args: Args) -> ExitCode {
    let plan = match plan(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("weft load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weft load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", describe(&plan));
    let report = runtime.block_on(load(plan));
    print!("{}", format_report(&report));
    if report.codes.keys().any(|&code| code == 200) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn plan(args: &Args) -> Result<Plan, String> {
    let target = Target::parse(&args.url)?;
    let mut headers = HeaderMap::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("header `{header}`: expected `name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| format!("header name `{}`: {e}", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|e| format!("header value `{}`: {e}", value.trim()))?;
        headers.append(name, value);
    }
    if !headers.contains_key("user-agent") {
        headers.insert("user-agent", HeaderValue::from_static("weft-load"));
    }
    let budget = match (args.requests, args.duration) {
        (Some(n), _) => Budget::Requests(n),
        (None, Some(t)) => Budget::Duration(t),
        (None, None) => Budget::Duration(DEFAULT_DURATION),
    };
    let proxy = match &args.from {
        Some(workload) => Some(crate::up::state::sidecar_outbound(
            workload,
            args.state_dir.as_deref(),
        )?),
        None => std::env::var("HTTP_PROXY")
            .ok()
            .or_else(|| std::env::var("http_proxy").ok())
            .filter(|p| !p.is_empty()),
    };
    Ok(Plan {
        target,
        headers,
        connections: args.connections,
        budget,
        qps: args.qps,
        client: Client::new(proxy.as_deref()),
    })
}

fn describe(plan: &Plan) -> String {
    let c = plan.connections;
    let rate = if plan.qps > 0.0 {
        format!("{} qps", plan.qps)
    } else {
        "max qps".to_owned()
    };
    match plan.budget {
        Budget::Requests(n) => format!(
            "Starting at {rate} with {c} connection(s) for exactly {n} calls ({} per connection + {}) to {}",
            n / u64::from(c),
            n % u64::from(c),
            plan.target.url()
        ),
        Budget::Duration(t) => format!(
            "Starting at {rate} with {c} connection(s) for {t:?} to {}",
            plan.target.url()
        ),
    }
}

/// Runs `plan` to the end of its budget.
pub async fn load(plan: Plan) -> Report {
    let plan = Arc::new(plan);
    let remaining = Arc::new(AtomicU64::new(match plan.budget {
        Budget::Requests(n) => n,
        Budget::Duration(_) => u64::MAX,
    }));
    let start = Instant::now();
    let deadline = match plan.budget {
        Budget::Duration(t) => Some(start + t),
        Budget::Requests(_) => None,
    };
    let workers: Vec<_> = (0..plan.connections)
        .map(|i| {
            let pace = pacing(plan.qps, plan.connections, i);
            tokio::spawn(worker(
                Arc::clone(&plan),
                Arc::clone(&remaining),
                deadline,
                pace,
            ))
        })
        .collect();
    let mut report = Report::default();
    for worker in workers {
        // A worker cannot panic on a response; should one anyway, its counts are lost and
        // the totals show it.
        if let Ok(part) = worker.await {
            for (code, count) in part.codes {
                *report.codes.entry(code).or_default() += count;
            }
            report.latencies.extend(part.latencies);
            report.sockets += part.sockets;
        }
    }
    report.connections = plan.connections;
    report.elapsed = start.elapsed();
    report.latencies.sort_unstable();
    report
}

/// When connection `index` of `connections` sends: every `period` from `offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pace {
    offset: Duration,
    period: Duration,
}

/// The schedule of connection `index` for `qps` requests per second over `connections`:
/// each sends every `connections / qps` seconds, the connections staggered evenly across
/// one period so that the total is smooth. None at max qps (`qps` 0).
fn pacing(qps: f64, connections: u32, index: u32) -> Option<Pace> {
    if qps <= 0.0 || connections == 0 {
        return None;
    }
    let period = Duration::try_from_secs_f64(f64::from(connections) / qps).ok()?;
    Some(Pace {
        offset: period.mul_f64(f64::from(index) / f64::from(connections)),
        period,
    })
}

/// One connection's loop: take a request from the shared budget, send it (at its turn when
/// paced), count the result.
async fn worker(
    plan: Arc<Plan>,
    remaining: Arc<AtomicU64>,
    deadline: Option<Instant>,
    pace: Option<Pace>,
) -> Report {
    let mut report = Report::default();
    let mut conn: Option<Connection> = None;
    let mut ticks = pace.map(|p| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + p.offset, p.period);
        // Behind schedule (a slow response): send the next one now, and keep the period
        // from there rather than bursting to catch up.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let took =
            remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if took.is_err() {
            break;
        }
        let started = Instant::now();
        let code = match send(&plan, &mut conn, &mut report.sockets).await {
            Ok(code) => code,
            Err(e) => {
                tracing_error(&e);
                conn = None;
                SOCKET_ERROR
            }
        };
        report.latencies.push(started.elapsed());
        *report.codes.entry(code).or_default() += 1;
    }
    report
}

/// Sends one request on `conn`, opening a connection first when there is none or the server
/// closed it. A request is not retried: every failure is counted.
async fn send(
    plan: &Plan,
    conn: &mut Option<Connection>,
    sockets: &mut u64,
) -> Result<i32, String> {
    if !conn.as_ref().is_some_and(Connection::is_open) {
        *conn = None;
        *sockets += 1;
        *conn = Some(plan.client.connect(&plan.target).await?);
    }
    let Some(open) = conn.as_mut() else {
        return Err("no connection".to_owned());
    };
    let reply = open
        .send(Method::GET, &plan.target, &plan.headers, Bytes::new())
        .await?;
    let closing = reply
        .headers
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if closing {
        *conn = None;
    }
    Ok(i32::from(reply.status.as_u16()))
}

/// Reports the first few socket errors on stderr, so a wrong URL is visible at once.
fn tracing_error(e: &str) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("weft load: {e}");
    }
}

/// The summary, in fortio's layout: totals, latency percentiles in seconds, sockets, and one
/// line per response code.
pub fn format_report(report: &Report) -> String {
    let calls = report.calls();
    let secs = report.elapsed.as_secs_f64();
    let qps = if secs > 0.0 { calls as f64 / secs } else { 0.0 };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Ended after {:?} : {calls} calls. qps={qps:.1}",
        report.elapsed
    );
    if !report.latencies.is_empty() {
        let sum: f64 = report.latencies.iter().map(Duration::as_secs_f64).sum();
        let avg = sum / report.latencies.len() as f64;
        let min = report.latencies.first().map_or(0.0, Duration::as_secs_f64);
        let max = report.latencies.last().map_or(0.0, Duration::as_secs_f64);
        let _ = writeln!(
            out,
            "Aggregated Function Time : count {} avg {avg:.6} min {min:.6} max {max:.6} sum {sum:.3}",
            report.latencies.len()
        );
        for p in [50.0, 75.0, 90.0, 99.0, 99.9] {
            let _ = writeln!(
                out,
                "# target {p}% {:.6}",
                percentile(&report.latencies, p).as_secs_f64()
            );
        }
    }
    let _ = writeln!(
        out,
        "Sockets used: {} (for perfect keepalive, would be {})",
        report.sockets,
        u64::from(report.connections).min(calls)
    );
    for (code, count) in &report.codes {
        let share = if calls > 0 {
            100.0 * *count as f64 / calls as f64
        } else {
            0.0
        };
        let _ = writeln!(out, "Code {code} : {count} ({share:.1} %)");
    }
    let avg_ms = if report.latencies.is_empty() {
        0.0
    } else {
        1000.0
            * report
                .latencies
                .iter()
                .map(Duration::as_secs_f64)
                .sum::<f64>()
            / report.latencies.len() as f64
    };
    let _ = writeln!(
        out,
        "All done {calls} calls (plus 0 warmup) {avg_ms:.3} ms avg, {qps:.1} qps"
    );
    out
}

/// The `p`th percentile of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A rate: a finite number of requests per second, 0 or more.
fn parse_qps(input: &str) -> Result<f64, String> {
    match input.trim().parse::<f64>() {
        Ok(q) if q.is_finite() && q >= 0.0 => Ok(q),
        _ => Err(format!(
            "`{input}`: expected requests per second, 0 or more (0: as fast as possible)"
        )),
    }
}

/// `10s`, `500ms`, `1.5m`, `2h`, or a bare number of seconds.
fn parse_duration(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    let split = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{input}`: expected a duration like 10s or 500ms"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "us" | "µs" => 0.000_001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{input}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(number * scale).map_err(|e| format!("`{input}`: {e}"))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server answering request k (counted across connections) 200 when k % 10 < 6 and
    /// 503 otherwise, closing the connection after a 503 when `close_on_503`. It records
    /// each request line.
    async fn mixed_server(close_on_503: bool) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&lines);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let counter = Arc::clone(&counter);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&buf).into_owned();
                        seen.lock()
                            .unwrap()
                            .push(head.lines().next().unwrap_or("").to_owned());
                        buf.clear();
                        let k = counter.fetch_add(1, Ordering::SeqCst);
                        let response: &[u8] = if k % 10 < 6 {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        } else if close_on_503 {
                            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                        };
                        if stream.write_all(response).await.is_err() {
                            return;
                        }
                        if close_on_503 && k % 10 >= 6 {
                            return;
                        }
                    }
                });
            }
        });
        (addr, lines)
    }

    fn plan_for(url: &str, proxy: Option<&str>, connections: u32, n: u64) -> Plan {
        Plan {
            target: Target::parse(url).unwrap(),
            headers: HeaderMap::new(),
            connections,
            budget: Budget::Requests(n),
            qps: 0.0,
            client: Client::new(proxy),
        }
    }

    #[tokio::test]
    async fn histogram_of_mixed_codes_over_kept_alive_connections() {
        let (addr, _) = mixed_server(false).await;
        let report = load(plan_for(&format!("http://{addr}/get"), None, 3, 30)).await;
        assert_eq!(report.calls(), 30);
        assert_eq!(report.codes.get(&200), Some(&18));
        assert_eq!(report.codes.get(&503), Some(&12));
        assert_eq!(report.sockets, 3, "keep-alive: one socket per connection");
        assert_eq!(report.latencies.len(), 30);
        let text = format_report(&report);
        assert!(text.contains("Code 200 : 18 (60.0 %)"), "{text}");
        assert!(text.contains("Code 503 : 12 (40.0 %)"), "{text}");
        assert!(text.contains("# target 50% "), "{text}");
        assert!(
            text.contains("Sockets used: 3 (for perfect keepalive, would be 3)"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn reconnects_when_the_server_closes() {
        let (addr, _) = mixed_server(true).await;
        let report = load(plan_for(&format!("http://{addr}/"), None, 2, 20)).await;
        assert_eq!(report.calls(), 20);
        assert_eq!(report.codes.get(&SOCKET_ERROR), None, "{:?}", report.codes);
        assert_eq!(report.codes.get(&503), Some(&8));
        assert!(report.sockets > 2);
    }

    #[tokio::test]
    async fn goes_through_the_proxy_in_absolute_form() {
        let (addr, lines) = mixed_server(false).await;
        let proxy = format!("http://{addr}");
        let report = load(plan_for("http://httpbin:8000/get", Some(&proxy), 1, 3)).await;
        assert_eq!(report.calls(), 3);
        let lines = lines.lock().unwrap();
        assert_eq!(lines[0], "GET http://httpbin:8000/get HTTP/1.1");
    }

    #[tokio::test]
    async fn refused_connections_count_as_code_minus_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let report = load(plan_for(&format!("http://{addr}/"), None, 2, 4)).await;
        assert_eq!(report.codes.get(&SOCKET_ERROR), Some(&4));
        assert!(format_report(&report).contains("Code -1 : 4 (100.0 %)"));
    }

    #[test]
    fn a_rate_is_shared_evenly_and_staggered() {
        assert_eq!(pacing(0.0, 4, 0), None);
        let p = |i| pacing(500.0, 4, i).expect("paced");
        assert_eq!(p(0).period, Duration::from_millis(8));
        assert_eq!(p(0).offset, Duration::ZERO);
        assert_eq!(p(2).offset, Duration::from_millis(4));
        for bad in ["-1", "x", "inf", "NaN"] {
            assert!(parse_qps(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_qps("0"), Ok(0.0));
    }

    #[tokio::test]
    async fn a_paced_run_sends_no_faster_than_its_rate() {
        let (addr, _) = mixed_server(false).await;
        let mut plan = plan_for(&format!("http://{addr}/"), None, 2, 10);
        plan.qps = 50.0;
        let report = load(plan).await;
        assert_eq!(report.calls(), 10);
        // 10 requests at 50/s: the last one goes out 9 intervals of 20 ms after the first.
        assert!(
            report.elapsed >= Duration::from_millis(180),
            "{:?}",
            report.elapsed
        );
    }

    #[test]
    fn percentiles_and_durations() {
        let sorted: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.9), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        for (input, want) in [
            ("10s", Some(Duration::from_secs(10))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1.5m", Some(Duration::from_secs(90))),
            ("3", Some(Duration::from_secs(3))),
            ("", None),
            ("5d", None),
            ("1e999s", None),
        ] {
            assert_eq!(parse_duration(input).ok(), want, "{input}");
        }
    }
}
