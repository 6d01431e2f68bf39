//! The control plane's certificate authority (Istio's Citadel, inside istiod).
//!
//! - [`Authority`]: the signing key and certificate, with the trust bundle proxies verify
//!   peers against. Either self-signed on first start and kept in a directory (key mode 0600),
//!   or a plug-in CA read from a directory in Istio's `cacerts` layout (`ca-cert.pem`,
//!   `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`).
//! - [`auth`]: who the caller of the certificate service is ([`auth::Authenticator`]); local
//!   mode's per-replica bearer tokens ([`auth::LocalTokens`]).
//! - [`serve`]: the certificate service (Istio's `IstioCertificateService`) over TLS.
//!
//! The flow: a proxy generates its key, sends a CSR whose one subject alternative name is its
//! SPIFFE identity, with its token; the CA signs only the identity that token is bound to.

pub mod auth;
pub mod serve;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The default lifetime of a workload certificate (Istio's 24h).
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest lifetime a proxy may ask for (Istio's 90 days).
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// A self-signed root's lifetime (Istio's 10 years).
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why the CA could not start or sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the CA's key and certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A self-signed root kept in this directory (`ca-cert.pem`, `ca-key.pem`), created on
    /// first start.
    SelfSigned(PathBuf),
    /// A plug-in CA: a directory in Istio's `cacerts` layout.
    PlugIn(PathBuf),
}

/// The CA's settings.
#[derive(Debug, Clone)]
pub struct CaOptions {
    pub source: CaSource,
    /// Lifetime of a certificate whose request asks for none.
    pub default_ttl: Duration,
    /// The longest lifetime granted.
    pub max_ttl: Duration,
}

impl CaOptions {
    pub fn new(source: CaSource) -> CaOptions {
        CaOptions {
            source,
            default_ttl: DEFAULT_WORKLOAD_TTL,
            max_ttl: MAX_WORKLOAD_TTL,
        }
    }
}

/// A signing CA and what it hands out with every certificate.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate and its chain up to the root (PEM, one certificate each),
    /// appended after a workload certificate. Empty for a self-signed root (it is the root).
    chain: Vec<String>,
    /// The root certificates (PEM, one or more: old and new while a root rotates).
    trust_bundle: String,
    options: CaOptions,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("source", &self.options.source)
            .finish_non_exhaustive()
    }
}

/// One certificate signed for a workload: the chain to send back, leaf first, trust bundle
/// last (Istio's `cert_chain`).
#[derive(Debug, Clone)]
pub struct Signed {
    pub cert_chain: Vec<String>,
}

impl Authority {
    /// Loads the CA `options` names; a self-signed one is created (and kept) on first use.
    pub fn load(options: CaOptions) -> Result<Authority, CaError> {
        match options.source.clone() {
            CaSource::SelfSigned(dir) => Self::self_signed(&dir, options),
            CaSource::PlugIn(dir) => Self::plug_in(&dir, options),
        }
    }

    fn self_signed(dir: &Path, options: CaOptions) -> Result<Authority, CaError> {
        let cert_path = dir.join("ca-cert.pem");
        let key_path = dir.join("ca-key.pem");
        if !cert_path.exists() {
            create_root(dir, &cert_path, &key_path)?;
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_error(&cert_path))?;
        let issuer = read_issuer(&cert_path, &cert_pem, &key_path)?;
        Ok(Authority {
            issuer,
            chain: Vec::new(),
            trust_bundle: cert_pem,
            options,
        })
    }

    fn plug_in(dir: &Path, options: CaOptions) -> Result<Authority, CaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(io_error(&path))
                .map(|text| (path, text))
        };
        let (cert_path, cert_pem) = read("ca-cert.pem")?;
        let (chain_path, chain_pem) = read("cert-chain.pem")?;
        let (root_path, root_pem) = read("root-cert.pem")?;
        let issuer = read_issuer(&cert_path, &cert_pem, &dir.join("ca-key.pem"))?;
        let roots = pem_blocks(&root_pem, &root_path)?;
        // cert-chain.pem is the signing certificate and its intermediates, sometimes with the
        // root at its end: the root goes out once, in the trust bundle.
        let chain = pem_blocks(&chain_pem, &chain_path)?
            .into_iter()
            .filter(|c| !roots.contains(c))
            .collect();
        Ok(Authority {
            issuer,
            chain,
            trust_bundle: root_pem,
            options,
        })
    }

    /// The root certificates (PEM) proxies trust.
    pub fn trust_bundle(&self) -> &str {
        &self.trust_bundle
    }

    /// Signs the CSR `csr_pem` for `identity` (a SPIFFE URI): the CSR must be well formed,
    /// signed by its key, and name exactly that identity. `ttl` of zero asks for the default.
    /// Only the CSR's public key is used; every other field is the CA's choice.
    pub fn sign(&self, csr_pem: &str, identity: &str, ttl: Duration) -> Result<Signed, SignError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| SignError::BadCsr(e.to_string()))?;
        let asked: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                SanType::URI(u) => u.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        if asked != [identity] {
            return Err(SignError::NotYours {
                asked,
                allowed: identity.to_owned(),
            });
        }
        let ttl = if ttl.is_zero() {
            self.options.default_ttl
        } else {
            ttl.min(self.options.max_ttl)
        };
        let params = workload_params(identity, ttl).map_err(|e| SignError::Sign(e.to_string()))?;
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let leaf = request
            .signed_by(&self.issuer)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        let mut cert_chain = vec![leaf.pem()];
        cert_chain.extend(self.chain.iter().cloned());
        cert_chain.push(self.trust_bundle.clone());
        Ok(Signed { cert_chain })
    }

    /// A certificate for the CA's own TLS server (the certificate service), with `names` as
    /// DNS or IP subject alternative names, and its key (PEM).
    pub fn server_certificate(&self, names: &[&str]) -> Result<(Vec<String>, String), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .map_err(|e| CaError::Sign(e.to_string()))?;
        params.distinguished_name = DistinguishedName::new();
        params.serial_number = Some(random_serial());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok((chain, key.serialize_pem()))
    }
}

/// The authority in force, read again when a plug-in CA's files change: how a root rotates,
/// with overlap. 1. Add the new root beside the old one in `root-cert.pem`: every certificate
/// carries the bundle, so once every proxy has renewed (half a lifetime) all trust both.
/// 2. Replace `ca-cert.pem`, `ca-key.pem` and `cert-chain.pem` with the new signer: new
/// certificates chain to the new root, which everyone trusts, while the old ones still verify.
/// 3. After a full lifetime, drop the old root. No handshake fails on the way.
/// A directory that no longer loads is reported and the previous authority stays in force.
pub struct Reloading {
    options: CaOptions,
    current: std::sync::RwLock<std::sync::Arc<Authority>>,
    stamp: std::sync::Mutex<Vec<Option<std::time::SystemTime>>>,
}

impl Reloading {
    pub fn new(authority: Authority) -> Reloading {
        let options = authority.options.clone();
        let stamp = std::sync::Mutex::new(Self::stamp_of(&options));
        Reloading {
            options,
            current: std::sync::RwLock::new(std::sync::Arc::new(authority)),
            stamp,
        }
    }

    /// The authority in force.
    pub fn current(&self) -> std::sync::Arc<Authority> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The modification times of a plug-in CA's files (none for a self-signed root, which
    /// only this CA writes).
    fn stamp_of(options: &CaOptions) -> Vec<Option<std::time::SystemTime>> {
        let CaSource::PlugIn(dir) = &options.source else {
            return Vec::new();
        };
        [
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
    }

    /// Loads the files again when they changed. Ok(true) when a new authority is in force.
    pub fn poll(&self) -> Result<bool, CaError> {
        let stamp = Self::stamp_of(&self.options);
        {
            let mut seen = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == stamp {
                return Ok(false);
            }
            *seen = stamp;
        }
        let authority = Authority::load(self.options.clone())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(authority);
        tracing::info!("CA files changed: the new authority is in force");
        Ok(true)
    }
}

/// Why a certificate was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the CSR is not valid: {0}")]
    BadCsr(String),
    #[error("the CSR asks for {asked:?}; this credential may only have {allowed}")]
    NotYours { asked: Vec<String>, allowed: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// What a workload certificate is: the one SPIFFE URI, no subject (Istio leaves it empty),
/// client and server authentication, `ttl` from now.
fn workload_params(identity: &str, ttl: Duration) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::DAY);
    Ok(params)
}

/// 128 random bits, first bit clear (a positive serial number), from aws-lc-rs's CSPRNG.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// Fills `buf` from the crypto provider's secure random source.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    // The system's CSPRNG failing is not something to go on from.
    #[allow(clippy::expect_used)]
    provider
        .secure_random
        .fill(buf)
        .expect("the system's random source failed");
}

/// Creates a self-signed root in `dir`: the key written with mode 0600 in a 0700 directory.
fn create_root(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))?;
    let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "weft");
    name.push(DnType::CommonName, "weft root CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::try_from(ROOT_TTL).unwrap_or(time::Duration::DAY);
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    let write = |path: &Path, text: &str, mode: u32| -> Result<(), CaError> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_error(path))
    };
    // The key first: a certificate without its key would be taken for a complete root.
    write(key_path, &key.serialize_pem(), 0o600)?;
    write(cert_path, &cert.pem(), 0o644)?;
    tracing::info!(dir = %dir.display(), "created a self-signed root CA");
    Ok(())
}

/// The issuer of a CA certificate (PEM text read from `cert_path`) and its key file.
fn read_issuer(
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
) -> Result<Issuer<'static, KeyPair>, CaError> {
    let key_pem = std::fs::read_to_string(key_path).map_err(io_error(key_path))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Bad {
        path: key_path.to_owned(),
        reason: format!("not a private key this CA can use: {e}"),
    })?;
    Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CaError::Bad {
        path: cert_path.to_owned(),
        reason: format!("not a CA certificate: {e}"),
    })
}

/// The certificates of PEM text, each as its own PEM block (at least one), checked to parse.
fn pem_blocks(text: &str, path: &Path) -> Result<Vec<String>, CaError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let bad = |reason: String| CaError::Bad {
        path: path.to_owned(),
        reason,
    };
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err(bad("a certificate block has no END line".to_owned()));
        };
        let block = &rest[start..start + len + END.len()];
        CertificateDer::from_pem_slice(block.as_bytes()).map_err(|e| bad(e.to_string()))?;
        blocks.push(format!("{block}\n"));
        rest = &rest[start + len + END.len()..];
    }
    if blocks.is_empty() {
        return Err(bad("no certificate in it".to_owned()));
    }
    Ok(blocks)
}

/// The SPIFFE identity of a service account.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

#[cfg(test)]
mod tests;
