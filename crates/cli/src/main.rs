//! `weft`: the command-line front door of the weft service mesh.

mod analyze;
mod control_plane;
mod dashboard;
mod example;
mod exec;
mod http_get;
mod load;
mod proxy_config;
mod proxy_status;
mod stat;
mod table;
mod up;
mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// weft: a service mesh that speaks Istio.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check mesh configuration (Istio, Kubernetes and weft YAML) for errors, without running it.
    ///
    /// Exit status: 0 when no error-level finding, 1 when there is one, 2 when some input
    /// could not be read or parsed.
    Analyze(analyze::Args),
    /// Run the control plane: watch mesh config files and serve every proxy its config over
    /// xDS, with status and debug endpoints on the monitoring address.
    ControlPlane(control_plane::Args),
    /// Show every proxy connected to the control plane and whether it has ACKed the latest
    /// config (SYNCED, STALE, NOT SENT, NACK with the reason).
    ProxyStatus(proxy_status::Args),
    /// Show a proxy's listeners, routes, clusters or endpoints, as the control plane computes
    /// them or as the proxy runs them (--admin).
    ProxyConfig(proxy_config::Args),
    /// Run a whole mesh on this machine: the control plane, a sidecar per workload, the
    /// ingress gateway and the workloads of DIR, all on loopback addresses.
    Up(up::Args),
    /// Stop a mesh started with `weft up` (`--detach` or in another terminal).
    Down(up::DownArgs),
    /// Run a command inside a replica of a `weft up --capture` mesh (its network namespace,
    /// its traffic through the replica's sidecar), as `kubectl exec`:
    /// `weft exec productpage-v1 -- curl -s http://reviews:9080/reviews/0`.
    Exec(exec::Args),
    /// Add or replace resources in the running local mesh (and persist them for `weft up`).
    Apply(up::kubectl::ApplyArgs),
    /// Remove resources added with `weft apply`.
    Delete(up::kubectl::DeleteArgs),
    /// List the resources in force in the local mesh.
    Get(up::kubectl::GetArgs),
    /// Success rate, request rate and p50/p95/p99 latency per workload and per service over a
    /// window (like `linkerd viz stat`), from the proxies' Istio metrics.
    Stat(stat::Args),
    /// Open the service graph (the control plane's /dashboard page): workloads and services,
    /// request and error rates, latencies, mTLS, each service's routing config.
    Dashboard(dashboard::Args),
    /// Run the sidecar and gateway proxy (what `weft-proxy` runs); `weft up` starts these.
    #[command(hide = true, disable_help_flag = true, disable_version_flag = true)]
    Proxy {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
    /// Send HTTP load with fixed concurrency and print a response-code histogram (like fortio).
    Load(load::Args),
    /// Run one of the demo applications (productpage, details, reviews, ratings, httpbin, tcp-echo).
    #[command(hide = true)]
    Example(example::Args),
    /// Print a shell completion script: `source <(weft completion bash)`, as `istioctl
    /// completion` does.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print weft's version and the running control plane's (as `istioctl version`).
    Version(version::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(&args),
        Command::ControlPlane(args) => control_plane::run(args),
        Command::ProxyStatus(args) => proxy_status::run(&args),
        Command::ProxyConfig(args) => proxy_config::run(&args),
        Command::Up(args) => up::run(args),
        Command::Down(args) => up::down(&args),
        Command::Exec(args) => exec::run(&args),
        Command::Apply(args) => up::kubectl::apply(&args),
        Command::Delete(args) => up::kubectl::delete(&args),
        Command::Get(args) => up::kubectl::get(&args),
        Command::Proxy { args } => weft_proxy::cli::run(
            std::iter::once(std::ffi::OsString::from("weft proxy")).chain(args),
        ),
        Command::Load(args) => load::run(args),
        Command::Stat(args) => stat::run(&args),
        Command::Dashboard(args) => dashboard::run(&args),
        Command::Example(args) => example::run(args),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "weft", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Version(args) => version::run(&args),
    }
}
