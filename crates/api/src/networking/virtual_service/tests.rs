//! Validation tests: the examples of Istio's traffic-management tasks, one invalid case per rule
//! with the exact field path, and the warnings that keep Istio's meaning.

use super::policy::{KIB, MIB};
use super::syntax::{auto_passthrough_sni, header_value, host_within, hosts_overlap, is_jwt_claim};
use super::*;
use crate::validate::test_support::{errors, warnings};

fn parse(yaml: &str) -> VirtualService {
    match yaml_serde::from_str(yaml) {
        Ok(spec) => spec,
        Err(e) => panic!("{yaml}\n{e}"),
    }
}

/// Asserts that `found` holds exactly `want`: (path, message fragment) pairs.
fn assert_findings(name: &str, found: &[(String, String)], want: &[(&str, &str)]) {
    let ok = found.len() == want.len()
        && want
            .iter()
            .all(|(p, m)| found.iter().any(|(fp, fm)| fp == p && fm.contains(m)));
    assert!(ok, "{name}: want {want:#?}\nfound {found:#?}");
}

/// A case: name, spec YAML, expected (path, message fragment) findings.
type Case = (&'static str, String, Vec<(&'static str, &'static str)>);

// Written after the Istio documentation's traffic-management tasks (Bookinfo, httpbin).
const VALID: &[(&str, &str)] = &[
    (
        "request routing: reviews all v1",
        "
hosts: [reviews]
http:
- route:
  - destination:
      host: reviews
      subset: v1
",
    ),
    (
        "request routing: reviews v2 for jason",
        "
hosts:
- reviews
http:
- match:
  - headers:
      end-user:
        exact: jason
  route:
  - destination:
      host: reviews
      subset: v2
- route:
  - destination:
      host: reviews
      subset: v1
",
    ),
    (
        "traffic shifting: 50/50 v1 and v3",
        "
hosts: [reviews]
http:
- route:
  - destination: {host: reviews, subset: v1}
    weight: 50
  - destination: {host: reviews, subset: v3}
    weight: 50
",
    ),
    (
        "traffic shifting: all to v3",
        "
hosts: [reviews]
http:
- route:
  - destination: {host: reviews, subset: v3}
    weight: 100
",
    ),
    (
        "fault injection: 7s delay for jason",
        "
hosts: [ratings]
http:
- match:
  - headers:
      end-user:
        exact: jason
  fault:
    delay:
      percentage:
        value: 100.0
      fixedDelay: 7s
  route:
  - destination: {host: ratings, subset: v1}
- route:
  - destination: {host: ratings, subset: v1}
",
    ),
    (
        "fault injection: abort 500 for jason",
        "
hosts: [ratings]
http:
- match:
  - headers:
      end-user:
        exact: jason
  fault:
    abort:
      percentage:
        value: 100.0
      httpStatus: 500
  route:
  - destination: {host: ratings, subset: v1}
- route:
  - destination: {host: ratings, subset: v1}
",
    ),
    (
        "request timeouts: reviews 0.5s",
        "
hosts: [reviews]
http:
- route:
  - destination: {host: reviews, subset: v2}
  timeout: 0.5s
",
    ),
    (
        "mirroring: httpbin v2",
        "
hosts: [httpbin]
http:
- route:
  - destination: {host: httpbin, subset: v1}
    weight: 100
  mirror:
    host: httpbin
    subset: v2
  mirrorPercentage:
    value: 100.0
",
    ),
    (
        "ingress: bookinfo gateway",
        r#"
hosts: ["*"]
gateways: [bookinfo-gateway]
http:
- match:
  - uri:
      exact: /productpage
  - uri:
      prefix: /static
  - uri:
      exact: /login
  - uri:
      exact: /logout
  - uri:
      prefix: /api/v1/products
  route:
  - destination:
      host: productpage
      port:
        number: 9080
"#,
    ),
    (
        "tcp traffic shifting: tcp-echo 80/20",
        "
hosts: [tcp-echo]
gateways: [tcp-echo-gateway]
tcp:
- match:
  - port: 31400
  route:
  - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
    weight: 80
  - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}
    weight: 20
",
    ),
    (
        "sni passthrough on a gateway",
        r#"
hosts: ["nginx.example.com"]
gateways: [istio-system/mygateway]
tls:
- match:
  - port: 443
    sniHosts: [nginx.example.com]
  route:
  - destination: {host: my-nginx, port: {number: 443}}
"#,
    ),
    (
        "egress through a gateway, mesh and gateway",
        "
hosts: [edition.cnn.com]
gateways: [istio-egressgateway, mesh]
http:
- match:
  - gateways: [mesh]
    port: 80
  route:
  - destination:
      host: istio-egressgateway.istio-system.svc.cluster.local
      port: {number: 80}
- match:
  - gateways: [istio-egressgateway]
    port: 80
  route:
  - destination: {host: edition.cnn.com, port: {number: 80}}
    weight: 100
",
    ),
    (
        "retries, cors, headers, rewrite",
        r#"
hosts: [ratings.prod.svc.cluster.local]
http:
- name: ratings-route
  match:
  - name: v2-api
    uri: {prefix: /v2/ratings}
    queryParams: {debug: {exact: ""}}
    withoutHeaders: {x-skip: {regex: "*"}}
  rewrite:
    uri: /ratings
    authority: ratings.internal
  retries:
    attempts: 3
    perTryTimeout: 2s
    retryOn: gateway-error,connect-failure,refused-stream
  corsPolicy:
    allowOrigins:
    - exact: https://example.com
    - regex: "https://.*\\.example\\.org"
    allowMethods: [POST, GET]
    allowHeaders: [X-Foo-Bar, "*"]
    exposeHeaders: [X-Expose]
    maxAge: 24h
    allowCredentials: false
    unmatchedPreflights: IGNORE
  headers:
    request:
      set: {x-forwarded-by: "%HOSTNAME%"}
      add: {x-trace: "100%% %REQ(x-request-id)%"}
    response:
      remove: [server]
  route:
  - destination: {host: ratings.prod.svc.cluster.local, subset: v1}
    headers:
      response:
        set: {x-version: v1}
"#,
    ),
    (
        "redirect, direct response, regex rewrite",
        r#"
hosts: [example.com]
gateways: [web/gateway]
http:
- match: [{uri: {exact: /old}}]
  redirect: {uri: /new, authority: newexample.com, redirectCode: 308}
- match: [{uri: {prefix: /v1/}}]
  redirect: {prefixRewrite: /v2/, derivePort: FROM_REQUEST_PORT, scheme: https}
- match: [{uri: {exact: /health}}]
  directResponse:
    status: 200
    body: {string: ok}
- match: [{uri: {exact: /blob}}]
  directResponse:
    status: 503
    body: {bytes: aGVsbG8=}
- match: [{uri: {regex: "^/service/([^/]+)(/.*)$"}}]
  rewrite:
    uriRegexRewrite: {match: "^/service/([^/]+)(/.*)$", rewrite: "/customprefix/\\2/\\1"}
  route:
  - destination: {host: service}
"#,
    ),
    (
        "root delegating to a delegate",
        "
hosts: [bookinfo.com]
gateways: [bookinfo-gateway]
http:
- match: [{uri: {prefix: /productpage}}]
  delegate: {name: productpage, namespace: bookinfo}
- route:
  - destination: {host: reviews}
",
    ),
    (
        "delegate VirtualService",
        "
http:
- match: [{uri: {prefix: /productpage/v1/}}]
  route:
  - destination: {host: productpage-v1.bookinfo.svc.cluster.local}
- route:
  - destination: {host: productpage.bookinfo.svc.cluster.local}
",
    ),
    (
        "JWT claim routing on a gateway",
        "
hosts: ['*']
gateways: [istio-system/ingressgateway]
http:
- match:
  - headers:
      '@request.auth.claims.groups': {exact: group1}
  route:
  - destination: {host: httpbin.foo.svc.cluster.local}
",
    ),
    (
        "export, mirrors, wildcard and IP hosts",
        "
hosts: ['*.example.com', 10.0.0.1]
exportTo: [., istio-system]
http:
- route:
  - destination: {host: a.example.com}
  mirrors:
  - destination: {host: b.example.com}
    percentage: {value: 25}
",
    ),
];

#[test]
fn istio_task_examples_are_valid() {
    for (name, yaml) in VALID {
        let vs = parse(yaml);
        assert_eq!(errors(&vs), [], "{name}");
        assert_eq!(warnings(&vs), [], "{name}");
    }
}

/// A valid route to put around a field under test.
const R: &str = "route: [{destination: {host: reviews}}]";

#[rustfmt::skip]
fn invalid_cases() -> Vec<Case> {
    let r = R;
    vec![
        // The VirtualService as a whole.
        ("no routes", "hosts: [reviews]".into(),
            vec![("spec", "at least one of http, tls or tcp")]),
        ("delegate with gateways", format!("gateways: [gw]\nhttp: [{{{r}}}]"),
            vec![("spec.hosts", "hosts is required")]),
        ("delegate with tcp", format!("http: [{{{r}}}]\ntcp: [{{{r}}}]"),
            vec![("spec.tcp", "only have http routes")]),
        ("bad host", format!("hosts: [Reviews]\nhttp: [{{{r}}}]"),
            vec![("spec.hosts[0]", "invalid")]),
        ("wildcard host in the mesh", format!("hosts: ['*']\nhttp: [{{{r}}}]"),
            vec![("spec.hosts[0]", "only allowed when the VirtualService is bound to gateways")]),
        ("duplicate host", format!("hosts: [reviews, reviews]\nhttp: [{{{r}}}]"),
            vec![("spec.hosts[1]", "duplicates or overlaps hosts[0]")]),
        ("overlapping wildcard", format!("hosts: ['*.example.com', a.example.com]\nhttp: [{{{r}}}]"),
            vec![("spec.hosts[1]", "overlaps")]),
        ("gateway with empty name", format!("hosts: [a]\ngateways: [ns/]\nhttp: [{{{r}}}]"),
            vec![("spec.gateways[0]", "both namespace and name are required")]),
        ("gateway with bad namespace", format!("hosts: [a]\ngateways: [Ns/gw]\nhttp: [{{{r}}}]"),
            vec![("spec.gateways[0]", "not a valid namespace name")]),
        ("gateway with bad name", format!("hosts: [a]\ngateways: [Bad_gw]\nhttp: [{{{r}}}]"),
            vec![("spec.gateways[0]", "not a valid gateway name")]),
        ("exportTo none", format!("hosts: [a]\nexportTo: ['~']\nhttp: [{{{r}}}]"),
            vec![("spec.exportTo[0]", "only allowed in a ServiceEntry")]),
        ("exportTo duplicate", format!("hosts: [a]\nexportTo: [ns1, ns1]\nhttp: [{{{r}}}]"),
            vec![("spec.exportTo[1]", "duplicate")]),
        ("exportTo star and more", format!("hosts: [a]\nexportTo: ['*', .]\nhttp: [{{{r}}}]"),
            vec![("spec.exportTo", "cannot be combined")]),
        ("exportTo bad namespace", format!("hosts: [a]\nexportTo: [Bad]\nhttp: [{{{r}}}]"),
            vec![("spec.exportTo[0]", "not a valid exportTo entry")]),

        // Which actions an HTTP rule may combine.
        ("route and redirect", format!("hosts: [a]\nhttp: [{{{r}, redirect: {{uri: /x}}}}]"),
            vec![("spec.http[0].route", "cannot be combined with redirect")]),
        ("fault and redirect",
            "hosts: [a]\nhttp: [{redirect: {uri: /x}, fault: {abort: {httpStatus: 500, percentage: {value: 1}}}}]".into(),
            vec![("spec.http[0].fault", "cannot be combined with redirect")]),
        ("rewrite and redirect", "hosts: [a]\nhttp: [{redirect: {uri: /x}, rewrite: {uri: /y}}]".into(),
            vec![("spec.http[0].rewrite", "cannot be combined with redirect")]),
        ("directResponse and redirect", "hosts: [a]\nhttp: [{redirect: {uri: /x}, directResponse: {status: 200}}]".into(),
            vec![("spec.http[0].directResponse", "cannot be combined with redirect")]),
        ("route and directResponse", format!("hosts: [a]\nhttp: [{{{r}, directResponse: {{status: 200}}}}]"),
            vec![("spec.http[0].route", "cannot be combined with directResponse")]),
        ("no action", "hosts: [a]\nhttp: [{timeout: 1s}]".into(),
            vec![("spec.http[0]", "needs one of route, redirect, directResponse or delegate")]),
        ("delegate and route", format!("hosts: [a]\nhttp: [{{{r}, delegate: {{name: d}}}}]"),
            vec![("spec.http[0].route", "cannot be combined with delegate")]),
        ("delegate and redirect", "hosts: [a]\nhttp: [{redirect: {uri: /x}, delegate: {name: d}}]".into(),
            vec![("spec.http[0].redirect", "cannot be combined with delegate")]),
        ("delegate in a delegate", format!("http: [{{{r}, delegate: {{name: d}}}}]"),
            vec![("spec.http[0].delegate", "cannot delegate again")]),
        ("delegate without name", "hosts: [a]\nhttp: [{delegate: {namespace: ns}}]".into(),
            vec![("spec.http[0].delegate.name", "required")]),
        ("delegate with bad namespace", "hosts: [a]\nhttp: [{delegate: {name: d, namespace: Ns}}]".into(),
            vec![("spec.http[0].delegate.namespace", "not a valid namespace")]),
        ("mirror and mirrors",
            format!("hosts: [a]\nhttp: [{{{r}, mirror: {{host: b}}, mirrors: [{{destination: {{host: c}}}}]}}]"),
            vec![("spec.http[0].mirrors", "cannot both be set")]),

        // Destinations and weights.
        ("negative weight",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a, subset: v1}\n    weight: 110\n  - destination: {host: a, subset: v2}\n    weight: -10".into(),
            vec![("spec.http[0].route[1].weight", "negative")]),
        ("weights add up to 0",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a, subset: v1}\n  - destination: {host: a, subset: v2}".into(),
            vec![("spec.http[0].route", "add up to 0")]),
        ("missing destination", "hosts: [a]\nhttp: [{route: [{weight: 100}]}]".into(),
            vec![("spec.http[0].route[0].destination", "destination is required")]),
        ("missing destination host", "hosts: [a]\nhttp: [{route: [{destination: {subset: v1}}]}]".into(),
            vec![("spec.http[0].route[0].destination.host", "host is required")]),
        ("destination host *", "hosts: [a]\nhttp: [{route: [{destination: {host: '*'}}]}]".into(),
            vec![("spec.http[0].route[0].destination.host", "cannot be `*`")]),
        ("bad destination host", "hosts: [a]\nhttp: [{route: [{destination: {host: 'a..b'}}]}]".into(),
            vec![("spec.http[0].route[0].destination.host", "invalid")]),
        ("bad subset", "hosts: [a]\nhttp: [{route: [{destination: {host: a, subset: V1}}]}]".into(),
            vec![("spec.http[0].route[0].destination.subset", "not a valid subset name")]),
        ("destination port 0", "hosts: [a]\nhttp: [{route: [{destination: {host: a, port: {}}}]}]".into(),
            vec![("spec.http[0].route[0].destination.port.number", "1..65535")]),
        ("destination port too large", "hosts: [a]\nhttp: [{route: [{destination: {host: a, port: {number: 70000}}}]}]".into(),
            vec![("spec.http[0].route[0].destination.port.number", "1..65535")]),
        ("mirror without host", format!("hosts: [a]\nhttp: [{{{r}, mirror: {{subset: v2}}}}]"),
            vec![("spec.http[0].mirror.host", "host is required")]),
        ("mirrors without destination", format!("hosts: [a]\nhttp: [{{{r}, mirrors: [{{percentage: {{value: 10}}}}]}}]"),
            vec![("spec.http[0].mirrors[0].destination", "destination is required")]),
        ("mirrors percentage over 100",
            format!("hosts: [a]\nhttp: [{{{r}, mirrors: [{{destination: {{host: b}}, percentage: {{value: 101}}}}]}}]"),
            vec![("spec.http[0].mirrors[0].percentage.value", "not in range 0..100")]),
        ("mirrorPercentage over 100", format!("hosts: [a]\nhttp: [{{{r}, mirror: {{host: b}}, mirrorPercentage: {{value: 150}}}}]"),
            vec![("spec.http[0].mirrorPercentage.value", "not in range 0..100")]),
        ("mirrorPercent over 100", format!("hosts: [a]\nhttp: [{{{r}, mirror: {{host: b}}, mirrorPercent: 200}}]"),
            vec![("spec.http[0].mirrorPercent", "over 100")]),

        // Durations.
        ("zero timeout", format!("hosts: [a]\nhttp: [{{{r}, timeout: 0s}}]"),
            vec![("spec.http[0].timeout", "at least 1ms")]),
        ("sub-millisecond timeout", format!("hosts: [a]\nhttp: [{{{r}, timeout: 1500us}}]"),
            vec![("spec.http[0].timeout", "ms precision")]),
        ("malformed timeout", format!("hosts: [a]\nhttp: [{{{r}, timeout: '10'}}]"),
            vec![("spec.http[0].timeout", "missing unit")]),

        // Retries.
        ("negative attempts", format!("hosts: [a]\nhttp: [{{{r}, retries: {{attempts: -1}}}}]"),
            vec![("spec.http[0].retries.attempts", "negative")]),
        ("retry policy without attempts", format!("hosts: [a]\nhttp: [{{{r}, retries: {{perTryTimeout: 2s}}}}]"),
            vec![("spec.http[0].retries", "attempts is 0")]),
        ("bad retryOn", format!("hosts: [a]\nhttp: [{{{r}, retries: {{attempts: 3, retryOn: '5xx,conect-failure'}}}}]"),
            vec![("spec.http[0].retries.retryOn", "did you mean \"connect-failure\"")]),
        ("perTryTimeout below 1ms", format!("hosts: [a]\nhttp: [{{{r}, retries: {{attempts: 3, perTryTimeout: 0.5ms}}}}]"),
            vec![("spec.http[0].retries.perTryTimeout", "at least 1ms")]),
        ("bad backoff", format!("hosts: [a]\nhttp: [{{{r}, retries: {{attempts: 3, backoff: 1x}}}}]"),
            vec![("spec.http[0].retries.backoff", "unknown unit")]),

        // Fault injection.
        ("empty fault", format!("hosts: [a]\nhttp: [{{{r}, fault: {{}}}}]"),
            vec![("spec.http[0].fault", "needs a delay, an abort, or both")]),
        ("abort status 600", format!("hosts: [a]\nhttp: [{{{r}, fault: {{abort: {{httpStatus: 600, percentage: {{value: 1}}}}}}}}]"),
            vec![("spec.http[0].fault.abort.httpStatus", "200..599")]),
        ("abort status -1", format!("hosts: [a]\nhttp: [{{{r}, fault: {{abort: {{httpStatus: -1, percentage: {{value: 1}}}}}}}}]"),
            vec![("spec.http[0].fault.abort.httpStatus", "200..599")]),
        ("abort with unknown gRPC status",
            format!("hosts: [a]\nhttp: [{{{r}, fault: {{abort: {{grpcStatus: UNAVAILABL, percentage: {{value: 1}}}}}}}}]"),
            vec![("spec.http[0].fault.abort.grpcStatus", "did you mean \"UNAVAILABLE\"")]),
        ("abort with http2Error", format!("hosts: [a]\nhttp: [{{{r}, fault: {{abort: {{http2Error: x, percentage: {{value: 1}}}}}}}}]"),
            vec![("spec.http[0].fault.abort.http2Error", "not supported")]),
        ("abort with two error types",
            format!("hosts: [a]\nhttp: [{{{r}, fault: {{abort: {{httpStatus: 500, grpcStatus: INTERNAL, percentage: {{value: 1}}}}}}}}]"),
            vec![("spec.http[0].fault.abort", "set only one of httpStatus, grpcStatus or http2Error")]),
        ("abort percentage over 100",
            format!("hosts: [a]\nhttp: [{{{r}, fault: {{abort: {{httpStatus: 500, percentage: {{value: 100.5}}}}}}}}]"),
            vec![("spec.http[0].fault.abort.percentage.value", "between 0.0001 and 100")]),
        ("abort percentage too fine",
            format!("hosts: [a]\nhttp: [{{{r}, fault: {{abort: {{httpStatus: 500, percentage: {{value: 0.00001}}}}}}}}]"),
            vec![("spec.http[0].fault.abort.percentage.value", "between 0.0001 and 100")]),
        ("zero fixedDelay", format!("hosts: [a]\nhttp: [{{{r}, fault: {{delay: {{fixedDelay: 0s, percentage: {{value: 1}}}}}}}}]"),
            vec![("spec.http[0].fault.delay.fixedDelay", "at least 1ms")]),
        ("exponentialDelay", format!("hosts: [a]\nhttp: [{{{r}, fault: {{delay: {{exponentialDelay: 1s, percentage: {{value: 1}}}}}}}}]"),
            vec![("spec.http[0].fault.delay.exponentialDelay", "not supported")]),
        ("fixed and exponential delay",
            format!("hosts: [a]\nhttp: [{{{r}, fault: {{delay: {{fixedDelay: 1s, exponentialDelay: 1s, percentage: {{value: 1}}}}}}}}]"),
            vec![
                ("spec.http[0].fault.delay", "set only one of fixedDelay or exponentialDelay"),
                ("spec.http[0].fault.delay.exponentialDelay", "not supported"),
            ]),
        ("delay percent over 100", format!("hosts: [a]\nhttp: [{{{r}, fault: {{delay: {{fixedDelay: 1s, percent: 150}}}}}}]"),
            vec![("spec.http[0].fault.delay.percent", "not in range 0..100")]),

        // CORS.
        ("empty allowed origin", format!("hosts: [a]\nhttp: [{{{r}, corsPolicy: {{allowOrigins: [{{}}]}}}}]"),
            vec![("spec.http[0].corsPolicy.allowOrigins[0]", "non-empty exact, prefix or regex")]),
        ("bad origin regex", format!("hosts: [a]\nhttp: [{{{r}, corsPolicy: {{allowOrigins: [{{regex: '(unclosed'}}]}}}}]"),
            vec![("spec.http[0].corsPolicy.allowOrigins[0].regex", "invalid regex")]),
        ("lower-case method", format!("hosts: [a]\nhttp: [{{{r}, corsPolicy: {{allowMethods: [get]}}}}]"),
            vec![("spec.http[0].corsPolicy.allowMethods[0]", "did you mean \"GET\"")]),
        ("bad allowed header", format!("hosts: [a]\nhttp: [{{{r}, corsPolicy: {{allowHeaders: ['x foo']}}}}]"),
            vec![("spec.http[0].corsPolicy.allowHeaders[0]", "not a valid header name")]),
        ("bad exposed header", format!("hosts: [a]\nhttp: [{{{r}, corsPolicy: {{exposeHeaders: ['x:y']}}}}]"),
            vec![("spec.http[0].corsPolicy.exposeHeaders[0]", "not a valid header name")]),
        ("fractional maxAge", format!("hosts: [a]\nhttp: [{{{r}, corsPolicy: {{maxAge: 1.5s}}}}]"),
            vec![("spec.http[0].corsPolicy.maxAge", "whole seconds")]),

        // Redirects.
        ("empty redirect", "hosts: [a]\nhttp: [{redirect: {}}]".into(),
            vec![("spec.http[0].redirect", "must set at least one of")]),
        ("redirect code not 3xx", "hosts: [a]\nhttp: [{redirect: {uri: /x, redirectCode: 200}}]".into(),
            vec![("spec.http[0].redirect.redirectCode", "not a redirect status code")]),
        ("redirect scheme ftp", "hosts: [a]\nhttp: [{redirect: {scheme: ftp}}]".into(),
            vec![("spec.http[0].redirect.scheme", "use http or https")]),
        ("redirect port too large", "hosts: [a]\nhttp: [{redirect: {port: 70000}}]".into(),
            vec![("spec.http[0].redirect.port", "1..65535")]),
        ("redirect port and derivePort", "hosts: [a]\nhttp: [{redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}}]".into(),
            vec![("spec.http[0].redirect.derivePort", "only one of port or derivePort")]),
        ("redirect uri and prefixRewrite", "hosts: [a]\nhttp: [{redirect: {uri: /a, prefixRewrite: /b}}]".into(),
            vec![("spec.http[0].redirect.prefixRewrite", "cannot both be set")]),
        ("prefixRewrite with an exact match",
            "hosts: [a]\nhttp: [{match: [{uri: {prefix: /a}}, {uri: {exact: /b}}], redirect: {prefixRewrite: /c}}]".into(),
            vec![("spec.http[0].redirect.prefixRewrite", "match[1].uri is not")]),

        // Direct responses.
        ("direct response without status", "hosts: [a]\nhttp: [{directResponse: {body: {string: hi}}}]".into(),
            vec![("spec.http[0].directResponse.status", "status is required")]),
        ("direct response status 99", "hosts: [a]\nhttp: [{directResponse: {status: 99}}]".into(),
            vec![("spec.http[0].directResponse.status", "200..599")]),
        ("body with string and bytes", "hosts: [a]\nhttp: [{directResponse: {status: 200, body: {string: a, bytes: YQ==}}}]".into(),
            vec![("spec.http[0].directResponse.body", "only one of string or bytes")]),
        ("body bytes not base64", "hosts: [a]\nhttp: [{directResponse: {status: 200, body: {bytes: 'not base64!'}}}]".into(),
            vec![("spec.http[0].directResponse.body.bytes", "must be base64")]),

        // Rewrites.
        ("empty rewrite", format!("hosts: [a]\nhttp: [{{{r}, rewrite: {{}}}}]"),
            vec![("spec.http[0].rewrite", "at least one of uri, uriRegexRewrite or authority")]),
        ("uri and uriRegexRewrite",
            format!("hosts: [a]\nhttp: [{{{r}, rewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}}}]"),
            vec![("spec.http[0].rewrite.uriRegexRewrite", "only one of uri or uriRegexRewrite")]),
        ("uriRegexRewrite without rewrite", format!("hosts: [a]\nhttp: [{{{r}, rewrite: {{uriRegexRewrite: {{match: '^/a'}}}}}}]"),
            vec![("spec.http[0].rewrite.uriRegexRewrite.rewrite", "required")]),
        ("uriRegexRewrite bad regex", format!("hosts: [a]\nhttp: [{{{r}, rewrite: {{uriRegexRewrite: {{match: '(a', rewrite: b}}}}}}]"),
            vec![("spec.http[0].rewrite.uriRegexRewrite.match", "invalid regex")]),
        ("authority rewritten twice",
            format!("hosts: [a]\nhttp: [{{{r}, rewrite: {{authority: b}}, headers: {{request: {{set: {{host: c}}}}}}}}]"),
            vec![("spec.http[0].headers.request.set[host]", "already rewritten by rewrite.authority")]),

        // Header changes.
        ("setting a pseudo-header", format!("hosts: [a]\nhttp: [{{{r}, headers: {{request: {{set: {{':path': /x}}}}}}}}]"),
            vec![("spec.http[0].headers.request.set[:path]", "pseudo-headers")]),
        ("removing Host", format!("hosts: [a]\nhttp: [{{{r}, headers: {{request: {{remove: [Host]}}}}}}]"),
            vec![("spec.http[0].headers.request.remove[0]", "Host header")]),
        ("setting Host in a response", format!("hosts: [a]\nhttp: [{{{r}, headers: {{response: {{set: {{host: x}}}}}}}}]"),
            vec![("spec.http[0].headers.response.set[host]", "Host header")]),
        ("unescaped percent", format!("hosts: [a]\nhttp: [{{{r}, headers: {{request: {{add: {{x-foo: 'abc%123'}}}}}}}}]"),
            vec![("spec.http[0].headers.request.add[x-foo]", "unterminated %VARIABLE%")]),
        ("control character in a value", format!("hosts: [a]\nhttp: [{{{r}, headers: {{response: {{add: {{x-foo: \"a\\nb\"}}}}}}}}]"),
            vec![("spec.http[0].headers.response.add[x-foo]", "control character")]),
        ("destination header change",
            "hosts: [a]\nhttp: [{route: [{destination: {host: a}, headers: {response: {remove: [':status']}}}]}]".into(),
            vec![("spec.http[0].route[0].headers.response.remove[0]", "pseudo-headers")]),

        // HTTP matches.
        ("bad header name", format!("hosts: [a]\nhttp: [{{match: [{{headers: {{'x foo': {{exact: y}}}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].headers[x foo]", "not a valid header name")]),
        ("empty header prefix", format!("hosts: [a]\nhttp: [{{match: [{{headers: {{x-foo: {{prefix: ''}}}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].headers[x-foo].prefix", "must not be empty")]),
        ("two string matches", format!("hosts: [a]\nhttp: [{{match: [{{uri: {{exact: /a, prefix: /b}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].uri", "only one of exact, prefix or regex")]),
        ("bad uri regex", format!("hosts: [a]\nhttp: [{{match: [{{uri: {{regex: '/(a'}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].uri.regex", "invalid regex")]),
        ("empty uri regex", format!("hosts: [a]\nhttp: [{{match: [{{uri: {{regex: ''}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].uri.regex", "must not be empty")]),
        ("empty scheme prefix", format!("hosts: [a]\nhttp: [{{match: [{{scheme: {{prefix: ''}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].scheme.prefix", "must not be empty")]),
        ("bad query param regex", format!("hosts: [a]\nhttp: [{{match: [{{queryParams: {{q: {{regex: '['}}}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].queryParams[q].regex", "invalid regex")]),
        ("bad withoutHeaders regex", format!("hosts: [a]\nhttp: [{{match: [{{withoutHeaders: {{x-a: {{regex: '(('}}}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].withoutHeaders[x-a].regex", "invalid regex")]),
        ("match port too large", format!("hosts: [a]\nhttp: [{{match: [{{port: 70000}}], {r}}}]"),
            vec![("spec.http[0].match[0].port", "1..65535")]),
        ("bad source label", format!("hosts: [a]\nhttp: [{{match: [{{sourceLabels: {{'-app': x}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].sourceLabels[-app]", "label key")]),
        ("bad source namespace", format!("hosts: [a]\nhttp: [{{match: [{{sourceNamespace: Prod}}], {r}}}]"),
            vec![("spec.http[0].match[0].sourceNamespace", "not a valid namespace")]),
        ("bad match gateway", format!("hosts: [a]\nhttp: [{{match: [{{gateways: ['/gw']}}], {r}}}]"),
            vec![("spec.http[0].match[0].gateways[0]", "both namespace and name are required")]),
        ("JWT claim routing in the mesh",
            format!("hosts: [a]\ngateways: [gw, mesh]\nhttp: [{{match: [{{headers: {{'@request.auth.claims.group': {{exact: g}}}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].headers[@request.auth.claims.group]", "only works on gateways")]),

        // TLS rules.
        ("TLS rule without match", format!("hosts: [a.com]\ntls: [{{{r}}}]"),
            vec![("spec.tls[0].match", "at least one match")]),
        ("TLS match without SNI", format!("hosts: [a.com]\ntls: [{{match: [{{port: 443}}], {r}}}]"),
            vec![("spec.tls[0].match[0].sniHosts", "at least one SNI host")]),
        ("SNI outside the hosts", format!("hosts: [a.com]\ntls: [{{match: [{{sniHosts: [b.com]}}], {r}}}]"),
            vec![("spec.tls[0].match[0].sniHosts[0]", "not within any of the VirtualService's hosts")]),
        ("bad SNI", format!("hosts: [a.com]\ntls: [{{match: [{{sniHosts: ['a_b.com']}}], {r}}}]"),
            vec![("spec.tls[0].match[0].sniHosts[0]", "invalid")]),
        ("TLS rule without route", "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com]}]}]".into(),
            vec![("spec.tls[0].route", "at least one route destination")]),
        ("bad destination subnet",
            format!("hosts: [a.com]\ntls: [{{match: [{{sniHosts: [a.com], destinationSubnets: [10.0.0.0/33]}}], {r}}}]"),
            vec![("spec.tls[0].match[0].destinationSubnets[0]", "not a valid CIDR")]),

        // TCP rules.
        ("TCP rule without route", "hosts: [a]\ntcp: [{match: [{port: 9000}]}]".into(),
            vec![("spec.tcp[0].route", "at least one route destination")]),
        ("TCP match port too large", format!("hosts: [a]\ntcp: [{{match: [{{port: 70000}}], {r}}}]"),
            vec![("spec.tcp[0].match[0].port", "1..65535")]),
        ("bad source subnet", format!("hosts: [a]\ntcp: [{{match: [{{sourceSubnet: 10.0.0}}], {r}}}]"),
            vec![("spec.tcp[0].match[0].sourceSubnet", "not a valid IP address")]),
        ("TCP weights add up to 0",
            "hosts: [a]\ntcp:\n- route:\n  - destination: {host: a, subset: v1}\n  - destination: {host: a, subset: v2}".into(),
            vec![("spec.tcp[0].route", "add up to 0")]),
    ]
}

#[test]
fn invalid_examples() {
    for (name, yaml, want) in &invalid_cases() {
        assert_findings(name, &errors(&parse(yaml)), want);
    }
}

#[rustfmt::skip]
fn warning_cases() -> Vec<Case> {
    let r = R;
    vec![
        ("deprecated mirrorPercent", format!("hosts: [a]\nhttp: [{{{r}, mirror: {{host: b}}, mirrorPercent: 50}}]"),
            vec![("spec.http[0].mirrorPercent", "`mirrorPercent` is deprecated; use mirrorPercentage")]),
        ("mirrorPercent next to mirrorPercentage",
            format!("hosts: [a]\nhttp: [{{{r}, mirror: {{host: b}}, mirrorPercent: 50, mirrorPercentage: {{value: 5}}}}]"),
            vec![
                ("spec.http[0].mirrorPercent", "deprecated"),
                ("spec.http[0].mirrorPercent", "ignored because mirrorPercentage is set"),
            ]),
        ("mirrorPercentage without mirror", format!("hosts: [a]\nhttp: [{{{r}, mirrorPercentage: {{value: 5}}}}]"),
            vec![("spec.http[0].mirrorPercentage", "no effect without mirror")]),
        ("deprecated delay percent", format!("hosts: [ratings]\nhttp: [{{{r}, fault: {{delay: {{percent: 100, fixedDelay: 7s}}}}}}]"),
            vec![("spec.http[0].fault.delay.percent", "`percent` is deprecated; use percentage")]),
        ("delay without percentage", format!("hosts: [a]\nhttp: [{{{r}, fault: {{delay: {{fixedDelay: 7s}}}}}}]"),
            vec![("spec.http[0].fault.delay", "no request is delayed")]),
        ("abort without percentage or status", format!("hosts: [a]\nhttp: [{{{r}, fault: {{abort: {{}}}}}}]"),
            vec![
                ("spec.http[0].fault.abort", "no httpStatus or grpcStatus"),
                ("spec.http[0].fault.abort", "no request is aborted"),
            ]),
        ("deprecated allowOrigin", format!("hosts: [a]\nhttp: [{{{r}, corsPolicy: {{allowOrigin: [https://a.com]}}}}]"),
            vec![("spec.http[0].corsPolicy.allowOrigin", "`allowOrigin` is deprecated; use allowOrigins")]),
        ("legacy gateway name", format!("hosts: [a]\ngateways: [my-gw.istio-system.svc.cluster.local]\nhttp: [{{{r}}}]"),
            vec![("spec.gateways[0]", "write it as \"istio-system/my-gw\"")]),
        ("IP address as SNI", format!("hosts: [10.0.0.1]\ntls: [{{match: [{{sniHosts: [10.0.0.1]}}], {r}}}]"),
            vec![("spec.tls[0].match[0].sniHosts[0]", "is an IP address")]),
        ("upper-case header match", format!("hosts: [a]\nhttp: [{{match: [{{headers: {{End-User: {{exact: jason}}}}}}], {r}}}]"),
            vec![("spec.http[0].match[0].headers[End-User]", "use \"end-user\"")]),
        ("ignoreUriCase with a regex", format!("hosts: [a]\nhttp: [{{match: [{{uri: {{regex: '/a.*'}}, ignoreUriCase: true}}], {r}}}]"),
            vec![("spec.http[0].match[0].ignoreUriCase", "(?i)")]),
        ("redirect code the proxy cannot send", "hosts: [a]\nhttp: [{redirect: {uri: /x, redirectCode: 300}}]".into(),
            vec![("spec.http[0].redirect.redirectCode", "301, 302, 303, 307, 308")]),
        ("rule after a catch-all", format!("hosts: [a]\nhttp:\n- {{{r}}}\n- {{match: [{{uri: {{prefix: /a}}}}], {r}}}"),
            vec![("spec.http[1]", "http[0] has no match")]),
        ("repeated match",
            format!("hosts: [a]\nhttp:\n- {{match: [{{name: one, uri: {{exact: /a}}}}], {r}}}\n- {{match: [{{name: two, uri: {{exact: /a}}}}], {r}}}"),
            vec![
                ("spec.http[1].match[0]", "http[0].match[0] is the same"),
                ("spec.http[1]", "earlier matches take all of its requests"),
            ]),
        ("prefix covering a longer prefix",
            format!("hosts: [a]\nhttp:\n- {{match: [{{uri: {{prefix: /api}}}}], {r}}}\n- {{match: [{{uri: {{prefix: /api/v1}}}}, {{uri: {{prefix: /web}}}}], {r}}}"),
            vec![("spec.http[1].match[0]", "http[0].match[0] matches everything it does")]),
        ("header match covering a narrower one",
            format!("hosts: [a]\nhttp:\n- {{match: [{{headers: {{end-user: {{prefix: j}}}}}}], {r}}}\n- {{match: [{{headers: {{end-user: {{exact: jason}}, x-b: {{}}}}, uri: {{exact: /x}}}}], {r}}}"),
            vec![
                ("spec.http[1].match[0]", "matches everything it does"),
                ("spec.http[1]", "never used"),
            ]),
        ("repeated TCP match", format!("hosts: [a]\ntcp:\n- {{match: [{{port: 9000}}], {r}}}\n- {{match: [{{port: 9000}}], {r}}}"),
            vec![
                ("spec.tcp[1].match[0]", "tcp[0].match[0] is the same"),
                ("spec.tcp[1]", "never used"),
            ]),
    ]
}

#[test]
fn warnings_keep_istio_meaning() {
    for (name, yaml, want) in &warning_cases() {
        let vs = parse(yaml);
        assert_eq!(errors(&vs), [], "{name}");
        assert_findings(name, &warnings(&vs), want);
    }
}

#[test]
#[rustfmt::skip]
fn matches_that_differ_are_not_shadowed() {
    let r = R;
    let cases = [
        // Different gateways, methods or ports; a narrower, regex or exact earlier match.
        format!("hosts: [a]\nhttp:\n- {{match: [{{uri: {{prefix: /a}}, gateways: [gw1]}}], {r}}}\n- {{match: [{{uri: {{prefix: /a/b}}, gateways: [gw2]}}], {r}}}"),
        format!("hosts: [a]\nhttp:\n- {{match: [{{uri: {{prefix: /a}}, method: {{exact: GET}}}}], {r}}}\n- {{match: [{{uri: {{prefix: /a/b}}}}], {r}}}"),
        format!("hosts: [a]\nhttp:\n- {{match: [{{uri: {{prefix: /a}}, port: 80}}], {r}}}\n- {{match: [{{uri: {{prefix: /a/b}}, port: 81}}], {r}}}"),
        format!("hosts: [a]\nhttp:\n- {{match: [{{uri: {{prefix: /a/b}}}}], {r}}}\n- {{match: [{{uri: {{prefix: /a}}}}], {r}}}"),
        format!("hosts: [a]\nhttp:\n- {{match: [{{uri: {{regex: '/a.*'}}}}], {r}}}\n- {{match: [{{uri: {{prefix: /a}}}}], {r}}}"),
        format!("hosts: [a]\nhttp:\n- {{match: [{{uri: {{exact: /a}}}}], {r}}}\n- {{match: [{{uri: {{prefix: /a}}}}], {r}}}"),
    ];
    for yaml in &cases {
        assert_eq!(warnings(&parse(yaml)), [], "{yaml}");
    }
}

#[test]
fn all_problems_are_reported_together() {
    let vs = parse(
        "
hosts: [Bad]
http:
- route:
  - destination: {host: reviews, subset: V1}
    weight: -1
  timeout: 0s
  retries: {attempts: -2}
",
    );
    let paths: Vec<String> = errors(&vs).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "spec.hosts[0]",
            "spec.http[0].route[0].destination.subset",
            "spec.http[0].route[0].weight",
            "spec.http[0].timeout",
            "spec.http[0].retries.attempts",
        ]
    );
}

#[test]
fn large_bodies_and_regexes() {
    let body = |len: usize| {
        let text = "x".repeat(len);
        parse(&format!(
            "hosts: [a]\nhttp: [{{directResponse: {{status: 200, body: {{string: {text}}}}}}}]"
        ))
    };
    let path = "spec.http[0].directResponse.body";
    assert_findings(
        "1 MiB body",
        &errors(&body(MIB + 1)),
        &[(path, "under 1 MiB")],
    );
    assert_findings(
        "200 KiB body",
        &warnings(&body(200 * KIB)),
        &[(path, "slow down")],
    );

    let long = "a".repeat(1025);
    let vs = parse(&format!(
        "hosts: [a]\nhttp: [{{match: [{{uri: {{regex: {long}}}}}], {R}}}]"
    ));
    let path = "spec.http[0].match[0].uri.regex";
    assert_findings("long regex", &errors(&vs), &[(path, "at most 1024")]);
}

#[test]
fn auto_passthrough_sni_hosts() {
    let vs = parse(
        "
hosts: [outbound_.80_._.e2e.foobar.mesh]
gateways: [istio-system/cross-network]
tls:
- match: [{sniHosts: [outbound_.80_._.e2e.foobar.mesh]}]
  route: [{destination: {host: e2e.foobar.mesh}}]
",
    );
    assert_eq!(errors(&vs), []);
    assert!(auto_passthrough_sni("outbound_.x_._.host.mesh").is_err());
    assert!(auto_passthrough_sni("outbound_.80_._.123").is_err());
    assert!(auto_passthrough_sni("outbound_.80").is_err());
    // Bound to the mesh, such a host is an ordinary (and invalid) name.
    let mesh = "hosts: [outbound_.80_._.a.mesh]\n\
                tls: [{match: [{sniHosts: [outbound_.80_._.a.mesh]}], route: [{destination: {host: a}}]}]";
    assert!(!errors(&parse(mesh)).is_empty());
}

#[test]
fn host_relations() {
    assert!(hosts_overlap("*", "reviews"));
    assert!(hosts_overlap("*.com", "*.example.com"));
    assert!(hosts_overlap("a.example.com", "*.example.com"));
    assert!(!hosts_overlap("a.example.com", "b.example.com"));
    assert!(!hosts_overlap("*.example.com", "example.com"));
    assert!(host_within("a.example.com", "*.example.com"));
    assert!(host_within("*.a.example.com", "*.example.com"));
    assert!(!host_within("*.example.com", "a.example.com"));
    assert!(!host_within("*.com", "*.example.com"));
}

#[test]
fn header_values_follow_envoy_syntax() {
    let ok = [
        "",
        "foo",
        "%HOSTNAME%",
        "100%%",
        "prefix %HOSTNAME% suffix",
        "%REQ(x-request-id)%",
        "%UPSTREAM_METADATA([\"ns\", \"key\"])%",
        "%PER_REQUEST_STATE(a\\)b)%",
        "tab\there",
    ];
    for v in ok {
        assert_eq!(header_value(v), Ok(()), "{v:?}");
    }
    let bad = [
        "abc%123",
        "%START_TIME%%",
        "50%",
        "%X([a])%",
        "%X([\"a\" b])%",
        "%X(a)b%",
        "a\u{7f}",
    ];
    for v in bad {
        assert!(header_value(v).is_err(), "{v:?} should be rejected");
    }
}

#[test]
fn jwt_claim_names() {
    let claims = [
        "@request.auth.claims.group",
        "@request.auth.claims[group][sub]",
        "@Request.Auth.Claims.x",
    ];
    for name in claims {
        assert!(is_jwt_claim(name), "{name}");
    }
    let headers = [
        "@request.auth.claims",
        "@request.auth.claims.",
        "@request.auth.claims[]",
        "x-claims",
    ];
    for name in headers {
        assert!(!is_jwt_claim(name), "{name}");
    }
}

#[test]
fn base64_bodies() {
    let body = |b: &str| HttpBody {
        string: None,
        bytes: Some(b.into()),
    };
    assert_eq!(body("aGVsbG8=").to_bytes(), Ok(b"hello".to_vec()));
    assert_eq!(body("aGVsbG8").to_bytes(), Ok(b"hello".to_vec()));
    assert_eq!(body("_-8=").to_bytes(), Ok(vec![0xff, 0xef]));
    assert_eq!(body("/+8=").to_bytes(), Ok(vec![0xff, 0xef]));
    assert!(body("a").to_bytes().is_err());
    assert!(body("a b=").to_bytes().is_err());
    let text = HttpBody {
        string: Some("ok".into()),
        bytes: None,
    };
    assert_eq!(text.to_bytes(), Ok(b"ok".to_vec()));
}

#[test]
fn schema_is_strict_and_round_trips() {
    let misspelt = "hosts: [a]\nhttp: [{route: [{destination: {host: a}, wieght: 1}]}]";
    let err = match yaml_serde::from_str::<VirtualService>(misspelt) {
        Ok(_) => panic!("a misspelt field must be rejected"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("unknown field `wieght`"), "{err}");
    let bad_enum = "hosts: [a]\nhttp: [{redirect: {derivePort: SOMETIMES}}]";
    assert!(yaml_serde::from_str::<VirtualService>(bad_enum).is_err());

    // The CRD also accepts the proto name of the deprecated mirror percentage.
    let vs = parse(
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirror_percent: 5}]",
    );
    assert_eq!(vs.http[0].mirror_percent, Some(5));

    for (name, yaml) in VALID {
        let vs = parse(yaml);
        let json = match serde_json::to_string(&vs) {
            Ok(json) => json,
            Err(e) => panic!("{name}: {e}"),
        };
        let back: VirtualService = match serde_json::from_str(&json) {
            Ok(back) => back,
            Err(e) => panic!("{name}: {e}\n{json}"),
        };
        assert_eq!(back, vs, "{name}");
    }
}

#[test]
fn typed_access() {
    let gateway = parse(VALID[8].1);
    assert!(!gateway.applies_to_mesh());
    assert!(!gateway.is_delegate());
    let static_files = gateway.http[0].matches[1].uri.as_ref();
    assert_eq!(
        static_files.and_then(StringMatch::matcher),
        Some(Matcher::Prefix("/static"))
    );
    assert_eq!(
        gateway.http[0].route[0].destination.port,
        Some(PortSelector { number: 9080 })
    );

    let shift = parse(VALID[2].1);
    let weights: Vec<i32> = shift.http[0].route.iter().map(|d| d.weight).collect();
    assert_eq!(weights, [50, 50]);

    let delay = parse(VALID[4].1);
    let fault = delay.http[0].fault.as_ref();
    let fixed = fault
        .and_then(|f| f.delay.as_ref())
        .and_then(|d| d.fixed_delay.as_ref());
    assert_eq!(
        fixed.map(Duration::get),
        Some(Ok(std::time::Duration::from_secs(7)))
    );
}
