//! Request authentication: JWTs checked as Envoy's jwt_authn filter checks them under the
//! configuration Istio makes of its RequestAuthentications (any provider, or "allow missing"):
//! a request with no token passes with no identity; a token must verify (its issuer has a
//! provider that looks where it was found, its signature is by a key of that issuer's JWKS,
//! `exp` and `nbf` hold with a minute of clock skew, an audience is the provider's) or the
//! request gets 401. A token of an issuer no provider has is refused too (`Jwt issuer is not
//! configured`), as Envoy does since 1.17.1.
//!
//! Signatures are verified with aws-lc-rs (RS256/384/512, PS256/384/512, ES256/384, EdDSA),
//! the proxy's one crypto provider.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use serde_json::Value;
use weft_xds::proto;

use crate::config::ConfigError;

/// Envoy's default clock skew for `exp` and `nbf`, in seconds.
const CLOCK_SKEW: u64 = 60;

/// A listener's providers, compiled.
#[derive(Debug)]
pub struct JwtAuthn {
    providers: Vec<Provider>,
}

#[derive(Debug)]
struct Provider {
    issuer: String,
    audiences: Vec<String>,
    keys: Vec<Jwk>,
    locations: Vec<Location>,
    forward: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
    /// Claims whose string value is a space-separated list (besides `scope`, `permission`).
    space_delimited: Vec<String>,
}

/// Claims whose string value is always a space-separated list, as Istio reads them.
const SPACE_DELIMITED: &[&str] = &["scope", "permission"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

#[derive(Debug)]
struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    key: Key,
}

#[derive(Debug)]
enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point, 0x04 || x || y.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

/// A verified token's identity: what authorization's `requestPrincipals` and
/// `request.auth.*` read.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `iss/sub`.
    pub principal: String,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    claims: Value,
    /// The provider's space-delimited claims besides `scope` and `permission`.
    space_delimited: Vec<String>,
}

impl Identity {
    /// The values of the claim at `path` (nested objects by name): a string, or each string
    /// of a list; numbers and booleans as text. A top-level space-delimited claim (`scope`,
    /// `permission`, the provider's `spaceDelimitedClaims`) gives each of its words.
    pub fn claim(&self, path: &[String]) -> Vec<String> {
        let mut v = &self.claims;
        for name in path {
            match v.get(name) {
                Some(inner) => v = inner,
                None => return Vec::new(),
            }
        }
        let split = match path {
            [name] => {
                SPACE_DELIMITED.contains(&name.as_str()) || self.space_delimited.contains(name)
            }
            _ => false,
        };
        match v {
            Value::Array(items) => items.iter().filter_map(scalar).collect(),
            Value::String(s) if split => s.split_whitespace().map(str::to_owned).collect(),
            other => scalar(other).into_iter().collect(),
        }
    }
}

#[cfg(test)]
impl Identity {
    /// An identity as a verified token with these claims would give.
    pub fn for_tests(claims: Value) -> Identity {
        let field = |n: &str| claims.get(n).and_then(Value::as_str).unwrap_or_default();
        let audiences = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(scalar).collect(),
            _ => Vec::new(),
        };
        Identity {
            principal: format!("{}/{}", field("iss"), field("sub")),
            audiences,
            presenter: claims.get("azp").and_then(Value::as_str).map(str::to_owned),
            claims,
            space_delimited: Vec::new(),
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Why a token was refused: Envoy's jwt_authn status, whose message is the 401's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    BadFormat,
    BadHeader,
    BadPayload,
    Expired,
    NotYetValid,
    AudienceNotAllowed,
    NoMatchingKey,
    UnsupportedAlg,
    VerificationFails,
    UnknownIssuer,
}

impl Failure {
    /// The body of the 401, as Envoy words it.
    pub fn message(self) -> &'static str {
        match self {
            Failure::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Failure::BadHeader => "Jwt header is an invalid JSON",
            Failure::BadPayload => "Jwt payload is an invalid JSON",
            Failure::Expired => "Jwt is expired",
            Failure::NotYetValid => "Jwt not yet valid",
            Failure::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Failure::NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            Failure::UnsupportedAlg => "Jwt header [alg] is not supported",
            Failure::VerificationFails => "Jwt verification fails",
            Failure::UnknownIssuer => "Jwt issuer is not configured",
        }
    }
}

/// A token found in a request: where, and its text.
struct Found {
    location: Location,
    token: String,
}

impl JwtAuthn {
    /// Compiles `authn`; errors name `resource` and the field path under `field`.
    pub fn build(
        authn: &proto::JwtAuthn,
        resource: &str,
        field: &str,
    ) -> Result<JwtAuthn, ConfigError> {
        let mut providers = Vec::with_capacity(authn.providers.len());
        for (i, p) in authn.providers.iter().enumerate() {
            let at = |f: &str| format!("{field}.providers[{i}].{f}");
            let err = |f: &str, why: String| ConfigError::new(resource, at(f), why);
            if p.issuer.is_empty() {
                return Err(err("issuer", "is required".into()));
            }
            let keys = parse_jwks(&p.jwks).map_err(|why| err("jwks", why))?;
            let mut locations = Vec::new();
            for (h, fh) in p.from_headers.iter().enumerate() {
                let name = HeaderName::from_bytes(fh.name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| {
                        err(
                            &format!("fromHeaders[{h}].name"),
                            format!("{:?} is not a header name", fh.name),
                        )
                    })?;
                locations.push(Location::Header {
                    name,
                    prefix: fh.prefix.clone(),
                });
            }
            locations.extend(p.from_params.iter().cloned().map(Location::Param));
            locations.extend(p.from_cookies.iter().cloned().map(Location::Cookie));
            if locations.is_empty() {
                locations.push(Location::Header {
                    name: http::header::AUTHORIZATION,
                    prefix: "Bearer ".into(),
                });
                locations.push(Location::Param("access_token".into()));
            }
            let header = |f: &str, name: &str| {
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| err(f, format!("{name:?} is not a header name")))
            };
            let payload_header = match p.output_payload_to_header.as_str() {
                "" => None,
                name => Some(header("outputPayloadToHeader", name)?),
            };
            let mut claim_headers = Vec::new();
            for (c, ch) in p.output_claim_to_headers.iter().enumerate() {
                let name = header(&format!("outputClaimToHeaders[{c}].header"), &ch.header)?;
                claim_headers.push((name, ch.claim.clone()));
            }
            providers.push(Provider {
                issuer: p.issuer.clone(),
                audiences: p.audiences.clone(),
                keys,
                locations,
                forward: p.forward_original_token,
                payload_header,
                claim_headers,
                space_delimited: p.space_delimited_claims.clone(),
            });
        }
        Ok(JwtAuthn { providers })
    }

    /// Checks the request's tokens: its identity (None: no token), or why it is refused. On success, the token is removed from its header (unless
    /// `forwardOriginalToken`) and the provider's output headers are set.
    pub fn check(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<Identity>, Failure> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.check_at(headers, query, now)
    }

    fn check_at(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Result<Option<Identity>, Failure> {
        let found = self.find_tokens(headers, query);
        let mut identity = None;
        for f in &found {
            let token = Token::parse(&f.token)?;
            let issuer = token.payload.get("iss").and_then(Value::as_str);
            // Only a provider of the token's issuer that looks where it was found checks it;
            // with none, the token is refused (Envoy's allow_missing allows no token, not an
            // unknown issuer's).
            let Some(p) = self
                .providers
                .iter()
                .find(|p| Some(p.issuer.as_str()) == issuer && p.locations.contains(&f.location))
            else {
                return Err(Failure::UnknownIssuer);
            };
            let id = p.verify(&token, now)?;
            if !p.forward
                && let Location::Header { name, .. } = &f.location
            {
                headers.remove(name);
            }
            p.output(headers, &token, &id);
            identity.get_or_insert(id);
        }
        Ok(identity)
    }

    fn find_tokens(&self, headers: &HeaderMap, query: Option<&str>) -> Vec<Found> {
        let mut found: Vec<Found> = Vec::new();
        for p in &self.providers {
            for loc in &p.locations {
                if found.iter().any(|f| &f.location == loc) {
                    continue;
                }
                if let Some(token) = extract(loc, headers, query) {
                    found.push(Found {
                        location: loc.clone(),
                        token,
                    });
                }
            }
        }
        found
    }
}

fn extract(loc: &Location, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    match loc {
        Location::Header { name, prefix } => {
            let v = headers.get(name)?.to_str().ok()?;
            let token = if prefix.is_empty() {
                v
            } else {
                v.strip_prefix(prefix.as_str())?
            };
            Some(token.trim().to_owned()).filter(|t| !t.is_empty())
        }
        Location::Param(name) => query?
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_owned())
            .filter(|t| !t.is_empty()),
        Location::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim_matches('"').to_owned())
            .filter(|t| !t.is_empty()),
    }
}

/// A token split and decoded (not yet verified).
struct Token<'a> {
    signed: &'a str,
    alg: String,
    kid: Option<String>,
    payload_b64: &'a str,
    payload: Value,
    signature: Vec<u8>,
}

impl<'a> Token<'a> {
    fn parse(text: &'a str) -> Result<Token<'a>, Failure> {
        let mut parts = text.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Failure::BadFormat);
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(Value::is_object)
            .ok_or(Failure::BadHeader)?;
        let payload: Value = URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(Value::is_object)
            .ok_or(Failure::BadPayload)?;
        let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| Failure::BadFormat)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Failure::UnsupportedAlg)?
            .to_owned();
        Ok(Token {
            signed: &text[..h.len() + 1 + p.len()],
            alg,
            kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
            payload_b64: p,
            payload,
            signature,
        })
    }

    fn time(&self, claim: &str) -> Option<u64> {
        self.payload.get(claim).and_then(Value::as_u64)
    }

    fn audiences(&self) -> Vec<String> {
        match self.payload.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Provider {
    fn verify(&self, token: &Token<'_>, now: u64) -> Result<Identity, Failure> {
        if token.time("exp").is_some_and(|exp| exp + CLOCK_SKEW <= now) {
            return Err(Failure::Expired);
        }
        if token.time("nbf").is_some_and(|nbf| nbf > now + CLOCK_SKEW) {
            return Err(Failure::NotYetValid);
        }
        // As Envoy: time and audience first, then the keys.
        let audiences = token.audiences();
        if !self.audiences.is_empty() && !audiences.iter().any(|a| self.audiences.contains(a)) {
            return Err(Failure::AudienceNotAllowed);
        }
        let algorithm = Algorithm::of(&token.alg).ok_or(Failure::UnsupportedAlg)?;
        let candidates: Vec<&Jwk> = self
            .keys
            .iter()
            .filter(|k| token.kid.is_none() || k.kid.is_none() || k.kid == token.kid)
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == token.alg))
            .filter(|k| algorithm.fits(&k.key))
            .collect();
        if candidates.is_empty() {
            return Err(Failure::NoMatchingKey);
        }
        let signed = token.signed.as_bytes();
        if !candidates
            .iter()
            .any(|k| algorithm.verify(&k.key, signed, &token.signature))
        {
            return Err(Failure::VerificationFails);
        }
        let field = |name: &str| token.payload.get(name).and_then(Value::as_str);
        Ok(Identity {
            principal: format!("{}/{}", self.issuer, field("sub").unwrap_or_default()),
            audiences,
            presenter: field("azp").map(str::to_owned),
            claims: token.payload.clone(),
            space_delimited: self.space_delimited.clone(),
        })
    }

    fn output(&self, headers: &mut HeaderMap, token: &Token<'_>, id: &Identity) {
        if let Some(name) = &self.payload_header
            && let Ok(v) = HeaderValue::from_str(token.payload_b64)
        {
            headers.insert(name.clone(), v);
        }
        for (name, claim) in &self.claim_headers {
            let path: Vec<String> = claim.split('.').map(str::to_owned).collect();
            let values = id.claim(&path);
            if values.is_empty() {
                continue;
            }
            if let Ok(v) = HeaderValue::from_str(&values.join(",")) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

/// A JWS algorithm weft verifies.
#[derive(Debug, Clone, Copy)]
enum Algorithm {
    Rsa(&'static signature::RsaParameters),
    Ec(Curve, &'static signature::EcdsaVerificationAlgorithm),
    EdDsa,
}

impl Algorithm {
    fn of(alg: &str) -> Option<Algorithm> {
        Some(match alg {
            "RS256" => Algorithm::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Algorithm::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Algorithm::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
            "PS256" => Algorithm::Rsa(&signature::RSA_PSS_2048_8192_SHA256),
            "PS384" => Algorithm::Rsa(&signature::RSA_PSS_2048_8192_SHA384),
            "PS512" => Algorithm::Rsa(&signature::RSA_PSS_2048_8192_SHA512),
            "ES256" => Algorithm::Ec(Curve::P256, &signature::ECDSA_P256_SHA256_FIXED),
            "ES384" => Algorithm::Ec(Curve::P384, &signature::ECDSA_P384_SHA384_FIXED),
            "EdDSA" => Algorithm::EdDsa,
            _ => return None,
        })
    }

    fn fits(self, key: &Key) -> bool {
        match (self, key) {
            (Algorithm::Rsa(_), Key::Rsa { .. }) | (Algorithm::EdDsa, Key::Ed25519(_)) => true,
            (Algorithm::Ec(c, _), Key::Ec { curve, .. }) => c == *curve,
            _ => false,
        }
    }

    fn verify(self, key: &Key, message: &[u8], sig: &[u8]) -> bool {
        match (self, key) {
            (Algorithm::Rsa(params), Key::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok(),
            (Algorithm::Ec(_, alg), Key::Ec { point, .. }) => UnparsedPublicKey::new(alg, point)
                .verify(message, sig)
                .is_ok(),
            (Algorithm::EdDsa, Key::Ed25519(x)) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            _ => false,
        }
    }
}

/// A JSON Web Key Set's usable keys (a set, or one key alone). A key of a type weft does not
/// verify is skipped. No keys at all (none given, none fetched yet, none usable) is not an
/// error: the provider refuses every token of its issuer, as Envoy's without keys does.
fn parse_jwks(text: &str) -> Result<Vec<Jwk>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let keys = match (v.get("keys"), v.get("kty")) {
        (Some(Value::Array(keys)), _) => keys.clone(),
        (None, Some(_)) => vec![v.clone()],
        _ => return Err("not a JSON Web Key Set: no \"keys\" list".into()),
    };
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let s = |name: &str| k.get(name).and_then(Value::as_str);
        let b64 = |name: &str| -> Result<Vec<u8>, String> {
            let v = s(name).ok_or_else(|| format!("keys[{i}]: {name:?} is required"))?;
            URL_SAFE_NO_PAD
                .decode(v.trim_end_matches('='))
                .or_else(|_| STANDARD.decode(v))
                .map_err(|_| format!("keys[{i}].{name}: not base64url"))
        };
        let key = match (s("kty"), s("crv")) {
            (Some("RSA"), _) => Key::Rsa {
                n: b64("n")?,
                e: b64("e")?,
            },
            (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                let (x, y) = (b64("x")?, b64("y")?);
                let mut point = vec![4u8];
                point.extend(x);
                point.extend(y);
                let curve = if crv == "P-256" {
                    Curve::P256
                } else {
                    Curve::P384
                };
                Key::Ec { curve, point }
            }
            (Some("OKP"), Some("Ed25519")) => Key::Ed25519(b64("x")?),
            _ => {
                tracing::debug!("jwks: keys[{i}] is of a type weft does not verify; skipped");
                continue;
            }
        };
        out.push(Jwk {
            kid: s("kid").map(str::to_owned),
            alg: s("alg").map(str::to_owned),
            key,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
pub(crate) mod tests;
