use super::*;
use crate::validate::test_support::{errors, warnings};

pub(super) fn parse(yaml: &str) -> DestinationRule {
    crate::validate::test_support::parse(yaml)
}

pub(super) use crate::validate::test_support::Cases;

pub(super) fn check(
    cases: crate::validate::test_support::Cases<'_>,
    findings: fn(&DestinationRule) -> Vec<(String, String)>,
) {
    crate::validate::test_support::check_cases(cases, findings);
}

#[test]
fn valid_examples() {
    let cases = [
        // Bookinfo's destination-rule-all.yaml, one rule per service.
        "host: productpage\nsubsets:\n- name: v1\n  labels:\n    version: v1\n",
        r#"
host: reviews
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
- name: v3
  labels: {version: v3}
"#,
        r#"
host: ratings
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
- name: v2-mysql
  labels: {version: v2-mysql}
- name: v2-mysql-vm
  labels: {version: v2-mysql-vm}
"#,
        "host: details\nsubsets:\n- {name: v1, labels: {version: v1}}\n- {name: v2, labels: {version: v2}}\n",
        // The circuit-breaking task's httpbin rule.
        r#"
host: httpbin
trafficPolicy:
  connectionPool:
    tcp:
      maxConnections: 1
    http:
      http1MaxPendingRequests: 1
      maxRequestsPerConnection: 1
  outlierDetection:
    consecutive5xxErrors: 1
    interval: 1s
    baseEjectionTime: 3m
    maxEjectionPercent: 100
"#,
        // Sticky sessions, subset override, and Maglev.
        r#"
host: ratings.prod.svc.cluster.local
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie:
        name: user
        ttl: 0s
        attributes: [{name: SameSite, value: Strict}, {name: Secure}]
      ringHash: {minimumRingSize: 1024}
subsets:
- name: testversion
  labels: {version: v3}
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}
"#,
        // Locality distribution and failover, with outlier detection.
        r#"
host: helloworld.sample.svc.cluster.local
trafficPolicy:
  loadBalancer:
    simple: ROUND_ROBIN
    localityLbSetting:
      enabled: true
      distribute:
      - from: us-west/zone1/*
        to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
      - from: us-west/zone2/*
        to: {"us-west/zone1/*": 20, "us-west/zone2/*": 80}
  outlierDetection: {consecutive5xxErrors: 5, interval: 30s, baseEjectionTime: 30s}
"#,
        r#"
host: helloworld
trafficPolicy:
  loadBalancer:
    localityLbSetting:
      failover: [{from: us-east, to: eu-west}, {from: us-west, to: us-east}]
      failoverPriority: [topology.istio.io/network, version=v1]
  outlierDetection: {consecutiveGatewayErrors: 7, interval: 5m, baseEjectionTime: 15m}
"#,
        r#"
host: ratings.prod.svc.cluster.local
trafficPolicy:
  loadBalancer:
    simple: LEAST_REQUEST
    zoneAwareLbSetting:
      enabled: true
      failover: [{from: us-east, to: eu-west}]
      minClusterSize: 3
  outlierDetection: {consecutive5xxErrors: 5, interval: 30s, baseEjectionTime: 30s}
"#,
        // Upstream TLS: files, a secret (with a selector), Istio mTLS, and a wildcard host.
        r#"
host: mydbserver.prod.svc.cluster.local
trafficPolicy:
  tls:
    mode: MUTUAL
    clientCertificate: /etc/certs/myclientcert.pem
    privateKey: /etc/certs/client_private_key.pem
    caCertificates: /etc/certs/rootcacerts.pem
    subjectAltNames: [db.example.com]
    sni: db.example.com
"#,
        r#"
host: api.example.com
workloadSelector: {matchLabels: {app: ratings}}
exportTo: ["."]
trafficPolicy:
  portLevelSettings:
  - port: {number: 443}
    tls: {mode: MUTUAL, credentialName: client-credential, sni: api.example.com}
"#,
        "host: '*.foo.com'\ntrafficPolicy:\n  tls: {mode: SIMPLE}\n",
        "host: ratings.prod.svc.cluster.local\nexportTo: [., istio-system]\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL, sni: ratings}\n",
        // Keepalives, timeouts, tunnels and the newer knobs.
        r#"
host: myredissrv.prod.svc.cluster.local
trafficPolicy:
  connectionPool:
    tcp:
      maxConnections: 100
      connectTimeout: 30ms
      idleTimeout: 0s
      maxConnectionDuration: 1h
      tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}
    http:
      http2MaxRequests: 1000
      maxRetries: 3
      idleTimeout: 1h
      h2UpgradePolicy: UPGRADE
      maxConcurrentStreams: 100
      http2KeepAlive: {interval: 30s, timeout: 5s}
  retryBudget: {percent: 20, minRetryConcurrency: 3, budgetInterval: 0s}
  loadBalancer:
    simple: LEAST_REQUEST
    warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}
"#,
        r#"
host: external.example.com
trafficPolicy:
  tunnel: {protocol: CONNECT, targetHost: 10.0.0.1, targetPort: 8443}
  portLevelSettings:
  - port: {number: 80}
    loadBalancer: {simple: RANDOM}
  - port: {number: 9080}
    outlierDetection: {consecutive5xxErrors: 0, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3, outlierDetectionHttpErrorCodes: [500, 503]}
"#,
        "host: backend\ntrafficPolicy:\n  proxyProtocol: {version: V2}\n",
    ];
    for yaml in cases {
        let spec = parse(yaml);
        assert_eq!(errors(&spec), [], "{yaml}");
        assert_eq!(warnings(&spec), [], "{yaml}");
    }
}

#[test]
fn invalid_rule() {
    let cases: Cases<'_> = &[
        (
            "subsets: [{name: v1}]",
            &[("spec.host", "host is required")],
        ),
        ("host: 'foo.*.com'", &[("spec.host", "invalid")]),
        ("host: Reviews", &[("spec.host", "invalid")]),
        (
            "host: r\nsubsets: [{name: v1}, {name: v1}, {labels: {a: b}}, {name: v_2}]",
            &[
                ("spec.subsets[1].name", "duplicate subset name"),
                ("spec.subsets[2].name", "subset name is required"),
                ("spec.subsets[3].name", "invalid subset name"),
            ],
        ),
        (
            "host: r\nsubsets: [{name: v1, labels: {'a b': c}}]",
            &[("spec.subsets[0].labels[a b]", "label key")],
        ),
        (
            "host: r\nsubsets: [{name: v1, trafficPolicy: {}}]",
            &[("spec.subsets[0].trafficPolicy", "at least one")],
        ),
        (
            "host: r\nexportTo: [., ., '~', Bad_NS]",
            &[
                ("spec.exportTo[1]", "duplicate"),
                ("spec.exportTo[2]", "only allowed in a ServiceEntry"),
                ("spec.exportTo[3]", "invalid exportTo entry"),
            ],
        ),
        (
            "host: r\nexportTo: ['*', .]",
            &[("spec.exportTo", "`*` (all namespaces) together")],
        ),
        (
            "host: r\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: ['*']",
            &[("spec.exportTo", "only be exported to its own namespace")],
        ),
        (
            "host: r\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [., other]",
            &[("spec.exportTo", "several exportTo entries")],
        ),
        (
            "host: r\nworkloadSelector: {matchLabels: {app: 'a*'}}",
            &[("spec.workloadSelector.matchLabels[app]", "wildcard")],
        ),
    ];
    check(cases, errors);
}

#[test]
fn invalid_traffic_policy() {
    let cases: Cases<'_> = &[
        (
            "host: r\ntrafficPolicy: {}",
            &[("spec.trafficPolicy", "at least one")],
        ),
        (
            "host: r\ntrafficPolicy: {tunnel: {targetHost: a.com, targetPort: 80}, proxyProtocol: {}}",
            &[("spec.trafficPolicy", "cannot be set together")],
        ),
        (
            "host: r\ntrafficPolicy: {tunnel: {protocol: GET, targetHost: '*.a.com'}}",
            &[
                ("spec.trafficPolicy.tunnel.protocol", "CONNECT or POST"),
                ("spec.trafficPolicy.tunnel.targetHost", "FQDN or an IP"),
                ("spec.trafficPolicy.tunnel.targetPort", "1..65535"),
            ],
        ),
        (
            "host: r\ntrafficPolicy: {tunnel: {targetPort: 80}}",
            &[("spec.trafficPolicy.tunnel.targetHost", "required")],
        ),
        (
            "host: r\ntrafficPolicy: {retryBudget: {percent: 150}}",
            &[("spec.trafficPolicy.retryBudget.percent", "0..100")],
        ),
        (
            "host: r\ntrafficPolicy:\n  portLevelSettings:\n  - loadBalancer: {simple: RANDOM}\n  - port: {number: 0}\n    tls: {mode: SIMPLE}\n  - port: {number: 80}",
            &[
                (
                    "spec.trafficPolicy.portLevelSettings[0].port",
                    "port is required",
                ),
                (
                    "spec.trafficPolicy.portLevelSettings[1].port.number",
                    "1..65535",
                ),
                ("spec.trafficPolicy.portLevelSettings[2]", "at least one of"),
            ],
        ),
        (
            "host: r\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n    connectionPool: {tcp: {maxConnections: -1}}",
            &[(
                "spec.trafficPolicy.portLevelSettings[0].connectionPool.tcp.maxConnections",
                "negative",
            )],
        ),
    ];
    check(cases, errors);
}

#[test]
fn invalid_client_tls() {
    let t = "spec.trafficPolicy.tls";
    let cases: &[(&str, Vec<(String, &str)>)] = &[
        (
            "{mode: MUTUAL}",
            vec![
                (
                    format!("{t}.clientCertificate"),
                    "requires clientCertificate",
                ),
                (format!("{t}.privateKey"), "requires privateKey"),
            ],
        ),
        (
            "{mode: SIMPLE, credentialName: c, caCertificates: /ca.pem, caCrl: /crl.pem}",
            vec![
                (
                    format!("{t}.caCertificates"),
                    "together with credentialName",
                ),
                (format!("{t}.caCrl"), "together with credentialName"),
            ],
        ),
        (
            "{mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem, subjectAltNames: [a]}",
            vec![
                (format!("{t}.caCertificates"), "insecureSkipVerify"),
                (format!("{t}.subjectAltNames"), "insecureSkipVerify"),
            ],
        ),
        (
            "{mode: MUTUAL, insecureSkipVerify: true, credentialName: c, subjectAltNames: [a]}",
            vec![(format!("{t}.subjectAltNames"), "insecureSkipVerify")],
        ),
        (
            "{mode: SIMPLE, credentialName: 'configmap://a/b/c'}",
            vec![(
                format!("{t}.credentialName"),
                "configmap://[namespace/]name",
            )],
        ),
    ];
    for (tls, want) in cases {
        let yaml = format!("host: r\ntrafficPolicy:\n  tls: {tls}\n");
        let want: Vec<(&str, &str)> = want.iter().map(|(p, m)| (p.as_str(), *m)).collect();
        check(&[(&yaml, &want)], errors);
    }
}

#[test]
fn warnings_and_deprecations() {
    let cases: Cases<'_> = &[
        (
            "host: r\ntrafficPolicy:\n  outlierDetection: {consecutiveErrors: 7, interval: 5m}",
            &[(
                "spec.trafficPolicy.outlierDetection.consecutiveErrors",
                "`consecutiveGatewayErrors` (the same meaning",
            )],
        ),
        (
            "host: r\ntrafficPolicy: {loadBalancer: {simple: LEAST_CONN}}",
            &[("spec.trafficPolicy.loadBalancer.simple", "LEAST_REQUEST")],
        ),
        (
            "host: r\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 1024}}}",
            &[(
                "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
                "ringHash.minimumRingSize",
            )],
        ),
        (
            "host: r\ntrafficPolicy: {loadBalancer: {warmupDurationSecs: 60s}}",
            &[(
                "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
                "`warmup.duration`",
            )],
        ),
        (
            "host: r\ntrafficPolicy: {loadBalancer: {simple: RANDOM, warmup: {duration: 60s}}}",
            &[(
                "spec.trafficPolicy.loadBalancer.warmup",
                "only works with ROUND_ROBIN and LEAST_REQUEST",
            )],
        ),
        (
            "host: r\ntrafficPolicy: {loadBalancer: {consistentHash: {}}}",
            &[(
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "no hash key",
            )],
        ),
        (
            "host: r\ntrafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}]}}}",
            &[(
                "spec.trafficPolicy.loadBalancer.localityLbSetting",
                "needs outlierDetection",
            )],
        ),
        (
            "host: r\ntrafficPolicy: {loadBalancer: {zoneAwareLbSetting: {failoverPriority: [version]}}}",
            &[(
                "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting",
                "needs outlierDetection",
            )],
        ),
        (
            "host: r\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL, clientCertificate: /c.pem, sni: r}}",
            &[(
                "spec.trafficPolicy.tls",
                "clientCertificate will be ignored",
            )],
        ),
        (
            "host: r\ntrafficPolicy:\n  portLevelSettings:\n  - {port: {number: 80}, tls: {mode: SIMPLE}}\n  - {port: {number: 80}, tls: {mode: DISABLE}}",
            &[(
                "spec.trafficPolicy.portLevelSettings[1].port",
                "only the first applies",
            )],
        ),
        (
            "host: r\nworkloadSelector: {}",
            &[("spec.workloadSelector", "no labels")],
        ),
    ];
    check(cases, warnings);
    // Deprecated fields keep working: no errors alongside the warnings.
    let spec = parse("host: r\ntrafficPolicy:\n  outlierDetection: {consecutiveErrors: 7}");
    assert_eq!(errors(&spec), []);
    assert_eq!(
        spec.traffic_policy
            .and_then(|p| p.outlier_detection)
            .map(|o| o.consecutive_errors),
        Some(7)
    );
}

#[test]
fn field_names_match_istio() {
    let spec = parse(
        "host: r\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2}\n  connectionPool: {http: {http1MaxPendingRequests: 5, http2MaxRequests: 6, http2KeepAlive: {interval: 1s, timeout: 1s}}}",
    );
    let json = serde_json::to_value(&spec).unwrap_or_default();
    let tp = &json["trafficPolicy"];
    assert_eq!(tp["outlierDetection"]["consecutive5xxErrors"], 3);
    assert_eq!(tp["connectionPool"]["http"]["http1MaxPendingRequests"], 5);
    assert_eq!(
        tp["connectionPool"]["http"]["http2KeepAlive"]["interval"],
        "1s"
    );
    let back: DestinationRule = serde_json::from_value(json).unwrap_or_default();
    assert_eq!(back, spec);
}

#[test]
fn schema_errors() {
    let cases = [
        (
            "host: r\ntrafficPolicy: {loadBalancer: {simple: round_robin}}",
            "unknown variant",
        ),
        (
            "host: r\ntrafficPolicy: {outlierDetection: {consecutive5XXErrors: 1}}",
            "unknown field",
        ),
        ("host: r\nsubset: [{name: v1}]", "unknown field"),
        (
            "host: r\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL, cert: x}}",
            "unknown field",
        ),
        (
            "host: r\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: many}}}",
            "",
        ),
    ];
    for (yaml, want) in cases {
        match yaml_serde::from_str::<DestinationRule>(yaml) {
            Ok(spec) => panic!("{yaml} parsed: {spec:?}"),
            Err(e) => assert!(e.to_string().contains(want), "{yaml}: {e}"),
        }
    }
}
