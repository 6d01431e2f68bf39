//! `weft`: the command-line front door of the weft service mesh.

mod analyze;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(&args),
    }
}
