//! The proxy's workload identity: a certificate from the control plane's CA, renewed before it
//! expires, and the trust bundle that comes with it (Istio's istio-agent, in process).
//!
//! - [`Identity`] holds the certificate in force. TLS configs built for mesh mTLS hold the
//!   `Identity` itself and read the certificate and roots in force at each handshake, so a
//!   renewal (or a new root) applies to the next connection with no config rebuild, and
//!   connections already open carry on.
//! - [`run`] gets the first certificate (retrying with backoff) and renews each at half its
//!   lifetime, less up to 5% of jitter so that proxies started together spread their renewals.
//! - [`CaClient`] asks the CA: a fresh key each time (it never leaves the process), a CSR for
//!   the SPIFFE identity, the bearer token read from its file at each request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rustls::RootCertStore;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use weft_xds::proto;

/// A certificate in force, with what was derived from it once.
pub struct Issued {
    pub certified: Arc<CertifiedKey>,
    pub roots: Arc<RootCertStore>,
    /// Verifies peers' client certificates against `roots` (inbound mesh mTLS).
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub sans: Vec<String>,
    /// SHA-256 of each root of the trust bundle, hex.
    pub root_fingerprints: Vec<String>,
    /// The chain as received (leaf first, trust bundle last), for config dumps.
    pub chain_pem: Vec<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("serial", &self.serial)
            .field("sans", &self.sans)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Reads a CA's answer: the leaf and its intermediates, then the trust bundle (last
    /// element, one or more roots), with `key` the leaf's private key.
    pub fn from_chain(
        chain_pem: Vec<String>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Issued, String> {
        let (bundle, certs) = chain_pem
            .split_last()
            .ok_or("the CA sent an empty certificate chain")?;
        if certs.is_empty() {
            return Err("the CA sent no certificate, only roots".to_owned());
        }
        let mut chain = Vec::new();
        for pem in certs {
            chain.push(
                CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|e| format!("certificate chain: {e}"))?,
            );
        }
        let root_certs = CertificateDer::pem_slice_iter(bundle.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("trust bundle: {e}"))?;
        let mut roots = RootCertStore::empty();
        for r in &root_certs {
            roots
                .add(r.clone())
                .map_err(|e| format!("trust bundle: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the trust bundle holds no root".to_owned());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("private key: {e}"))?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|e| format!("certificate: {e}"))?;
        let validity = leaf.validity();
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0).unsigned_abs())
        };
        let serial = leaf.raw_serial_as_string();
        let (not_before, not_after) = (time(validity.not_before), time(validity.not_after));
        let sans = crate::tls::general_names(&chain[0], san_text);
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("trust bundle: {e}"))?;
        Ok(Issued {
            certified: Arc::new(CertifiedKey::new(chain, signing)),
            roots,
            client_verifier,
            serial,
            not_before,
            not_after,
            sans,
            root_fingerprints: root_certs.iter().map(|r| sha256_hex(r)).collect(),
            chain_pem,
        })
    }

    /// The lifetime the CA granted.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// A subject alternative name as `openssl x509 -text` writes it (`URI:spiffe://...`).
fn san_text(name: &x509_parser::extensions::GeneralName<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName as G;
    Some(match name {
        G::URI(u) => format!("URI:{u}"),
        G::DNSName(d) => format!("DNS:{d}"),
        G::RFC822Name(e) => format!("email:{e}"),
        G::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
            Ok(v4) => format!("IP:{}", std::net::Ipv4Addr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*b) {
                Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                Err(_) => return None,
            },
        },
        other => format!("{other}"),
    })
}

/// SHA-256 of `bytes`, hex (through rustls's provider: aws-lc-rs).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = match suite {
        rustls::SupportedCipherSuite::Tls13(s) => s.common.hash_provider.hash(bytes),
        rustls::SupportedCipherSuite::Tls12(s) => s.common.hash_provider.hash(bytes),
    };
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The proxy's identity: the SPIFFE URI it asks for and the certificate in force.
#[derive(Debug)]
pub struct Identity {
    pub spiffe_id: String,
    current: ArcSwapOption<Issued>,
    ready: tokio::sync::watch::Sender<bool>,
}

impl Identity {
    pub fn new(spiffe_id: String) -> Identity {
        Identity {
            spiffe_id,
            current: ArcSwapOption::empty(),
            ready: tokio::sync::watch::channel(false).0,
        }
    }

    /// The certificate in force, if one was issued yet.
    pub fn current(&self) -> Option<Arc<Issued>> {
        self.current.load_full()
    }

    /// Puts `issued` in force for the handshakes that follow.
    pub fn install(&self, issued: Issued) {
        tracing::info!(
            serial = %issued.serial,
            identity = %self.spiffe_id,
            lifetime = ?issued.lifetime(),
            "workload certificate in force"
        );
        self.current.store(Some(Arc::new(issued)));
        self.ready.send_replace(true);
    }

    /// True once a certificate is in force.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }
}

/// This process's identity, set once at start from the bootstrap: the TLS configs built from
/// any later config (xDS) find it here.
static PROCESS: std::sync::OnceLock<Arc<Identity>> = std::sync::OnceLock::new();

/// The process's identity, when its bootstrap has one.
pub fn process() -> Option<Arc<Identity>> {
    PROCESS.get().cloned()
}

/// Sets the process's identity; false when one was set already.
pub fn set_process(identity: Arc<Identity>) -> bool {
    PROCESS.set(identity).is_ok()
}

/// The admin endpoint's `/certs` (Envoy's, reduced): the identity and the certificate in
/// force (serial, validity, subject alternative names, SHA-256 of each trust bundle root).
/// No key material.
pub fn certs_json(identity: Option<&Identity>) -> serde_json::Value {
    let Some(identity) = identity else {
        return serde_json::json!({"identity": null, "certificates": []});
    };
    let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let certificates: Vec<serde_json::Value> = identity
        .current()
        .map(|c| {
            serde_json::json!({
                "name": "default",
                "serialNumber": c.serial,
                "validFrom": time(c.not_before),
                "expirationTime": time(c.not_after),
                "subjectAltNames": c.sans,
                "trustBundle": {"name": "ROOTCA", "sha256Fingerprints": c.root_fingerprints},
            })
        })
        .into_iter()
        .collect();
    serde_json::json!({"identity": identity.spiffe_id, "certificates": certificates})
}

/// Serves the certificate in force (inbound mesh mTLS).
#[derive(Debug)]
pub struct ServerCert(pub Arc<Identity>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current()?.certified.clone())
    }
}

/// Presents the certificate in force (outbound mesh mTLS).
#[derive(Debug)]
pub struct ClientCert(pub Arc<Identity>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current()?.certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a client's certificate against the trust bundle in force, and requires one.
#[derive(Debug)]
pub struct MeshClientVerifier {
    pub identity: Arc<Identity>,
    pub algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for MeshClientVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let issued = self.identity.current().ok_or(rustls::Error::General(
            "no workload certificate yet".to_owned(),
        ))?;
        issued
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The peer principal of a verified certificate: its SPIFFE URI without `spiffe://`
/// (Istio's `source.principal`, `cluster.local/ns/default/sa/sleep`).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<Arc<str>> {
    crate::tls::general_names(cert, |n| match n {
        x509_parser::extensions::GeneralName::URI(u) => {
            u.strip_prefix("spiffe://").map(Arc::<str>::from)
        }
        _ => None,
    })
    .into_iter()
    .next()
}

/// Where certificates come from: the CA, or a test's stand-in.
pub trait CertSource: Send + Sync + 'static {
    /// One new certificate: a fresh key, a CSR for `spiffe_id`, the CA's answer.
    fn issue(
        &self,
        spiffe_id: &str,
    ) -> impl std::future::Future<Output = Result<Issued, String>> + Send;
}

/// When to renew a certificate of `lifetime`: half of it, less `jitter` (0 to 1) times 5%
/// of it.
pub fn renew_delay(lifetime: Duration, jitter: f64) -> Duration {
    let half = lifetime / 2;
    half.saturating_sub(lifetime.mul_f64(0.05 * jitter.clamp(0.0, 1.0)))
}

/// The first wait after a failed request; doubled each time up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Keeps `identity` supplied: the first certificate now (retrying until one comes), each next
/// one at [`renew_delay`]. A failed renewal is retried with backoff while the certificate in
/// force still serves.
pub async fn run<S: CertSource>(identity: Arc<Identity>, source: S) {
    let mut backoff = RETRY_FIRST;
    loop {
        match source.issue(&identity.spiffe_id).await {
            Ok(issued) => {
                backoff = RETRY_FIRST;
                let wait = renew_delay(issued.lifetime(), fastrand::f64());
                identity.install(issued);
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                tracing::warn!(identity = %identity.spiffe_id, "workload certificate: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// The CA's certificate service, over TLS.
pub struct CaClient {
    address: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
    token_file: std::path::PathBuf,
    ttl: Option<Duration>,
}

/// A bootstrap's `identity`, checked: the SPIFFE identity and the client for its CA.
pub fn from_bootstrap(id: &proto::Identity) -> Result<(Identity, CaClient), String> {
    let or = |v: &str, default: &str| {
        if v.is_empty() {
            default.to_owned()
        } else {
            v.to_owned()
        }
    };
    let spiffe_id = format!(
        "spiffe://{}/ns/{}/sa/{}",
        or(&id.trust_domain, "cluster.local"),
        or(&id.namespace, "default"),
        or(&id.service_account, "default")
    );
    let address = id.ca_address.parse().map_err(|_| {
        format!(
            "identity.caAddress: {:?} is not an ip:port address",
            id.ca_address
        )
    })?;
    if id.token_file.is_empty() {
        return Err("identity.tokenFile: required".to_owned());
    }
    let roots = CertificateDer::pem_file_iter(&id.ca_root_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("identity.caRootFile: {}: {e}", id.ca_root_file))?;
    let mut store = RootCertStore::empty();
    for r in roots {
        store
            .add(r)
            .map_err(|e| format!("identity.caRootFile: {}: {e}", id.ca_root_file))?;
    }
    if store.is_empty() {
        return Err(format!(
            "identity.caRootFile: {}: no certificate in it",
            id.ca_root_file
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let name = or(&id.ca_server_name, "istiod.istio-system.svc");
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| format!("identity.caServerName: {name:?}: {e}"))?;
    let ttl = match &id.ttl {
        Some(d) => Some(crate::config::duration(d, "identity", "ttl").map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((
        Identity::new(spiffe_id),
        CaClient {
            address,
            tls: Arc::new(tls),
            server_name,
            token_file: id.token_file.clone().into(),
            ttl,
        },
    ))
}

impl CaClient {
    /// A channel to the CA: TCP, then TLS, then HTTP/2.
    async fn channel(&self) -> Result<tonic::transport::Channel, String> {
        let connector = TlsConnector {
            address: self.address,
            tls: tokio_rustls::TlsConnector::from(self.tls.clone()),
            server_name: self.server_name.clone(),
        };
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.address))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_with_connector(connector)
            .await
            .map_err(|e| format!("CA {}: {e}", self.address))
    }
}

/// A fresh P-256 key and a CSR naming only `spiffe_id` (PEM), with the key for rustls.
pub fn csr_for(spiffe_id: &str) -> Result<(String, PrivateKeyDer<'static>), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        spiffe_id
            .try_into()
            .map_err(|e: rcgen::Error| e.to_string())?,
    )];
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Ok((csr, der))
}

impl CertSource for CaClient {
    async fn issue(&self, spiffe_id: &str) -> Result<Issued, String> {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| format!("{}: {e}", self.token_file.display()))?;
        let (csr, key) = csr_for(spiffe_id)?;
        let request = weft_xds::ca::IstioCertificateRequest {
            csr,
            validity_duration: self.ttl.map_or(0, |t| t.as_secs().max(1) as i64),
        };
        let channel = self.channel().await?;
        let response = weft_xds::ca::create_certificate(channel, token.trim(), request)
            .await
            .map_err(|s| format!("CA refused: {:?}: {}", s.code(), s.message()))?;
        Issued::from_chain(response.cert_chain, key)
    }
}

/// Connects to the CA whatever the URI says: TCP, then the TLS handshake.
#[derive(Clone)]
struct TlsConnector {
    address: std::net::SocketAddr,
    tls: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
}

type ConnectFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::io::Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                >,
            > + Send,
    >,
>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(this.address).await?;
            let _ = tcp.set_nodelay(true);
            let tls = this.tls.connect(this.server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests;
