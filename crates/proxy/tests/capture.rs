//! `weft-proxy capture --dry-run`: the rules of the flag combinations Istio's traffic
//! annotations produce, compared with the files in tests/testdata/capture/ (one a case, the
//! command line on its first line). Regenerate with
//! `WEFT_UPDATE_GOLDEN=1 cargo test -p weft-proxy --test capture` and review the diff
//! against istio-iptables' semantics (docs/CAPTURE.md says what each rule is for).
//!
//! Also: bad values are refused by the real binary, naming the flag, before anything is
//! touched. Applying for real is tests/capture_netns.rs (root only).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/capture")
}

fn capture(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("capture")
        .args(args)
        .output()
        .expect("weft-proxy runs")
}

/// The cases: a file name and the flags, as Istio's injector would pass them for a pod's
/// annotations (the defaults are the injector's `-i '*' -b '*' -d 15090,15021,15020`).
fn cases(resolv_conf: &str) -> Vec<(&'static str, Vec<String>)> {
    let case = |name: &'static str, args: &[&str]| {
        (name, args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    };
    vec![
        // No annotation.
        case("defaults", &[]),
        // traffic.sidecar.istio.io/includeOutboundIPRanges: only the service ranges.
        case("include-cidrs", &["-i", "10.96.0.0/12,fd00:10:96::/112"]),
        // traffic.sidecar.istio.io/excludeOutboundIPRanges: the API server, the metadata server.
        case(
            "exclude-cidrs",
            &["-x", "10.96.0.1/32,169.254.169.254/32,fd00:10:96::1/128"],
        ),
        // traffic.sidecar.istio.io/includeInboundPorts: only the ports listed.
        case("inbound-ports", &["-b", "9080,9443"]),
        // includeInboundPorts "" : no inbound capture at all.
        case("inbound-none", &["-b", ""]),
        // traffic.sidecar.istio.io/excludeInboundPorts: added to the injector's three.
        case(
            "inbound-all-exclude",
            &["-b", "*", "-d", "15090,15021,15020,8080"],
        ),
        // traffic.sidecar.istio.io/excludeOutboundPorts.
        case("outbound-exclude-ports", &["-o", "5432,3306"]),
        // traffic.sidecar.istio.io/includeOutboundPorts with no ranges: only those ports.
        case("outbound-include-ports", &["-i", "", "-q", "6379,11211"]),
        // ISTIO_META_DNS_CAPTURE: the resolvers of resolv.conf.
        case(
            "redirect-dns",
            &["--redirect-dns", "--resolv-conf", resolv_conf],
        ),
        // ... and every destination on port 53.
        case("capture-all-dns", &["--redirect-dns", "--capture-all-dns"]),
        // A proxy running as another user and group.
        case("uid-gid", &["-u", "2000", "-g", "3000"]),
        // traffic.sidecar.istio.io/excludeInterfaces and kubevirtInterfaces.
        case("interfaces", &["-c", "eth1", "-k", "vnet0"]),
        // Other listener ports.
        case("ports", &["-p", "15101", "-z", "15106", "-e", "15108"]),
    ]
}

#[test]
fn dry_run_prints_the_rules_of_each_annotation_combination() {
    let resolv = testdata().join("resolv.conf");
    let resolv = resolv.to_str().expect("utf-8 path");
    let update = std::env::var_os("WEFT_UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for (name, args) in cases(resolv) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = capture(&[&["--dry-run"], args.as_slice()].concat());
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                let a = a.replace(resolv, "resolv.conf");
                if a.is_empty() || a.contains('*') {
                    format!("'{a}'")
                } else {
                    a
                }
            })
            .collect();
        let got = format!(
            "# weft-proxy capture --dry-run{}\n{}",
            shown.iter().map(|a| format!(" {a}")).collect::<String>(),
            String::from_utf8_lossy(&out.stdout)
        );
        let path = testdata().join(format!("{name}.golden"));
        if update {
            std::fs::write(&path, &got).expect("write golden");
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            stale.push(format!("{name}:\n--- want\n{want}\n--- got\n{got}"));
        }
    }
    assert!(
        stale.is_empty(),
        "dry-run output changed (regenerate: see the doc comment):\n{}",
        stale.join("\n")
    );
}

#[test]
fn bad_values_are_refused_naming_the_flag_and_nothing_is_applied() {
    for (args, says) in [
        (&["-p", "abc"][..], "-p/--envoy-port: invalid value \"abc\""),
        (
            &["-p", "70000"][..],
            "-p/--envoy-port: invalid value \"70000\"",
        ),
        (
            &["-i", "10.0.0.0/33"][..],
            "-i/--istio-service-cidr: invalid value \"10.0.0.0/33\"",
        ),
        (
            &["-m", "FOO"][..],
            "-m/--istio-inbound-interception-mode: invalid value \"FOO\"",
        ),
        (
            &["-m", "TPROXY"][..],
            "TPROXY interception is not supported",
        ),
        (&["-d", "15090,x"][..], "-d/--istio-local-exclude-ports"),
        (
            &["--dry-run", "--force-iptables-binary", "xtables"][..],
            "--force-iptables-binary: invalid value \"xtables\"",
        ),
    ] {
        // Not a dry run: a bad value must stop it before any iptables command.
        let out = capture(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(err.contains("nothing was applied"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // An unreadable resolv.conf with --redirect-dns is refused the same way.
    let out = capture(&[
        "--dry-run",
        "--redirect-dns",
        "--resolv-conf",
        "/nonexistent/resolv.conf",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--resolv-conf") && err.contains("/nonexistent/resolv.conf"),
        "{err}"
    );
}

#[test]
fn help_names_istio_iptables_flags() {
    let out = capture(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--envoy-port",
        "--inbound-capture-port",
        "--proxy-uid",
        "--proxy-gid",
        "--istio-inbound-interception-mode",
        "--istio-service-cidr",
        "--istio-service-exclude-cidr",
        "--istio-inbound-ports",
        "--istio-local-exclude-ports",
        "--istio-local-outbound-ports-exclude",
        "--istio-outbound-ports",
        "--redirect-dns",
        "--dry-run",
        "--cleanup",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    assert!(help.contains("weft-proxy capture"), "{help}");
}
