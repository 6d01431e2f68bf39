//! `weft proxy capture`: the hidden `proxy` command forwards to weft-proxy's command line, so
//! the capture step (istio-init's job) runs from the `weft` executable too.

use std::process::{Command, Output};

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .output()
        .expect("weft runs")
}

#[test]
fn weft_proxy_capture_prints_the_rules_and_refuses_bad_values() {
    let out = weft(&["proxy", "capture", "--dry-run", "-p", "15101", "-u", "2000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("# IPv4: iptables-restore --noflush"),
        "{text}"
    );
    assert!(
        text.contains("# IPv6: ip6tables-restore --noflush"),
        "{text}"
    );
    assert!(
        text.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15101"),
        "{text}"
    );
    assert!(
        text.contains("-A ISTIO_OUTPUT -m owner --uid-owner 2000 -j RETURN"),
        "{text}"
    );

    let out = weft(&["proxy", "capture", "-p", "abc"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("-p/--envoy-port: invalid value \"abc\""),
        "{err}"
    );

    let out = weft(&["proxy", "capture", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("weft proxy capture"));
}
