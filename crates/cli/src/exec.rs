//! `weft exec`: a command inside a replica of a `weft up --capture` mesh, as `kubectl exec`
//! runs one in a pod: in the replica's network namespace, so its traffic is captured by the
//! replica's sidecar like the application's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use crate::up::state::{RunningMesh, state_dir};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The workload (`productpage-v1`), or a replica's pod name (`productpage-v1-0`).
    workload: String,
    /// Which replica of the workload, from 0.
    #[arg(short = 'r', long, default_value_t = 0)]
    replica: u32,
    /// The workload's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The state directory of the mesh (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

pub fn run(args: &Args) -> ExitCode {
    match exec(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft exec: {e}");
            ExitCode::FAILURE
        }
    }
}

fn exec(args: &Args) -> Result<ExitCode, String> {
    let state = state_dir(args.state_dir.as_deref());
    let mesh = RunningMesh::read(&state).ok_or_else(|| {
        format!(
            "no mesh is running with state directory {} (start one with `weft up --capture DIR`)",
            state.display()
        )
    })?;
    let Some(octet) = mesh.capture_octet else {
        return Err(
            "the running mesh was started without --capture: its workloads share this \
             machine's network, so run the command directly (with \
             HTTP_PROXY=http://<pod IP>:15001 to go through a replica's sidecar)"
                .to_owned(),
        );
    };
    let prefix = format!("weft{octet}-{}-", args.namespace);
    let existing = namespaces(&prefix);
    let wanted = [
        format!("{prefix}{}-{}", args.workload, args.replica),
        format!("{prefix}{}", args.workload),
    ];
    let Some(ns) = wanted.iter().find(|w| existing.contains(w)) else {
        let pods: Vec<&str> = existing
            .iter()
            .filter_map(|n| n.strip_prefix(&prefix))
            .collect();
        return Err(format!(
            "no replica {} of workload {} in namespace {} (running: {})",
            args.replica,
            args.workload,
            args.namespace,
            if pods.is_empty() {
                "none".to_owned()
            } else {
                pods.join(", ")
            }
        ));
    };
    let status = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(&args.command)
        .status()
        .map_err(|e| format!("ip netns exec: {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// The network namespaces whose names start with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}
