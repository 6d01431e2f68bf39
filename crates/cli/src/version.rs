//! `weft version`: this client's version and the running control plane's, as `istioctl
//! version` prints them.

use std::process::ExitCode;

use crate::http_get;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The control plane's monitoring address. Default: the local mesh `weft up` runs (found
    /// in the state directory), else http://127.0.0.1:15014.
    #[arg(long = "control-plane", value_name = "URL")]
    control_plane: Option<String>,
    /// The local mesh's state directory (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Only this client's version; ask no control plane.
    #[arg(long)]
    client: bool,
}

pub fn run(args: &Args) -> ExitCode {
    println!("client version: {}", env!("CARGO_PKG_VERSION"));
    if args.client {
        return ExitCode::SUCCESS;
    }
    let url = crate::up::state::control_plane_url(
        args.control_plane.as_deref(),
        args.state_dir.as_deref(),
    );
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
