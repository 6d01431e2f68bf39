//! `weft analyze` as a user runs it: the real binary, its output and exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .output()
        .expect("run weft")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn examples_exit_zero() {
    let o = weft(&["analyze", "examples/"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(!stdout(&o).contains("error["), "{}", stdout(&o));
    assert!(!stdout(&o).contains("warning["), "{}", stdout(&o));
}

#[test]
fn readme_example_is_what_the_user_sees() {
    let o = weft(&[
        "analyze",
        "crates/api/tests/broken/base.yaml",
        "crates/api/tests/broken/wa0003-unknown-field.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let out = stdout(&o);
    for line in out.lines() {
        assert!(
            readme.contains(line),
            "README example is stale; weft prints:\n{out}"
        );
    }
}

#[test]
fn errors_exit_one_warnings_do_not() {
    let o = weft(&[
        "analyze",
        "crates/api/tests/broken/base.yaml",
        "crates/api/tests/broken/wa0106-gateway-selector.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("warning[WA0106]"));
    let o = weft(&[
        "analyze",
        "crates/api/tests/broken/base.yaml",
        "crates/api/tests/broken/wa0103-subset-not-found.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
}

#[test]
fn unreadable_input_exits_two() {
    let o = weft(&["analyze", "crates/api/tests/broken"]);
    assert_eq!(o.status.code(), Some(2));
    let o = weft(&["analyze", "no/such/dir"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains("error[WA0001]"), "{}", stdout(&o));
}

#[test]
fn json_output() {
    let o = weft(&[
        "analyze",
        "-o",
        "json",
        "crates/api/tests/broken/base.yaml",
        "crates/api/tests/broken/wa0102-host-not-found.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON array");
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    let d = &items[0];
    assert_eq!(d["code"], "WA0102");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["resource"]["kind"], "VirtualService");
    assert_eq!(d["field"], "spec.http[0].route[0].destination.host");
    assert_eq!(d["location"]["line"], 8);
}

#[test]
fn threshold_hides_lower_severities() {
    let o = weft(&[
        "analyze",
        "--output-threshold",
        "error",
        "crates/api/tests/broken/base.yaml",
        "crates/api/tests/broken/wa0106-gateway-selector.yaml",
    ]);
    assert!(!stdout(&o).contains("WA0106"));
    assert!(stdout(&o).contains("1 warning(s)"), "{}", stdout(&o));
}

#[test]
fn completion_scripts_name_the_commands() {
    let bash = weft(&["completion", "bash"]);
    assert_eq!(bash.status.code(), Some(0));
    let script = stdout(&bash);
    assert!(
        script.contains("complete -F") && script.contains("proxy-status"),
        "{script}"
    );
    let zsh = weft(&["completion", "zsh"]);
    assert!(
        stdout(&zsh).starts_with("#compdef weft"),
        "{}",
        stdout(&zsh)
    );
    let wrong = weft(&["completion", "tcsh"]);
    assert_eq!(
        wrong.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn mesh_config_changes_what_is_found() {
    let case = "crates/api/tests/istio_parity/37-service-entry-addresses-auto-allocated.yaml";
    let o = weft(&["analyze", case]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("warning[WA0130]"), "{}", stdout(&o));
    let o = weft(&[
        "analyze",
        "--mesh-config",
        "crates/api/tests/istio_parity/dns-auto-allocate.mesh.yaml",
        case,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(!stdout(&o).contains("WA0130"), "{}", stdout(&o));
    let o = weft(&["analyze", "--mesh-config", "no/such/mesh.yaml", case]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot read mesh config no/such/mesh.yaml"),
        "{err}"
    );
}
