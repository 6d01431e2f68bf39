//! TLS termination: certificate chosen by SNI (exact and wildcard), ALPN, and x-forwarded-proto.

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
