//! `weft version`: this client's version and the running control plane's, as `istioctl
//! version` prints them.

use std::process::ExitCode;

use crate::http_get;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    mesh: crate::up::state::ControlPlaneArgs,
    /// Only this client's version; ask no control plane.
    #[arg(long)]
    client: bool,
}

pub fn run(args: &Args) -> ExitCode {
    println!("client version: {}", env!("CARGO_PKG_VERSION"));
    if args.client {
        return ExitCode::SUCCESS;
    }
    let url = args.mesh.url();
    match http_get::get(&url, "/version") {
        Ok(r) if r.status == 200 => {
            println!("control plane version: {}", r.body.trim());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!(
                "control plane version: unknown ({url}/version: HTTP {})",
                r.status
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("control plane version: none running ({e})");
            ExitCode::SUCCESS
        }
    }
}
