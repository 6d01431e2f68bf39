//! `weft stat`: success rate, request rate and latency quantiles per workload and per
//! service over a window, as `linkerd viz stat` shows them, from the proxies' Istio metrics.
//!
//! It scrapes every proxy's `/stats/prometheus` twice, `--window` apart (the targets of the
//! local mesh are the file_sd list `weft up` keeps for Prometheus, or `--target`), and
//! computes the increase in between (weft-control's `telemetry`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use weft_control::telemetry::{self, Scrape, StatRow};

use crate::http_get;
use crate::table::Table;
use crate::up::{prometheus, state};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Per destination workload, as its own proxy saw requests (reporter=destination).
    Workloads,
    /// Per destination service, as the clients' proxies saw requests (reporter=source).
    Services,
    /// Both tables.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to show.
    #[arg(value_enum, default_value = "all")]
    kind: Kind,
    /// The window rates and quantiles are computed over: the command takes this long.
    #[arg(long, short = 't', default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    window: Duration,
    /// Only this namespace.
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// A proxy's metrics address (HOST:PORT, serving /stats/prometheus); repeatable. Default:
    /// every proxy of the local mesh `weft up` runs.
    #[arg(long, value_name = "HOST:PORT")]
    target: Vec<String>,
    /// The local mesh's state directory (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Format,
}

pub fn run(args: &Args) -> ExitCode {
    let targets = if args.target.is_empty() {
        let state = state::state_dir(args.state_dir.as_deref());
        if state::RunningMesh::read(&state).is_none() {
            eprintln!(
                "weft stat: no local mesh is running (state {}); start one with `weft up`, or pass --target",
                state.display()
            );
            return ExitCode::FAILURE;
        }
        match prometheus::read_proxy_targets(&state) {
            Ok(groups) => groups.into_iter().flat_map(|g| g.targets).collect(),
            Err(e) => {
                eprintln!("weft stat: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        args.target.clone()
    };
    let started = Instant::now();
    let before = scrape_all(&targets);
    std::thread::sleep(args.window);
    let after = scrape_all(&targets);
    let seconds = started
        .elapsed()
        .as_secs_f64()
        .max(args.window.as_secs_f64());
    let unreachable: Vec<&String> = targets.iter().filter(|t| !after.contains_key(*t)).collect();
    if !unreachable.is_empty() {
        eprintln!(
            "weft stat: no metrics from {} (not serving /stats/prometheus)",
            unreachable
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if after.is_empty() {
        return ExitCode::FAILURE;
    }
    // Use the window only as measured: a target scraped once has no `before`, and counts
    // since its start would inflate the rate.
    let after: Scrape = after
        .into_iter()
        .filter(|(t, _)| before.contains_key(t))
        .collect();
    let window = telemetry::increase(&before, &after);
    let keep = |rows: Vec<StatRow>| -> Vec<StatRow> {
        rows.into_iter()
            .filter(|r| args.namespace.as_ref().is_none_or(|n| *n == r.namespace))
            .collect()
    };
    let workloads = keep(telemetry::workload_stats(&window, seconds));
    let services = keep(telemetry::service_stats(&window, seconds));
    match args.output {
        Format::Json => {
            let mut v = serde_json::Map::new();
            v.insert("windowSeconds".into(), seconds.into());
            if args.kind != Kind::Services {
                v.insert("workloads".into(), serde_json::json!(workloads));
            }
            if args.kind != Kind::Workloads {
                v.insert("services".into(), serde_json::json!(services));
            }
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Format::Table => {
            if args.kind != Kind::Services {
                print!("{}", render(&workloads, "WORKLOAD"));
            }
            if args.kind == Kind::All {
                println!();
            }
            if args.kind != Kind::Workloads {
                print!("{}", render(&services, "SERVICE"));
            }
        }
    }
    ExitCode::SUCCESS
}

/// Each target's samples; a target that does not answer 200 with parsable text is left out.
fn scrape_all(targets: &[String]) -> Scrape {
    let handles: Vec<_> = targets
        .iter()
        .cloned()
        .map(|t| std::thread::spawn(move || (scrape(&t), t)))
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().ok())
        .filter_map(|(r, t)| match r {
            Ok(samples) => Some((t, samples)),
            Err(e) => {
                debug_note(&e);
                None
            }
        })
        .collect()
}

fn scrape(target: &str) -> Result<Vec<telemetry::Sample>, String> {
    let r = http_get::get(&format!("http://{target}"), "/stats/prometheus")?;
    if r.status != 200 {
        return Err(format!("{target}: status {}", r.status));
    }
    telemetry::parse(&r.body).map_err(|e| format!("{target}: {e}"))
}

/// Scrape errors matter only with `WEFT_DEBUG` set; the summary names unreachable targets.
fn debug_note(e: &str) {
    if std::env::var_os("WEFT_DEBUG").is_some() {
        eprintln!("weft stat: {e}");
    }
}

/// The table, linkerd's columns: success rate, RPS, latency quantiles; and mTLS.
pub fn render(rows: &[StatRow], what: &str) -> String {
    let mut t = Table::new(&[
        "NAMESPACE",
        what,
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "MTLS",
    ]);
    for r in rows {
        t.row(vec![
            r.namespace.clone(),
            r.name.clone(),
            r.success_rate
                .map_or("-".to_owned(), |s| format!("{:.2}%", s * 100.0)),
            format!("{:.1}rps", r.rps),
            ms(r.p50_ms),
            ms(r.p95_ms),
            ms(r.p99_ms),
            match r.mtls {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
            .to_owned(),
        ]);
    }
    t.render()
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v < 10.0 => format!("{v:.1}ms"),
        Some(v) => format!("{v:.0}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_and_units() {
        let row = StatRow {
            namespace: "default".into(),
            name: "reviews-v1".into(),
            requests: 20.0,
            rps: 2.0,
            success_rate: Some(0.95),
            p50_ms: Some(4.0),
            p95_ms: Some(23.75),
            p99_ms: None,
            mtls: Some(true),
        };
        let text = render(&[row], "WORKLOAD");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NAMESPACE   WORKLOAD     SUCCESS"),
            "{text}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "default",
                "reviews-v1",
                "95.00%",
                "2.0rps",
                "4.0ms",
                "24ms",
                "-",
                "yes"
            ]
        );
    }
}
