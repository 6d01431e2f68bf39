//! `weft control-plane`: serve mesh config to proxies over xDS, from watched files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use weft_control::MeshConfig;
use weft_control::ca::auth::TokenFile;
use weft_control::ca::{CaOptions, CaSource};
use weft_control::server::{CaConfig, ControlPlane, Options, read_mesh_config};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories of mesh resources (YAML/JSON, read recursively), watched:
    /// edits, new files and deletions are applied within a second.
    #[arg(long = "config", required = true, num_args = 1.., value_name = "PATH")]
    config: Vec<PathBuf>,
    /// The workload instances that run (a YAML list: name, namespace, labels,
    /// serviceAccount, ip, appHost, ports, ready), watched; the README's `--instances`
    /// section shows the format.
    #[arg(long, value_name = "FILE")]
    instances: Option<PathBuf>,
    /// Istio mesh config (`meshConfig` fields: outboundTrafficPolicy, rootNamespace, ...).
    #[arg(long = "mesh-config", value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// Where proxies connect (plaintext delta xDS). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:15010", value_name = "ADDR")]
    xds_address: SocketAddr,
    /// Monitoring and debug endpoints (/ready, /metrics, /dashboard, /debug/syncz,
    /// /debug/config_dump, /debug/config_errors).
    #[arg(long, default_value = "127.0.0.1:15014", value_name = "ADDR")]
    monitoring_address: SocketAddr,
    /// Run the certificate authority with a self-signed root kept in DIR (created on first
    /// start: ca-cert.pem, and ca-key.pem with mode 0600).
    #[arg(long, value_name = "DIR", conflicts_with = "ca_certs")]
    ca_dir: Option<PathBuf>,
    /// Run the certificate authority as a plug-in CA from DIR in Istio's cacerts layout
    /// (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).
    #[arg(long, value_name = "DIR")]
    ca_certs: Option<PathBuf>,
    /// The CA's certificate service (Istio's IstioCertificateService, TLS).
    #[arg(long, default_value = "127.0.0.1:15012", value_name = "ADDR")]
    ca_address: SocketAddr,
    /// Who may ask the CA for which identity: a file of `TOKEN NAMESPACE SERVICEACCOUNT`
    /// lines; a proxy presenting TOKEN gets spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICEACCOUNT.
    #[arg(long, value_name = "FILE")]
    ca_tokens: Option<PathBuf>,
    /// Default lifetime of workload certificates.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    workload_cert_ttl: std::time::Duration,
    /// The proxies to scrape for the service graph (/dashboard): a Prometheus file_sd JSON
    /// file (`[{"targets": ["IP:15090", ...], "labels": {...}}]`), reread at every scrape.
    #[arg(long, value_name = "FILE")]
    scrape_targets: Option<PathBuf>,
    /// Log filter (`info`, `debug`, `weft_control=debug`, ...). Also RUST_LOG.
    #[arg(long, default_value = "info")]
    log_level: String,
}

pub fn run(args: Args) -> ExitCode {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for p in &args.config {
        if !p.exists() {
            eprintln!(
                "weft control-plane: {}: no such file or directory",
                p.display()
            );
            return ExitCode::from(2);
        }
    }
    let mesh = match &args.mesh_config {
        Some(path) => match read_mesh_config(path) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("weft control-plane: {e}");
                return ExitCode::from(2);
            }
        },
        None => MeshConfig::default(),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft control-plane: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = Options::new(args.config);
    options.instances = args.instances;
    options.mesh = mesh;
    options.mesh_path = args.mesh_config;
    options.xds_address = args.xds_address;
    options.monitoring_address = args.monitoring_address;
    options.scrape_targets = args.scrape_targets;
    let source = match (args.ca_dir, args.ca_certs) {
        (Some(dir), _) => Some(CaSource::SelfSigned(dir)),
        (None, Some(dir)) => Some(CaSource::PlugIn(dir)),
        (None, None) => None,
    };
    if let Some(source) = source {
        let Some(tokens) = args.ca_tokens else {
            eprintln!(
                "weft control-plane: the CA needs --ca-tokens (who may ask for which identity)"
            );
            return ExitCode::from(2);
        };
        let mut ca = CaOptions::new(source);
        ca.default_ttl = args.workload_cert_ttl;
        options.ca = Some(CaConfig {
            options: ca,
            address: args.ca_address,
            authenticator: std::sync::Arc::new(TokenFile::new(tokens)),
        });
    }
    rt.block_on(serve(options))
}

async fn serve(options: Options) -> ExitCode {
    let cp = match ControlPlane::bind(options).await {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("weft control-plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Stable lines: scripts and tests read the bound ports from them.
    if let Some(a) = cp.xds_address() {
        eprintln!("weft control-plane: xds on {a}");
    }
    if let Some(a) = cp.monitoring_address() {
        eprintln!("weft control-plane: monitoring on {a}");
    }
    if let Some(a) = cp.ca_address() {
        eprintln!("weft control-plane: ca on {a}");
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weft control-plane: SIGTERM handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match cp.run(stop).await {
        Ok(()) => {
            eprintln!("weft control-plane: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}
