//! `weft proxy-status`: every proxy connected to the control plane and whether it has the
//! latest config, as `istioctl proxy-status` shows it.

use std::io::{self, Write};
use std::process::ExitCode;

use weft_control::server::api::SyncStatus;

use crate::http_get;
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    mesh: crate::up::state::ControlPlaneArgs,
    /// Only this proxy (`name.namespace`, name, a Workload's name, or node id).
    #[arg(value_name = "PROXY")]
    proxy: Option<String>,
}

pub fn run(args: &Args) -> ExitCode {
    let statuses = match fetch(&args.mesh.url()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weft proxy-status: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shown: Vec<&SyncStatus> = statuses
        .iter()
        .filter(|s| {
            args.proxy.as_deref().is_none_or(|p| {
                let (name, namespace) = s.proxy.split_once('.').unwrap_or((&s.proxy, ""));
                s.node_id == p || weft_control::node::name_match(name, namespace, p).is_some()
            })
        })
        .collect();
    let out = render(&shown);
    if let Err(e) = io::stdout().lock().write_all(out.as_bytes())
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        eprintln!("weft proxy-status: {e}");
    }
    ExitCode::SUCCESS
}

/// The control plane's `/debug/syncz` at `base`.
pub fn fetch(base: &str) -> Result<Vec<SyncStatus>, String> {
    let r = http_get::get(base, "/debug/syncz")?;
    if r.status != 200 {
        return Err(format!(
            "{base}/debug/syncz: HTTP {}: {}",
            r.status,
            r.body.trim()
        ));
    }
    serde_json::from_str(&r.body).map_err(|e| format!("{base}/debug/syncz: {e}"))
}

/// The table, then one line per NACK with its reason.
pub fn render(statuses: &[&SyncStatus]) -> String {
    let mut t = Table::new(&["NAME", "CLUSTERS", "LISTENERS", "ROUTES", "CONNECTED SINCE"]);
    for s in statuses {
        t.row(vec![
            s.proxy.clone(),
            s.clusters.state.as_str().to_owned(),
            s.listeners.state.as_str().to_owned(),
            s.routes.state.as_str().to_owned(),
            s.connected_since.clone(),
        ]);
    }
    let mut out = t.render();
    if statuses.is_empty() {
        out.push_str("(no proxy connected)\n");
    }
    let mut nacks = Vec::new();
    for s in statuses {
        for (what, ty) in [
            ("CLUSTERS", &s.clusters),
            ("LISTENERS", &s.listeners),
            ("ROUTES", &s.routes),
        ] {
            if let Some(n) = &ty.last_nack {
                nacks.push(format!(
                    "{} {what} NACK (version {}): {}\n",
                    s.proxy, n.version, n.reason
                ));
            }
        }
    }
    if !nacks.is_empty() {
        out.push('\n');
        out.extend(nacks);
    }
    out
}
