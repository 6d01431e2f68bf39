//! A small HTTP/1.1 keep-alive load generator for weft's benchmarks.
//!
//! - `throughput`: N connections, each sending its next request as soon as the previous
//!   response has arrived (closed loop), for a duration. Reports requests per second.
//! - `rate`: a fixed request rate spread over N connections (open loop). Each request has an
//!   intended start time on the schedule. When the target was still answering the previous
//!   request at that time, latency is measured from the intended time, so a stall is charged
//!   to every request it delayed (the correction for coordinated omission); when the
//!   connection was free, from the actual send, so the generator's own timer lateness is not
//!   charged to the target. Reports p50/p90/p99/max from an HDR histogram.
//!
//! It speaks just enough HTTP/1.1 for benchmarking: GET, keep-alive, Content-Length bodies.
//! Responses without Content-Length are an error here.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod hostile;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(name = "weft-loadgen")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, clap::Args, Clone)]
struct Target {
    /// Address to connect to.
    #[arg(long)]
    addr: SocketAddr,
    /// Host header.
    #[arg(long, default_value = "bench")]
    host: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds to run (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Closed loop: as many requests as the target can answer.
    Throughput(Target),
    /// Open loop at a fixed rate; latency percentiles corrected for coordinated omission.
    Rate {
        #[command(flatten)]
        target: Target,
        /// Requests per second, spread evenly over the connections.
        #[arg(long, default_value_t = 1000)]
        rps: u64,
    },
    /// Hostile clients (slowloris, oversized headers, HTTP/2 rapid reset, a connection
    /// burst, request smuggling), each reported with what the listener answered.
    Hostile(hostile::Options),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match args.mode {
            Mode::Throughput(t) => throughput(t).await,
            Mode::Rate { target, rps } => rate(target, rps).await,
            Mode::Hostile(options) => match hostile::run(options).await {
                Ok(true) => Ok(()),
                Ok(false) => Err("some attacks did not get the expected answer".to_owned()),
                Err(e) => Err(e),
            },
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One keep-alive connection that sends a request and reads its response.
struct Conn {
    stream: TcpStream,
    request: Arc<Vec<u8>>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(t: &Target, request: Arc<Vec<u8>>) -> Result<Conn, String> {
        let stream = TcpStream::connect(t.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", t.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            request,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends one request and reads one full response; returns the status.
    async fn round_trip(&mut self) -> Result<u16, String> {
        self.stream
            .write_all(&self.request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((status, head_len, body_len)) = parse_head(&self.buf)? {
                while self.buf.len() < head_len + body_len {
                    let n = self
                        .stream
                        .read(&mut chunk)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Err("connection closed mid-body".into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(status);
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before a response".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `(status, head length, content length)` once the head is complete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head =
        std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| "response without Content-Length".to_string())?;
    Ok(Some((status, end + 4, len)))
}

fn request_bytes(t: &Target) -> Arc<Vec<u8>> {
    Arc::new(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: weft-loadgen\r\n\r\n",
            t.path, t.host
        )
        .into_bytes(),
    )
}

async fn throughput(t: Target) -> Result<(), String> {
    let request = request_bytes(&t);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let end = Instant::now() + Duration::from_secs(1 + t.seconds);
    let mut tasks = Vec::new();
    for _ in 0..t.connections {
        let mut conn = Conn::open(&t, request.clone()).await?;
        let (done, errors, measuring) = (done.clone(), errors.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                match conn.round_trip().await {
                    Ok(s) if (200..300).contains(&s) => {
                        if measuring.load(Relaxed) {
                            done.fetch_add(1, Relaxed);
                        }
                    }
                    _ => {
                        errors.fetch_add(1, Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Relaxed);
    let start = Instant::now();
    for task in tasks {
        let _ = task.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Relaxed);
    println!(
        "requests={n} seconds={secs:.2} rps={:.0} errors={}",
        n as f64 / secs,
        errors.load(Relaxed)
    );
    Ok(())
}

async fn rate(t: Target, rps: u64) -> Result<(), String> {
    if rps == 0 {
        return Err("--rps must be positive".into());
    }
    let request = request_bytes(&t);
    let per_conn_interval = Duration::from_nanos(1_000_000_000 * t.connections as u64 / rps);
    let start = Instant::now() + Duration::from_millis(100);
    let warmup_end = start + Duration::from_secs(1);
    let end = warmup_end + Duration::from_secs(t.seconds);
    let mut tasks = Vec::new();
    for i in 0..t.connections {
        let mut conn = Conn::open(&t, request.clone()).await?;
        // Stagger the connections evenly over one interval.
        let offset = per_conn_interval * i as u32 / t.connections as u32;
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
            let mut errors = 0u64;
            let mut intended = start + offset;
            let mut previous_done = start;
            while intended < end {
                tokio::time::sleep_until(intended.into()).await;
                // Coordinated omission: when the previous response arrived after this
                // request's intended start, the target delayed it; measure from the intended
                // time. Otherwise the connection was free and any lateness is our own timer's
                // (tokio's is ~1 ms coarse); measure from the actual send.
                let origin = if previous_done > intended {
                    intended
                } else {
                    Instant::now()
                };
                let ok = matches!(conn.round_trip().await, Ok(s) if (200..300).contains(&s));
                previous_done = Instant::now();
                let latency = previous_done.saturating_duration_since(origin);
                if intended >= warmup_end {
                    if ok {
                        let _ = hist.record(latency.as_micros().max(1) as u64);
                    } else {
                        errors += 1;
                    }
                }
                if !ok {
                    break;
                }
                intended += per_conn_interval;
            }
            Ok::<_, String>((hist, errors))
        }));
    }
    let mut total =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await.map_err(|e| e.to_string())??;
        total.add(h).map_err(|e| e.to_string())?;
        errors += e;
    }
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "requests={} rps_target={rps} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3} errors={errors}",
        total.len(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        total.max() as f64 / 1000.0
    );
    Ok(())
}
