//! TLS, with rustls and aws-lc-rs as the one crypto provider. Downstream: certificates loaded
//! and checked when config arrives, chosen per connection by SNI, ALPN offering h2 and
//! http/1.1, client certificates verified per certificate (`client_auth`). Upstream
//! (origination): CA roots, client certificate, SNI and subject alternative name checks, per
//! cluster. Passthrough: the ClientHello's SNI read without terminating.

mod client_auth;
#[cfg(test)]
mod tests;
mod v1;

use std::collections::HashMap;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use weft_xds::proto;

use crate::config::ConfigError;

/// An HTTP listener's TLS termination. Each certificate (in Istio, one Gateway server) has
/// its own rustls config, with that server's client certificate verification; the
/// ClientHello's SNI picks one before the handshake goes on (`LazyConfigAcceptor`). Separate
/// configs also keep session resumption from carrying a session across servers.
#[derive(Debug)]
pub struct Termination {
    by_sni: SniResolver<Arc<Served>>,
    /// The certificates differ in client verification: a request must stay with its own.
    mixed: bool,
}

/// What one certificate serves: its config, and which client verification it has (an index
/// among the listener's distinct ones).
#[derive(Debug)]
pub struct Served {
    pub config: Arc<ServerConfig>,
    validation: usize,
}

impl Termination {
    /// The config for a ClientHello with this SNI (the first certificate's without a match).
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<Served>> {
        self.by_sni.lookup(sni)
    }

    /// Reads the ClientHello, picks the config its SNI selects, and completes the handshake.
    pub async fn accept<S>(
        &self,
        stream: S,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<S>, Arc<Served>)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await?;
        let served = self
            .select(start.client_hello().server_name())
            .ok_or_else(|| std::io::Error::other("the listener has no certificate"))?;
        let stream = start.into_stream(served.config.clone()).await?;
        Ok((stream, served))
    }

    /// Whether a request for `host` (no port) may be served on a connection handshaken as
    /// `served`: always, unless `host` belongs to a certificate with other client
    /// verification. Otherwise a client could handshake with a server that does not ask for a
    /// certificate and send its requests to one that does (Istio gives each server its own
    /// route configuration, so such a request finds no route there either).
    pub fn admits(&self, served: &Served, host: &str) -> bool {
        !self.mixed
            || self
                .by_sni
                .lookup(Some(host))
                .is_some_and(|s| s.validation == served.validation)
    }
}

/// The secrets of a config by name: what TLS config names instead of files.
#[derive(Debug, Default)]
pub struct Secrets<'a>(HashMap<&'a str, &'a proto::Secret>);

impl<'a> Secrets<'a> {
    /// Indexes `secrets`; a name given twice is an error.
    pub fn new(secrets: &'a [proto::Secret]) -> Result<Secrets<'a>, ConfigError> {
        let mut by_name = HashMap::new();
        for (i, s) in secrets.iter().enumerate() {
            if s.name.is_empty() {
                return Err(ConfigError::new(
                    format!("secrets[{i}]"),
                    "name",
                    "required",
                ));
            }
            if by_name.insert(s.name.as_str(), s).is_some() {
                return Err(ConfigError::new(
                    format!("secret {:?}", s.name),
                    "name",
                    "defined twice",
                ));
            }
        }
        Ok(Secrets(by_name))
    }

    fn get(
        &self,
        name: &str,
        resource: &str,
        field: &str,
    ) -> Result<&'a proto::Secret, ConfigError> {
        self.0.get(name).copied().ok_or_else(|| {
            ConfigError::new(resource, field, format!("secret {name:?} is not defined"))
        })
    }

    /// The secret `name`, which must hold a certificate and key.
    fn tls_certificate(
        &self,
        name: &str,
        resource: &str,
        field: &str,
    ) -> Result<&'a proto::TlsCertificate, ConfigError> {
        match &self.get(name, resource, field)?.r#type {
            Some(proto::secret::Type::TlsCertificate(c)) => Ok(c),
            _ => Err(ConfigError::new(
                resource,
                field,
                format!("secret {name:?} holds no tlsCertificate"),
            )),
        }
    }

    /// The secret `name`, which must hold CA certificates.
    fn validation(
        &self,
        name: &str,
        resource: &str,
        field: &str,
    ) -> Result<&'a proto::CertificateValidation, ConfigError> {
        match &self.get(name, resource, field)?.r#type {
            Some(proto::secret::Type::ValidationContext(v)) => Ok(v),
            _ => Err(ConfigError::new(
                resource,
                field,
                format!("secret {name:?} holds no validationContext"),
            )),
        }
    }

    /// The secrets a listener's TLS names, in order, each once: a listener whose secrets
    /// changed is updated even when its own config did not.
    pub fn used_by(&self, tls: &proto::DownstreamTls) -> Vec<proto::Secret> {
        let mut names: Vec<&str> = Vec::new();
        for c in &tls.certificates {
            names.push(&c.secret);
            if let Some(v) = &c.client_validation {
                names.push(&v.ca_secret);
            }
        }
        let mut seen = std::collections::HashSet::new();
        names
            .into_iter()
            .filter(|n| !n.is_empty() && seen.insert(*n))
            .filter_map(|n| self.0.get(n).map(|s| (*s).clone()))
            .collect()
    }
}

/// The certificates of PEM text (at least one). `source` names it for messages.
fn pem_certificates(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{source}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{source}: no certificate in it"));
    }
    Ok(certs)
}

/// A certificate chain and key from a secret.
fn secret_pair(
    secrets: &Secrets<'_>,
    name: &str,
    resource: &str,
    field: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConfigError> {
    let c = secrets.tls_certificate(name, resource, field)?;
    let source = format!("secret {name:?}");
    let chain = pem_certificates(c.certificate_chain.as_bytes(), &source)
        .map_err(|e| ConfigError::new(resource, field, e))?;
    // The parser's messages never quote the key.
    let key = PrivateKeyDer::from_pem_slice(c.private_key.as_bytes())
        .map_err(|e| ConfigError::new(resource, field, format!("{source}: private key: {e}")))?;
    Ok((chain, key))
}

/// Whether `key` belongs to the leaf of `chain`: rustls's `keys_match`, which also takes the
/// version 1 certificates webpki does not parse (see [`v1`]).
fn keys_match(
    chain: &[CertificateDer<'static>],
    key: &dyn rustls::sign::SigningKey,
) -> Result<(), String> {
    let Some(spki) = key.public_key() else {
        return Ok(());
    };
    match chain.first().and_then(|leaf| v1::key_matches(leaf, &spki)) {
        Some(true) => Ok(()),
        Some(false) => Err("the private key does not match the certificate".to_owned()),
        None => Err("the certificate does not parse".to_owned()),
    }
}

/// Builds the TLS termination of an HTTP listener's `tls`, its certificates from files or from
/// `secrets`. `resource`/`field` locate errors.
pub fn termination(
    tls: &proto::DownstreamTls,
    secrets: &Secrets<'_>,
    resource: &str,
    field: &str,
) -> Result<Termination, ConfigError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    if tls.certificates.is_empty() {
        return Err(ConfigError::new(
            resource,
            format!("{field}.certificates"),
            "at least one certificate is required",
        ));
    }
    let mut by_sni = SniResolver::default();
    let mut validations: Vec<&Option<proto::ClientValidation>> = Vec::new();
    for (i, c) in tls.certificates.iter().enumerate() {
        let at = |f: &str| format!("{field}.certificates[{i}].{f}");
        let (chain, key, key_field, key_source) = if c.secret.is_empty() {
            let (chain, key) = load_pair(&c.cert_file, &c.key_file, resource, &at)?;
            (chain, key, at("keyFile"), c.key_file.clone())
        } else {
            let (chain, key) = secret_pair(secrets, &c.secret, resource, &at("secret"))?;
            (chain, key, at("secret"), format!("secret {:?}", c.secret))
        };
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| ConfigError::new(resource, &key_field, format!("{key_source}: {e}")))?;
        // The key must belong to the certificate, or every handshake would fail later.
        keys_match(&chain, signing.as_ref())
            .map_err(|e| ConfigError::new(resource, &key_field, format!("{key_source}: {e}")))?;
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new(resource, field, e.to_string()))?;
        let builder = match &c.client_validation {
            None => builder.with_no_client_auth(),
            Some(v) => builder.with_client_cert_verifier(client_auth::verifier(
                v,
                secrets,
                &provider,
                resource,
                &at("clientValidation"),
            )?),
        };
        let mut config = builder.with_cert_resolver(Arc::new(OneCert(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let validation = match validations.iter().position(|v| **v == c.client_validation) {
            Some(p) => p,
            None => {
                validations.push(&c.client_validation);
                validations.len() - 1
            }
        };
        let served = Arc::new(Served {
            config: Arc::new(config),
            validation,
        });
        by_sni.add(&c.server_names, served);
    }
    Ok(Termination {
        by_sni,
        mixed: validations.len() > 1,
    })
}

/// The one certificate of a [`Served`] config (chosen by SNI before the config was).
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Why a downstream handshake failed, for the `ssl.*` counters (Envoy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// A certificate was required and none was sent (`ssl.fail_verify_no_cert`).
    NoCertificate,
    /// The client's certificate lacks the required subject alternative names
    /// (`ssl.fail_verify_san`).
    SubjectAltName,
    /// The client's certificate did not verify: unknown issuer, expired, ...
    /// (`ssl.fail_verify_error`).
    Certificate,
    /// Anything else: not TLS, no common cipher suite, closed mid-handshake.
    Other,
}

impl HandshakeFailure {
    /// Classifies the error of a failed handshake (tokio-rustls wraps rustls's errors).
    pub fn of(e: &std::io::Error) -> HandshakeFailure {
        let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        match rustls_error {
            Some(rustls::Error::NoCertificatesPresented) => HandshakeFailure::NoCertificate,
            Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForName)) => {
                HandshakeFailure::SubjectAltName
            }
            Some(rustls::Error::InvalidCertificate(_)) => HandshakeFailure::Certificate,
            _ => HandshakeFailure::Other,
        }
    }
}

/// Reads a PEM certificate chain and its private key. `at` names a field for errors.
fn load_pair(
    cert_file: &str,
    key_file: &str,
    resource: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConfigError> {
    regular_file(cert_file).map_err(|e| ConfigError::new(resource, at("certFile"), e))?;
    regular_file(key_file).map_err(|e| ConfigError::new(resource, at("keyFile"), e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new(resource, at("certFile"), format!("{cert_file}: {e}")))?;
    if chain.is_empty() {
        return Err(ConfigError::new(
            resource,
            at("certFile"),
            format!("{cert_file}: no certificate in the file"),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| ConfigError::new(resource, at("keyFile"), format!("{key_file}: {e}")))?;
    Ok((chain, key))
}

/// Certificate files must be regular files: reading a FIFO or a device would block config
/// loading, or never end.
fn regular_file(path: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{path}: not a regular file")),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// Values by SNI (a listener's certificates): exact names, then `*.suffix` (one more label),
/// then the first one added.
#[derive(Debug)]
struct SniResolver<T> {
    exact: HashMap<String, T>,
    /// Suffix including the dot (`.example.com`) -> value.
    wildcard: HashMap<String, T>,
    default: Option<T>,
}

impl<T> Default for SniResolver<T> {
    fn default() -> Self {
        SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        }
    }
}

impl<T: Clone> SniResolver<T> {
    fn add(&mut self, names: &[String], value: T) {
        if self.default.is_none() {
            self.default = Some(value.clone());
        }
        for name in names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => {
                    self.wildcard
                        .entry(suffix.to_owned())
                        .or_insert_with(|| value.clone());
                }
                _ => {
                    self.exact.entry(name).or_insert_with(|| value.clone());
                }
            }
        }
    }

    fn lookup(&self, sni: Option<&str>) -> Option<T> {
        if let Some(sni) = sni.map(str::to_ascii_lowercase) {
            if let Some(c) = self.exact.get(&sni) {
                return Some(c.clone());
            }
            // `*.example.com` covers exactly one more label: `a.example.com`, not `a.b.example.com`.
            if let Some((_, parent)) = sni.split_once('.')
                && let Some(c) = self.wildcard.get(&format!(".{parent}"))
            {
                return Some(c.clone());
            }
        }
        self.default.clone()
    }
}

/// Upstream TLS of a cluster (TLS origination): what the connector needs per connection.
#[derive(Clone)]
pub struct ClientTls {
    /// Offers `h2` when the cluster speaks HTTP/2, `http/1.1` otherwise; none for TCP.
    pub http1: Arc<ClientConfig>,
    pub http2: Arc<ClientConfig>,
    pub raw: Arc<ClientConfig>,
    /// Sent as SNI and verified against the certificate unless `subjectAltNames` is set.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Builds a cluster's upstream TLS. Istio's DestinationRule `tls` maps onto it: SIMPLE is a CA
/// (or the system's roots when `caFile` is empty), MUTUAL adds the client certificate,
/// `subjectAltNames` replaces the host name check, `insecureSkipVerify` skips verification.
///
/// Without `sni` no SNI is sent and the certificate is checked against the endpoint's IP
/// address (the control plane sets `sni` to the service's host, as Istio does).
pub fn client_tls(
    tls: &proto::UpstreamTls,
    endpoint_ip: Option<std::net::IpAddr>,
    resource: &str,
) -> Result<ClientTls, ConfigError> {
    let at = |f: &str| format!("tls.{f}");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mesh = if tls.mesh {
        Some(mesh_identity(tls, resource)?)
    } else {
        None
    };
    let roots = if let Some(identity) = &mesh {
        Some(Roots::Mesh(identity.clone()))
    } else if tls.insecure_skip_verify {
        None
    } else {
        Some(Roots::Fixed(Arc::new(load_roots(&tls.ca_file, resource)?)))
    };
    let server_name = if tls.sni.is_empty() {
        let ip = endpoint_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        ServerName::IpAddress(ip.into())
    } else {
        ServerName::try_from(tls.sni.clone())
            .map_err(|e| ConfigError::new(resource, at("sni"), format!("{:?}: {e}", tls.sni)))?
    };
    let verifier = Arc::new(Verifier {
        roots,
        subject_alt_names: tls.subject_alt_names.clone(),
        any_mesh_name: mesh.is_some() && tls.subject_alt_names.is_empty(),
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(resource, "tls", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = if let Some(identity) = mesh {
        builder.with_client_cert_resolver(Arc::new(crate::identity::ClientCert(identity)))
    } else if tls.cert_file.is_empty() && tls.key_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let (chain, key) = load_pair(&tls.cert_file, &tls.key_file, resource, &at)?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ConfigError::new(resource, at("keyFile"), e.to_string()))?
    };
    let with_alpn = |alpn: &[&[u8]]| {
        let mut c = config.clone();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    };
    Ok(ClientTls {
        http1: with_alpn(&[b"http/1.1"]),
        http2: with_alpn(&[b"h2"]),
        raw: with_alpn(&[]),
        server_name,
    })
}

/// The process's identity, for a cluster with mesh mTLS (whose own files must be empty).
fn mesh_identity(
    tls: &proto::UpstreamTls,
    resource: &str,
) -> Result<Arc<crate::identity::Identity>, ConfigError> {
    for (set, field) in [
        (!tls.ca_file.is_empty(), "caFile"),
        (!tls.cert_file.is_empty(), "certFile"),
        (!tls.key_file.is_empty(), "keyFile"),
        (tls.insecure_skip_verify, "insecureSkipVerify"),
    ] {
        if set {
            return Err(ConfigError::new(
                resource,
                format!("tls.{field}"),
                "not allowed with `mesh`: mesh mTLS uses the workload certificate and the mesh's roots",
            ));
        }
    }
    crate::identity::process().ok_or_else(|| {
        ConfigError::new(
            resource,
            "tls.mesh",
            "mesh mTLS needs the proxy's workload identity (the bootstrap's `identity`)",
        )
    })
}

/// Mesh mTLS on an inbound listener (Istio's PeerAuthentication STRICT or PERMISSIVE): the
/// workload certificate in force, a client certificate required and verified against the
/// mesh's trust bundle in force.
#[derive(Debug)]
pub struct MeshTermination {
    pub config: Arc<ServerConfig>,
    /// Plaintext is accepted too (PERMISSIVE).
    pub permissive: bool,
}

/// Builds an inbound listener's mesh mTLS. `field` locates errors.
pub fn mesh_termination(
    mesh: &proto::MeshTls,
    resource: &str,
    field: &str,
) -> Result<MeshTermination, ConfigError> {
    let identity = crate::identity::process().ok_or_else(|| {
        ConfigError::new(
            resource,
            field,
            "mesh mTLS needs the proxy's workload identity (the bootstrap's `identity`)",
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(crate::identity::MeshClientVerifier {
        identity: identity.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(resource, field, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(crate::identity::ServerCert(identity)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(MeshTermination {
        config: Arc::new(config),
        permissive: mesh.mode() == proto::mesh_tls::Mode::Permissive,
    })
}

#[cfg(test)]
thread_local! {
    /// How many times this thread loaded upstream roots.
    pub(crate) static ROOT_LOADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl ClientTls {
    /// This config for the endpoint at `ip`: without an `sni`, the name sent and checked is
    /// the endpoint's IP. The rest (roots, client certificate) is the cluster's, shared.
    pub fn for_endpoint(&self, tls: &proto::UpstreamTls, ip: std::net::IpAddr) -> ClientTls {
        let mut c = self.clone();
        if tls.sni.is_empty() {
            c.server_name = ServerName::IpAddress(ip.into());
        }
        c
    }
}

/// The CA certificates of `ca_file`, or the system's when it is empty.
fn load_roots(ca_file: &str, resource: &str) -> Result<RootCertStore, ConfigError> {
    #[cfg(test)]
    ROOT_LOADS.with(|n| n.set(n.get() + 1));
    if ca_file.is_empty() {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(ConfigError::new(
                resource,
                "tls.caFile",
                "empty, and no system CA certificates were found; name a CA file",
            ));
        }
        return Ok(roots);
    }
    read_roots(ca_file, resource, "tls.caFile")
}

/// The CA certificates of a PEM file (at least one). `field` names it for errors.
fn read_roots(ca_file: &str, resource: &str, field: &str) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    regular_file(ca_file).map_err(|e| ConfigError::new(resource, field, e))?;
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new(resource, field, format!("{ca_file}: {e}")))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| ConfigError::new(resource, field, format!("{ca_file}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ConfigError::new(
            resource,
            field,
            format!("{ca_file}: no certificate in the file"),
        ));
    }
    Ok(roots)
}

/// Verifies an upstream's certificate: chain to the configured roots, then either one of the
/// expected subject alternative names (DNS, IP, or URI such as a SPIFFE identity) or the
/// server name. With no roots (`insecureSkipVerify`) only the handshake signature is checked.
#[derive(Debug)]
struct Verifier {
    roots: Option<Roots>,
    subject_alt_names: Vec<String>,
    /// Mesh mTLS with no identities named: any workload certificate of the mesh will do.
    any_mesh_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Where an upstream's roots come from: a file read at config time, or the mesh's trust
/// bundle in force at each handshake.
#[derive(Debug)]
enum Roots {
    Fixed(Arc<RootCertStore>),
    Mesh(Arc<crate::identity::Identity>),
}

impl Verifier {
    fn has_expected_name(&self, cert: &ParsedCertificate<'_>, der: &CertificateDer<'_>) -> bool {
        let mut uris = None;
        self.subject_alt_names.iter().any(|want| {
            if let Ok(name) = ServerName::try_from(want.as_str()) {
                return verify_server_name(cert, &name).is_ok();
            }
            uris.get_or_insert_with(|| uri_sans(der))
                .iter()
                .any(|have| have == want)
        })
    }
}

/// The SPIFFE identity of a verified peer certificate in Istio's principal form
/// (`cluster.local/ns/NS/sa/SA`: its first `spiffe://` URI SAN without the scheme), if any.
pub fn spiffe_identity(der: &CertificateDer<'_>) -> Option<std::sync::Arc<str>> {
    uri_sans(der)
        .iter()
        .find_map(|u| u.strip_prefix("spiffe://").map(std::sync::Arc::from))
}

/// The URI subject alternative names of a certificate (SPIFFE identities live there).
fn uri_sans(der: &CertificateDer<'_>) -> Vec<String> {
    general_names(der, |n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
        _ => None,
    })
}

/// What `pick` keeps of a certificate's subject alternative names, in order (none when the
/// certificate or the extension does not parse).
pub(crate) fn general_names<T>(
    der: &CertificateDer<'_>,
    pick: impl FnMut(&x509_parser::extensions::GeneralName<'_>) -> Option<T>,
) -> Vec<T> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value.general_names.iter().filter_map(pick).collect()
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let roots = match &self.roots {
            None => return Ok(ServerCertVerified::assertion()),
            Some(Roots::Fixed(r)) => r.clone(),
            Some(Roots::Mesh(identity)) => match identity.current() {
                Some(issued) => issued.roots.clone(),
                None => {
                    return Err(rustls::Error::General(
                        "no workload certificate yet".to_owned(),
                    ));
                }
            },
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.any_mesh_name {
            return Ok(ServerCertVerified::assertion());
        }
        if self.subject_alt_names.is_empty() {
            verify_server_name(&cert, server_name)?;
        } else if !self.has_expected_name(&cert, end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TLS passthrough routing: SNI → a value, with Envoy's `server_names` semantics: an exact
/// name first, then the longest `*.suffix` wildcard (any number of labels), then `*` (which
/// also takes connections without SNI).
#[derive(Debug, Clone)]
pub struct SniTable<T> {
    exact: HashMap<String, T>,
    /// Suffix including the dot (`.example.com`).
    wildcard: HashMap<String, T>,
    any: Option<T>,
}

impl<T> Default for SniTable<T> {
    fn default() -> Self {
        SniTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: None,
        }
    }
}

impl<T: Clone> SniTable<T> {
    /// Adds `name` (exact, `*.suffix` or `*`); false when it is already taken.
    pub fn insert(&mut self, name: &str, value: T) -> bool {
        let name = name.to_ascii_lowercase();
        let slot = if name == "*" {
            return self.any.replace(value).is_none();
        } else if let Some(suffix) = name.strip_prefix('*') {
            self.wildcard.insert(suffix.to_owned(), value)
        } else {
            self.exact.insert(name, value)
        };
        slot.is_none()
    }

    pub fn lookup(&self, sni: Option<&str>) -> Option<&T> {
        if let Some(sni) = sni.map(str::to_ascii_lowercase) {
            if let Some(v) = self.exact.get(&sni) {
                return Some(v);
            }
            let mut rest = sni.as_str();
            while let Some(dot) = rest.find('.') {
                if let Some(v) = self.wildcard.get(&rest[dot..]) {
                    return Some(v);
                }
                rest = &rest[dot + 1..];
            }
        }
        self.any.as_ref()
    }
}

/// Reads a connection's TLS ClientHello without terminating it: returns the bytes read (to
/// forward upstream unchanged) and the SNI, if any. Fails on anything that is not TLS.
pub async fn peek_client_hello<S>(stream: &mut S) -> std::io::Result<(Vec<u8>, Option<String>)>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
        acceptor.read_tls(&mut &buf[..n])?;
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_owned);
                return Ok((seen, sni));
            }
            Ok(None) => {}
            Err((e, _alert)) => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
        }
    }
}
