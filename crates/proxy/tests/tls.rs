//! TLS: termination (certificate chosen by SNI, ALPN, x-forwarded-proto), client certificates
//! verified on termination (mutual and optional mutual, per certificate), origination to
//! upstreams (CA, SNI, subject alternative names, client certificates, HTTP/2 by ALPN), and
//! passthrough routed by SNI.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use support::{Proxy, TempDir, backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Certs {
    dir: TempDir,
    a: rcgen::CertifiedKey<rcgen::KeyPair>,
    b: rcgen::CertifiedKey<rcgen::KeyPair>,
}

fn certs() -> Certs {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "weft-tls-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let a = rcgen::generate_simple_self_signed(vec!["a.example.com".to_owned()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["*.b.example.com".to_owned()]).unwrap();
    for (name, c) in [("a", &a), ("b", &b)] {
        std::fs::write(dir.0.join(format!("{name}.crt")), c.cert.pem()).unwrap();
        std::fs::write(
            dir.0.join(format!("{name}.key")),
            c.signing_key.serialize_pem(),
        )
        .unwrap();
    }
    Certs { dir, a, b }
}

fn client(certs: &Certs, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certs.a.cert.der().to_vec()))
        .unwrap();
    roots
        .add(CertificateDer::from(certs.b.cert.der().to_vec()))
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_tls_choosing_the_certificate_by_sni() {
    let certs = certs();
    let app = backend("app").await;
    let d = certs.dir.0.display();
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- name: https
  address: 127.0.0.1:0
  http:
    routeConfig: main
    tls:
      certificates:
      - {{certFile: "{d}/a.crt", keyFile: "{d}/a.key", serverNames: [a.example.com]}}
      - {{certFile: "{d}/b.crt", keyFile: "{d}/b.key", serverNames: ["*.b.example.com"]}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: app}}]}}}}]}}
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#
    ));
    let addr = proxy.addr("https");

    for (sni, want) in [
        ("a.example.com", certs.a.cert.der()),
        ("x.b.example.com", certs.b.cert.der()),
    ] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut tls = client(&certs, &[b"http/1.1"])
            .connect(name, tcp)
            .await
            .expect("handshake");
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(presented.as_ref(), want.as_ref(), "certificate for {sni}");
        let req = format!("GET /secure HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut out))
            .await
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("x-echo-x-forwarded-proto: https"), "{out}");
        assert!(out.contains("app /secure"), "{out}");
    }

    // ALPN: a client offering h2 gets h2.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("a.example.com".to_owned()).unwrap();
    let tls = client(&certs, &[b"h2", b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused() {
    let certs = certs();
    let d = certs.dir.0.display();
    let path = certs.dir.0.join("bad.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners:\n- name: https\n  address: 127.0.0.1:0\n  http:\n    routeConfig: main\n    tls: {{certificates: [{{certFile: \"{d}/a.crt\", keyFile: \"{d}/b.key\"}}]}}\nrouteConfigs: [{{name: main}}]\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.tls.certificates[0].keyFile"), "{err}");
}

/// A test CA and the certificates it issues, as files the proxy reads.
struct Pki {
    dir: TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// An issued certificate: its files, and the same material for an in-test server or client.
struct Issued {
    cert_file: String,
    key_file: String,
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "weft-pki-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        )));
        std::fs::create_dir_all(&dir.0).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("weft test CA {}", fastrand::u32(..)),
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        std::fs::write(dir.0.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_file(&self) -> String {
        self.dir.0.join("ca.pem").display().to_string()
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    /// A leaf certificate for DNS names and an optional URI SAN (a SPIFFE identity).
    fn issue(&self, file: &str, dns: &[&str], uri: Option<&str>) -> Issued {
        let names: Vec<String> = dns.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if let Some(u) = uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(u.try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_file = self.dir.0.join(format!("{file}.crt"));
        let key_file = self.dir.0.join(format!("{file}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Issued {
            cert_file: cert_file.display().to_string(),
            key_file: key_file.display().to_string(),
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS backend (HTTP/1.1 or HTTP/2 by ALPN) answering
/// `name version authority=A sni=S client-cert=yes|no`; with `client_ca` it requires a
/// client certificate issued by it.
async fn tls_backend(
    name: &'static str,
    id: &Issued,
    client_ca: Option<rustls::RootCertStore>,
) -> std::net::SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let conn = tls.get_ref().1;
                let sni = conn.server_name().unwrap_or("-").to_owned();
                let client_cert = if conn.peer_certificates().is_some() {
                    "yes"
                } else {
                    "no"
                };
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let authority = req
                        .uri()
                        .authority()
                        .map(ToString::to_string)
                        .or_else(|| {
                            req.headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_owned)
                        })
                        .unwrap_or_default();
                    let text = format!(
                        "{name} {:?} authority={authority} sni={sni} client-cert={client_cert}",
                        req.version()
                    );
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(text)),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originates_tls_verifying_the_upstream() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = pki.issue(
        "app",
        &["app.internal"],
        Some("spiffe://cluster.local/ns/default/sa/app"),
    );
    let client_id = pki.issue(
        "client",
        &[],
        Some("spiffe://cluster.local/ns/default/sa/productpage"),
    );
    let app = tls_backend("app", &server, None).await;
    let mutual = tls_backend("mutual", &server, Some(pki.roots())).await;
    let ca = pki.ca_file();
    let wrong_ca = other.ca_file();
    let (cert, key) = (&client_id.cert_file, &client_id.key_file);
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: http, address: 127.0.0.1:0, http: {{routeConfig: main}}}}
routeConfigs:
- name: main
  virtualHosts:
  - name: all
    domains: ["*"]
    routes:
    - {{matches: [{{uri: {{prefix: /simple}}}}], route: {{clusters: [{{cluster: simple}}]}}}}
    - {{matches: [{{uri: {{prefix: /h2}}}}], route: {{clusters: [{{cluster: h2}}]}}}}
    - {{matches: [{{uri: {{prefix: /spiffe}}}}], route: {{clusters: [{{cluster: spiffe}}]}}}}
    - {{matches: [{{uri: {{prefix: /wrong-san}}}}], route: {{clusters: [{{cluster: wrong-san}}]}}}}
    - {{matches: [{{uri: {{prefix: /wrong-ca}}}}], route: {{clusters: [{{cluster: wrong-ca}}]}}}}
    - {{matches: [{{uri: {{prefix: /wrong-sni}}}}], route: {{clusters: [{{cluster: wrong-sni}}]}}}}
    - {{matches: [{{uri: {{prefix: /mutual}}}}], route: {{clusters: [{{cluster: mutual}}]}}}}
    - {{matches: [{{uri: {{prefix: /no-client-cert}}}}], route: {{clusters: [{{cluster: no-client-cert}}]}}}}
clusters:
- {{name: simple, tls: {{sni: app.internal, caFile: "{ca}"}}, endpoints: [{{address: "{app}"}}]}}
- {{name: h2, protocol: HTTP2, tls: {{sni: app.internal, caFile: "{ca}"}}, endpoints: [{{address: "{app}"}}]}}
- name: spiffe
  tls: {{sni: app.internal, caFile: "{ca}", subjectAltNames: ["spiffe://cluster.local/ns/default/sa/app"]}}
  endpoints: [{{address: "{app}"}}]
- name: wrong-san
  tls: {{sni: app.internal, caFile: "{ca}", subjectAltNames: ["spiffe://cluster.local/ns/default/sa/other"]}}
  endpoints: [{{address: "{app}"}}]
- {{name: wrong-ca, tls: {{sni: app.internal, caFile: "{wrong_ca}"}}, endpoints: [{{address: "{app}"}}]}}
- {{name: wrong-sni, tls: {{sni: db.internal, caFile: "{ca}"}}, endpoints: [{{address: "{app}"}}]}}
- name: mutual
  tls: {{sni: app.internal, caFile: "{ca}", certFile: "{cert}", keyFile: "{key}"}}
  endpoints: [{{address: "{mutual}"}}]
- {{name: no-client-cert, tls: {{sni: app.internal, caFile: "{ca}"}}, endpoints: [{{address: "{mutual}"}}]}}
"#
    ));
    let addr = proxy.addr("http");
    let c = support::client();
    let host = "app.default.svc.cluster.local";

    let simple = support::get(&c, addr, host, "/simple", &[]).await;
    assert_eq!(simple.status, 200, "{}", simple.body);
    assert_eq!(
        simple.body,
        format!("app HTTP/1.1 authority={host} sni=app.internal client-cert=no")
    );
    // HTTP/2 over TLS, negotiated by ALPN, with the request's authority as :authority.
    let h2 = support::get(&c, addr, host, "/h2", &[]).await;
    assert_eq!(
        h2.body,
        format!("app HTTP/2.0 authority={host} sni=app.internal client-cert=no")
    );
    let spiffe = support::get(&c, addr, host, "/spiffe", &[]).await;
    assert_eq!(spiffe.status, 200, "{}", spiffe.body);
    let mutual = support::get(&c, addr, host, "/mutual", &[]).await;
    assert_eq!(
        mutual.body,
        format!("mutual HTTP/1.1 authority={host} sni=app.internal client-cert=yes")
    );

    // Every verification failure is a connect failure: 503 UF, and the reason in the body.
    for (path, reason) in [
        ("/wrong-san", "NotValidForName"),
        ("/wrong-ca", "UnknownIssuer"),
        ("/wrong-sni", "not valid for name \"db.internal\""),
    ] {
        let r = support::get(&c, addr, host, path, &[]).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(
            r.headers["x-weft-response-flags"], "UF",
            "{path}: {}",
            r.body
        );
        assert!(r.body.contains(reason), "{path}: {}", r.body);
    }
    // A server that wants a client certificate says so after a TLS 1.3 client has finished
    // its handshake, so the proxy learns it with the request in flight: 503 UC.
    let r = support::get(&c, addr, host, "/no-client-cert", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["x-weft-response-flags"], "UC", "{}", r.body);
    assert!(r.body.contains("CertificateRequired"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_routes_by_sni_without_terminating() {
    let pki = Pki::new();
    let a_id = pki.issue("a", &["a.example.com"], None);
    // The route's `*.b.example.com` covers any depth (Envoy's server_names); the certificate
    // names the deep one too, so the client's verification passes.
    let b_id = pki.issue("b", &["*.b.example.com", "deep.x.b.example.com"], None);
    let a = tls_backend("a", &a_id, None).await;
    let b = tls_backend("b", &b_id, None).await;
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- name: tls
  address: 127.0.0.1:0
  tlsPassthrough:
    routes:
    - {{serverNames: [a.example.com], cluster: a}}
    - {{serverNames: ["*.b.example.com"], cluster: b}}
clusters:
- {{name: a, endpoints: [{{address: "{a}"}}]}}
- {{name: b, endpoints: [{{address: "{b}"}}]}}
"#
    ));
    let addr = proxy.addr("tls");
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    // The client's handshake is with the backend itself: its certificate, its answer.
    for (sni, backend, want_cert) in [
        ("a.example.com", "a", &a_id.chain[0]),
        ("deep.x.b.example.com", "b", &b_id.chain[0]),
    ] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut tls =
            match tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await
            {
                Ok(Ok(t)) => t,
                other => panic!("{sni}: handshake: {:?}", other.map(|r| r.err())),
            };
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(&presented, want_cert, "{sni}");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut out))
            .await
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains(&format!("{backend} HTTP/1.1")), "{out}");
    }

    // No route for the SNI: the connection is closed, nothing is forwarded.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("c.example.com".to_owned()).unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("closed in time");
    assert!(refused.is_err(), "no route must not complete a handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_originates_tls() {
    let pki = Pki::new();
    let server = pki.issue("db", &["db.internal"], None);
    let db = tls_backend("db", &server, None).await;
    let ca = pki.ca_file();
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- {{name: tcp, address: 127.0.0.1:0, tcp: {{cluster: db}}}}
clusters:
- {{name: db, tls: {{sni: db.internal, caFile: "{ca}"}}, endpoints: [{{address: "{db}"}}]}}
"#
    ));
    // Plaintext in, TLS out: the backend answers over the proxy's TLS connection.
    let mut s = tokio::net::TcpStream::connect(proxy.addr("tcp"))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("db HTTP/1.1 authority=db sni=db.internal"),
        "{out}"
    );
}

/// An HTTP/1.1 GET over TLS with SNI `sni` and Host `host`, presenting `identity` when given:
/// the response, or why the connection failed.
async fn https_get(
    addr: std::net::SocketAddr,
    roots: rustls::RootCertStore,
    identity: Option<&Issued>,
    sni: &str,
    host: &str,
) -> Result<String, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let exchange = async {
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!("GET /mtls HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        tls.read_to_string(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_mutual_tls_verifying_client_certificates_per_server() {
    let servers = Pki::new();
    let clients = Pki::new();
    let strangers = Pki::new();
    let gw = servers.issue(
        "gw",
        &[
            "open.example.com",
            "mtls.example.com",
            "optional.example.com",
        ],
        None,
    );
    let spiffe = "spiffe://cluster.local/ns/default/sa/client";
    let client_id = clients.issue("client", &["client.example.com"], Some(spiffe));
    let other_san = clients.issue("other", &["other.example.com"], None);
    let stranger = strangers.issue("stranger", &["client.example.com"], Some(spiffe));
    let app = backend("app").await;
    let (cert, key, ca) = (&gw.cert_file, &gw.key_file, clients.ca_file());
    let config = format!(
        r#"
listeners:
- name: https
  address: 127.0.0.1:0
  http:
    routeConfig: main
    tls:
      certificates:
      - {{certFile: "{cert}", keyFile: "{key}", serverNames: [open.example.com]}}
      - certFile: "{cert}"
        keyFile: "{key}"
        serverNames: [mtls.example.com]
        clientValidation: {{caFile: "{ca}", subjectAltNames: ["{spiffe}"]}}
      - certFile: "{cert}"
        keyFile: "{key}"
        serverNames: [optional.example.com]
        clientValidation: {{caFile: "{ca}", optional: true}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: app}}]}}}}]}}
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#
    );
    let proxy = Proxy::start(&config);
    let addr = proxy.addr("https");
    let roots = || servers.roots();
    let ok = |r: Result<String, String>, what: &str| {
        let out = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
        assert!(out.contains("app /mtls"), "{what}: {out}");
    };

    let mtls = "mtls.example.com";
    ok(
        https_get(addr, roots(), Some(&client_id), mtls, mtls).await,
        "a certificate from the CA with the SAN",
    );
    // Refused: the client learns it from the alert when it reads (TLS 1.3 finishes the
    // client's side of the handshake before the server has checked its certificate).
    for (identity, alert, what) in [
        (None, "CertificateRequired", "no certificate"),
        (
            Some(&stranger),
            "UnknownCA",
            "a certificate from another CA",
        ),
        (
            Some(&other_san),
            "BadCertificate",
            "a certificate without the SAN",
        ),
    ] {
        let err = https_get(addr, roots(), identity, mtls, mtls)
            .await
            .expect_err(what);
        assert!(err.contains(alert), "{what}: {err}");
    }

    let optional = "optional.example.com";
    ok(
        https_get(addr, roots(), None, optional, optional).await,
        "optional, without a certificate",
    );
    ok(
        https_get(addr, roots(), Some(&other_san), optional, optional).await,
        "optional, with a certificate from the CA",
    );
    let err = https_get(addr, roots(), Some(&stranger), optional, optional)
        .await
        .expect_err("optional still verifies a certificate that is sent");
    assert!(err.contains("UnknownCA"), "{err}");

    // The SNI of a server without client verification does not reach the mutual one's host.
    let open = "open.example.com";
    ok(https_get(addr, roots(), None, open, open).await, "open");
    let out = https_get(addr, roots(), None, open, mtls).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.contains("x-weft-response-flags: NR"), "{out}");

    let c = support::client();
    let stats = support::get(&c, proxy.admin, "admin", "/stats", &[])
        .await
        .body;
    for line in [
        "listener.ssl.fail_verify_no_cert: 1",
        "listener.ssl.fail_verify_error: 2",
        "listener.ssl.fail_verify_san: 1",
        "listener.ssl.connection_error: 4",
        "listener.ssl.handshake: 5",
    ] {
        assert!(stats.contains(line), "{line} in\n{stats}");
    }

    // A reload naming a CA file that is not there is refused with the field; the previous
    // config keeps verifying clients.
    let port = addr.port();
    proxy.rewrite_config(
        &config
            .replace(&ca, "/nonexistent/ca.pem")
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    );
    let rejected = proxy
        .wait_log("config rejected", Duration::from_secs(10))
        .expect("the reload is refused");
    assert!(
        rejected.contains("http.tls.certificates[1].clientValidation.caFile: /nonexistent/ca.pem"),
        "{rejected}"
    );
    ok(
        https_get(addr, roots(), Some(&client_id), mtls, mtls).await,
        "after the refused reload",
    );
    let err = https_get(addr, roots(), None, mtls, mtls)
        .await
        .expect_err("still required after the refused reload");
    assert!(err.contains("CertificateRequired"), "{err}");
}

#[test]
fn a_bad_client_ca_file_is_a_config_error() {
    let pki = Pki::new();
    let gw = pki.issue("gw", &["gw.example.com"], None);
    let bad_ca = pki.dir.0.join("bad-ca.pem");
    std::fs::write(&bad_ca, "not a certificate\n").unwrap();
    let path = pki.dir.0.join("bad.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners:\n- name: https\n  address: 127.0.0.1:0\n  http:\n    routeConfig: main\n    tls: {{certificates: [{{certFile: \"{}\", keyFile: \"{}\", clientValidation: {{caFile: \"{}\"}}}}]}}\nrouteConfigs: [{{name: main}}]\n",
            gw.cert_file,
            gw.key_file,
            bad_ca.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener \"https\": http.tls.certificates[0].clientValidation.caFile"),
        "{err}"
    );
}

/// Authorization's `principals` read the SPIFFE identity of the verified client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_principals_are_the_verified_client_certificates_identity() {
    let servers = Pki::new();
    let clients = Pki::new();
    let gw = servers.issue("gw", &["mtls.example.com"], None);
    let sleep = clients.issue(
        "sleep",
        &["sleep.example.com"],
        Some("spiffe://cluster.local/ns/default/sa/sleep"),
    );
    let other = clients.issue(
        "other",
        &["other.example.com"],
        Some("spiffe://cluster.local/ns/foo/sa/other"),
    );
    let app = backend("app").await;
    let (cert, key, ca) = (&gw.cert_file, &gw.key_file, clients.ca_file());
    let proxy = Proxy::start(&format!(
        r#"
listeners:
- name: https
  address: 127.0.0.1:0
  http:
    routeConfig: main
    tls:
      certificates:
      - {{certFile: "{cert}", keyFile: "{key}", clientValidation: {{caFile: "{ca}", optional: true}}}}
    rbac:
      policies:
      - {{namespace: default, name: from-sleep, action: ALLOW, rules: [{{from: [{{principals: [cluster.local/ns/default/sa/sleep]}}]}}]}}
      - {{namespace: default, name: deny-foo, action: DENY, rules: [{{from: [{{namespaces: [foo]}}]}}]}}
routeConfigs:
- name: main
  virtualHosts:
  - {{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: app}}]}}}}]}}
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#
    ));
    let addr = proxy.addr("https");
    let host = "mtls.example.com";
    let status = |r: Result<String, String>| {
        let out = r.unwrap_or_else(|e| panic!("{e}"));
        out.lines().next().unwrap_or_default().to_owned()
    };
    let r = https_get(addr, servers.roots(), Some(&sleep), host, host).await;
    assert_eq!(status(r), "HTTP/1.1 200 OK");
    let r = https_get(addr, servers.roots(), Some(&other), host, host).await;
    let out = r.unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.ends_with("RBAC: access denied"), "{out}");
    // No certificate: no principal.
    let r = https_get(addr, servers.roots(), None, host, host).await;
    assert!(status(r).starts_with("HTTP/1.1 403"));
}
