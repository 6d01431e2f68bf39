//! Kubernetes `Secret` (core/v1): the credentials a gateway serves (`credentialName`). The
//! control plane reads them from its config store and hands their key material only to the
//! proxies that use it (over xDS), never to disk.
//!
//! `data` holds base64 values, `stringData` plain text that the API server merges into `data`
//! (a key in both takes `stringData`'s value). The keys a credential is read from are Istio's:
//! `tls.crt`/`tls.key`/`ca.crt` (a `kubernetes.io/tls` secret, what `kubectl create secret
//! tls` writes) or `cert`/`key`/`cacert` (a generic secret); see [`Secret::key_and_cert`].
//!
//! Values never appear in `Debug` output or in validation messages.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validate::{Cx, Validate};

/// A Secret document (`metadata` is read by the loader).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// `kubernetes.io/tls`, `Opaque` (the default), ...
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub secret_type: Option<String>,
    /// Key -> base64 of the value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Key -> the value as text; wins over the same key in `data`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// The Kubernetes type of TLS secrets, which must hold `tls.crt` and `tls.key`.
pub const TLS_TYPE: &str = "kubernetes.io/tls";

/// Istio's key names: a generic secret's, then a TLS secret's (Istio reads them in this order).
const GENERIC_CERT: &str = "cert";
const GENERIC_KEY: &str = "key";
const GENERIC_CA: &str = "cacert";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const TLS_CA: &str = "ca.crt";
/// Certificate revocation list of a credential's CA (Istio reads it beside `ca.crt`).
const TLS_CRL: &str = "ca.crl";

impl fmt::Debug for Secret {
    /// Key names and value sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes = |m: &BTreeMap<String, String>| -> Vec<(String, usize)> {
            m.iter().map(|(k, v)| (k.clone(), v.len())).collect()
        };
        f.debug_struct("Secret")
            .field("type", &self.secret_type)
            .field("data (key, base64 length)", &sizes(&self.data))
            .field("stringData (key, length)", &sizes(&self.string_data))
            .finish_non_exhaustive()
    }
}

/// Why a Secret does not hold a credential, in Istio's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// Both keys of a pair are present, and empty.
    Empty(&'static str, &'static str),
    /// The CA key is present, and empty.
    EmptyCa(&'static str),
    /// No certificate and key pair; the keys that are there.
    NoCertificate(String),
    /// No CA key; the keys that are there.
    NoCa(String),
    /// A value is not UTF-8 text.
    NotText(String),
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::Empty(a, b) => write!(f, "keys {a:?} and {b:?} are present but empty"),
            CredentialError::EmptyCa(k) => write!(f, "key {k:?} is present but empty"),
            CredentialError::NoCertificate(found) => write!(
                f,
                "it has neither keys {GENERIC_CERT:?} and {GENERIC_KEY:?} nor {TLS_CERT:?} and \
                 {TLS_KEY:?} (keys found: {found})"
            ),
            CredentialError::NoCa(found) => write!(
                f,
                "it has neither key {GENERIC_CA:?} nor {TLS_CA:?} (keys found: {found})"
            ),
            CredentialError::NotText(k) => write!(f, "key {k:?} is not text (PEM is expected)"),
        }
    }
}

impl std::error::Error for CredentialError {}

impl Secret {
    /// The decoded value of `key` (`stringData` first, then `data`); `None` when absent or
    /// not valid base64 (validation reports that).
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.string_data.get(key) {
            return Some(v.as_bytes().to_vec());
        }
        decode_base64(self.data.get(key)?).ok()
    }

    fn has(&self, key: &str) -> bool {
        self.string_data.contains_key(key) || self.data.contains_key(key)
    }

    fn text(&self, key: &str) -> Result<Option<String>, CredentialError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => String::from_utf8(v)
                .map(Some)
                .map_err(|_| CredentialError::NotText(key.to_owned())),
        }
    }

    fn keys_found(&self) -> String {
        let mut keys: Vec<&str> = self
            .data
            .keys()
            .chain(self.string_data.keys())
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.join(", ")
        }
    }

    /// The PEM private key and certificate chain, as Istio reads a credential: `cert` and
    /// `key` when both are non-empty, else `tls.crt` and `tls.key`.
    pub fn key_and_cert(&self) -> Result<(String, String), CredentialError> {
        for (cert, key) in [(GENERIC_CERT, GENERIC_KEY), (TLS_CERT, TLS_KEY)] {
            let (c, k) = (self.text(cert)?, self.text(key)?);
            if let (Some(c), Some(k)) = (&c, &k)
                && !c.is_empty()
                && !k.is_empty()
            {
                return Ok((k.clone(), c.clone()));
            }
        }
        for (cert, key) in [(GENERIC_CERT, GENERIC_KEY), (TLS_CERT, TLS_KEY)] {
            if self.has(cert) && self.has(key) {
                return Err(CredentialError::Empty(cert, key));
            }
        }
        Err(CredentialError::NoCertificate(self.keys_found()))
    }

    /// The PEM CA certificates (`cacert`, else `ca.crt`), for verifying client certificates.
    pub fn ca_cert(&self) -> Result<String, CredentialError> {
        for key in [GENERIC_CA, TLS_CA] {
            if let Some(ca) = self.text(key)?
                && !ca.is_empty()
            {
                return Ok(ca);
            }
        }
        for key in [GENERIC_CA, TLS_CA] {
            if self.has(key) {
                return Err(CredentialError::EmptyCa(key));
            }
        }
        Err(CredentialError::NoCa(self.keys_found()))
    }

    /// The PEM revocation list of the CA (`ca.crl`), when there is one.
    pub fn ca_crl(&self) -> Result<Option<String>, CredentialError> {
        Ok(self.text(TLS_CRL)?.filter(|c| !c.is_empty()))
    }
}

impl Validate for Secret {
    fn validate(&self, cx: &mut Cx) {
        cx.field("data", |cx| {
            for (k, v) in &self.data {
                cx.key(k, |cx| {
                    cx.check(data_key(k));
                    if decode_base64(v).is_err() {
                        // The value is secret: say what is wrong, not what it is.
                        cx.error(
                            "not valid base64 (data values are base64; use stringData for text)",
                        );
                    }
                });
            }
        });
        cx.field("stringData", |cx| {
            for k in self.string_data.keys() {
                cx.key(k, |cx| cx.check(data_key(k)));
            }
        });
        // The API server's rule for TLS secrets.
        if self.secret_type.as_deref() == Some(TLS_TYPE) {
            for key in [TLS_CERT, TLS_KEY] {
                if !self.has(key) {
                    cx.error_at(
                        "data",
                        format!("a {TLS_TYPE} secret must have a {key:?} key"),
                    );
                }
            }
        }
    }
}

/// Kubernetes' rule for a Secret's keys: letters, digits, `-`, `_` and `.`, at most 253.
fn data_key(k: &str) -> Result<(), String> {
    let ok = !k.is_empty()
        && k.len() <= 253
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid key {k:?}: a key must consist of letters, digits, '-', '_' or '.'"
        ))
    }
}

/// A value that is not base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotBase64;

/// Standard base64 (RFC 4648, with padding), as Kubernetes writes `data`. Line breaks are
/// tolerated, as the API server's decoder does not see them (YAML folds them away anyway).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, NotBase64> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b'\n' | b'\r'))
        .collect();
    if !digits.len().is_multiple_of(4) {
        return Err(NotBase64);
    }
    let value = |b: u8| -> Result<u32, NotBase64> {
        Ok(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(NotBase64),
        } as u32)
    };
    let mut out = Vec::with_capacity(digits.len() / 4 * 3);
    let quads = digits.chunks(4);
    let last = quads.len().saturating_sub(1);
    for (i, quad) in quads.enumerate() {
        let pad = quad.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 || (pad > 0 && i != last) {
            return Err(NotBase64);
        }
        let mut n = 0u32;
        for &b in &quad[..4 - pad] {
            n = (n << 6) | value(b)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::doc_errors;

    fn secret(yaml: &str) -> Secret {
        yaml_serde::from_str(yaml).expect("parses")
    }

    #[test]
    fn base64_decodes_as_kubernetes_writes_it() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("Zm9v\nYmFy").unwrap(), b"foobar");
        assert_eq!(decode_base64("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        for bad in ["Zm9", "Zg=", "Z===", "Zg==Zm9v", "Zm9*", "Zm 9v"] {
            assert!(decode_base64(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_read_with_istios_keys() {
        // What `kubectl create secret tls` writes (base64 of "C", "K").
        let tls = secret("type: kubernetes.io/tls\ndata: {tls.crt: Qw==, tls.key: Sw==}\n");
        assert_eq!(tls.key_and_cert().unwrap(), ("K".into(), "C".into()));
        assert!(matches!(tls.ca_cert(), Err(CredentialError::NoCa(_))));
        // A generic secret's keys win over the TLS ones; stringData over data.
        let generic = secret(
            "data: {tls.crt: Qw==, tls.key: Sw==, cert: QzI=, key: SzI=, ca.crt: QQ==}\n\
             stringData: {cacert: CA}\n",
        );
        assert_eq!(generic.key_and_cert().unwrap(), ("K2".into(), "C2".into()));
        assert_eq!(generic.ca_cert().unwrap(), "CA");
        let empty = secret("stringData: {tls.crt: '', tls.key: ''}\n");
        assert_eq!(
            empty.key_and_cert().unwrap_err(),
            CredentialError::Empty("tls.crt", "tls.key")
        );
        let other = secret("stringData: {password: x}\n");
        let err = other.key_and_cert().unwrap_err().to_string();
        assert!(err.contains("keys found: password"), "{err}");
    }

    #[test]
    fn values_are_never_shown() {
        let s = secret("stringData: {tls.key: TOPSECRET}\ndata: {tls.crt: U0VDUkVUQ0VSVA==}\n");
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("TOPSECRET") && !debug.contains("U0VD"),
            "{debug}"
        );
        let bad = secret("data: {tls.key: 'TOPSECRET!'}\n");
        let errors = doc_errors(&bad);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "data[tls.key]");
        assert!(!errors[0].1.contains("TOPSECRET"), "{errors:?}");
    }

    #[test]
    fn tls_secrets_need_a_certificate_and_a_key() {
        let s = secret("type: kubernetes.io/tls\ndata: {tls.crt: Qw==}\n");
        let errors = doc_errors(&s);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].1.contains("\"tls.key\""), "{errors:?}");
        assert!(
            doc_errors(&secret("data: {'a b': Qw==}\n"))[0]
                .1
                .contains("invalid key")
        );
    }

    #[test]
    fn what_kubectl_writes_loads() {
        // `kubectl create -n istio-system secret tls httpbin-credential --key=K --cert=C
        // --dry-run=client -o yaml`, with short values.
        let yaml = "apiVersion: v1\ndata:\n  tls.crt: Qw==\n  tls.key: Sw==\nkind: Secret\n\
                    metadata:\n  creationTimestamp: null\n  name: httpbin-credential\n  \
                    namespace: istio-system\ntype: kubernetes.io/tls\n";
        let loaded = crate::load::load_str("secret.yaml", yaml);
        assert_eq!(loaded.diagnostics, [], "{:?}", loaded.diagnostics);
        let r = &loaded.resources[0];
        assert_eq!(
            (r.kind(), r.namespace(), r.name()),
            ("Secret", "istio-system", "httpbin-credential")
        );
        let crate::Spec::Secret(s) = &r.spec else {
            panic!("{r:?}")
        };
        assert_eq!(s.key_and_cert().unwrap(), ("K".into(), "C".into()));
    }
}
