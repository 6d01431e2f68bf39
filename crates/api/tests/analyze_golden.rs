//! `tests/broken/` holds one deliberately broken file per finding code on top of a clean
//! `base.yaml`. Analyzing the directory must report each code exactly once, with exactly the
//! message and location in `tests/broken/expected.txt`.
//!
//! After an intended change of wording, regenerate with
//! `WEFT_UPDATE_GOLDEN=1 cargo test -p weft-api --test analyze_golden` and review the diff.

use std::collections::BTreeMap;
use std::path::Path;

use weft_api::analyze::{Report, analyze_paths};
use weft_api::diag::code;
use weft_api::{Diagnostic, Severity};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One line per finding, with paths relative to the crate so the file is machine-independent.
fn render(report: &Report) -> String {
    let mut out = String::new();
    for d in &report.diagnostics {
        let mut d: Diagnostic = d.clone();
        if let Some(loc) = &mut d.location {
            loc.file = loc
                .file
                .strip_prefix(manifest_dir())
                .unwrap_or(&loc.file)
                .to_owned();
        }
        let line = d
            .to_string()
            .replace(&format!("{}/", manifest_dir().display()), "");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn each_code_with_exact_message_and_location() {
    let report = analyze_paths(&[manifest_dir().join("tests/broken")]);
    let got = render(&report);
    let expected_path = manifest_dir().join("tests/broken/expected.txt");
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert_eq!(
        got, expected,
        "analyzer output changed; see the doc comment to regenerate"
    );

    let mut per_code: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &report.diagnostics {
        *per_code.entry(d.code).or_default() += 1;
    }
    let all = [
        code::UNREADABLE,
        code::SYNTAX,
        code::SCHEMA,
        code::DEPRECATED,
        code::SKIPPED,
        code::DUPLICATE,
        code::GATEWAY_NOT_FOUND,
        code::HOST_NOT_FOUND,
        code::SUBSET_NOT_FOUND,
        code::CONFLICTING_VIRTUAL_SERVICES,
        code::CONFLICTING_DESTINATION_RULES,
        code::GATEWAY_SELECTOR_NO_WORKLOAD,
        code::PORT_PROTOCOL_UNKNOWN,
        code::MISSING_APP_VERSION_LABELS,
        code::PORT_SELECTED_BY_TWO_SERVICES,
        code::DESTINATION_PORT_NOT_FOUND,
        code::DESTINATION_PORT_REQUIRED,
        code::DELEGATE_NOT_FOUND,
        code::DELEGATE_HAS_HOSTS,
        code::DELEGATE_NOT_EXPORTED,
        code::DELEGATE_NOT_REFERENCED,
        code::WORKLOAD_NOT_RUNNABLE,
        code::GATEWAY_SECRET_NOT_FOUND,
    ];
    for c in all {
        // A conflict is reported on both resources of the pair, as Istio does.
        let want = if c == code::CONFLICTING_VIRTUAL_SERVICES {
            2
        } else {
            1
        };
        assert_eq!(
            per_code.get(c),
            Some(&want),
            "code {c} should be reported {want} time(s): {per_code:?}"
        );
    }
    assert_eq!(per_code.len(), all.len(), "unexpected codes: {per_code:?}");
    // Each file is named after the code it shows; the finding must come from that file.
    for d in &report.diagnostics {
        let Some(loc) = &d.location else { continue };
        let file = loc.file.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            file.starts_with(&d.code.to_lowercase()),
            "{} reported in {file}",
            d.code
        );
    }
    assert!(report.unreadable);
}

#[test]
fn base_alone_is_clean() {
    let report = analyze_paths(&[manifest_dir().join("tests/broken/base.yaml")]);
    assert!(report.diagnostics.is_empty(), "{}", render(&report));
    assert_eq!(report.resources, 4);
}

#[test]
fn examples_are_clean() {
    let examples = manifest_dir().join("../../examples");
    let report = analyze_paths(&[&examples]);
    let noisy: Vec<String> = report
        .diagnostics
        .iter()
        // Task files replacing each other (kubectl apply semantics) are expected.
        .filter(|d| !(d.severity == Severity::Info && d.code == code::DUPLICATE))
        .map(ToString::to_string)
        .collect();
    assert!(
        noisy.is_empty(),
        "examples/ should analyze clean:\n{}",
        noisy.join("\n")
    );
    assert!(report.resources >= 20, "{} resources", report.resources);
}
