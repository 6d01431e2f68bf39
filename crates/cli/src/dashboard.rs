//! `weft dashboard`: opens the control plane's service graph page (`/dashboard` on its
//! monitoring address), or prints its URL when no browser opener is found.

use std::process::{Command, ExitCode, Stdio};

use crate::up::state::ControlPlaneArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
    /// Print the URL only.
    #[arg(long)]
    no_open: bool,
}

pub fn run(args: &Args) -> ExitCode {
    let url = format!(
        "{}/dashboard",
        args.control_plane.url().trim_end_matches('/')
    );
    if let Err(e) = crate::http_get::get(&args.control_plane.url(), "/ready") {
        eprintln!("weft dashboard: the control plane does not answer: {e}");
        return ExitCode::FAILURE;
    }
    println!("{url}");
    if !args.no_open {
        // xdg-open on Linux desktops; without one (a server, CI) the URL printed is the answer.
        let opened = Command::new("xdg-open")
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !opened {
            eprintln!("(no browser opener found: open the URL above)");
        }
    }
    ExitCode::SUCCESS
}
