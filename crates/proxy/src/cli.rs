//! The `weft-proxy` command line: parse arguments, load the bootstrap, serve until SIGTERM.
//!
//! A library function so that the `weft` CLI runs the same proxy as `weft proxy` (the local
//! runner starts sidecars and the gateway as child processes of the one `weft` executable).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::server::{self, Proxy};
use crate::state::Shared;
use crate::stats::Stats;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// weft's sidecar and gateway proxy.
///
/// `weft-proxy capture [FLAGS]` installs the iptables rules of a transparent sidecar instead
/// (Istio's istio-init; see `weft-proxy capture --help`).
#[derive(Debug, Parser)]
#[command(name = "weft-proxy", version, about, long_about = None, after_help = "Also: `weft-proxy capture --help`, the init step that installs a transparent sidecar's iptables rules.")]
struct Args {
    /// Static configuration: a Bootstrap in YAML or JSON (proto3 JSON mapping). Reloaded on
    /// SIGHUP and when the file changes.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Log filter (`info`, `debug`, `weft_proxy=trace`, ...). Also RUST_LOG.
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// Runs the proxy with the given command line (`argv[0]` first, as `std::env::args_os()`
/// yields it) and returns its exit status. Installs the global tracing subscriber, so call it
/// once per process.
pub fn run<I, T>(argv: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    // `capture` as the first word: the init step, which shares the binary (the init
    // container runs from the sidecar's image) but nothing else; the proxy's own flags stay
    // at the top level.
    if argv.get(1).is_some_and(|w| w == "capture") {
        return crate::capture::run(argv);
    }
    let args = Args::parse_from(argv);
    // One worker: a current-thread runtime, without the work-stealing machinery that only pays
    // with several workers (Envoy's --concurrency 1 is likewise one event loop).
    let mut rt = match args.concurrency {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-proxy: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(args))
}

/// The health port's address when the bootstrap names none: the pod's IP from an Istio node
/// id (`sidecar~10.1.2.3~...`, `router~...`), where the kubelet's probes reach it and as the
/// listeners bind it; without one, the admin address's IP. Never every interface.
fn default_health_address(node_id: &str, admin_address: &str) -> String {
    const HEALTH_PORT: u16 = 15021;
    std::net::SocketAddr::new(node_or_admin_ip(node_id, admin_address), HEALTH_PORT).to_string()
}

/// Where Istio's metrics are served when the bootstrap does not say: port 15090 on the IP the
/// health port defaults to; port 0 (any) when the admin port is 0, as tests ask for, so that
/// proxies side by side do not collide.
fn default_prometheus_address(node_id: &str, admin_address: &str) -> String {
    const PROMETHEUS_PORT: u16 = 15090;
    let any = admin_address
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.port() == 0);
    let port = if any { 0 } else { PROMETHEUS_PORT };
    std::net::SocketAddr::new(node_or_admin_ip(node_id, admin_address), port).to_string()
}

/// The pod's IP from an Istio node id, else the admin address's IP, else loopback.
fn node_or_admin_ip(node_id: &str, admin_address: &str) -> std::net::IpAddr {
    let mut parts = node_id.split('~');
    let node_ip = match (parts.next(), parts.next()) {
        (Some("sidecar" | "router"), Some(ip)) => ip.parse::<std::net::IpAddr>().ok(),
        _ => None,
    };
    node_ip
        .or_else(|| {
            admin_address
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.ip())
        })
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())
}

async fn serve(args: Args) -> ExitCode {
    let filter = std::env::var("RUST_LOG").unwrap_or(args.log_level.clone());
    let (filter_layer, reload) = tracing_subscriber::reload::Layer::new(
        EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")),
    );
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour only for a terminal: under `weft up` or in a file it is noise.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();

    let loaded_mtime = server::modified(&args.config);
    let bootstrap = match server::read_bootstrap(&args.config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("weft-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The identity first: mesh mTLS in the config below needs it to exist (its certificate
    // comes later; the proxy is not ready until it has one).
    let mut identity_ready = None;
    if let Some(id) = &bootstrap.identity {
        match crate::identity::from_bootstrap(id) {
            Ok((identity, ca)) => {
                let identity = Arc::new(identity);
                crate::identity::set_process(identity.clone());
                identity_ready = Some(identity.ready());
                eprintln!("weft-proxy: identity {}", identity.spiffe_id);
                tokio::spawn(crate::identity::run(identity, ca));
            }
            Err(e) => {
                eprintln!("weft-proxy: {}: {e}", args.config.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let stats = Stats::default();
    let snapshot = match server::first_snapshot(bootstrap, &stats) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "weft-proxy: {}: config rejected:\n{e}",
                args.config.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let admin = snapshot.bootstrap.admin.clone().unwrap_or_default();
    let drain_timeout = admin
        .drain_timeout
        .as_ref()
        .and_then(|d| crate::config::duration(d, "admin", "drainTimeout").ok())
        .unwrap_or(Duration::from_secs(5));
    let bootstrap = snapshot.bootstrap.clone();
    let admin_addr = if admin.address.is_empty() {
        "127.0.0.1:15000"
    } else {
        &admin.address
    };
    let health_addr = if admin.health_address.is_empty() {
        default_health_address(snapshot.node.id.as_str(), admin_addr)
    } else {
        admin.health_address.clone()
    };
    let mut app_probes = Vec::with_capacity(admin.app_probes.len());
    for (i, a) in admin.app_probes.iter().enumerate() {
        match a.parse::<std::net::SocketAddr>() {
            Ok(addr) => app_probes.push(addr),
            Err(_) => {
                eprintln!("weft-proxy: admin.appProbes[{i}]: {a:?} is not an address (ip:port)");
                return ExitCode::FAILURE;
            }
        }
    }
    let (admin_l, health_l) = match (
        TcpListener::bind(admin_addr).await,
        TcpListener::bind(&health_addr).await,
    ) {
        (Ok(a), Ok(h)) => (a, h),
        (Err(e), _) => {
            eprintln!("weft-proxy: admin {admin_addr}: {e}");
            return ExitCode::FAILURE;
        }
        (_, Err(e)) => {
            eprintln!("weft-proxy: health {health_addr}: {e}");
            return ExitCode::FAILURE;
        }
    };

    // The metrics port: a default that is taken (two proxies of static configs on one host)
    // is only a warning, the metrics being on the admin port too; a port asked for must bind.
    let prometheus_l = match admin.prometheus_address.as_str() {
        "off" => None,
        "" => {
            let addr = default_prometheus_address(snapshot.node.id.as_str(), admin_addr);
            match TcpListener::bind(&addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!(
                        "weft-proxy: warning: prometheus {addr}: {e}; metrics stay on the admin port's /stats/prometheus"
                    );
                    None
                }
            }
        }
        addr => match TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("weft-proxy: prometheus {addr}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };

    let shared = Arc::new(Shared::new(snapshot, stats));
    let set_log_level: crate::server::SetLogLevel = Box::new(move |level: &str| {
        let f = EnvFilter::try_new(level).map_err(|e| format!("bad level {level:?}: {e}"))?;
        reload.reload(f).map_err(|e| e.to_string())
    });
    let proxy = Arc::new(Proxy::new(shared.clone(), drain_timeout, set_log_level));

    let specs = shared.snapshot.load().listeners.clone();
    match proxy.listeners.apply(&shared, &specs, || ()) {
        // Stable lines on stderr so that scripts and tests learn the bound ports.
        Ok(bound) => {
            for b in bound {
                eprintln!("weft-proxy: listener {} on {}", b.name, b.address);
            }
        }
        Err(errors) => {
            for e in errors {
                eprintln!("weft-proxy: {e}");
            }
            return ExitCode::FAILURE;
        }
    }
    for (name, l) in [
        ("admin", Some(&admin_l)),
        ("health", Some(&health_l)),
        ("prometheus", prometheus_l.as_ref()),
    ] {
        if let Some(Ok(a)) = l.map(TcpListener::local_addr) {
            eprintln!("weft-proxy: {name} on {a}");
        }
    }
    if let Some(l) = prometheus_l {
        tokio::spawn(crate::admin::serve(
            proxy.clone(),
            l,
            crate::admin::Endpoint::Prometheus,
        ));
    }
    tokio::spawn(crate::admin::serve(
        proxy.clone(),
        admin_l,
        crate::admin::Endpoint::Admin,
    ));
    tokio::spawn(crate::admin::serve(
        proxy.clone(),
        health_l,
        crate::admin::Endpoint::Health {
            app_probes: app_probes.into(),
        },
    ));
    match crate::xds::client(proxy.clone(), &bootstrap) {
        // Dynamic config: ready once the first full config from the control plane is in. The
        // file is not watched (reloading it would drop what xDS sent).
        Some(client) => {
            let mut ready = client.ready();
            let stopping = proxy.clone();
            tokio::spawn(client.run(async move { stopping.stopped().await }));
            let proxy = proxy.clone();
            tokio::spawn(async move {
                if ready.wait_for(|r| *r).await.is_ok() && certified(identity_ready).await {
                    proxy.ready.store(true, Relaxed);
                    eprintln!("weft-proxy: ready");
                }
            });
        }
        None => {
            tokio::spawn(server::watch_config(
                proxy.clone(),
                args.config.clone(),
                loaded_mtime,
            ));
            let proxy = proxy.clone();
            tokio::spawn(async move {
                if certified(identity_ready).await {
                    proxy.ready.store(true, Relaxed);
                    eprintln!("weft-proxy: ready");
                }
            });
        }
    }

    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weft-proxy: SIGTERM handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = proxy.stopped() => {}
    }
    eprintln!("weft-proxy: draining (up to {drain_timeout:?})");
    proxy.stop();
    proxy.listeners.shutdown().await;
    eprintln!("weft-proxy: stopped");
    ExitCode::SUCCESS
}

/// Waits for the first workload certificate, when the proxy has an identity; false if it
/// never comes (the task getting it ended).
async fn certified(identity_ready: Option<tokio::sync::watch::Receiver<bool>>) -> bool {
    match identity_ready {
        None => true,
        Some(mut r) => r.wait_for(|r| *r).await.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_port_binds_the_pod_ip_not_every_interface() {
        let id = "sidecar~10.1.2.3~reviews-v1-0.default~default.svc.cluster.local";
        assert_eq!(
            default_health_address(id, "127.0.0.1:15000"),
            "10.1.2.3:15021"
        );
        let gateway = "router~127.0.1.2~ingress.istio-system~istio-system.svc.cluster.local";
        assert_eq!(
            default_health_address(gateway, "127.0.0.1:15000"),
            "127.0.1.2:15021"
        );
        // No Istio node id: the admin address's IP.
        assert_eq!(
            default_health_address("", "127.0.0.9:15000"),
            "127.0.0.9:15021"
        );
        assert_eq!(
            default_health_address("my-proxy", "[::1]:15000"),
            "[::1]:15021"
        );
        assert_eq!(default_health_address("", "nonsense"), "127.0.0.1:15021");
    }
}
