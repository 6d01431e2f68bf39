//! `weft analyze PATH...`: load, validate and analyze configuration, print findings.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use weft_api::{Diagnostic, Severity};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (read recursively: .yaml, .yml, .json).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Istio's MeshConfig YAML (as `istioctl analyze --meshConfigFile`): the default
    /// `exportTo`s, the root namespace and `defaultConfig.proxyMetadata` (DNS capture) change
    /// what some checks find.
    #[arg(long = "mesh-config", value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// Lowest severity to print (findings below it are still counted in the summary).
    #[arg(long = "output-threshold", value_enum, default_value_t = Threshold::Info)]
    threshold: Threshold,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Threshold {
    Info,
    Warning,
    Error,
}

impl Threshold {
    fn admits(self, s: Severity) -> bool {
        let min = match self {
            Threshold::Info => Severity::Info,
            Threshold::Warning => Severity::Warning,
            Threshold::Error => Severity::Error,
        };
        s >= min
    }
}

pub fn run(args: &Args) -> ExitCode {
    let settings = match &args.mesh_config {
        Some(path) => match weft_api::analyze::MeshSettings::from_file(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("weft analyze: {e}");
                return ExitCode::from(2);
            }
        },
        None => weft_api::analyze::MeshSettings::default(),
    };
    let report = weft_api::analyze::analyze_paths_with(&args.paths, &settings);
    let shown: Vec<&Diagnostic> = report
        .diagnostics
        .iter()
        .filter(|d| args.threshold.admits(d.severity))
        .collect();
    let mut out = io::stdout().lock();
    let written = match args.output {
        Format::Json => serde_json::to_writer_pretty(&mut out, &shown)
            .map_err(io::Error::other)
            .and_then(|()| writeln!(out)),
        Format::Text => print_text(&mut out, &shown, &report),
    };
    // A closed pipe (`weft analyze . | head`) is not an error worth a panic.
    if let Err(e) = written
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        eprintln!("weft analyze: {e}");
    }
    if report.unreadable {
        ExitCode::from(2)
    } else if report.count(Severity::Error) > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_text(
    out: &mut impl Write,
    shown: &[&Diagnostic],
    report: &weft_api::analyze::Report,
) -> io::Result<()> {
    let color = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for d in shown {
        let line = d.to_string();
        if color {
            let code = match d.severity {
                Severity::Error => "31",
                Severity::Warning => "33",
                Severity::Info => "36",
            };
            writeln!(out, "\x1b[{code}m{line}\x1b[0m")?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    let (e, w, i) = (
        report.count(Severity::Error),
        report.count(Severity::Warning),
        report.count(Severity::Info),
    );
    if e + w + i == 0 {
        writeln!(
            out,
            "✔ No validation issues found when analyzing {} resource(s) in {} file(s).",
            report.resources, report.files
        )
    } else {
        let rejected = match report.rejected {
            0 => String::new(),
            n => format!(" ({n} more rejected for their errors)"),
        };
        writeln!(
            out,
            "{e} error(s), {w} warning(s), {i} info in {} resource(s){rejected} from {} file(s).",
            report.resources, report.files
        )
    }
}
