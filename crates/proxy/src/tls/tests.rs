//! Downstream TLS: client certificate verification per certificate, over in-memory streams
//! with test certificates made by rcgen.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A directory removed when dropped.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "weft-tls-unit-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.0.join(name), text).unwrap();
        self.path(name)
    }
}

/// A test CA.
struct Ca(rcgen::CertifiedIssuer<'static, rcgen::KeyPair>);

/// A certificate and its key, as PEM (for files) and DER (for an in-test client).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Ca(rcgen::CertifiedIssuer::self_signed(params, key).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    fn issue(&self, dns: &[&str], uri: Option<&str>) -> Leaf {
        self.issue_serial(dns, uri, fastrand::u64(1..))
    }

    fn issue_serial(&self, dns: &[&str], uri: Option<&str>, serial: u64) -> Leaf {
        let names: Vec<String> = dns.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        if let Some(u) = uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(u.try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }
}

/// The server's side of a test: its CA, its certificate files, the client CA file.
struct Fixture {
    dir: Dir,
    server_ca: Ca,
    client_ca: Ca,
    cert_file: String,
    key_file: String,
    client_ca_file: String,
}

fn fixture() -> Fixture {
    let dir = Dir::new();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server = server_ca.issue(&["gw.example.com", "*.example.com"], None);
    let cert_file = dir.write("tls.crt", &server.cert_pem);
    let key_file = dir.write("tls.key", &server.key_pem);
    let client_ca_file = dir.write("ca.crt", &client_ca.pem());
    Fixture {
        dir,
        server_ca,
        client_ca,
        cert_file,
        key_file,
        client_ca_file,
    }
}

impl Fixture {
    fn certificate(
        &self,
        names: &[&str],
        validation: Option<proto::ClientValidation>,
    ) -> proto::Certificate {
        proto::Certificate {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_names: names.iter().map(|s| (*s).to_owned()).collect(),
            client_validation: validation,
            ..Default::default()
        }
    }

    fn mutual(&self, optional: bool, sans: &[&str]) -> proto::ClientValidation {
        proto::ClientValidation {
            ca_file: self.client_ca_file.clone(),
            subject_alt_names: sans.iter().map(|s| (*s).to_owned()).collect(),
            optional,
            ..Default::default()
        }
    }

    fn termination(&self, certificates: Vec<proto::Certificate>) -> Termination {
        let tls = proto::DownstreamTls { certificates };
        termination(&tls, &Secrets::default(), "listener \"gw\"", "http.tls").unwrap()
    }

    fn client(&self, identity: Option<&Leaf>) -> tokio_rustls::TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.server_ca.0.der().clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// What a connection came to: the server's handshake result and what the client read.
struct Outcome {
    server: Result<Arc<Served>, std::io::Error>,
    /// The server's answer (`hello`), or the client's error.
    client: Result<String, String>,
}

/// Connects over an in-memory pipe with SNI `sni`; the server answers `hello` when its
/// handshake succeeds, and the client sends `ping` and reads the answer.
async fn connect(t: &Termination, connector: tokio_rustls::TlsConnector, sni: &str) -> Outcome {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let client = async move {
        let mut tls = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let server = async move {
        match t.accept(server_io).await {
            Ok((mut tls, served)) => {
                let mut buf = [0u8; 4];
                let _ = tls.read_exact(&mut buf).await;
                let _ = tls.write_all(b"hello").await;
                let _ = tls.flush().await;
                Ok(served)
            }
            // The pipe closes with the server's side: the client sees the alert, then EOF.
            Err(e) => Err(e),
        }
    };
    let (client, server) = tokio::join!(client, server);
    Outcome { server, client }
}

#[tokio::test]
async fn mutual_accepts_a_certificate_from_the_ca() {
    let f = fixture();
    let t = f.termination(vec![f.certificate(&[], Some(f.mutual(false, &[])))]);
    let id = f.client_ca.issue(&["client.example.com"], None);
    let out = connect(&t, f.client(Some(&id)), "gw.example.com").await;
    assert!(out.server.is_ok(), "{:?}", out.server.err());
    assert_eq!(out.client.as_deref(), Ok("hello"));
}

#[tokio::test]
async fn mutual_refuses_a_client_without_a_certificate() {
    let f = fixture();
    let t = f.termination(vec![f.certificate(&[], Some(f.mutual(false, &[])))]);
    let out = connect(&t, f.client(None), "gw.example.com").await;
    let err = out.server.expect_err("refused");
    assert_eq!(HandshakeFailure::of(&err), HandshakeFailure::NoCertificate);
    // TLS 1.3: the client finishes first and learns of the refusal from the alert.
    let client = out.client.expect_err("the client is refused");
    assert!(client.contains("CertificateRequired"), "{client}");
}

#[tokio::test]
async fn optional_mutual_accepts_a_client_without_a_certificate() {
    let f = fixture();
    let t = f.termination(vec![f.certificate(&[], Some(f.mutual(true, &[])))]);
    let out = connect(&t, f.client(None), "gw.example.com").await;
    assert!(out.server.is_ok(), "{:?}", out.server.err());
    assert_eq!(out.client.as_deref(), Ok("hello"));
    // A certificate from the CA is still accepted.
    let id = f.client_ca.issue(&["client.example.com"], None);
    let out = connect(&t, f.client(Some(&id)), "gw.example.com").await;
    assert!(out.server.is_ok(), "{:?}", out.server.err());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_even_when_optional() {
    let f = fixture();
    let other = Ca::new("other CA");
    let id = other.issue(&["client.example.com"], None);
    for optional in [false, true] {
        let t = f.termination(vec![f.certificate(&[], Some(f.mutual(optional, &[])))]);
        let out = connect(&t, f.client(Some(&id)), "gw.example.com").await;
        let err = out.server.expect_err("refused");
        assert_eq!(
            HandshakeFailure::of(&err),
            HandshakeFailure::Certificate,
            "optional={optional}: {err}"
        );
        let client = out.client.expect_err("the client is refused");
        assert!(client.contains("UnknownCA"), "{client}");
    }
}

#[tokio::test]
async fn subject_alt_names_must_match() {
    let f = fixture();
    let spiffe = "spiffe://cluster.local/ns/default/sa/client";
    let id = f.client_ca.issue(&["client.example.com"], Some(spiffe));
    let wildcard = f.client_ca.issue(&["*.clients.example.com"], None);
    for (sans, leaf, accepted) in [
        (vec![spiffe], &id, true),
        (vec!["other.example.com", "client.example.com"], &id, true),
        (vec!["CLIENT.example.com"], &id, true),
        (
            vec!["spiffe://cluster.local/ns/default/sa/other"],
            &id,
            false,
        ),
        (vec!["example.com"], &id, false),
        (vec!["a.clients.example.com"], &wildcard, true),
        (vec!["a.b.clients.example.com"], &wildcard, false),
    ] {
        let t = f.termination(vec![f.certificate(&[], Some(f.mutual(false, &sans)))]);
        let out = connect(&t, f.client(Some(leaf)), "gw.example.com").await;
        match out.server {
            Ok(_) => assert!(accepted, "{sans:?} must be refused"),
            Err(e) => {
                assert!(!accepted, "{sans:?} must be accepted: {e}");
                assert_eq!(HandshakeFailure::of(&e), HandshakeFailure::SubjectAltName);
            }
        }
    }
}

#[tokio::test]
async fn client_verification_follows_the_certificate_chosen_by_sni() {
    let f = fixture();
    let t = f.termination(vec![
        f.certificate(&["open.example.com"], None),
        f.certificate(&["mtls.example.com"], Some(f.mutual(false, &[]))),
    ]);
    // The open server does not ask for a certificate; the mutual one requires it.
    let out = connect(&t, f.client(None), "open.example.com").await;
    let open = out.server.expect("open server");
    let out = connect(&t, f.client(None), "mtls.example.com").await;
    assert!(out.server.is_err());
    let id = f.client_ca.issue(&["client.example.com"], None);
    let out = connect(&t, f.client(Some(&id)), "mtls.example.com").await;
    let mtls = out.server.expect("mutual server with a certificate");
    // Requests stay with the verification their connection had.
    assert!(t.admits(&open, "open.example.com"));
    assert!(!t.admits(&open, "mtls.example.com"));
    assert!(!t.admits(&open, "MTLS.example.com"));
    assert!(t.admits(&mtls, "mtls.example.com"));
    assert!(!t.admits(&mtls, "open.example.com"));
    // A host no certificate names belongs to the first (the default).
    assert!(t.admits(&open, "other.example.com"));
    assert!(!t.admits(&mtls, "other.example.com"));

    // All alike: any host is admitted (HTTP/2 may reuse a connection across names).
    let same = f.termination(vec![
        f.certificate(&["a.example.com"], Some(f.mutual(false, &[]))),
        f.certificate(&["b.example.com"], Some(f.mutual(false, &[]))),
    ]);
    let a = same.select(Some("a.example.com")).unwrap();
    assert!(same.admits(&a, "b.example.com"));
}

#[test]
fn client_ca_files_are_checked_when_config_arrives() {
    let f = fixture();
    let not_pem = f.dir.write("not-pem.crt", "hello\n");
    let empty = f.dir.write("empty.crt", "");
    let dir = f.dir.path("");
    for (validation, want) in [
        (
            proto::ClientValidation {
                ca_file: f.dir.path("missing.crt"),
                ..Default::default()
            },
            "http.tls.certificates[1].clientValidation.caFile: ",
        ),
        (
            proto::ClientValidation::default(),
            "http.tls.certificates[1].clientValidation.caFile: a CA file (or caSecret) is required",
        ),
        (
            proto::ClientValidation {
                ca_file: empty.clone(),
                ..Default::default()
            },
            "clientValidation.caFile: ",
        ),
        (
            proto::ClientValidation {
                ca_file: not_pem.clone(),
                ..Default::default()
            },
            "clientValidation.caFile: ",
        ),
        (
            proto::ClientValidation {
                ca_file: dir.clone(),
                ..Default::default()
            },
            "not a regular file",
        ),
        // A preferred file that exists is read, and its problems are its own.
        (
            proto::ClientValidation {
                ca_file: f.client_ca_file.clone(),
                preferred_ca_file: empty.clone(),
                ..Default::default()
            },
            "clientValidation.preferredCaFile: ",
        ),
    ] {
        let tls = proto::DownstreamTls {
            certificates: vec![f.certificate(&["a"], None), {
                let mut c = f.certificate(&["b"], None);
                c.client_validation = Some(validation.clone());
                c
            }],
        };
        let err = termination(&tls, &Secrets::default(), "listener \"gw\"", "http.tls")
            .err()
            .unwrap_or_else(|| panic!("{validation:?} must be refused"));
        let text = err.to_string();
        assert!(
            text.starts_with("listener \"gw\": ") && text.contains(want),
            "{validation:?}: {text}"
        );
    }
}

#[tokio::test]
async fn revoked_certificates_are_refused() {
    let f = fixture();
    let revoked = f.client_ca.issue_serial(&["revoked.example.com"], None, 7);
    let good = f.client_ca.issue_serial(&["good.example.com"], None, 8);
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2100, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(7u64),
            revocation_time: rcgen::date_time_ymd(2024, 1, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&f.client_ca.0)
    .unwrap();
    let crl_file = f.dir.write("ca.crl", &crl.pem().unwrap());
    let mut v = f.mutual(true, &[]);
    v.crl_file = crl_file;
    let t = f.termination(vec![f.certificate(&[], Some(v))]);
    let out = connect(&t, f.client(Some(&revoked)), "gw.example.com").await;
    let err = out.server.expect_err("revoked");
    assert_eq!(HandshakeFailure::of(&err), HandshakeFailure::Certificate);
    assert!(err.to_string().contains("Revoked"), "{err}");
    let out = connect(&t, f.client(Some(&good)), "gw.example.com").await;
    assert!(out.server.is_ok(), "{:?}", out.server.err());
    // Optional: no certificate is still fine.
    let out = connect(&t, f.client(None), "gw.example.com").await;
    assert!(out.server.is_ok(), "{:?}", out.server.err());

    // A CRL file that holds none is a config error at its field.
    let mut v = f.mutual(false, &[]);
    v.crl_file = f.dir.write("not-a.crl", &f.client_ca.pem());
    let tls = proto::DownstreamTls {
        certificates: vec![f.certificate(&[], Some(v))],
    };
    let err = termination(&tls, &Secrets::default(), "listener \"gw\"", "http.tls")
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("http.tls.certificates[0].clientValidation.crlFile: "),
        "{err}"
    );
}

#[tokio::test]
async fn the_preferred_ca_file_wins_when_it_exists() {
    let f = fixture();
    let other = Ca::new("cacert secret");
    let preferred = f.dir.write("preferred.crt", &other.pem());
    let with = |preferred: String| {
        f.termination(vec![f.certificate(
            &[],
            Some(proto::ClientValidation {
                ca_file: f.client_ca_file.clone(),
                preferred_ca_file: preferred,
                ..Default::default()
            }),
        )])
    };
    let from_client_ca = f.client_ca.issue(&["c"], None);
    let from_other = other.issue(&["c"], None);
    // Present: only its CA is trusted.
    let t = with(preferred);
    assert!(
        connect(&t, f.client(Some(&from_other)), "gw.example.com")
            .await
            .server
            .is_ok()
    );
    assert!(
        connect(&t, f.client(Some(&from_client_ca)), "gw.example.com")
            .await
            .server
            .is_err()
    );
    // Absent: `caFile`.
    let t = with(f.dir.path("no-such-cacert/ca.crt"));
    assert!(
        connect(&t, f.client(Some(&from_client_ca)), "gw.example.com")
            .await
            .server
            .is_ok()
    );
}

#[test]
fn dns_wildcards_in_certificates_cover_one_label() {
    let san = client_auth_san_dns("*.example.com");
    assert!(san("a.example.com"));
    assert!(san("A.Example.com"));
    assert!(!san("example.com"));
    assert!(!san(".example.com"));
    assert!(!san("a.b.example.com"));
}

fn client_auth_san_dns(name: &str) -> impl Fn(&str) -> bool {
    let name = name.to_owned();
    move |want| client_auth::dns_san_matches(&name, want)
}

// ---- secrets, and the task's version 1 certificates (testdata/README.md) ----

const TASK_CA: &str = include_str!("testdata/ca.crt");
const TASK_SERVER: (&str, &str) = (
    include_str!("testdata/httpbin.crt"),
    include_str!("testdata/httpbin.key"),
);
const TASK_CLIENT: (&str, &str) = (
    include_str!("testdata/client.crt"),
    include_str!("testdata/client.key"),
);
const TASK_CLIENT_OTHER_CA: &str = include_str!("testdata/client-other.crt");

fn tls_secret(name: &str, (cert, key): (&str, &str)) -> proto::Secret {
    proto::Secret {
        name: name.into(),
        r#type: Some(proto::secret::Type::TlsCertificate(proto::TlsCertificate {
            certificate_chain: cert.into(),
            private_key: key.into(),
        })),
    }
}

fn ca_secret(name: &str, ca: &str) -> proto::Secret {
    proto::Secret {
        name: name.into(),
        r#type: Some(proto::secret::Type::ValidationContext(
            proto::CertificateValidation {
                trusted_ca: ca.into(),
                crl: String::new(),
            },
        )),
    }
}

/// The server as the control plane configures it from the task's Secret: certificate and
/// client CA by secret name, no file.
fn task_termination(secrets: &[proto::Secret], mutual: bool) -> Result<Termination, ConfigError> {
    let tls = proto::DownstreamTls {
        certificates: vec![proto::Certificate {
            secret: "kubernetes://istio-system/httpbin-credential".into(),
            server_names: vec!["httpbin.example.com".into()],
            client_validation: mutual.then(|| proto::ClientValidation {
                ca_secret: "kubernetes://istio-system/httpbin-credential-cacert".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    termination(
        &tls,
        &Secrets::new(secrets)?,
        "listener \"0.0.0.0_8443\"",
        "http.tls",
    )
}

fn task_secrets() -> Vec<proto::Secret> {
    vec![
        tls_secret("kubernetes://istio-system/httpbin-credential", TASK_SERVER),
        ca_secret(
            "kubernetes://istio-system/httpbin-credential-cacert",
            TASK_CA,
        ),
    ]
}

/// A client that trusts any server certificate (the task's has no subject alternative name,
/// which rustls requires; curl, in the end-to-end test, checks it as OpenSSL does), with an
/// optional client certificate.
fn lenient_client(identity: Option<(&str, &str)>) -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct AnyServer;
    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer));
    /// A client certificate as given (rustls's own loading refuses a version 1 one).
    #[derive(Debug)]
    struct AsGiven(Arc<CertifiedKey>);
    impl rustls::client::ResolvesClientCert for AsGiven {
        fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
    let config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::crypto::aws_lc_rs::default_provider()
                .key_provider
                .load_private_key(PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap())
                .unwrap();
            builder.with_client_cert_resolver(Arc::new(AsGiven(Arc::new(CertifiedKey::new(
                chain, key,
            )))))
        }
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_secret_serves_the_tasks_version_1_certificate() {
    let t = task_termination(&task_secrets(), false).expect("the task's certificate loads");
    let out = connect(&t, lenient_client(None), "httpbin.example.com").await;
    assert!(out.server.is_ok(), "{:?}", out.server.err());
    assert_eq!(out.client.as_deref(), Ok("hello"));
}

#[tokio::test]
async fn mutual_from_a_secret_verifies_the_tasks_version_1_client_certificate() {
    let t = task_termination(&task_secrets(), true).expect("loads");
    let out = connect(&t, lenient_client(Some(TASK_CLIENT)), "httpbin.example.com").await;
    assert!(out.server.is_ok(), "{:?}", out.server.err());
    assert_eq!(out.client.as_deref(), Ok("hello"));

    // As OpenSSL clients (curl) send it: the leaf, then the CA they found it under.
    let with_ca = format!("{}{TASK_CA}", TASK_CLIENT.0);
    let out = connect(
        &t,
        lenient_client(Some((&with_ca, TASK_CLIENT.1))),
        "httpbin.example.com",
    )
    .await;
    assert!(out.server.is_ok(), "{:?}", out.server.err());

    // Without a certificate: refused.
    let out = connect(&t, lenient_client(None), "httpbin.example.com").await;
    let err = out.server.expect_err("refused");
    assert_eq!(HandshakeFailure::of(&err), HandshakeFailure::NoCertificate);

    // The same subject and key, issued by another CA of the same name: refused.
    let other = (TASK_CLIENT_OTHER_CA, TASK_CLIENT.1);
    let out = connect(&t, lenient_client(Some(other)), "httpbin.example.com").await;
    let err = out.server.expect_err("refused");
    assert_eq!(
        HandshakeFailure::of(&err),
        HandshakeFailure::Certificate,
        "{err}"
    );

    // A version 3 client certificate from another CA: refused by webpki as before.
    let stranger = Ca::new("stranger").issue(&["client.example.com"], None);
    let out = connect(
        &t,
        lenient_client(Some((&stranger.cert_pem, &stranger.key_pem))),
        "httpbin.example.com",
    )
    .await;
    assert!(out.server.is_err());
}

#[test]
fn secrets_are_checked_when_config_arrives() {
    // A key that is not the certificate's.
    let wrong_key = vec![
        tls_secret(
            "kubernetes://istio-system/httpbin-credential",
            (TASK_SERVER.0, TASK_CLIENT.1),
        ),
        ca_secret(
            "kubernetes://istio-system/httpbin-credential-cacert",
            TASK_CA,
        ),
    ];
    let err = task_termination(&wrong_key, false).unwrap_err().to_string();
    assert!(
        err.contains("http.tls.certificates[0].secret")
            && err.contains("does not match the certificate"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    // A secret that is not there, or of the other kind.
    let err = task_termination(&task_secrets()[1..], false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secret \"kubernetes://istio-system/httpbin-credential\" is not defined"),
        "{err}"
    );
    let swapped = vec![
        tls_secret("kubernetes://istio-system/httpbin-credential", TASK_SERVER),
        tls_secret(
            "kubernetes://istio-system/httpbin-credential-cacert",
            TASK_SERVER,
        ),
    ];
    let err = task_termination(&swapped, true).unwrap_err().to_string();
    assert!(err.contains("holds no validationContext"), "{err}");
    // Not PEM.
    let garbage = vec![tls_secret(
        "kubernetes://istio-system/httpbin-credential",
        ("not a certificate", "not a key"),
    )];
    let err = task_termination(&garbage, false).unwrap_err().to_string();
    assert!(err.contains("no certificate in it"), "{err}");
}
