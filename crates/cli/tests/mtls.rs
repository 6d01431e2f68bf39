//! Mutual TLS in local mode, as Istio's security tasks describe it, on bookinfo through
//! `weft up`: sidecars talk mTLS with certificates from the mesh's CA (auto mTLS); a client
//! without a sidecar reaches a workload under PERMISSIVE and is refused under STRICT; a
//! credential cannot get another workload's identity; certificates rotate under load without a
//! failed request.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Lines, Up, WEFT, apply_yaml, get, get_with, line_with, until, up, weft};

const BOOKINFO_AND_HTTPBIN: [&str; 2] = ["bookinfo/bookinfo.yaml", "httpbin/httpbin.yaml"];

/// A stat of a proxy's admin endpoint.
fn stat(admin: SocketAddr, name: &str) -> u64 {
    get(admin, "admin", "/stats")
        .ok()
        .and_then(|(_, text)| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The serial of a proxy's workload certificate in force, from its admin `/certs`.
fn serial(admin: SocketAddr) -> Option<String> {
    let (_, text) = get(admin, "admin", "/certs").ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(json["certificates"][0]["serialNumber"].as_str()?.to_owned())
}

const STRICT_MESH: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

const PERMISSIVE_MESH: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
";

/// reviews takes plaintext on its port again, whatever the mesh says.
const REVIEWS_DISABLE: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: DISABLE}
";

/// A connection per request from the caller's sidecar to ratings: every request is a new
/// mTLS handshake, so rotated certificates are used (and expired ones would fail).
const RATINGS_NO_KEEPALIVE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
";

/// productpage's sidecar asking for reviews (mTLS between the sidecars).
fn reviews_via_sidecar(up: &Up) -> Result<(u16, String), String> {
    get(
        up.sidecar("productpage-v1-0"),
        "reviews:9080",
        "http://reviews:9080/reviews/0",
    )
}

#[test]
fn mtls_migration_permissive_then_strict_and_identities_cannot_be_forged() {
    let up = up("mtls-migration", &BOOKINFO_AND_HTTPBIN, &[]);
    let reviews = up.inbound("reviews-v1-0");
    let ratings = up.inbound("ratings-v1-0");

    // PERMISSIVE (Istio's default): a client without a sidecar (this test) reaches ratings in
    // plaintext, and sidecars reach it with mTLS.
    assert_eq!(get(ratings, "ratings", "/ratings/0").map(|r| r.0), Ok(200));
    let handshakes = stat(up.admin("ratings-v1-0"), "listener.ssl.handshake");
    for _ in 0..5 {
        let (status, _) = get(
            up.sidecar("reviews-v2-0"),
            "ratings:9080",
            "http://ratings:9080/ratings/0",
        )
        .expect("through the sidecar");
        assert_eq!(status, 200);
    }
    assert!(
        stat(up.admin("ratings-v1-0"), "listener.ssl.handshake") > handshakes,
        "reviews' sidecar reached ratings over mTLS"
    );

    // The peer's identity downstream, as Istio's sidecars set it: the caller's sidecar drops
    // what the app sent (SANITIZE), the destination's appends the mTLS peer (APPEND_FORWARD).
    let (status, echoed) = get_with(
        up.sidecar("productpage-v1-0"),
        "httpbin:8000",
        "http://httpbin:8000/headers",
        "X-Forwarded-Client-Cert: By=spiffe://forged;URI=spiffe://cluster.local/ns/default/sa/admin\r\n",
    )
    .expect("httpbin answers");
    assert_eq!(status, 200, "{echoed}");
    let xfcc = echoed
        .lines()
        .find(|l| l.to_ascii_lowercase().contains("x-forwarded-client-cert"))
        .unwrap_or_else(|| panic!("no x-forwarded-client-cert in {echoed}"));
    assert!(
        !xfcc.contains("forged") && !xfcc.contains("sa/admin"),
        "{xfcc}"
    );
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/default/sa/httpbin;Hash="),
        "{xfcc}"
    );
    assert!(
        xfcc.contains(
            "Subject=\\\"\\\";URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        ) || xfcc.contains("Subject=\\\"\\\"")
            && xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        "{xfcc}"
    );

    // STRICT mesh-wide: plaintext is refused, mTLS from sidecars goes on.
    apply_yaml(&up.state, &up.tmp, "strict.yaml", STRICT_MESH);
    until(
        "plaintext refused under STRICT",
        Duration::from_secs(20),
        || get(reviews, "reviews", "/reviews/0").is_err(),
    );
    for _ in 0..10 {
        assert_eq!(
            get(ratings, "ratings", "/ratings/0").map(|r| r.0).ok(),
            None
        );
        assert_eq!(reviews_via_sidecar(&up).map(|r| r.0), Ok(200));
    }
    assert!(stat(up.admin("reviews-v1-0"), "listener.ssl.connection_error") > 0);

    // A workload's port-level DISABLE beats the mesh's STRICT: reviews takes plaintext again,
    // and its callers' sidecars send it plaintext (auto mTLS follows the destination's mode).
    apply_yaml(&up.state, &up.tmp, "reviews.yaml", REVIEWS_DISABLE);
    until(
        "plaintext to reviews under DISABLE",
        Duration::from_secs(20),
        || get(reviews, "reviews", "/reviews/0").is_ok_and(|r| r.0 == 200),
    );
    until(
        "productpage reaches reviews in plaintext",
        Duration::from_secs(20),
        || reviews_via_sidecar(&up).is_ok_and(|r| r.0 == 200),
    );
    assert_eq!(
        get(ratings, "ratings", "/ratings/0").map(|r| r.0).ok(),
        None
    );

    // Back to PERMISSIVE: the client without a sidecar is served again.
    apply_yaml(&up.state, &up.tmp, "strict.yaml", PERMISSIVE_MESH);
    until(
        "plaintext served under PERMISSIVE",
        Duration::from_secs(20),
        || get(ratings, "ratings", "/ratings/0").is_ok_and(|r| r.0 == 200),
    );

    // A credential cannot get another identity: a proxy holding reviews-v1-0's token and asking
    // for productpage's identity is refused by the CA and never becomes ready.
    let ca = line_with(&up.lines, "Control plane ready")
        .rsplit("ca ")
        .next()
        .and_then(|s| s.trim_end_matches(')').parse::<SocketAddr>().ok())
        .expect("the CA's address");
    let forged = up.tmp.join("forged.yaml");
    std::fs::write(
        &forged,
        format!(
            "node: {{id: \"sidecar~127.0.0.1~forged.default~default.svc.cluster.local\"}}\n\
             admin: {{address: \"127.0.0.1:0\", healthAddress: \"127.0.0.1:0\"}}\n\
             identity: {{caAddress: \"{ca}\", caRootFile: {:?}, tokenFile: {:?}, \
             namespace: default, serviceAccount: bookinfo-productpage}}\n",
            up.state.join("ca/ca-cert.pem"),
            up.state.join("proxies/reviews-v1-0.token"),
        ),
    )
    .expect("write forged bootstrap");
    let mut proxy = Command::new(WEFT)
        .args(["proxy", "--config"])
        .arg(&forged)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft proxy");
    let stderr = proxy.stderr.take().expect("stderr");
    let seen: Lines = Arc::default();
    let keep = seen.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            keep.lock().unwrap().push(l);
        }
    });
    until(
        "the CA refuses the forged request",
        Duration::from_secs(20),
        || {
            seen.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("PermissionDenied") && l.contains("bookinfo-productpage"))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = proxy.kill();
    let _ = proxy.wait();
    let log = seen.lock().unwrap().join("\n");
    assert!(!log.contains("weft-proxy: ready"), "{log}");
    assert!(
        log.contains(
            "this credential may only have spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        ),
        "{log}"
    );
    // Inspection: the certificate in force, from the proxy itself.
    let shown = weft(&up.state, &["proxy-config", "secret", "reviews-v1-0"]);
    assert!(
        shown.contains("IDENTITY spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{shown}"
    );
    let rows: Vec<&str> = shown.lines().collect();
    assert!(
        rows.iter().any(|r| r.starts_with("default ")
            && r.contains("Cert Chain")
            && r.contains("URI:spiffe://cluster.local/ns/default/sa/bookinfo-reviews")),
        "{shown}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("ROOTCA ")
            && r.split_whitespace().last().is_some_and(|f| f.len() == 64)),
        "{shown}"
    );
    // And the table of `weft up` names each workload's identity.
    assert!(
        line_with(&up.lines, "reviews-v1-0 ")
            .ends_with("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
    );

    // The token file is the replica's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(up.state.join("proxies/reviews-v1-0.token"))
        .expect("token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    up.finish();
}

#[test]
fn certificates_rotate_under_load_without_a_failed_request() {
    let up = up(
        "mtls-rotation",
        &BOOKINFO_AND_HTTPBIN,
        &["--workload-cert-ttl", "3s"],
    );
    apply_yaml(&up.state, &up.tmp, "strict.yaml", STRICT_MESH);
    apply_yaml(&up.state, &up.tmp, "ratings.yaml", RATINGS_NO_KEEPALIVE);
    let ratings = up.inbound("ratings-v1-0");
    until("STRICT in force", Duration::from_secs(20), || {
        get(ratings, "ratings", "/ratings/0").is_err()
    });
    let caller = up.sidecar("reviews-v2-0");
    let admins = [up.admin("reviews-v2-0"), up.admin("ratings-v1-0")];
    let mut serials: BTreeMap<SocketAddr, BTreeSet<String>> = BTreeMap::new();
    let mut ok = 0;
    let mut failed = Vec::new();
    let start = Instant::now();
    // 8 s with a 3 s lifetime: each side renews (at 1.35-1.5 s) five times or so, and every
    // request is a new handshake with the certificates in force.
    while start.elapsed() < Duration::from_secs(8) {
        match get(caller, "ratings:9080", "http://ratings:9080/ratings/0") {
            Ok((200, _)) => ok += 1,
            other => failed.push(format!("{:?}: {other:?}", start.elapsed())),
        }
        for a in admins {
            if let Some(s) = serial(a) {
                serials.entry(a).or_default().insert(s);
            }
        }
    }
    assert!(failed.is_empty(), "{} ok, failed: {failed:?}", ok);
    assert!(ok > 50, "only {ok} requests");
    for (admin, seen) in &serials {
        assert!(
            seen.len() >= 4,
            "{admin}: only {} certificates over 8 s: {seen:?}",
            seen.len()
        );
    }
    assert!(
        stat(up.admin("ratings-v1-0"), "listener.ssl.handshake") as usize >= ok,
        "a handshake per request"
    );
    up.finish();
}
