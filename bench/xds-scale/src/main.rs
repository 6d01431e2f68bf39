//! The control plane at scale: `weft control-plane` (a child process) serving SERVICES services
//! to PROXIES simulated sidecars (delta xDS clients in this process). Measures the initial
//! sync, then the time from a VirtualService edit to the last proxy applying the new routes
//! (p50/p99/max over proxies), and the control plane's CPU seconds and peak RSS.
//!
//! Prints a table and, last, `RESULT push_p50_ms=.. push_p99_ms=.. cp_cpu_s=.. cp_peak_rss_mb=..`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use weft_xds::client::{ClientConfig, ConfigHandler, Update, XdsClient};
use weft_xds::envoy::Node;
use weft_xds::resource::ROUTE_CONFIGURATION_TYPE_URL;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 2000)]
    proxies: usize,
    /// The `weft` binary (default: next to this one).
    #[arg(long)]
    weft: Option<PathBuf>,
    /// Give up waiting for a sync after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// What every simulated proxy reports: when it last applied routes (ns since start).
struct Seen {
    start: Instant,
    last_routes: Vec<AtomicU64>,
    ready: AtomicUsize,
}

struct Handler {
    index: usize,
    seen: Arc<Seen>,
}

impl ConfigHandler for Handler {
    async fn apply(&mut self, update: &Update<'_>) -> Result<(), String> {
        if update.type_url == ROUTE_CONFIGURATION_TYPE_URL {
            let at = self.seen.start.elapsed().as_nanos() as u64;
            self.seen.last_routes[self.index].store(at.max(1), Relaxed);
        }
        Ok(())
    }
}

fn write_mesh(dir: &Path, services: usize, proxies: usize) -> std::io::Result<()> {
    let mut mesh = String::new();
    for i in 0..services {
        mesh.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 8080}}]\n"
        ));
    }
    std::fs::create_dir_all(dir.join("mesh"))?;
    std::fs::write(dir.join("mesh/services.yaml"), mesh)?;
    let mut instances = String::new();
    for p in 0..proxies {
        let svc = p % services;
        let (a, b, c) = ((p >> 16) & 255, (p >> 8) & 255, p & 255);
        instances.push_str(&format!(
            "- {{name: svc-{svc}-{p}, labels: {{app: svc-{svc}, version: v1}}, ip: 10.{a}.{b}.{c}, ports: [{{name: http, port: 8080}}]}}\n"
        ));
    }
    std::fs::write(dir.join("instances.yaml"), instances)
}

fn node_id(p: usize, services: usize) -> String {
    let (a, b, c) = ((p >> 16) & 255, (p >> 8) & 255, p & 255);
    let svc = p % services;
    format!("sidecar~10.{a}.{b}.{c}~svc-{svc}-{p}.default~default.svc.cluster.local")
}

/// CPU seconds (user + system) and peak RSS (MB) of a process.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let weft = match args.weft {
        Some(w) => w,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("weft"),
    };
    let dir = std::env::temp_dir().join(format!("weft-xds-scale-{}", std::process::id()));
    write_mesh(&dir, args.services, args.proxies).map_err(|e| e.to_string())?;

    let mut child = std::process::Command::new(&weft)
        .args(["control-plane", "--config"])
        .arg(dir.join("mesh"))
        .arg("--instances")
        .arg(dir.join("instances.yaml"))
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--monitoring-address",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", weft.display()))?;
    let pid = child.id();
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let xds = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "the control plane did not start".to_owned())?;
        if let Some(addr) = line.strip_prefix("weft control-plane: xds on ") {
            break addr.trim().to_owned();
        }
    };

    let seen = Arc::new(Seen {
        start: Instant::now(),
        last_routes: (0..args.proxies).map(|_| AtomicU64::new(0)).collect(),
        ready: AtomicUsize::new(0),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    for p in 0..args.proxies {
        let node = Node {
            id: node_id(p, args.services),
            ..Default::default()
        };
        let client = XdsClient::new(
            ClientConfig::new(format!("http://{xds}"), node),
            Handler {
                index: p,
                seen: seen.clone(),
            },
        );
        let mut ready = client.ready();
        let seen = seen.clone();
        tokio::spawn(async move {
            if ready.wait_for(|r| *r).await.is_ok() {
                seen.ready.fetch_add(1, Relaxed);
            }
        });
        let mut stopped = stopped.clone();
        tokio::spawn(client.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    while seen.ready.load(Relaxed) < args.proxies {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} proxies synced in {} s",
                seen.ready.load(Relaxed),
                args.proxies,
                args.timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let initial_sync = started.elapsed();
    let (cpu_initial, rss_initial) = usage(pid);

    // The edit: a VirtualService for svc-0, which every sidecar routes to.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let edited_at = seen.start.elapsed().as_nanos() as u64;
    let (cpu_before, _) = usage(pid);
    std::fs::write(
        dir.join("mesh/vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc-0}\nspec:\n  hosts: [svc-0]\n  http:\n  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: svc-0}}]\n    timeout: 3s\n  - route: [{destination: {host: svc-0}}]\n",
    )
    .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let latencies = loop {
        let done: Vec<f64> = seen
            .last_routes
            .iter()
            .map(|t| t.load(Relaxed))
            .filter(|&t| t > edited_at)
            .map(|t| (t - edited_at) as f64 / 1e6)
            .collect();
        if done.len() == args.proxies {
            break done;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} proxies got the edit in {} s",
                done.len(),
                args.proxies,
                args.timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu_after, rss_peak) = usage(pid);
    let _ = stop.send(true);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
    );
    println!(
        "services={} proxies={} initial_sync_s={:.2} initial_cpu_s={:.2} rss_after_sync_mb={:.0}",
        args.services,
        args.proxies,
        initial_sync.as_secs_f64(),
        cpu_initial,
        rss_initial
    );
    println!(
        "edit -> applied by every proxy: p50_ms={p50:.0} p99_ms={p99:.0} max_ms={max:.0}; control plane cpu_s={:.2} peak_rss_mb={rss_peak:.0}",
        cpu_after - cpu_before
    );
    println!(
        "RESULT push_p50_ms={p50:.0} push_p99_ms={p99:.0} cp_cpu_s={:.2} cp_peak_rss_mb={rss_peak:.0}",
        cpu_after - cpu_before
    );
    Ok(())
}
