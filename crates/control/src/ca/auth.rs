//! Who may ask the CA for which identity.
//!
//! A caller presents a bearer token; an [`Authenticator`] says which workload identity
//! (namespace, service account) that token is bound to, and the CA signs that identity only.
//! Local mode ([`LocalTokens`]): `weft up` issues one random token per replica, writes it
//! where only that replica's sidecar reads it, and binds it to the Workload's namespace and
//! service account. On Kubernetes a service-account token reviewed by the API server takes
//! this place (another `Authenticator`).

use std::collections::HashMap;
use std::sync::Mutex;

/// A workload's identity: what its certificate's SPIFFE URI names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadIdentity {
    pub namespace: String,
    pub service_account: String,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token in the request")]
    Missing,
    #[error("the token is not known")]
    Unknown,
}

/// The seam between the CA and whatever vouches for callers.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, token: Option<&str>) -> Result<WorkloadIdentity, AuthError>;
}

/// Tokens issued by the local runner, each bound to one identity. Held in memory only: the
/// control plane and `weft up` share a process.
#[derive(Debug, Default)]
pub struct LocalTokens {
    by_token: Mutex<HashMap<String, WorkloadIdentity>>,
}

impl LocalTokens {
    /// A new random token (256 bits, hex) bound to `identity`.
    pub fn issue(&self, identity: WorkloadIdentity) -> String {
        let mut bytes = [0u8; 32];
        super::random_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.lock().insert(token.clone(), identity);
        token
    }

    /// Forgets `token` (its replica stopped).
    pub fn revoke(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WorkloadIdentity>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Authenticator for LocalTokens {
    fn authenticate(&self, token: Option<&str>) -> Result<WorkloadIdentity, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        self.lock().get(token).cloned().ok_or(AuthError::Unknown)
    }
}

/// Tokens listed in a file, one a line: `TOKEN NAMESPACE SERVICEACCOUNT` (`#` comments).
/// For a standalone control plane (`weft control-plane --ca-tokens FILE`); read at each
/// request, so an edit applies at once. Keep the file private (mode 0600).
#[derive(Debug)]
pub struct TokenFile {
    path: std::path::PathBuf,
}

impl TokenFile {
    pub fn new(path: std::path::PathBuf) -> TokenFile {
        TokenFile { path }
    }

    /// Reads the file: every line's token and identity, or the first bad line.
    pub fn read(&self) -> Result<HashMap<String, WorkloadIdentity>, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut out = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, namespace, service_account] = fields[..] else {
                return Err(format!(
                    "{}:{}: expected `TOKEN NAMESPACE SERVICEACCOUNT`",
                    self.path.display(),
                    i + 1
                ));
            };
            out.insert(
                token.to_owned(),
                WorkloadIdentity {
                    namespace: namespace.to_owned(),
                    service_account: service_account.to_owned(),
                },
            );
        }
        Ok(out)
    }
}

impl Authenticator for TokenFile {
    fn authenticate(&self, token: Option<&str>) -> Result<WorkloadIdentity, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        match self.read() {
            Ok(tokens) => tokens.get(token).cloned().ok_or(AuthError::Unknown),
            Err(e) => {
                tracing::warn!("CA tokens: {e}");
                Err(AuthError::Unknown)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_vouches_for_its_own_identity_only() {
        let tokens = LocalTokens::default();
        let reviews = WorkloadIdentity {
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
        };
        let t = tokens.issue(reviews.clone());
        assert_eq!(t.len(), 64);
        assert_ne!(
            t,
            tokens.issue(reviews.clone()),
            "every token is drawn anew"
        );
        assert_eq!(tokens.authenticate(Some(&t)), Ok(reviews));
        assert_eq!(tokens.authenticate(None), Err(AuthError::Missing));
        assert_eq!(tokens.authenticate(Some("")), Err(AuthError::Missing));
        assert_eq!(
            tokens.authenticate(Some("0123456789abcdef")),
            Err(AuthError::Unknown)
        );
        tokens.revoke(&t);
        assert_eq!(tokens.authenticate(Some(&t)), Err(AuthError::Unknown));
    }

    #[test]
    fn a_token_file_binds_each_line_and_names_a_bad_one() {
        let dir = crate::server::test_dir("ca-tokens");
        let path = dir.join("tokens");
        std::fs::write(&path, "# token ns sa\nabc default bookinfo-reviews\n\n").unwrap();
        let file = TokenFile::new(path.clone());
        assert_eq!(
            file.authenticate(Some("abc")),
            Ok(WorkloadIdentity {
                namespace: "default".into(),
                service_account: "bookinfo-reviews".into()
            })
        );
        assert_eq!(file.authenticate(Some("abd")), Err(AuthError::Unknown));
        std::fs::write(&path, "abc default\n").unwrap();
        let err = file.read().unwrap_err();
        assert!(
            err.ends_with("tokens:1: expected `TOKEN NAMESPACE SERVICEACCOUNT`"),
            "{err}"
        );
        assert_eq!(file.authenticate(Some("abc")), Err(AuthError::Unknown));
    }
}
