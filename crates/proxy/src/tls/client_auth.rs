//! Verification of client certificates on terminated TLS: Istio's Gateway `tls.mode` MUTUAL
//! (a certificate is required) and OPTIONAL_MUTUAL (verified when sent). The chain is checked
//! by rustls's `WebPkiClientVerifier` against a CA bundle read when config arrives; the
//! subject alternative names a server asks for (`subjectAltNames`) are checked after it, as
//! Envoy's `match_subject_alt_names` does; revocation lists (`caCrl`) with the chain.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use weft_xds::proto;

use crate::config::ConfigError;

/// The verifier of `v`, its CA bundle read now (from its `ca_secret`, else its files). `at`
/// is the field path of `v` for errors.
pub(super) fn verifier(
    v: &proto::ClientValidation,
    secrets: &super::Secrets<'_>,
    provider: &Arc<CryptoProvider>,
    resource: &str,
    at: &str,
) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let (roots, crls, field, crl_field, source) = if v.ca_secret.is_empty() {
        from_files(v, resource, at)?
    } else {
        let field = format!("{at}.caSecret");
        let ctx = secrets.validation(&v.ca_secret, resource, &field)?;
        let source = format!("secret {:?}", v.ca_secret);
        let roots = super::pem_certificates(ctx.trusted_ca.as_bytes(), &source)
            .map_err(|e| ConfigError::new(resource, &field, e))?;
        let crls = if ctx.crl.is_empty() {
            Vec::new()
        } else {
            pem_crls(ctx.crl.as_bytes(), &source)
                .map_err(|e| ConfigError::new(resource, &field, e))?
        };
        (roots, crls, field.clone(), field, source)
    };
    let mut store = rustls::RootCertStore::empty();
    for cert in &roots {
        store
            .add(cert.clone())
            .map_err(|e| ConfigError::new(resource, &field, format!("{source}: {e}")))?;
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone());
    if v.optional {
        builder = builder.allow_unauthenticated();
    }
    let has_crls = !crls.is_empty();
    if has_crls {
        builder = builder.with_crls(crls);
    }
    let chain = builder.build().map_err(|e| match e {
        VerifierBuilderError::InvalidCrl(_) => {
            ConfigError::new(resource, crl_field, format!("{source}: {e}"))
        }
        _ => ConfigError::new(resource, field, format!("{source}: {e}")),
    })?;
    let chain: Arc<dyn ClientCertVerifier> = Arc::new(AnyVersion {
        chain,
        roots,
        has_crls,
        algorithms: provider.signature_verification_algorithms,
    });
    if v.subject_alt_names.is_empty() {
        return Ok(chain);
    }
    Ok(Arc::new(SanVerifier {
        chain,
        subject_alt_names: v.subject_alt_names.clone(),
    }))
}

/// Trust anchors and revocation lists, the field paths to name them by, and the source for
/// messages.
type Sources = (
    Vec<CertificateDer<'static>>,
    Vec<CertificateRevocationListDer<'static>>,
    String,
    String,
    String,
);

/// The CA (and CRL) files of `v`.
fn from_files(
    v: &proto::ClientValidation,
    resource: &str,
    at: &str,
) -> Result<Sources, ConfigError> {
    let (ca_file, field) = ca_file(v);
    if ca_file.is_empty() {
        return Err(ConfigError::new(
            resource,
            format!("{at}.caFile"),
            "a CA file (or caSecret) is required to verify client certificates",
        ));
    }
    let field = format!("{at}.{field}");
    super::regular_file(ca_file).map_err(|e| ConfigError::new(resource, &field, e))?;
    let pem = std::fs::read(ca_file)
        .map_err(|e| ConfigError::new(resource, &field, format!("{ca_file}: {e}")))?;
    let roots = super::pem_certificates(&pem, ca_file)
        .map_err(|e| ConfigError::new(resource, &field, e))?;
    let crl_field = format!("{at}.crlFile");
    let crls = if v.crl_file.is_empty() {
        Vec::new()
    } else {
        read_crls(&v.crl_file, resource, &crl_field)?
    };
    Ok((roots, crls, field, crl_field, ca_file.to_owned()))
}

/// The revocation lists of PEM text (at least one). `source` names it for messages.
fn pem_crls(
    pem: &[u8],
    source: &str,
) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{source}: {e}"))?;
    if crls.is_empty() {
        return Err(format!("{source}: no certificate revocation list in it"));
    }
    Ok(crls)
}

/// The revocation lists of a PEM file (at least one).
fn read_crls(
    path: &str,
    resource: &str,
    field: &str,
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    super::regular_file(path).map_err(|e| ConfigError::new(resource, field, e))?;
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new(resource, field, format!("{path}: {e}")))?;
    if crls.is_empty() {
        return Err(ConfigError::new(
            resource,
            field,
            format!("{path}: no certificate revocation list in the file"),
        ));
    }
    Ok(crls)
}

/// The CA file to read and its field name: `preferredCaFile` when that file exists (Istio's
/// `<credentialName>-cacert` secret wins over the credential's own CA), else `caFile`.
fn ca_file(v: &proto::ClientValidation) -> (&str, &'static str) {
    if !v.preferred_ca_file.is_empty() {
        match std::fs::metadata(&v.preferred_ca_file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Present, or there but unreadable: read it, so a problem is reported, not hidden.
            _ => return (&v.preferred_ca_file, "preferredCaFile"),
        }
    }
    (&v.ca_file, "caFile")
}

/// Checks the chain with `chain`, then that the certificate carries one of the names.
#[derive(Debug)]
struct SanVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    subject_alt_names: Vec<String>,
}

impl ClientCertVerifier for SanVerifier {
    fn offer_client_auth(&self) -> bool {
        self.chain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let sans = subject_alt_names(end_entity);
        if self
            .subject_alt_names
            .iter()
            .any(|want| sans.iter().any(|have| have.matches(want)))
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Chain verification by webpki, and, for a version 1 client certificate issued directly by
/// a trusted CA (which webpki does not read), by [`super::v1`]: Istio's Secure Gateways task
/// makes its client certificate that way, and Envoy accepts it.
#[derive(Debug)]
struct AnyVersion {
    chain: Arc<dyn ClientCertVerifier>,
    roots: Vec<CertificateDer<'static>>,
    /// A v1 certificate is refused when revocation lists are configured: weft checks those
    /// through webpki only.
    has_crls: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyVersion {
    fn offer_client_auth(&self) -> bool {
        self.chain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // A version 1 leaf must be issued directly by a trusted CA; what else the client sent
        // is not needed for that (OpenSSL clients such as curl send the CA they found the
        // leaf under along with it).
        if super::v1::is_v1(end_entity) {
            if self.has_crls {
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownRevocationStatus,
                ));
            }
            super::v1::verify_leaf(end_entity, &self.roots, now, self.algorithms.all)?;
            return Ok(ClientCertVerified::assertion());
        }
        self.chain
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if super::v1::is_v1(cert) {
            return super::v1::handshake_signature(message, cert, dss, &self.algorithms, false);
        }
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if super::v1::is_v1(cert) {
            return super::v1::handshake_signature(message, cert, dss, &self.algorithms, true);
        }
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// One subject alternative name of a certificate.
#[derive(Debug, PartialEq, Eq)]
enum San {
    Dns(String),
    /// URI, email or IP address (in its usual text form): compared exactly.
    Other(String),
}

impl San {
    fn matches(&self, want: &str) -> bool {
        match self {
            San::Other(have) => have == want,
            San::Dns(have) => dns_san_matches(have, want),
        }
    }
}

/// Envoy's exact `match_subject_alt_names` on a DNS name: equal without case, or a
/// certificate's `*.example.com` covering one label (`a.example.com`). Other kinds of names
/// compare exactly.
pub(super) fn dns_san_matches(have: &str, want: &str) -> bool {
    if have.eq_ignore_ascii_case(want) {
        return true;
    }
    let Some(suffix) = have.strip_prefix("*.") else {
        return false;
    };
    want.split_once('.')
        .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix))
}

/// The DNS, URI, email and IP subject alternative names of a certificate (none when it does
/// not parse: the chain check has already accepted it, so that does not happen in practice).
fn subject_alt_names(der: &CertificateDer<'_>) -> Vec<San> {
    use x509_parser::extensions::GeneralName;
    super::general_names(der, |n| match n {
        GeneralName::DNSName(d) => Some(San::Dns((*d).to_owned())),
        GeneralName::URI(u) => Some(San::Other((*u).to_owned())),
        GeneralName::RFC822Name(e) => Some(San::Other((*e).to_owned())),
        GeneralName::IPAddress(ip) => {
            let ip: std::net::IpAddr = match ip.len() {
                4 => <[u8; 4]>::try_from(*ip).ok()?.into(),
                16 => <[u8; 16]>::try_from(*ip).ok()?.into(),
                _ => return None,
            };
            Some(San::Other(ip.to_string()))
        }
        _ => None,
    })
}
