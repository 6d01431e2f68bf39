//! Downstream TLS: certificates loaded and checked when config arrives, chosen per connection
//! by SNI, with ALPN offering h2 and http/1.1. rustls with aws-lc-rs as the one crypto
//! provider.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use weft_xds::proto;

use crate::config::ConfigError;

/// Builds the server config of an HTTP listener's `tls`. `resource`/`field` locate errors.
pub fn server_config(
    tls: &proto::DownstreamTls,
    resource: &str,
    field: &str,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut resolver = SniResolver::default();
    if tls.certificates.is_empty() {
        return Err(ConfigError::new(
            resource,
            format!("{field}.certificates"),
            "at least one certificate is required",
        ));
    }
    for (i, c) in tls.certificates.iter().enumerate() {
        let at = |f: &str| format!("{field}.certificates[{i}].{f}");
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert_file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                ConfigError::new(resource, at("certFile"), format!("{}: {e}", c.cert_file))
            })?;
        if chain.is_empty() {
            return Err(ConfigError::new(
                resource,
                at("certFile"),
                format!("{}: no certificate in the file", c.cert_file),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&c.key_file).map_err(|e| {
            ConfigError::new(resource, at("keyFile"), format!("{}: {e}", c.key_file))
        })?;
        let signing = provider.key_provider.load_private_key(key).map_err(|e| {
            ConfigError::new(resource, at("keyFile"), format!("{}: {e}", c.key_file))
        })?;
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        // The key must belong to the certificate, or every handshake would fail later.
        certified.keys_match().map_err(|e| {
            ConfigError::new(
                resource,
                at("keyFile"),
                format!("does not match {}: {e}", c.cert_file),
            )
        })?;
        resolver.add(&c.server_names, certified);
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(resource, field, e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Certificates by SNI: exact names, then `*.suffix` (one more label), then the first one.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Suffix including the dot (`.example.com`) -> certificate.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn add(&mut self, names: &[String], cert: Arc<CertifiedKey>) {
        if self.default.is_none() {
            self.default = Some(cert.clone());
        }
        for name in names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => {
                    self.wildcard
                        .entry(suffix.to_owned())
                        .or_insert_with(|| cert.clone());
                }
                _ => {
                    self.exact.entry(name).or_insert_with(|| cert.clone());
                }
            }
        }
    }

    fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
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

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}
