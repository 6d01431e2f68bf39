//! X.509 version 1 certificates. `openssl x509 -req` without an extensions file writes them,
//! and Istio's Secure Gateways task makes its server and client certificates that way; Envoy
//! (BoringSSL) accepts them. webpki, which rustls verifies with, reads version 3 only, so
//! weft handles the two places a v1 certificate meets it:
//!
//! - a server certificate's key check ([`key_matches`]), done here for every version;
//! - a client certificate issued directly by a trusted CA ([`verify_leaf`]): signature, issuer
//!   name and validity period checked here. A v1 certificate carries no extensions (no name
//!   constraints, no key usage), so there is nothing else to check on it.

use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};

/// Whether `der` is a version 1 certificate.
pub(super) fn is_v1(der: &CertificateDer<'_>) -> bool {
    X509Certificate::from_der(der).is_ok_and(|(_, c)| c.version() == X509Version::V1)
}

/// Whether the certificate's public key is `spki` (a SubjectPublicKeyInfo in DER): what
/// rustls's `keys_match` does, for certificates of any version. `None` when the certificate
/// does not parse.
pub(super) fn key_matches(cert: &CertificateDer<'_>, spki: &[u8]) -> Option<bool> {
    let (_, c) = X509Certificate::from_der(cert).ok()?;
    Some(c.public_key().raw == spki)
}

/// Verifies a v1 client certificate against the trust anchors `roots`: issued (signed) by one
/// of them, by name and key, and valid at `now`.
pub(super) fn verify_leaf(
    end_entity: &CertificateDer<'_>,
    roots: &[CertificateDer<'static>],
    now: UnixTime,
    algorithms: &[&'static dyn SignatureVerificationAlgorithm],
) -> Result<(), rustls::Error> {
    use rustls::CertificateError as E;
    let bad = || rustls::Error::InvalidCertificate(E::BadEncoding);
    let (_, leaf) = X509Certificate::from_der(end_entity).map_err(|_| bad())?;
    let now =
        x509_parser::time::ASN1Time::from_timestamp(now.as_secs() as i64).map_err(|_| bad())?;
    if !leaf.validity().is_valid_at(now) {
        return Err(rustls::Error::InvalidCertificate(
            if leaf.validity().not_after < now {
                E::Expired
            } else {
                E::NotValidYet
            },
        ));
    }
    let signature_alg =
        signature_algorithm(leaf.as_raw(), leaf.tbs_certificate.as_ref().len()).ok_or_else(bad)?;
    for root in roots {
        let Ok((_, ca)) = X509Certificate::from_der(root) else {
            continue;
        };
        if ca.subject().as_raw() != leaf.issuer().as_raw() {
            continue;
        }
        let spki = ca.public_key();
        let Some(key_alg) = first_contents(spki.raw) else {
            continue;
        };
        let signed = algorithms
            .iter()
            .filter(|a| {
                a.signature_alg_id().as_ref() == signature_alg
                    && a.public_key_alg_id().as_ref() == key_alg
            })
            .any(|a| {
                a.verify_signature(
                    &spki.subject_public_key.data,
                    leaf.tbs_certificate.as_ref(),
                    &leaf.signature_value.data,
                )
                .is_ok()
            });
        if signed {
            return Ok(());
        }
    }
    Err(rustls::Error::InvalidCertificate(E::UnknownIssuer))
}

/// Verifies a handshake signature (CertificateVerify) made with the key of a certificate
/// webpki does not parse: the signature scheme's algorithms for the certificate's key type.
/// TLS 1.3 allows only the scheme's first algorithm, as rustls does.
pub(super) fn handshake_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &rustls::DigitallySignedStruct,
    algorithms: &rustls::crypto::WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
    let invalid = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
    // TLS 1.3 allows no PKCS#1 v1.5 and no SHA-1 signatures in the handshake.
    use rustls::SignatureScheme as S;
    let tls13_scheme = matches!(
        dss.scheme,
        S::ECDSA_NISTP256_SHA256
            | S::ECDSA_NISTP384_SHA384
            | S::ECDSA_NISTP521_SHA512
            | S::RSA_PSS_SHA256
            | S::RSA_PSS_SHA384
            | S::RSA_PSS_SHA512
            | S::ED25519
            | S::ED448
    );
    if tls13 && !tls13_scheme {
        return Err(invalid());
    }
    let (_, c) = X509Certificate::from_der(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let spki = c.public_key();
    let key_alg = first_contents(spki.raw).ok_or_else(invalid)?;
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, algs)| {
            if tls13 {
                &algs[..algs.len().min(1)]
            } else {
                algs
            }
        })
        .ok_or_else(invalid)?;
    let verified = candidates
        .iter()
        .filter(|a| a.public_key_alg_id().as_ref() == key_alg)
        .any(|a| {
            a.verify_signature(&spki.subject_public_key.data, message, dss.signature())
                .is_ok()
        });
    if verified {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    } else {
        Err(invalid())
    }
}

/// The contents of the certificate's `signatureAlgorithm` (an AlgorithmIdentifier without its
/// SEQUENCE header, as pki-types names algorithms): the element after the TBS certificate
/// in `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`.
fn signature_algorithm(cert: &[u8], tbs_len: usize) -> Option<&[u8]> {
    let (header, _) = tlv(cert)?;
    let rest = cert.get(header + tbs_len..)?;
    let (h, len) = tlv(rest)?;
    rest.get(h..h + len)
}

/// The contents of the first element inside a DER SEQUENCE (`SubjectPublicKeyInfo`'s
/// algorithm).
fn first_contents(seq: &[u8]) -> Option<&[u8]> {
    let (header, _) = tlv(seq)?;
    let inner = seq.get(header..)?;
    let (h, len) = tlv(inner)?;
    inner.get(h..h + len)
}

/// A DER element's header length and contents length (definite lengths only, as DER has).
fn tlv(der: &[u8]) -> Option<(usize, usize)> {
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some((2, first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for b in der.get(2..2 + n)? {
        len = (len << 8) | *b as usize;
    }
    Some((2 + n, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(tlv(&[0x30, 0x03, 1, 2, 3]), Some((2, 3)));
        assert_eq!(tlv(&[0x30, 0x81, 0x80]), Some((3, 0x80)));
        assert_eq!(tlv(&[0x30, 0x82, 0x01, 0x00]), Some((4, 0x100)));
        assert_eq!(tlv(&[0x30, 0x80]), None);
        assert_eq!(tlv(&[0x30]), None);
    }
}
