use super::*;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

/// An ES256 signer and its JWKS.
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    kid: String,
}

impl Signer {
    pub(crate) fn new(kid: &str) -> Signer {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        Signer {
            key,
            kid: kid.to_owned(),
        }
    }

    pub(crate) fn jwks(&self) -> String {
        let point = self.key.public_key().as_ref();
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
        .to_string()
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("sign");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

const NOW: u64 = 1_800_000_000;

fn authn(signer: &Signer, extra: serde_json::Value) -> JwtAuthn {
    let mut p = serde_json::json!({"issuer": "https://issuer.example", "jwks": signer.jwks()});
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        p.extend(extra.clone());
    }
    let proto: proto::JwtAuthn =
        serde_json::from_value(serde_json::json!({"providers": [p]})).expect("proto");
    JwtAuthn::build(&proto, "listener \"l\"", "http.jwtAuthn").expect("builds")
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn claims(exp: u64) -> Value {
    serde_json::json!({"iss": "https://issuer.example", "sub": "alice", "exp": exp, "aud": "bookinfo", "groups": ["g1"]})
}

#[test]
fn a_valid_token_gives_iss_sub_and_is_removed_unless_forwarded() {
    let s = Signer::new("k1");
    let a = authn(&s, serde_json::json!({}));
    let mut h = bearer(&s.sign(&claims(NOW + 3600)));
    let id = a.check_at(&mut h, None, NOW).unwrap().expect("identity");
    assert_eq!(id.principal, "https://issuer.example/alice");
    assert_eq!(id.audiences, ["bookinfo"]);
    assert_eq!(id.claim(&["groups".into()]), ["g1"]);
    assert!(h.get("authorization").is_none(), "removed");
    let a = authn(&s, serde_json::json!({"forwardOriginalToken": true}));
    let mut h = bearer(&s.sign(&claims(NOW + 3600)));
    a.check_at(&mut h, None, NOW).unwrap().expect("identity");
    assert!(h.get("authorization").is_some(), "forwarded");
}

#[test]
fn refusals_say_what_envoy_says() {
    let s = Signer::new("k1");
    let other = Signer::new("k1");
    let a = authn(&s, serde_json::json!({"audiences": ["bookinfo"]}));
    let check = |token: String| a.check_at(&mut bearer(&token), None, NOW);
    assert_eq!(
        check(s.sign(&claims(NOW - 120))).unwrap_err(),
        Failure::Expired
    );
    assert_eq!(
        check(s.sign(&claims(NOW - 30))).map(|i| i.is_some()),
        Ok(true),
        "within the skew"
    );
    assert_eq!(
        check(other.sign(&claims(NOW + 60))).unwrap_err(),
        Failure::VerificationFails
    );
    let mut wrong_aud = claims(NOW + 60);
    wrong_aud["aud"] = "other".into();
    assert_eq!(
        check(s.sign(&wrong_aud)).unwrap_err(),
        Failure::AudienceNotAllowed
    );
    let mut nbf = claims(NOW + 600);
    nbf["nbf"] = (NOW + 300).into();
    assert_eq!(check(s.sign(&nbf)).unwrap_err(), Failure::NotYetValid);
    assert_eq!(check("abc.def".into()).unwrap_err(), Failure::BadFormat);
    let token = s.sign(&claims(NOW + 60));
    let mut tampered: Vec<&str> = token.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"iss": "https://issuer.example", "sub": "mallory", "aud": "bookinfo"})
            .to_string(),
    );
    tampered[1] = &payload;
    assert_eq!(
        check(tampered.join(".")).unwrap_err(),
        Failure::VerificationFails
    );
    assert_eq!(Failure::Expired.message(), "Jwt is expired");
    assert_eq!(
        Failure::VerificationFails.message(),
        "Jwt verification fails"
    );
}

#[test]
fn no_token_passes_with_no_identity_but_an_unknown_issuer_is_refused() {
    let s = Signer::new("k1");
    let a = authn(&s, serde_json::json!({}));
    assert!(
        a.check_at(&mut HeaderMap::new(), None, NOW)
            .unwrap()
            .is_none()
    );
    let mut c = claims(NOW + 60);
    c["iss"] = "https://elsewhere".into();
    let mut h = bearer(&s.sign(&c));
    assert_eq!(
        a.check_at(&mut h, None, NOW).unwrap_err(),
        Failure::UnknownIssuer
    );
    assert_eq!(
        Failure::UnknownIssuer.message(),
        "Jwt issuer is not configured"
    );
}

#[test]
fn tokens_are_found_where_the_provider_says() {
    let s = Signer::new("k1");
    let token = s.sign(&claims(NOW + 60));
    let a = authn(
        &s,
        serde_json::json!({"fromHeaders": [{"name": "x-jwt", "prefix": "Token "}]}),
    );
    let mut h = HeaderMap::new();
    h.insert(
        "x-jwt",
        HeaderValue::from_str(&format!("Token {token}")).unwrap(),
    );
    assert!(a.check_at(&mut h, None, NOW).unwrap().is_some());
    // Not looked for in the default header any more: a token there is not seen.
    assert!(
        a.check_at(&mut bearer(&token), None, NOW)
            .unwrap()
            .is_none()
    );
    let a = authn(&s, serde_json::json!({"fromParams": ["token"]}));
    let q = format!("a=1&token={token}");
    assert!(
        a.check_at(&mut HeaderMap::new(), Some(&q), NOW)
            .unwrap()
            .is_some()
    );
    let a = authn(&s, serde_json::json!({"fromCookies": ["session"]}));
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        HeaderValue::from_str(&format!("a=b; session={token}")).unwrap(),
    );
    assert!(a.check_at(&mut h, None, NOW).unwrap().is_some());
    // The default locations: Authorization: Bearer and ?access_token=.
    let a = authn(&s, serde_json::json!({}));
    let q = format!("access_token={token}");
    assert!(
        a.check_at(&mut HeaderMap::new(), Some(&q), NOW)
            .unwrap()
            .is_some()
    );
}

#[test]
fn outputs_the_payload_and_claims_to_headers() {
    let s = Signer::new("k1");
    let a = authn(
        &s,
        serde_json::json!({
            "outputPayloadToHeader": "x-jwt-payload",
            "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}, {"header": "x-groups", "claim": "groups"}],
        }),
    );
    let mut h = bearer(&s.sign(&claims(NOW + 60)));
    a.check_at(&mut h, None, NOW).unwrap().expect("identity");
    assert_eq!(h["x-sub"], "alice");
    assert_eq!(h["x-groups"], "g1");
    let payload = URL_SAFE_NO_PAD
        .decode(h["x-jwt-payload"].as_bytes())
        .unwrap();
    let v: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(v["sub"], "alice");
}

#[test]
fn a_provider_without_keys_refuses_its_tokens_and_bad_json_is_refused() {
    let s = Signer::new("k1");
    for jwks in ["", "{\"keys\": [{\"kty\": \"oct\", \"k\": \"abc\"}]}"] {
        let proto: proto::JwtAuthn = serde_json::from_value(serde_json::json!({"providers": [
            {"issuer": "https://issuer.example", "jwks": jwks}]}))
        .unwrap();
        let a = JwtAuthn::build(&proto, "listener \"l\"", "http.jwtAuthn").expect("builds");
        let mut h = bearer(&s.sign(&claims(NOW + 60)));
        assert_eq!(
            a.check_at(&mut h, None, NOW).unwrap_err(),
            Failure::NoMatchingKey,
            "{jwks:?}"
        );
    }
    let proto: proto::JwtAuthn = serde_json::from_value(serde_json::json!({"providers": [
        {"issuer": "i", "jwks": "{not json"}]}))
    .unwrap();
    let e = JwtAuthn::build(&proto, "listener \"l\"", "http.jwtAuthn").unwrap_err();
    assert_eq!(e.field, "http.jwtAuthn.providers[0].jwks");
}

#[test]
fn space_delimited_claims_give_each_word() {
    let s = Signer::new("k1");
    let a = authn(&s, serde_json::json!({"spaceDelimitedClaims": ["roles"]}));
    let mut c = claims(NOW + 60);
    c["roles"] = "admin dev".into();
    c["scope"] = "read write".into();
    c["title"] = "chief engineer".into();
    let id = a
        .check_at(&mut bearer(&s.sign(&c)), None, NOW)
        .unwrap()
        .expect("identity");
    assert_eq!(id.claim(&["roles".into()]), ["admin", "dev"]);
    assert_eq!(id.claim(&["scope".into()]), ["read", "write"]);
    assert_eq!(id.claim(&["title".into()]), ["chief engineer"]);
}
