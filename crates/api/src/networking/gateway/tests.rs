use super::*;
use crate::validate::test_support::{errors, warnings};

fn parse(yaml: &str) -> Gateway {
    crate::validate::test_support::parse(yaml)
}

fn check(cases: &[(&str, &[(&str, &str)])], findings: fn(&Gateway) -> Vec<(String, String)>) {
    for (yaml, want) in cases {
        let got = findings(&parse(yaml));
        assert_eq!(got.len(), want.len(), "{yaml}\n{got:#?}");
        for ((path, msg), (want_path, want_msg)) in got.iter().zip(want.iter()) {
            assert_eq!(path, want_path, "{yaml}\n{got:#?}");
            assert!(msg.contains(want_msg), "{yaml}: {msg:?} lacks {want_msg:?}");
        }
    }
}

#[test]
fn valid_examples() {
    let cases = [
        // Bookinfo's ingress gateway.
        r#"
selector:
  istio: ingressgateway
servers:
- port:
    number: 80
    name: http
    protocol: HTTP
  hosts:
  - "*"
"#,
        // HTTPS with a Kubernetes secret, plus an HTTP server redirecting to it.
        r#"
selector: {istio: ingressgateway}
servers:
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: [httpbin.example.com]
  tls:
    mode: SIMPLE
    credentialName: httpbin-credential
- port: {number: 80, name: http, protocol: http}
  hosts: [httpbin.example.com]
  tls: {httpsRedirect: true}
"#,
        // Mutual TLS with file paths, namespaced hosts and TLS versions.
        r#"
servers:
- port: {number: 443, name: https-mtls, protocol: HTTPS}
  hosts: ["prod/*.example.com", "./bookinfo.com", "*/foo.com"]
  tls:
    mode: MUTUAL
    serverCertificate: /etc/certs/server.pem
    privateKey: /etc/certs/key.pem
    caCertificates: /etc/certs/ca.pem
    minProtocolVersion: TLSV1_2
    maxProtocolVersion: TLSV1_3
    cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]"]
"#,
        // TLS passthrough and the east-west gateway's AUTO_PASSTHROUGH.
        r#"
selector: {istio: eastwestgateway}
servers:
- port: {number: 15443, name: tls, protocol: TLS}
  hosts: ["*.local"]
  tls: {mode: AUTO_PASSTHROUGH}
- port: {number: 443, name: tls-passthrough, protocol: TLS}
  hosts: [nginx.example.com]
  tls: {mode: PASSTHROUGH}
"#,
        // Egress gateway with ISTIO_MUTUAL, MONGO, and an internal UDS listener.
        r#"
servers:
- port: {number: 443, name: tls-egress, protocol: TLS}
  hosts: [edition.cnn.com]
  tls: {mode: ISTIO_MUTUAL}
- port: {number: 27018, name: mongo, protocol: MONGO}
  hosts: ["*"]
- port: {number: 0, name: uds, protocol: HTTP}
  bind: unix:///var/run/gw.sock
  hosts: ["*"]
- port: {number: 8080, name: internal, protocol: GRPC}
  bind: 127.0.0.1
  hosts: ["10.0.0.1"]
  name: internal-grpc
"#,
        // Two certificates from secrets.
        r#"
servers:
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: ["*"]
  tls: {mode: SIMPLE, credentialNames: [rsa-cert, ecdsa-cert]}
"#,
    ];
    for yaml in cases {
        let spec = parse(yaml);
        assert_eq!(errors(&spec), [], "{yaml}");
        assert_eq!(warnings(&spec), [], "{yaml}");
    }
}

#[test]
fn invalid_servers() {
    let http = "port: {number: 80, name: http, protocol: HTTP}";
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "selector: {app: gw}",
            &[("spec.servers", "at least one server")],
        ),
        (
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}",
            &[("spec.servers[0].hosts", "at least one host")],
        ),
        (
            "servers:\n- hosts: ['*']",
            &[("spec.servers[0].port", "port is required")],
        ),
        (
            "servers:\n- port: {number: 0, name: http, protocol: HTTP}\n  hosts: ['*']",
            &[("spec.servers[0].port.number", "1..65535")],
        ),
        (
            "servers:\n- port: {number: 80, name: http, protocol: HTTPX}\n  hosts: ['*']",
            &[(
                "spec.servers[0].port.protocol",
                "unsupported protocol \"HTTPX\"",
            )],
        ),
        (
            "servers:\n- port: {number: 80, name: http}\n  hosts: ['*']",
            &[("spec.servers[0].port.protocol", "protocol is required")],
        ),
        (
            "servers:\n- port: {number: 80, protocol: HTTP}\n  hosts: ['*']",
            &[("spec.servers[0].port.name", "port name is required")],
        ),
        (
            "servers:\n- port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}\n  hosts: ['*']",
            &[("spec.servers[0].port.targetPort", "no effect on a Gateway")],
        ),
        (
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [reviews, 'BAD/x.com', '*bar.com']",
            &[
                ("spec.servers[0].hosts[0]", "short names"),
                ("spec.servers[0].hosts[1]", ""),
                ("spec.servers[0].hosts[2]", "partial wildcard"),
            ],
        ),
        (
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n  bind: not-an-ip",
            &[("spec.servers[0].bind", "not a valid IP")],
        ),
        (
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n  bind: unix://relative.sock",
            &[
                ("spec.servers[0].bind", "absolute path"),
                ("spec.servers[0].port.number", "must be 0"),
            ],
        ),
        (
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']",
            &[("spec.servers[0].tls", "must have TLS settings")],
        ),
        (
            "servers:\n- port: {number: 31400, name: tcp, protocol: TCP}\n  hosts: ['*']\n  tls: {mode: SIMPLE, credentialName: c}",
            &[("spec.servers[0].tls", "cannot have TLS settings")],
        ),
        (
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n  tls: {mode: SIMPLE, credentialName: c}",
            &[("spec.servers[0].tls", "plain-text HTTP server")],
        ),
        (
            &format!("servers:\n- {http}\n  hosts: ['*']\n- {http}\n  hosts: ['a.com']"),
            &[("spec.servers[1].port", "must be unique")],
        ),
        (
            "servers:\n- port: {number: 80, name: a, protocol: HTTP}\n  hosts: ['*']\n  name: s\n- port: {number: 81, name: b, protocol: HTTP}\n  hosts: ['*']\n  name: s",
            &[("spec.servers[1].name", "server names must be unique")],
        ),
        (
            "selector: {'bad key!': x}\nservers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']",
            &[("spec.selector[bad key!]", "label key")],
        ),
    ];
    check(cases, errors);
}

#[test]
fn invalid_tls() {
    let server =
        "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls: ";
    let p = "spec.servers[0].tls";
    let cases: Vec<(String, Vec<(String, &str)>)> = vec![
            (
                "{mode: SIMPLE}".into(),
                vec![(format!("{p}.serverCertificate"), "server certificate"), (format!("{p}.privateKey"), "private key")],
            ),
            (
                "{mode: MUTUAL, serverCertificate: c, privateKey: k}".into(),
                vec![(format!("{p}.caCertificates"), "client CA bundle")],
            ),
            (
                "{mode: OPTIONAL_MUTUAL, tlsCertificates: [{serverCertificate: c}]}".into(),
                vec![
                    (format!("{p}.caCertificates"), "client CA bundle"),
                    (format!("{p}.tlsCertificates[0].privateKey"), "private key"),
                ],
            ),
            (
                "{mode: ISTIO_MUTUAL, credentialName: c, privateKey: k}".into(),
                vec![(format!("{p}.privateKey"), "must not be set"), (format!("{p}.credentialName"), "must not be set")],
            ),
            (
                "{mode: SIMPLE, credentialName: a, credentialNames: [b]}".into(),
                vec![(p.to_owned(), "only one certificate source")],
            ),
            (
                "{mode: SIMPLE, credentialNames: [a, b, c]}".into(),
                vec![(format!("{p}.credentialNames"), "at most 2")],
            ),
            (
                "{mode: SIMPLE, serverCertificate: c, privateKey: k, caCrl: crl}".into(),
                vec![(format!("{p}.caCrl"), "SIMPLE")],
            ),
            (
                "{mode: PASSTHROUGH, credentialName: c, caCrl: crl}".into(),
                vec![(format!("{p}.caCrl"), "credentialName")],
            ),
            (
                "{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}".into(),
                vec![(format!("{p}.maxProtocolVersion"), "lower than minProtocolVersion")],
            ),
        ];
    for (tls, want) in &cases {
        let yaml = format!("{server}{tls}");
        let want: Vec<(&str, &str)> = want.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        check(&[(&yaml, &want)], errors);
    }
}

#[test]
fn warnings_are_reported() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: SIMPLE, credentialName: c, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA255]}",
            &[
                ("spec.servers[0].tls.cipherSuites[1]", "duplicate"),
                (
                    "spec.servers[0].tls.cipherSuites[2]",
                    "did you mean \"ECDHE-RSA-AES128-GCM-SHA256\"",
                ),
            ],
        ),
        (
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_0}",
            &[("spec.servers[0].tls.minProtocolVersion", "cipherSuites")],
        ),
        (
            "servers:\n- port: {number: 443, name: tls, protocol: TLS}\n  hosts: ['*']\n  tls: {mode: PASSTHROUGH, httpsRedirect: true, credentialName: c}",
            &[
                ("spec.servers[0].tls", "credentialName will be ignored"),
                (
                    "spec.servers[0].tls.httpsRedirect",
                    "only applies to plain HTTP",
                ),
            ],
        ),
    ];
    check(cases, warnings);
}

#[test]
fn protocols() {
    assert_eq!(Protocol::parse("grpc-web"), Some(Protocol::GrpcWeb));
    assert_eq!(Protocol::parse("Mongo"), Some(Protocol::Mongo));
    assert_eq!(Protocol::parse("hTTp"), Some(Protocol::Http));
    assert_eq!(Protocol::parse("QUIC"), None);
    assert_eq!(protocol(""), Ok(None));
    assert!(protocol("HTPP").is_err_and(|e| e.contains("did you mean \"HTTP\"")));
    assert!(Protocol::Https.is_tls() && Protocol::Https.is_tcp() && !Protocol::Https.is_http());
    assert!(Protocol::Grpc.is_http() && !Protocol::Grpc.is_tcp());
}

#[test]
fn schema_errors() {
    let cases = [
        (
            "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], foo: 1}]",
            "unknown field",
        ),
        (
            "servers: [{port: {number: 80, name: http, protocol: HTTP, nmae: x}, hosts: ['*']}]",
            "unknown field",
        ),
        ("selectors: {app: a}", "unknown field"),
        (
            "servers: [{port: {number: 443}, hosts: ['*'], tls: {mode: simple}}]",
            "unknown variant",
        ),
        (
            "servers: [{port: {number: 443}, hosts: ['*'], tls: {minProtocolVersion: TLSv1_2}}]",
            "unknown variant",
        ),
    ];
    for (yaml, want) in cases {
        match yaml_serde::from_str::<Gateway>(yaml) {
            Ok(spec) => panic!("{yaml} parsed: {spec:?}"),
            Err(e) => assert!(e.to_string().contains(want), "{yaml}: {e}"),
        }
    }
}

#[test]
fn round_trips() {
    let spec = parse(
        "selector: {istio: ingressgateway}\nservers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: SIMPLE, credentialName: c}\n",
    );
    let json = serde_json::to_string(&spec).unwrap_or_default();
    assert!(
        !json.contains("httpsRedirect") && !json.contains("targetPort"),
        "{json}"
    );
    let back: Gateway = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back, spec);
}
