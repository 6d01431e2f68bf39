//! `weft`: the command-line front door of the weft service mesh.

mod analyze;
mod control_plane;
mod http_get;
mod proxy_config;
mod proxy_status;
mod table;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(&args),
        Command::ControlPlane(args) => control_plane::run(args),
        Command::ProxyStatus(args) => proxy_status::run(&args),
        Command::ProxyConfig(args) => proxy_config::run(&args),
    }
}
