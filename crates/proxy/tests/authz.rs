//! Authorization and request authentication on a real weft-proxy: AuthorizationPolicy denials
//! (403 `RBAC: access denied`, the policy named in the access log), JWTs (401 with Envoy's
//! message and challenge), and TCP connections closed when denied.

mod support;

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::{Proxy, backend, client, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An ES256 key: its JWKS and the tokens it signs.
struct Signer(EcdsaKeyPair);

impl Signer {
    fn new() -> Signer {
        Signer(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    fn jwks(&self) -> String {
        let p = self.0.public_key().as_ref();
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])}]})
        .to_string()
    }

    fn token(&self, sub: &str, aud: &str, exp_from_now: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let header = serde_json::json!({"alg": "ES256", "kid": "k1"}).to_string();
        let claims = serde_json::json!({"iss": "testing@secure.istio.io", "sub": sub,
            "aud": aud, "exp": now + exp_from_now})
        .to_string();
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = self
            .0
            .sign(&SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn log_file(name: &str) -> (support::TempDir, std::path::PathBuf) {
    let dir = support::TempDir(std::env::temp_dir().join(format!(
        "{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let log = dir.0.join("access.log");
    (dir, log)
}

/// The access log's JSON lines, once `n` are there (bounded wait).
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON line"))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} access log lines in {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_answer_403_and_the_access_log_names_the_policy() {
    let app = backend("app").await;
    let (_dir, log) = log_file("weft-authz");
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- name: http
  address: 127.0.0.1:0
  accessLog: {{path: "{}", format: JSON}}
  http:
    routeConfig: main
    rbac:
      policies:
      - {{namespace: default, name: deny-admin, action: DENY, rules: [{{to: [{{paths: ["/admin*"]}}]}}]}}
      - {{namespace: default, name: allow-get, action: ALLOW, rules: [{{to: [{{methods: [GET, HEAD]}}]}}]}}
      - {{namespace: default, name: audit-all, action: AUDIT, rules: [{{}}]}}
routeConfigs:
- name: main
  virtualHosts: [{{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: app}}]}}}}]}}]
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#,
        log.display()
    ));
    let c = client();
    let addr = proxy.addr("http");
    let ok = get(&c, addr, "app", "/productpage", &[]).await;
    assert_eq!(
        (ok.status, ok.body.starts_with("app /productpage")),
        (200, true)
    );

    let denied = get(&c, addr, "app", "/admin/users", &[]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "RBAC: access denied");
    assert_eq!(denied.headers["content-type"], "text/plain");

    let post = support::send(
        &c,
        http::Request::post(format!("http://{addr}/productpage"))
            .header("host", "app")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (post.status, post.body.as_str()),
        (403, "RBAC: access denied")
    );

    let lines = log_lines(&log, 3).await;
    let details: Vec<&str> = lines
        .iter()
        .map(|l| l["response_code_details"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        details,
        [
            "-",
            "rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]-rule[0]]",
            "rbac_access_denied_matched_policy[none]",
        ]
    );
    assert_eq!(lines[1]["response_code"], 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_flow_as_istios_task() {
    let app = backend("app").await;
    let signer = Signer::new();
    let stranger = Signer::new();
    let jwks = serde_json::to_string(&signer.jwks()).unwrap();
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- name: http
  address: 127.0.0.1:0
  http:
    routeConfig: main
    jwtAuthn:
      providers:
      - {{issuer: testing@secure.istio.io, jwks: {jwks}, outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]}}
    rbac:
      policies:
      - namespace: default
        name: require-jwt
        action: ALLOW
        rules:
        - {{to: [{{paths: ["/public*"]}}]}}
        - from: [{{requestPrincipals: ["testing@secure.istio.io/*"]}}]
          when: [{{key: request.auth.audiences, values: [bookinfo]}}]
routeConfigs:
- name: main
  virtualHosts: [{{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: app}}]}}}}]}}]
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#
    ));
    let c = client();
    let addr = proxy.addr("http");
    let bearer = |t: &str| format!("Bearer {t}");

    // Expired: 401 with Envoy's body and challenge.
    let expired = bearer(&signer.token("alice", "bookinfo", -3600));
    let r = get(
        &c,
        addr,
        "app",
        "/public/x?a=1",
        &[("authorization", &expired)],
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt is expired"));
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer realm=\"http://app/public/x\", error=\"invalid_token\""
    );
    // No token: passes where no principal is required.
    let r = get(&c, addr, "app", "/public/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // No token where the policy requires a request principal: 403.
    let r = get(&c, addr, "app", "/private", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    // A good token: the claim reaches the app, the token does not.
    let good = bearer(&signer.token("alice", "bookinfo", 3600));
    let r = get(&c, addr, "app", "/private", &[("authorization", &good)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-echo-x-jwt-sub"], "alice");
    assert!(r.headers.get("x-echo-authorization").is_none());
    // The wrong audience where the policy requires one: 403.
    let wrong_aud = bearer(&signer.token("alice", "other", 3600));
    let r = get(
        &c,
        addr,
        "app",
        "/private",
        &[("authorization", &wrong_aud)],
    )
    .await;
    assert_eq!(r.status, 403);
    // Signed by other keys: 401.
    let forged = bearer(&stranger.token("alice", "bookinfo", 3600));
    let r = get(&c, addr, "app", "/public/x", &[("authorization", &forged)]).await;
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt verification fails"));
}

async fn echo() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Writes `ping` and reads what comes back before the connection ends (bounded).
async fn ping(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(b"ping").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer or a close in time")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_closed_when_denied() {
    let echo = echo().await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- name: denied
  address: 127.0.0.1:0
  tcp:
    cluster: echo
    rbac:
      policies:
      - {{namespace: db, name: deny-local, action: DENY, rules: [{{from: [{{ipBlocks: [127.0.0.0/8]}}], to: [{{methods: [GET]}}]}}]}}
- name: http-only-allow
  address: 127.0.0.1:0
  tcp:
    cluster: echo
    rbac:
      policies:
      - {{namespace: db, name: allow-get, action: ALLOW, rules: [{{to: [{{methods: [GET]}}]}}]}}
- name: allowed
  address: 127.0.0.1:0
  tcp:
    cluster: echo
    rbac:
      policies:
      - {{namespace: db, name: allow-local, action: ALLOW, rules: [{{from: [{{ipBlocks: [127.0.0.1]}}]}}]}}
clusters:
- {{name: echo, endpoints: [{{address: "{echo}"}}]}}
"#
    ));
    // A DENY rule's HTTP-only field is ignored on TCP: it denies.
    assert_eq!(ping(proxy.addr("denied")).await, "");
    // An ALLOW rule with an HTTP-only field never matches on TCP: nothing is allowed.
    assert_eq!(ping(proxy.addr("http-only-allow")).await, "");
    assert_eq!(ping(proxy.addr("allowed")).await, "ping");
}

#[test]
fn a_bad_policy_is_refused_naming_the_field() {
    let dir = support::TempDir(std::env::temp_dir().join(format!(
        "weft-authz-bad-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("bootstrap.yaml");
    std::fs::write(
        &path,
        "listeners:\n- name: http\n  address: 127.0.0.1:0\n  http:\n    routeConfig: main\n    rbac: {policies: [{name: p, rules: [{when: [{key: request.body, values: [x]}]}]}]}\nrouteConfigs: [{name: main}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run weft-proxy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("http.rbac.policies[0].rules[0].when[0].key")
            && err.contains("not a supported condition key"),
        "{err}"
    );
}

/// A policy pushed while a client keeps its connection open applies to that connection's
/// next request (policies are read per request, not kept with the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_policy_applies_to_open_connections() {
    let app = backend("app").await;
    let config = |policies: &str| {
        format!(
            r#"
listeners:
- name: http
  address: 127.0.0.1:0
  http: {{routeConfig: main, rbac: {{policies: [{policies}]}}}}
routeConfigs:
- name: main
  virtualHosts: [{{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: app}}]}}}}]}}]
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#
        )
    };
    let proxy = Proxy::start(&config(""));
    let addr = proxy.addr("http");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let ask = async |stream: &mut tokio::net::TcpStream| {
        stream
            .write_all(b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // One response: its head and a body of content-length bytes.
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return text;
                }
            }
        }
    };
    let first = ask(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    proxy.rewrite_config(&config(
        "{namespace: default, name: deny-all, action: DENY, rules: [{}]}",
    ));
    assert!(
        proxy
            .wait_log("config reloaded", Duration::from_secs(10))
            .is_some(),
        "no reload"
    );
    let second = ask(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 403"), "{second}");
    assert!(second.ends_with("RBAC: access denied"), "{second}");
}
