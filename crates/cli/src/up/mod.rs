//! `weft up DIR`: a whole mesh on this machine (docs/ARCHITECTURE.md "Local mode").
//!
//! Start-up order: load and validate DIR's top-level YAML (and what `weft apply` left in the
//! state directory), write the instances file, start the control plane in this process, start
//! one sidecar per Workload replica and wait for each to have its config, start the ingress
//! gateway, then the workloads. Proxies are `weft proxy` child processes (a crash stays in one
//! process, and is restarted). While it runs, Workload changes start and stop replicas
//! (`replicas.rs`). Ctrl-C or SIGTERM stops every child, proxies draining, and leaves none
//! behind.

mod gateway;
pub mod kubectl;
pub mod netns;
mod plan;
pub mod prometheus;
mod replicas;
pub mod state;
mod supervise;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing_subscriber::EnvFilter;
use weft_api::Severity;
use weft_control::server::{ControlPlane, MeshSource, Options};

use crate::table::Table;
use plan::Plan;
use replicas::{Launch, LocalCa, Replicas};
use state::RunningMesh;
use supervise::{Output, Supervisor};

/// Set in the environment of a `weft up` that `--detach` started (its log then says how it stops).
const DETACHED_ENV: &str = "WEFT_UP_DETACHED";
/// How long a child may take to exit after SIGTERM (proxies drain for 1 s).
const GRACE: Duration = Duration::from_secs(5);
/// How long start-up waits for a proxy's first config before going on without it.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory of the mesh: its top-level YAML files (Services, Istio resources,
    /// Workloads) are loaded and watched; subdirectories are not read (`weft apply` them).
    dir: PathBuf,
    /// The Gateway port to print the URL for. The gateway listens on 127.0.0.1: a Gateway
    /// port of its Service (80, 443) at the Service's target port (8080, 8443), any other port
    /// as written.
    #[arg(long, value_name = "PORT")]
    gateway_port: Option<u16>,
    /// Where applied resources, the instances file and the proxies' bootstraps live.
    /// Default: $WEFT_STATE_DIR, else $XDG_STATE_HOME/weft, else ~/.local/state/weft.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Run in the background (logs in <state-dir>/up.log); `weft down` stops it.
    #[arg(long)]
    detach: bool,
    /// Log filter of the control plane and the proxies (`warn`, `info`, `debug`). Also RUST_LOG.
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Lifetime of the workload certificates the mesh's CA issues (renewed at half of it).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    workload_cert_ttl: Duration,
    /// Also run Prometheus (the `prometheus` on PATH, Debian's package) on the scrape config
    /// `weft up` writes to <state-dir>/prometheus/ (every proxy and the control plane).
    #[arg(long)]
    prometheus: bool,
    /// Istio's MeshConfig (the `mesh` of the `istio` ConfigMap, YAML): tracing providers and
    /// sampling, the outbound traffic policy, ... Watched: an edit applies while the mesh runs.
    #[arg(long = "mesh-config", value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// Transparent sidecars, as Istio's: each replica in a network namespace of its own on a
    /// bridge (pod IPs 100.(64+M).w.r), its traffic captured by iptables (`weft proxy
    /// capture`), its sidecar as uid 1337, the application unmodified (no HTTP_PROXY). Needs
    /// root, iproute2, iptables and setpriv. `weft exec` runs commands in a replica.
    #[arg(long)]
    capture: bool,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// The state directory of the mesh to stop (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// Says what of the mesh's resources weft reads but does not enforce (`weft analyze`'s WA0139,
/// WA0143: a JWT issuer without keys, WA0144: a Telemetry provider the mesh does not have):
/// nothing looks accepted that is not.
fn warn_not_enforced(resources: &[weft_api::Resource]) {
    use weft_api::diag::code;
    for d in weft_api::analyze::analyze(resources) {
        if d.code == code::NOT_ENFORCED
            || d.code == code::JWT_RULE_WITHOUT_KEYS
            || d.code == code::TELEMETRY_UNKNOWN_PROVIDER
        {
            eprintln!("{d}");
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    // Before anything is written: without the privileges nothing can start.
    if args.capture
        && let Some(why) = netns::missing_privileges()
    {
        eprintln!("weft up: {why}");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    if !args.dir.is_dir() {
        eprintln!("weft up: {}: not a directory", args.dir.display());
        return ExitCode::from(2);
    }
    let state = state::state_dir(args.state_dir.as_deref());
    let applied = state::applied_dir(&state);
    if let Err(e) = std::fs::create_dir_all(&applied) {
        eprintln!("weft up: {}: {e}", applied.display());
        return ExitCode::from(2);
    }
    if let Some(mesh) = RunningMesh::read(&state) {
        eprintln!(
            "weft up: a mesh is already running from {} (pid {}, state {}); stop it with `weft down`",
            mesh.dir.display(),
            mesh.pid,
            state.display()
        );
        return ExitCode::FAILURE;
    }
    let prometheus_binary = match (args.prometheus, prometheus::find_binary()) {
        (false, _) => None,
        (true, Some(b)) => Some(b),
        (true, None) => {
            eprintln!(
                "weft up: --prometheus: no `prometheus` on PATH (Debian: apt-get install prometheus)"
            );
            return ExitCode::FAILURE;
        }
    };
    if args.detach {
        return detach(&state);
    }
    let mesh_path = args
        .mesh_config
        .as_ref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    let mesh = match &mesh_path {
        Some(path) => match weft_control::server::read_mesh_config(path) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("weft up: {e}");
                return ExitCode::from(2);
            }
        },
        None => weft_control::mesh_config::MeshConfig::default(),
    };
    let dir = std::fs::canonicalize(&args.dir).unwrap_or_else(|_| args.dir.clone());
    let files = match state::top_level_files(&dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("weft up: {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    // The ingress gateway's Service, as Istio installs it (its ports map Gateway ports 80 and
    // 443 to the 8080 and 8443 the gateway listens on), first so that DIR or `weft apply` may
    // replace it.
    let builtin = state::builtin_dir(&state);
    let written = std::fs::create_dir_all(&builtin).and_then(|()| {
        state::write_atomic(
            &builtin.join("istio-ingressgateway.yaml"),
            plan::GATEWAY_SERVICE.as_bytes(),
        )
    });
    if let Err(e) = written {
        eprintln!("weft up: {}: {e}", builtin.display());
        return ExitCode::from(2);
    }
    let restored = state::top_level_files(&applied).unwrap_or_default();
    if !restored.is_empty() {
        // Applied resources outlive a mesh, as a cluster's would: say so, whatever DIR is.
        let names: Vec<String> = restored
            .iter()
            .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
            .collect();
        println!(
            "Restoring {} resource(s) applied earlier, from {} ({}); `weft delete -f FILE` \
             removes them",
            restored.len(),
            applied.display(),
            names.join(", ")
        );
    }
    let mut all = state::top_level_files(&builtin).unwrap_or_default();
    all.extend(files.iter().cloned());
    all.extend(restored);
    let loaded = weft_api::load_paths(&all);
    for d in &loaded.diagnostics {
        if d.severity >= Severity::Warning {
            eprintln!("{d}");
        }
    }
    if loaded.error_count() > 0 {
        eprintln!(
            "weft up: {} error(s) in {}; nothing started (`weft analyze {}` explains them)",
            loaded.error_count(),
            dir.display(),
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    let Some((octet, reservation)) = plan::reserve_octet() else {
        eprintln!("weft up: no free loopback range 127.M.0.0/16 (M in 1..100) for the mesh");
        return ExitCode::FAILURE;
    };
    let effective: Vec<weft_api::Resource> = loaded.effective().into_iter().cloned().collect();
    warn_not_enforced(&effective);
    let planned = if args.capture {
        Plan::captured(&effective, &dir, octet)
    } else {
        Plan::new(&effective, &dir, octet)
    };
    let plan = match planned {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weft up: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Rejected files are reported by `weft up` itself (`Replicas::follow`), once and on stdout
    // with the rest of its events; the control plane's store would say it again.
    let filter = std::env::var("RUST_LOG")
        .unwrap_or_else(|_| format!("{},weft_control::server::store=error", args.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft up: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // DIR's own files (new ones too, while it runs), not its subdirectories; and the
    // applied resources.
    let config_paths = vec![builtin, dir.clone(), applied];
    let up = Up {
        dir,
        state,
        config_paths,
        gateway_port: args.gateway_port,
        workload_cert_ttl: args.workload_cert_ttl,
        mesh,
        mesh_path,
        log_level: filter,
        out: Arc::new(Output::new()),
        started,
        prometheus_binary,
        prometheus_url: None,
    };
    rt.block_on(up.serve(plan, reservation))
}

/// One `weft up` run.
struct Up {
    dir: PathBuf,
    state: PathBuf,
    config_paths: Vec<PathBuf>,
    gateway_port: Option<u16>,
    workload_cert_ttl: Duration,
    /// `--mesh-config`: the mesh config at start, and its file (watched).
    mesh: weft_control::mesh_config::MeshConfig,
    mesh_path: Option<PathBuf>,
    log_level: String,
    out: Arc<Output>,
    started: Instant,
    /// `--prometheus`: the binary to run.
    prometheus_binary: Option<PathBuf>,
    /// Where that Prometheus serves, once started.
    prometheus_url: Option<String>,
}

impl Up {
    async fn serve(mut self, plan: Plan, reservation: std::net::TcpListener) -> ExitCode {
        // Signals first: a SIGTERM during start-up must still stop what was started.
        let (quit_tx, quit) = watch::channel(false);
        match (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    let _ = quit_tx.send(true);
                });
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("weft up: signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        }

        // Before anything starts: nothing is left to stop when it fails.
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("weft up: cannot find the weft executable: {e}");
                return ExitCode::FAILURE;
            }
        };

        // --capture: the pod network first; the control plane listens on its bridge.
        let network = if plan.capture {
            match netns::Network::setup(plan.octet, &exe) {
                Ok(n) => Some(Arc::new(n)),
                Err(e) => {
                    eprintln!("weft up: pod network: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let octet = plan.octet;
        let code = self
            .run_mesh(plan, reservation, exe, network.clone(), quit)
            .await;
        if let Some(n) = network {
            n.teardown();
            let _ = std::fs::remove_dir_all(format!("/run/weft-{octet}"));
        }
        code
    }

    async fn run_mesh(
        &mut self,
        plan: Plan,
        reservation: std::net::TcpListener,
        exe: PathBuf,
        network: Option<Arc<netns::Network>>,
        mut quit: watch::Receiver<bool>,
    ) -> ExitCode {
        let instances = self.state.join("instances.yaml");
        // Captured sidecars run as uid 1337, which cannot read the state directory (often
        // under a home directory): their bootstraps and credentials live in /run.
        let proxies = match &network {
            Some(_) => state::proxies_dir_captured(plan.octet),
            None => self.state.join("proxies"),
        };
        let written = std::fs::create_dir_all(&proxies).and_then(|()| {
            // No app listens yet: no replica is an endpoint until its app does.
            let yaml = plan
                .instances_yaml(|_| false)
                .map_err(std::io::Error::other)?;
            state::write_atomic(&instances, yaml.as_bytes())
        });
        if let Err(e) = written {
            eprintln!("weft up: {}: {e}", self.state.display());
            return ExitCode::FAILURE;
        }

        let mut options = Options::new(self.config_paths.clone());
        options.shallow_dirs = vec![self.dir.clone()];
        options.mesh = self.mesh.clone();
        options.mesh_path = self.mesh_path.clone();
        options.instances = Some(instances.clone());
        let listen_ip = match &network {
            Some(n) => std::net::IpAddr::V4(n.bridge_ip()),
            None => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        };
        options.xds_address = SocketAddr::new(listen_ip, 0);
        options.monitoring_address = SocketAddr::new(listen_ip, 0);
        // The service graph scrapes the proxies Prometheus would (the file_sd list below).
        options.scrape_targets = Some(prometheus::proxies_file(&self.state));
        // The CA: its root kept in the state directory; each proxy gets a token for its own
        // identity (`Launch::credential`).
        let tokens = Arc::new(weft_control::ca::auth::LocalTokens::default());
        let ca_dir = self.state.join("ca");
        let mut ca_options = weft_control::ca::CaOptions::new(
            weft_control::ca::CaSource::SelfSigned(ca_dir.clone()),
        );
        ca_options.default_ttl = self.workload_cert_ttl;
        options.ca = Some(weft_control::server::CaConfig {
            options: ca_options,
            address: SocketAddr::new(listen_ip, 0),
            authenticator: tokens.clone(),
        });
        let cp = match ControlPlane::bind(options).await {
            Ok(cp) => cp,
            Err(e) => {
                eprintln!("weft up: control plane: {e}");
                return ExitCode::FAILURE;
            }
        };
        let ca_address = cp.ca_address();
        let (Some(xds), monitoring) = (cp.xds_address(), cp.monitoring_address()) else {
            eprintln!("weft up: control plane: no xDS address");
            return ExitCode::FAILURE;
        };
        // What the control plane has in force: the Workloads that replicas follow.
        let source = cp.xds().source().clone();
        let instances_file = cp.instances_file();
        let xds_server = cp.xds().clone();
        let (cp_stop, mut cp_stopped) = watch::channel(false);
        let control_plane = tokio::spawn(cp.run(async move {
            let _ = cp_stopped.wait_for(|s| *s).await;
        }));
        if let Err(e) = prometheus::write_all(&self.state, &plan, monitoring) {
            eprintln!("weft up: {}: {e}", prometheus::dir(&self.state).display());
        }
        let prometheus_listen = if self.prometheus_binary.is_some() {
            match prometheus::listen_address() {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("weft up: prometheus: no free port: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let mesh = RunningMesh {
            pid: std::process::id(),
            dir: self.dir.clone(),
            xds_address: Some(xds),
            monitoring_address: monitoring,
            prometheus_address: prometheus_listen,
            capture_octet: network.as_ref().map(|_| plan.octet),
        };
        if let Err(e) = mesh.write(&self.state) {
            eprintln!("weft up: {}: {e}", self.state.display());
        }
        self.out.event(
            true,
            &format!(
                "Control plane ready (xds {xds}, monitoring {}, ca {})",
                monitoring.map_or("-".to_owned(), |m| m.to_string()),
                ca_address.map_or("-".to_owned(), |m| m.to_string())
            ),
        );

        let launch = Launch {
            exe,
            xds,
            proxies: proxies.clone(),
            log_level: self.log_level.clone(),
            ca: ca_address.map(|address| LocalCa {
                address,
                root_file: match &network {
                    // Where uid 1337 can read it (a public certificate).
                    Some(_) => {
                        let copy = proxies.join("ca-cert.pem");
                        if let Err(e) = std::fs::copy(ca_dir.join("ca-cert.pem"), &copy) {
                            eprintln!("weft up: {}: {e}", copy.display());
                        }
                        copy
                    }
                    None => ca_dir.join("ca-cert.pem"),
                },
                tokens,
            }),
            network: network.clone(),
        };
        let mut replicas = Replicas::new(
            plan,
            launch,
            instances,
            instances_file,
            xds_server,
            self.out.clone(),
        );
        let mut sup = Supervisor::new(self.out.clone(), GRACE);
        if let (Some(binary), Some(listen)) = (self.prometheus_binary.clone(), prometheus_listen) {
            let spec = prometheus::child(binary, &self.state, listen, replicas.color());
            // Stopped with the rest at shutdown.
            let _ = sup.spawn(spec);
            self.prometheus_url = Some(format!("http://{listen}"));
        }
        let code = self
            .start(&mut sup, &mut replicas, &source, reservation, &mut quit)
            .await;
        if code.is_none() {
            replicas
                .follow(&mut sup, &source, &self.dir, &mut quit)
                .await;
        }

        self.out
            .event(true, "Stopping: draining proxies, stopping workloads");
        sup.shutdown().await;
        let _ = cp_stop.send(true);
        let _ = control_plane.await;
        let _ = std::fs::remove_file(state::mesh_file(&self.state));
        self.out.event(true, "Stopped");
        code.unwrap_or(ExitCode::SUCCESS)
    }

    /// Starts the sidecars, the gateway and the workloads of the start-up plan. Some exit
    /// code when the mesh is not to run on (a failure, or a stop asked for meanwhile).
    async fn start(
        &self,
        sup: &mut Supervisor,
        replicas: &mut Replicas,
        source: &MeshSource,
        reservation: std::net::TcpListener,
        quit: &mut watch::Receiver<bool>,
    ) -> Option<ExitCode> {
        let all = replicas.plan().replicas.clone();
        let mut ready = match replicas.start_sidecars(sup, &all) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("weft up: {}: {e}", replicas.launch().proxies.display());
                return Some(ExitCode::FAILURE);
            }
        };
        if !wait_ready(&self.out, &mut ready, quit).await {
            return Some(ExitCode::SUCCESS);
        }
        self.out
            .event(true, &format!("{} sidecars ready", all.len()));

        // The gateway's admin port is the reservation's neighbour; release it now that this
        // mesh's addresses are taken by running proxies.
        drop(reservation);
        let gateway = "istio-ingressgateway";
        let color = replicas.color();
        let spec = replicas.launch().proxy(
            gateway.to_owned(),
            gateway,
            replicas::Who {
                node_id: &Plan::gateway_node_id(),
                namespace: plan::GATEWAY_NAMESPACE,
                service_account: plan::GATEWAY_SERVICE_ACCOUNT,
            },
            replicas.plan().gateway_admin(),
            &[],
            color,
        );
        // The supervisor stops the gateway at shutdown; nothing stops it before.
        let gateway_proxy = match spec {
            Ok(spec) => sup.spawn(spec),
            Err(e) => {
                eprintln!("weft up: {}: {e}", replicas.launch().proxies.display());
                return Some(ExitCode::FAILURE);
            }
        };
        let mut ready = vec![(gateway.to_owned(), gateway_proxy.ready())];
        if !wait_ready(&self.out, &mut ready, quit).await {
            return Some(ExitCode::SUCCESS);
        }
        self.out.event(true, "Ingress gateway ready (127.0.0.1)");

        replicas.start_apps(sup, &all);
        if !replicas
            .wait_apps_ready(&all, replicas::APP_READY_TIMEOUT, quit)
            .await
        {
            return Some(ExitCode::SUCCESS);
        }
        self.out.event(
            true,
            &format!(
                "{} workloads started in {:.1}s",
                all.len(),
                self.started.elapsed().as_secs_f64()
            ),
        );
        self.print_summary(replicas.plan(), &gateway::reachable_now(source));
        None
    }

    /// The table of replicas, then where the gateway is reachable (`gateway`: its
    /// [`gateway::reachable`] lines).
    fn print_summary(&self, plan: &Plan, gateway: &[String]) {
        let mut table = Table::new(&[
            "WORKLOAD",
            "POD IP",
            "APP ADDRESS",
            "SIDECAR ADMIN",
            "IDENTITY",
        ]);
        // The identities the proxies' bootstraps ask for (the default trust domain).
        let identity = |ns: &str, sa: &str| weft_control::ca::spiffe_id("cluster.local", ns, sa);
        for r in &plan.replicas {
            table.row(vec![
                r.name.clone(),
                r.pod_ip.to_string(),
                r.listen_addr()
                    .map_or_else(|| r.app_ip.to_string(), |a| a.to_string()),
                format!("http://{}", r.admin_addr()),
                identity(&r.namespace, r.spec.service_account()),
            ]);
        }
        table.row(vec![
            "istio-ingressgateway".to_owned(),
            "127.0.0.1".to_owned(),
            "-".to_owned(),
            format!("http://{}", plan.gateway_admin()),
            identity(plan::GATEWAY_NAMESPACE, plan::GATEWAY_SERVICE_ACCOUNT),
        ]);
        self.out.text("");
        self.out.text(table.render().trim_end());
        self.out.text("");
        for line in gateway {
            self.out.text(&format!("Ingress gateway {line}"));
        }
        // The URL to open: the HTTP server on --gateway-port, else the first one.
        let url = gateway
            .iter()
            .filter(|l| {
                self.gateway_port
                    .is_none_or(|p| l.starts_with(&format!("port {p} ")))
            })
            .find_map(|l| l.split_once(": http://").map(|(_, a)| a));
        let path = if plan
            .replicas
            .iter()
            .any(|r| r.name.starts_with("productpage"))
        {
            "/productpage"
        } else {
            "/"
        };
        match (url, self.gateway_port) {
            (Some(address), _) => self
                .out
                .text(&format!("Ingress gateway: http://{address}{path}")),
            (None, Some(p)) => self.out.event(
                false,
                &format!("no HTTP Gateway server selecting istio: ingressgateway has port {p}"),
            ),
            (None, None) => self.out.text(
                "Ingress gateway: no Gateway server selects it yet (`weft apply -f` a Gateway; \
                 where its ports listen is printed here)",
            ),
        }
        if let Some(m) = RunningMesh::read(&self.state).and_then(|m| m.monitoring_address) {
            self.out.text(&format!(
                "Service graph: http://{m}/dashboard (`weft dashboard`); `weft stat` for rates and latencies"
            ));
        }
        match &self.prometheus_url {
            Some(url) => self.out.text(&format!(
                "Prometheus: {url} (scrape config {})",
                prometheus::config_file(&self.state).display()
            )),
            None => self.out.text(&format!(
                "Prometheus scrape config: {}; run it with `{}` (or `weft up --prometheus`)",
                prometheus::config_file(&self.state).display(),
                prometheus::command_line(&self.state)
            )),
        }
        self.out.text(&format!(
            "Apply more config with `weft apply -f FILE`; {} stops the mesh. State: {}",
            if std::env::var_os(DETACHED_ENV).is_some() {
                "`weft down`"
            } else {
                "Ctrl-C"
            },
            self.state.display()
        ));
        self.out.text("");
    }
}

/// Waits until every proxy in `ready` has its first config (reporting those that do not
/// within [`READY_TIMEOUT`]). False when a stop signal came first.
async fn wait_ready(
    out: &Output,
    ready: &mut [(String, watch::Receiver<bool>)],
    quit: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    for (label, r) in ready.iter_mut() {
        tokio::select! {
            got = tokio::time::timeout_at(deadline, r.wait_for(|r| *r)) => {
                if !matches!(got, Ok(Ok(_))) {
                    out.event(false, &format!("[{label}] not ready after {READY_TIMEOUT:?}; going on"));
                }
            }
            _ = quit.wait_for(|q| *q) => return false,
        }
    }
    !*quit.borrow()
}

/// `weft up --detach`: runs `weft up` again without `--detach`, in the background and its own
/// process group, and returns once it has recorded itself in the state directory.
fn detach(state: &Path) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let log = state.join("up.log");
    let (exe, file) = match (std::env::current_exe(), std::fs::File::create(&log)) {
        (Ok(exe), Ok(file)) => (exe, file),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("weft up: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let err = match file.try_clone() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("weft up: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut child = match std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(err)
        .env("NO_COLOR", "1")
        .env(DETACHED_ENV, "1")
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft up: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("weft up: the mesh exited ({status}); see {}", log.display());
            return ExitCode::FAILURE;
        }
        if std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("Ingress gateway:") || l.contains("workloads started"))
        {
            println!(
                "✔ Mesh running in the background (pid {}); logs in {}; stop it with `weft down`",
                child.id(),
                log.display()
            );
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "weft up: the mesh did not start within 60s; see {}",
        log.display()
    );
    ExitCode::FAILURE
}

/// `weft down`: stops a mesh started with `weft up --detach` (or in another terminal).
pub fn down(args: &DownArgs) -> ExitCode {
    let state = state::state_dir(args.state_dir.as_deref());
    let Some(mesh) = RunningMesh::read(&state) else {
        eprintln!("weft down: no mesh is running (state {})", state.display());
        return ExitCode::FAILURE;
    };
    let Some(pid) = i32::try_from(mesh.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return ExitCode::FAILURE;
    };
    if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
        eprintln!("weft down: pid {}: {e}", mesh.pid);
        return ExitCode::FAILURE;
    }
    let deadline = Instant::now() + GRACE * 3;
    while Instant::now() < deadline {
        if !state::alive(mesh.pid) {
            println!("✔ Mesh stopped");
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "weft down: pid {} still running after {:?}",
        mesh.pid,
        GRACE * 3
    );
    ExitCode::FAILURE
}
