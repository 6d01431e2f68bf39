//! `weft analyze` against cases modelled on each comparable case of Istio's own analyzer test
//! table (istio/istio `pkg/config/analysis/analyzers/analyzers_test.go`). The YAML in
//! `tests/istio_parity/` is weft's own, one file per Istio case, and says in its header what
//! it expects:
//!
//! ```text
//! # istio: <Istio's test case name>
//! # checks: WA0122 WA0106        the codes this case is about
//! # expect: WA0122 Gateway default/alpha
//! # mesh-config: <file>          optional, next to the case (`--mesh-config`)
//! ```
//!
//! For the codes in `checks`, the findings must be exactly the `expect` lines (as a multiset
//! of code, kind and namespace/name). Every case is valid configuration, so an error-level
//! finding must be an expected one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weft_api::Severity;
use weft_api::analyze::{MeshSettings, analyze_paths_with};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/istio_parity")
}

struct Case {
    path: PathBuf,
    istio: String,
    checks: Vec<String>,
    expect: BTreeMap<String, usize>,
    mesh_config: Option<PathBuf>,
}

fn read_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).expect("read case");
    let mut case = Case {
        path: path.to_owned(),
        istio: String::new(),
        checks: Vec::new(),
        expect: BTreeMap::new(),
        mesh_config: None,
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        if let Some(v) = rest.strip_prefix("istio: ") {
            case.istio = v.trim().to_owned();
        } else if let Some(v) = rest.strip_prefix("checks: ") {
            case.checks = v.split_whitespace().map(str::to_owned).collect();
        } else if let Some(v) = rest.strip_prefix("expect: ") {
            *case.expect.entry(v.trim().to_owned()).or_default() += 1;
        } else if let Some(v) = rest.strip_prefix("mesh-config: ") {
            case.mesh_config = Some(path.parent().unwrap().join(v.trim()));
        }
    }
    assert!(
        !case.istio.is_empty(),
        "{}: no `# istio:` line",
        path.display()
    );
    assert!(
        !case.checks.is_empty(),
        "{}: no `# checks:` line",
        path.display()
    );
    for e in case.expect.keys() {
        let code = e.split_whitespace().next().unwrap_or_default();
        assert!(
            case.checks.iter().any(|c| c == code),
            "{}: expected {e} is not among the checked codes",
            path.display()
        );
    }
    case
}

fn cases() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/istio_parity")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".yaml") && !name.ends_with(".mesh.yaml")
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| read_case(p)).collect()
}

#[test]
fn weft_reports_what_istio_reports() {
    let cases = cases();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let settings = match &case.mesh_config {
            Some(p) => MeshSettings::from_file(p).expect("mesh config"),
            None => MeshSettings::default(),
        };
        let report = analyze_paths_with(&[&case.path], &settings);
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        let mut stray_errors = Vec::new();
        for d in &report.diagnostics {
            let Some(r) = &d.resource else { continue };
            let key = format!("{} {} {}/{}", d.code, r.kind, r.namespace, r.name);
            if case.checks.iter().any(|c| c == d.code) {
                *got.entry(key.clone()).or_default() += 1;
            }
            if d.severity == Severity::Error && !case.expect.contains_key(&key) {
                stray_errors.push(d.to_string());
            }
        }
        if got != case.expect || !stray_errors.is_empty() || report.unreadable {
            failures.push(format!(
                "{} ({}):\n  expected {:?}\n  got      {:?}\n  errors   {stray_errors:#?}",
                case.path.file_name().unwrap().to_string_lossy(),
                case.istio,
                case.expect,
                got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each case names a different Istio case.
#[test]
fn one_case_per_istio_case() {
    let cases = cases();
    let mut seen = BTreeMap::new();
    for c in &cases {
        if let Some(other) = seen.insert(c.istio.clone(), c.path.clone()) {
            panic!(
                "{} and {} both model {}",
                other.display(),
                c.path.display(),
                c.istio
            );
        }
    }
}
