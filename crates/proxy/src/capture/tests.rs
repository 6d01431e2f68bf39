use super::apply::{Saved, restore_input};
use super::*;

fn config(args: &[&str]) -> Config {
    Config::from_args(args.iter().copied()).expect("valid flags")
}

fn error(args: &[&str]) -> String {
    match Config::from_args(args.iter().copied()) {
        Ok(c) => panic!("{args:?} accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_istio_iptables_with_the_injector_values() {
    let c = config(&[]);
    assert_eq!(c.proxy_port, 15001);
    assert_eq!(c.inbound_capture_port, 15006);
    assert_eq!(c.inbound_tunnel_port, 15008);
    assert_eq!(c.proxy_uids, vec![1337]);
    assert_eq!(c.proxy_gids, vec![1337]);
    assert_eq!(c.inbound_ports, Select::All);
    assert_eq!(c.inbound_ports_exclude, vec![15090, 15021, 15020]);
    assert_eq!(c.outbound_ranges, Select::All);
    assert!(c.outbound_ranges_exclude.is_empty());
    assert!(!c.redirect_dns);
    // -g follows -u when not given, as in istio-iptables.
    let c = config(&["-u", "2000"]);
    assert_eq!(c.proxy_gids, vec![2000]);
    let c = config(&["-u", "2000", "-g", "3000,3001"]);
    assert_eq!(c.proxy_gids, vec![3000, 3001]);
}

#[test]
fn long_names_are_istio_iptables() {
    let c = config(&[
        "--envoy-port=15101",
        "--inbound-capture-port=15106",
        "--inbound-tunnel-port=15108",
        "--proxy-uid=7",
        "--proxy-gid=8",
        "--istio-inbound-interception-mode=REDIRECT",
        "--istio-inbound-ports=80,443",
        "--istio-local-exclude-ports=9000",
        "--istio-service-cidr=10.0.0.0/8",
        "--istio-service-exclude-cidr=10.1.0.0/16",
        "--istio-outbound-ports=5432",
        "--istio-local-outbound-ports-exclude=3306",
        "--istio-exclude-interfaces=eth9",
        "--kube-virt-interfaces=vnet0",
        "--redirect-dns",
        "--capture-all-dns",
    ]);
    assert_eq!(
        (c.proxy_port, c.inbound_capture_port, c.inbound_tunnel_port),
        (15101, 15106, 15108)
    );
    assert_eq!((c.proxy_uids[0], c.proxy_gids[0]), (7, 8));
    assert_eq!(c.inbound_ports, Select::Only(vec![80, 443]));
    assert_eq!(c.inbound_ports_exclude, vec![9000]);
    assert_eq!(c.outbound_ports_include, vec![5432]);
    assert_eq!(c.outbound_ports_exclude, vec![3306]);
    assert_eq!(c.exclude_interfaces, vec!["eth9"]);
    assert_eq!(c.kube_virt_interfaces, vec!["vnet0"]);
    assert!(c.redirect_dns && c.capture_all_dns);
    // An empty -b captures no inbound port; list spacing is forgiven, as istio-iptables does.
    assert_eq!(config(&["-b", ""]).inbound_ports, Select::Only(vec![]));
    assert_eq!(
        config(&["-b", " 80, ,81 "]).inbound_ports,
        Select::Only(vec![80, 81])
    );
    // Given twice, the last wins (pflag's behaviour, which istio-iptables has).
    assert_eq!(config(&["-p", "1", "-p", "2"]).proxy_port, 2);
    assert!(config(&["--redirect-dns", "--redirect-dns"]).redirect_dns);
}

#[test]
fn cidrs_are_kept_as_their_network() {
    let c = config(&["-i", "10.1.2.3/8,fd00::1/16", "-x", "192.168.1.1/32"]);
    let Select::Only(ranges) = &c.outbound_ranges else {
        panic!("{:?}", c.outbound_ranges)
    };
    let shown: Vec<String> = ranges.iter().map(Cidr::to_string).collect();
    assert_eq!(shown, ["10.0.0.0/8", "fd00::/16"]);
    assert_eq!(c.outbound_ranges_exclude[0].to_string(), "192.168.1.1/32");
    assert_eq!(config(&["-i", "0.0.0.0/0"]).outbound_ranges, {
        Select::Only(vec![Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            len: 0,
        }])
    });
}

#[test]
fn bad_values_name_the_flag_and_the_value() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["-p", "abc"],
            &["-p/--envoy-port", "\"abc\"", "1 to 65535"],
        ),
        (&["-p", "70000"], &["-p/--envoy-port", "\"70000\""]),
        (&["-p", "0"], &["-p/--envoy-port", "\"0\""]),
        (&["-z", "-1"], &["-z/--inbound-capture-port", "\"-1\""]),
        (
            &["--inbound-tunnel-port", "x"],
            &["-e/--inbound-tunnel-port"],
        ),
        (
            &["-i", "10.0.0.0/33"],
            &[
                "-i/--istio-service-cidr",
                "\"10.0.0.0/33\"",
                "prefix length",
            ],
        ),
        (
            &["-i", "10.0.0.0"],
            &["-i/--istio-service-cidr", "CIDR form"],
        ),
        (
            &["-i", "10.0.0.0/8,*"],
            &["-i/--istio-service-cidr", "whole value"],
        ),
        (
            &["-x", "10.0.0.0/8,300.1.1.1/32"],
            &[
                "-x/--istio-service-exclude-cidr",
                "\"300.1.1.1/32\": \"300.1.1.1\" is not an IP address",
            ],
        ),
        (&["-x", "*"], &["-x/--istio-service-exclude-cidr", "\"*\""]),
        (&["-i", "fd00::/129"], &["-i/--istio-service-cidr", "0-128"]),
        (
            &["-m", "FOO"],
            &[
                "-m/--istio-inbound-interception-mode",
                "\"FOO\"",
                "REDIRECT",
            ],
        ),
        (
            &["-m", "TPROXY"],
            &[
                "-m/--istio-inbound-interception-mode",
                "TPROXY interception is not supported",
            ],
        ),
        (
            &["-b", "80,http"],
            &["-b/--istio-inbound-ports", "\"80,http\"", "\"http\""],
        ),
        (
            &["-d", "15090,99999"],
            &["-d/--istio-local-exclude-ports", "\"99999\""],
        ),
        (
            &["-o", "1,2,x"],
            &["-o/--istio-local-outbound-ports-exclude", "\"x\""],
        ),
        (
            &["-q", "65536"],
            &["-q/--istio-outbound-ports", "\"65536\""],
        ),
        (&["-u", "istio-proxy"], &["-u/--proxy-uid", "numeric id"]),
        (&["-u", ""], &["-u/--proxy-uid", "at least one"]),
        (&["-g", "-5"], &["-g/--proxy-gid", "\"-5\""]),
        (
            &["-c", "a-very-long-interface-name"],
            &["-c/--istio-exclude-interfaces", "not an interface name"],
        ),
        (
            &["-k", "eth0/1"],
            &["-k/--kube-virt-interfaces", "\"eth0/1\""],
        ),
        // One bad item of several is named.
        (
            &["-o", "1,2,x"],
            &["-o/--istio-local-outbound-ports-exclude: invalid value \"1,2,x\": \"x\": a port"],
        ),
        (
            &["-u", "1337,istio-proxy"],
            &["\"istio-proxy\": not a numeric id"],
        ),
    ];
    for (args, wanted) in cases {
        let e = error(args);
        for w in *wanted {
            assert!(e.contains(w), "{args:?}: {e:?} does not say {w:?}");
        }
    }
    // An unknown flag is clap's usage error, naming it.
    assert!(error(&["--nope"]).contains("--nope"));
}

#[test]
fn annotations_are_checked_as_their_flags_and_named() {
    let mut c = config(&[]);
    let annotations = [
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.96.0.0/12",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "10.96.0.1/32",
        ),
        ("traffic.sidecar.istio.io/includeInboundPorts", "9080"),
        ("traffic.sidecar.istio.io/excludeInboundPorts", "8080"),
        ("traffic.sidecar.istio.io/includeOutboundPorts", "6379"),
        ("traffic.sidecar.istio.io/excludeOutboundPorts", "5432,3306"),
        ("traffic.sidecar.istio.io/excludeInterfaces", "eth1"),
        ("traffic.sidecar.istio.io/kubevirtInterfaces", "vnet0"),
        ("sidecar.istio.io/interceptionMode", "REDIRECT"),
        ("sidecar.istio.io/logLevel", "debug"),
    ];
    for (name, value) in annotations {
        c.apply_annotation(name, value).expect(name);
    }
    assert_eq!(
        c.outbound_ranges.clone(),
        config(&["-i", "10.96.0.0/12"]).outbound_ranges
    );
    assert_eq!(c.inbound_ports, Select::Only(vec![9080]));
    // As the injector: the always-excluded ports stay.
    assert_eq!(c.inbound_ports_exclude, vec![15090, 15021, 15020, 8080]);
    assert_eq!(c.outbound_ports_include, vec![6379]);
    assert_eq!(c.outbound_ports_exclude, vec![5432, 3306]);
    assert_eq!(c.exclude_interfaces, vec!["eth1"]);

    let before = c.clone();
    for (name, value, says) in [
        (
            "traffic.sidecar.istio.io/excludeInboundPorts",
            "abc",
            "\"abc\"",
        ),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.0/33",
            "prefix length",
        ),
        (
            "traffic.sidecar.istio.io/includeInboundPorts",
            "80,99999",
            "\"99999\"",
        ),
        (
            "sidecar.istio.io/interceptionMode",
            "TPROXY",
            "not supported",
        ),
    ] {
        let e = c.apply_annotation(name, value).unwrap_err().to_string();
        assert!(e.contains(&format!("annotation {name}")), "{e}");
        assert!(e.contains(value) && e.contains(says), "{e}");
    }
    // A refused annotation changes nothing.
    assert_eq!(c, before);
}

#[test]
fn resolvers_come_from_resolv_conf() {
    let text = "# comment\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\n\
                nameserver fd00::10\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n";
    let got: Vec<String> = nameservers(text).iter().map(ToString::to_string).collect();
    assert_eq!(got, ["10.96.0.10", "fd00::10", "fe80::1"]);
}

fn lines(rules: &Rules, family: Family) -> Vec<String> {
    rules
        .to_save_format(family)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn the_sidecar_and_its_passthrough_are_never_captured() {
    let r = rules(&config(&[]));
    for (family, passthrough, loopback) in [
        (Family::V4, "127.0.0.6/32", "127.0.0.1/32"),
        (Family::V6, "::6/128", "::1/128"),
    ] {
        let l = lines(&r, family);
        let pos = |needle: &str| {
            l.iter()
                .position(|x| x == needle)
                .unwrap_or_else(|| panic!("{family:?}: no {needle:?} in {l:#?}"))
        };
        let passthrough = pos(&format!("-A ISTIO_OUTPUT -o lo -s {passthrough} -j RETURN"));
        let own = pos("-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN");
        let own_gid = pos("-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN");
        let local = pos(&format!("-A ISTIO_OUTPUT -d {loopback} -j RETURN"));
        let redirect = pos("-A ISTIO_OUTPUT -j ISTIO_REDIRECT");
        // The returns come before the catch-all redirect, or they would be useless.
        assert!(passthrough < own && own < own_gid && own_gid < local && local < redirect);
        // Inbound: the Prometheus, health and status ports, and the tunnel port, are left.
        for p in [15008, 15090, 15021, 15020] {
            pos(&format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN"));
        }
        assert!(
            pos("-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN")
                < pos("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
        );
    }
}

#[test]
fn ranges_go_to_their_family() {
    let r = rules(&config(&[
        "-i",
        "10.0.0.0/8,fd00::/8",
        "-x",
        "10.9.0.0/16,fd00:9::/32",
    ]));
    let v4 = r.to_save_format(Family::V4);
    let v6 = r.to_save_format(Family::V6);
    assert!(v4.contains("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT"));
    assert!(v4.contains("-A ISTIO_OUTPUT -d 10.9.0.0/16 -j RETURN"));
    assert!(!v4.contains("fd00"));
    assert!(v6.contains("-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT"));
    assert!(v6.contains("-A ISTIO_OUTPUT -d fd00:9::/32 -j RETURN"));
    assert!(!v6.contains("10."));
    // No catch-all redirect when ranges are listed.
    assert!(!v4.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
    // Loopback named in the ranges: an app's own loopback traffic is captured too.
    let r = rules(&config(&["-i", "127.0.0.1/32"]));
    assert!(
        !r.to_save_format(Family::V4)
            .contains("-o lo -m owner ! --uid-owner 1337 -j RETURN")
    );
}

#[test]
fn dns_without_resolvers_or_capture_all_captures_nothing() {
    // --redirect-dns reads the resolvers; none known and not all DNS: no DNS rules (as
    // istio-iptables, which warns).
    let mut c = config(&[]);
    c.redirect_dns = true;
    assert!(
        !rules(&c)
            .to_save_format(Family::V4)
            .contains("ISTIO_OUTPUT_DNS")
    );
    c.dns_servers = vec!["10.96.0.10".parse().unwrap()];
    let r = rules(&c);
    let v4 = r.to_save_format(Family::V4);
    assert!(v4.contains(
        "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 15053"
    ));
    // No IPv6 resolver: IPv6's nat never jumps to the DNS chain.
    let v6 = r.to_save_format(Family::V6);
    assert!(!v6.contains("-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS"), "{v6}");
    assert!(!v6.contains("REDIRECT --to-ports 15053"), "{v6}");
}

const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_OUTPUT_DNS - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -o eth9 -j RETURN
-A OUTPUT -j ISTIO_OUTPUT
-A OUTPUT -o eth8 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
";

#[test]
fn reapplying_replaces_instead_of_duplicating() {
    let saved = Saved::parse(SAVED);
    let r = rules(&config(&["-c", "eth9"]));
    let input = restore_input(&r, Family::V4, &saved, true);
    let l: Vec<&str> = input.lines().collect();
    // Existing jumps and our own interface RETURN are deleted before being added again;
    // another's rules (eth8, KUBE-SERVICES) are left.
    for gone in [
        "-D PREROUTING -p tcp -j ISTIO_INBOUND",
        "-D OUTPUT -j ISTIO_OUTPUT",
        "-D OUTPUT -o eth9 -j RETURN",
    ] {
        assert!(l.contains(&gone), "no {gone:?} in {input}");
    }
    assert!(
        !input.contains("eth8") && !input.contains("KUBE"),
        "{input}"
    );
    assert!(!input.contains("*filter"), "{input}");
    // The DNS chain is not in the new set: emptied, then removed.
    assert!(l.contains(&":ISTIO_OUTPUT_DNS - [0:0]") && l.contains(&"-X ISTIO_OUTPUT_DNS"));
    let adds = l
        .iter()
        .filter(|x| **x == "-A OUTPUT -j ISTIO_OUTPUT")
        .count();
    assert_eq!(adds, 1, "{input}");
    // Deletions come before the adds, within one table transaction.
    let del = l
        .iter()
        .position(|x| *x == "-D OUTPUT -j ISTIO_OUTPUT")
        .unwrap();
    let add = l
        .iter()
        .position(|x| *x == "-A OUTPUT -j ISTIO_OUTPUT")
        .unwrap();
    assert!(del < add);
}

#[test]
fn cleanup_removes_our_chains_and_jumps_only() {
    let saved = Saved::parse(SAVED);
    let r = rules(&config(&[]));
    let input = restore_input(&r, Family::V4, &saved, false);
    let expected = "\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_OUTPUT_DNS - [0:0]
-D PREROUTING -p tcp -j ISTIO_INBOUND
-D OUTPUT -j ISTIO_OUTPUT
-X ISTIO_INBOUND
-X ISTIO_OUTPUT
-X ISTIO_OUTPUT_DNS
COMMIT
";
    assert_eq!(input, expected);
    // Nothing of ours: nothing to do.
    let clean = Saved::parse("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -o eth9 -j RETURN\nCOMMIT\n");
    assert_eq!(restore_input(&r, Family::V4, &clean, false), "");
}

#[test]
fn backend_choice_is_checked() {
    assert_eq!(
        apply::Choice::from_flag(None).unwrap(),
        apply::Choice::Detect
    );
    assert_eq!(
        apply::Choice::from_flag(Some("nft")).unwrap(),
        apply::Choice::Nft
    );
    let e = apply::Choice::from_flag(Some("iptables"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--force-iptables-binary") && e.contains("\"iptables\""),
        "{e}"
    );
}
