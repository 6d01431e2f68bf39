//! `RequestAuthentication` (security.istio.io): which JSON Web Tokens the selected workloads
//! accept. A request with an invalid token is rejected; a request without one is accepted with
//! no request principal (require one with an AuthorizationPolicy).
//!
//! ```yaml
//! apiVersion: security.istio.io/v1
//! kind: RequestAuthentication
//! metadata: {name: jwt-example, namespace: foo}
//! spec:
//!   selector: {matchLabels: {app: httpbin}}
//!   jwtRules:
//!   - issuer: testing@secure.istio.io
//!     jwksUri: https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::authorization_policy::validate_policy_target;
use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::validate::{Cx, Validate, rules};

/// The `spec` of a RequestAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    /// The workloads (in the policy's namespace) the policy applies to. Without a selector or
    /// target reference, it applies to every workload in its namespace (or the whole mesh, in
    /// the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A Gateway API resource the policy attaches to instead of a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Like `targetRef`, several at once (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The accepted token issuers; a token must satisfy the rule for its issuer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// How to find and verify the tokens of one issuer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The token's `iss` claim must equal this. Required unless `jwksUri` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// The token's `aud` must contain one of these; empty accepts the service's own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where to fetch the issuer's public keys (an `http`/`https` URL). Without it and `jwks`,
    /// the keys are found by OpenID discovery from the issuer. Also accepted as `jwks_uri`.
    #[serde(default, alias = "jwks_uri", skip_serializing_if = "String::is_empty")]
    pub jwks_uri: String,
    /// The issuer's public keys inline, as a JSON Web Key Set document.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks: String,
    /// Headers to take the token from. Default: `Authorization: Bearer <token>`, then the
    /// `access_token` query parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters to take the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// A header to pass the verified payload (base64 JSON) upstream in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_payload_to_header: String,
    /// Cookies to take the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Keep the token in the request sent upstream (it is removed by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    /// Claims to copy into request headers once the token is verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long to wait for the keys at `jwksUri`. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<crate::Duration>,
    /// Claims holding space-separated lists (like `scope`), matched per element by
    /// authorization policies. `scope` and `permission` always are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// Whether a request must carry a token. `OPTIONAL` (default) lets requests without one
    /// through (an AuthorizationPolicy can still require a principal); `REQUIRED` rejects them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<JwtPresence>,
}

/// Whether a JWT must be present (`jwtRules[].presence`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JwtPresence {
    #[default]
    Optional,
    Required,
}

/// A header that carries a token, optionally after a prefix (`Bearer `).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// Required.
    #[serde(default)]
    pub name: String,
    /// Stripped before the token is decoded; a header without it is not a token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// Copy claim `claim` (nested claims as `a.b.c`) into request header `header`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

// The CRD's limits.
const MAX_JWKS_URI: usize = 2048;
const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;

impl Validate for RequestAuthentication {
    fn validate(&self, cx: &mut Cx) {
        validate_policy_target(
            cx,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        cx.each("jwtRules", &self.jwt_rules, |cx, rule| rule.validate(cx));
    }
}

impl Validate for JwtRule {
    fn validate(&self, cx: &mut Cx) {
        if self.issuer.is_empty() && self.jwks_uri.is_empty() {
            cx.error_at("issuer", "`issuer` is required (unless `jwksUri` is set)");
        }
        non_empty(cx, "audiences", &self.audiences);
        if !self.jwks_uri.is_empty() {
            cx.check_at("jwksUri", jwks_uri(&self.jwks_uri));
        }
        if !self.jwks.is_empty() {
            cx.field("jwks", |cx| jwks(cx, &self.jwks));
            if !self.jwks_uri.is_empty() {
                cx.error("only one of `jwks` and `jwksUri` may be set");
            }
        }
        cx.each("fromHeaders", &self.from_headers, |cx, h| {
            if h.name.is_empty() {
                cx.error_at("name", "header name is required");
            }
        });
        non_empty(cx, "fromParams", &self.from_params);
        non_empty(cx, "fromCookies", &self.from_cookies);
        let mut headers = BTreeSet::new();
        cx.each(
            "outputClaimToHeaders",
            &self.output_claim_to_headers,
            |cx, c| {
                if c.claim.is_empty() {
                    cx.error_at("claim", "claim is required");
                }
                if c.header.is_empty() {
                    cx.error_at("header", "header is required");
                    return;
                }
                cx.check_at("header", header_name(&c.header));
                if !headers.insert(c.header.to_ascii_lowercase()) {
                    cx.field("header", |cx| {
                        cx.warn(format!(
                            "header {:?} is already written by an earlier entry",
                            c.header
                        ))
                    });
                }
            },
        );
        if let Some(t) = &self.timeout {
            cx.check_at("timeout", t.check());
        }
        if self.space_delimited_claims.len() > MAX_SPACE_DELIMITED_CLAIMS {
            cx.error_at(
                "spaceDelimitedClaims",
                format!("at most {MAX_SPACE_DELIMITED_CLAIMS} claims are allowed"),
            );
        }
        non_empty(cx, "spaceDelimitedClaims", &self.space_delimited_claims);
    }
}

/// An error at `name[i]` for each empty string.
fn non_empty(cx: &mut Cx, name: &str, values: &[String]) {
    cx.field(name, |cx| {
        for (i, v) in values.iter().enumerate() {
            if v.is_empty() {
                cx.index(i, |cx| cx.error("must not be empty"));
            }
        }
    });
}

/// Istio's header names for claims: letters, digits, '-' and '_'.
fn header_name(name: &str) -> Result<(), String> {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid header name: use letters, digits, '-' and '_'"
        ))
    }
}

/// An absolute `http` or `https` URL with a host (and, optionally, a port).
fn jwks_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_JWKS_URI {
        return Err(format!("jwksUri is longer than {MAX_JWKS_URI} characters"));
    }
    let bad = |why: &str| Err(format!("jwksUri {uri:?} is not a valid URL: {why}"));
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains whitespace");
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return bad("expected http://host/path or https://host/path");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "jwksUri {uri:?}: scheme {scheme:?} is not supported; use http or https"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in the URL are allowed by the syntax; the host follows them.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return bad("unclosed '[' in the host");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("the bracketed host is not an IPv6 address");
        }
        match after {
            "" => (addr, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (addr, Some(p)),
                None => return bad("unexpected text after the IPv6 host"),
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return bad("the host is missing");
    }
    let host_chars = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !host_chars {
        return bad("the host has characters a host name cannot have");
    }
    if let Some(p) = port {
        let valid = !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| rules::port(n).is_ok());
        if !valid {
            return bad(&format!("port {p:?} is not a number in 1..65535"));
        }
    }
    Ok(())
}

/// Inline keys: a JSON Web Key Set (`{"keys": [...]}`) or a single key, each with a `kty`.
/// Private key material is reported: only public keys are needed to verify tokens.
fn jwks(cx: &mut Cx, text: &str) {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return cx.error(format!("jwks is not valid JSON: {e}")),
    };
    let keys: Vec<&serde_json::Value> = match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return cx.error("jwks: `keys` must be a list of keys"),
        None if value.is_object() => vec![&value],
        None => return cx.error("jwks must be a JSON object: a key set or a single key"),
    };
    for (i, key) in keys.iter().enumerate() {
        match key.get("kty").and_then(|k| k.as_str()) {
            None => cx.error(format!("jwks: key {i} has no `kty` (key type)")),
            Some("oct") => cx.warn(format!(
                "jwks: key {i} is a symmetric key; only public keys should be configured"
            )),
            // `d` is the private exponent (RSA) or private key (EC, OKP).
            Some(_) if key.get("d").is_some() => cx.warn(format!(
                "jwks: key {i} contains private key material; only public keys are used for verification"
            )),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{errors, warnings};

    fn parse(yaml: &str) -> RequestAuthentication {
        crate::validate::test_support::parse(yaml)
    }

    const JWKS: &str = r#"{"keys":[{"e":"AQAB","kid":"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ","kty":"RSA","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}"#;

    #[test]
    fn valid_examples() {
        let inline = format!("jwtRules:\n- issuer: testing@secure.istio.io\n  jwks: '{JWKS}'");
        let cases = [
            // Istio's docs task "JWT authentication".
            "selector: {matchLabels: {app: httpbin}}\njwtRules:\n- issuer: testing@secure.istio.io\n  jwksUri: https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json",
            // On the ingress gateway, with every optional field.
            r#"
selector: {matchLabels: {istio: ingressgateway}}
jwtRules:
- issuer: https://accounts.example.com
  audiences: [bookstore_web.apps.example.com]
  jwks_uri: http://keys.example.com:8080/.well-known/jwks.json
  fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
  fromParams: [my_token]
  fromCookies: [auth-token]
  outputPayloadToHeader: x-jwt-payload
  forwardOriginalToken: true
  outputClaimToHeaders:
  - {header: x-jwt-group, claim: my-group}
  - {header: x-jwt_nested, claim: nested.key.group}
  timeout: 10s
  spaceDelimitedClaims: [roles]
"#,
            "jwtRules: [{jwksUri: \"https://[::1]:8443/keys\"}]",
            "jwtRules: [{issuer: a, jwksUri: \"https://user@keys.example.com?x=1\"}]",
            "targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: bookinfo-gateway}\njwtRules: [{issuer: a}]",
            &inline,
            "{}",
        ];
        for yaml in cases {
            let spec = parse(yaml);
            assert_eq!(errors(&spec), [], "{yaml}");
            assert_eq!(warnings(&spec), [], "{yaml}");
        }
        let snake = parse("jwtRules: [{issuer: a, jwks_uri: \"https://k.example.com/jwks\"}]");
        assert_eq!(snake.jwt_rules[0].jwks_uri, "https://k.example.com/jwks");
    }

    #[test]
    fn invalid_examples() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "jwtRules: [{audiences: [a]}]",
                &[("spec.jwtRules[0].issuer", "required")],
            ),
            (
                "jwtRules: [{issuer: a, audiences: [\"\"]}]",
                &[("spec.jwtRules[0].audiences[0]", "must not be empty")],
            ),
            (
                "jwtRules: [{issuer: a, jwksUri: \"ftp://keys.example.com/jwks\"}]",
                &[("spec.jwtRules[0].jwksUri", "scheme \"ftp\"")],
            ),
            (
                "jwtRules: [{issuer: a, jwksUri: keys.example.com/jwks}]",
                &[("spec.jwtRules[0].jwksUri", "not a valid URL")],
            ),
            (
                "jwtRules: [{issuer: a, jwksUri: \"https:///jwks\"}]",
                &[("spec.jwtRules[0].jwksUri", "host is missing")],
            ),
            (
                "jwtRules: [{issuer: a, jwksUri: \"https://k.example.com:http/jwks\"}]",
                &[("spec.jwtRules[0].jwksUri", "port")],
            ),
            (
                "jwtRules: [{issuer: a, jwksUri: \"https://k.example.com:70000\"}]",
                &[("spec.jwtRules[0].jwksUri", "port")],
            ),
            (
                "jwtRules: [{issuer: a, jwksUri: \"https://[::1/jwks\"}]",
                &[("spec.jwtRules[0].jwksUri", "unclosed")],
            ),
            (
                "jwtRules: [{issuer: a, jwksUri: \"https://k ey.com/\"}]",
                &[("spec.jwtRules[0].jwksUri", "whitespace")],
            ),
            (
                "jwtRules: [{issuer: a, jwksUri: \"https://k.example.com/\", jwks: '{\"keys\": []}'}]",
                &[("spec.jwtRules[0]", "only one of `jwks` and `jwksUri`")],
            ),
            (
                "jwtRules: [{issuer: a, jwks: 'not json'}]",
                &[("spec.jwtRules[0].jwks", "not valid JSON")],
            ),
            (
                "jwtRules: [{issuer: a, jwks: '{\"keys\": [{\"n\": \"x\"}]}'}]",
                &[("spec.jwtRules[0].jwks", "no `kty`")],
            ),
            (
                "jwtRules: [{issuer: a, jwks: '{\"keys\": 1}'}]",
                &[("spec.jwtRules[0].jwks", "must be a list")],
            ),
            (
                "jwtRules: [{issuer: a, fromHeaders: [{prefix: x}], fromParams: [\"\"], fromCookies: [\"\"]}]",
                &[
                    ("spec.jwtRules[0].fromHeaders[0].name", "required"),
                    ("spec.jwtRules[0].fromParams[0]", "must not be empty"),
                    ("spec.jwtRules[0].fromCookies[0]", "must not be empty"),
                ],
            ),
            (
                "jwtRules: [{issuer: a, outputClaimToHeaders: [{claim: c}, {header: h}, {header: \"x:y\", claim: c}]}]",
                &[
                    (
                        "spec.jwtRules[0].outputClaimToHeaders[0].header",
                        "required",
                    ),
                    ("spec.jwtRules[0].outputClaimToHeaders[1].claim", "required"),
                    (
                        "spec.jwtRules[0].outputClaimToHeaders[2].header",
                        "not a valid header name",
                    ),
                ],
            ),
            (
                "jwtRules: [{issuer: a, timeout: 0.5ms}]",
                &[("spec.jwtRules[0].timeout", "at least 1ms")],
            ),
            (
                "jwtRules: [{issuer: a, timeout: soon}]",
                &[("spec.jwtRules[0].timeout", "")],
            ),
            (
                "jwtRules: [{issuer: a, spaceDelimitedClaims: [\"\"]}]",
                &[(
                    "spec.jwtRules[0].spaceDelimitedClaims[0]",
                    "must not be empty",
                )],
            ),
            (
                "selector: {matchLabels: {app: a}}\ntargetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]",
                &[("spec", "only one of")],
            ),
            (
                "targetRef: {kind: Pod, name: a}",
                &[("spec.targetRef", "cannot target Pod")],
            ),
        ];
        for (yaml, want) in cases {
            let got = errors(&parse(yaml));
            assert_eq!(got.len(), want.len(), "{yaml}: {got:?}");
            for ((path, msg), (want_path, want_msg)) in got.iter().zip(want.iter()) {
                assert_eq!(path, want_path, "{yaml}: {msg}");
                assert!(msg.contains(want_msg), "{yaml}: {msg}");
            }
        }
    }

    #[test]
    fn warnings_for_suspicious_rules() {
        let cases = [
            (
                r#"jwtRules: [{issuer: a, jwks: '{"keys":[{"kty":"RSA","n":"x","e":"AQAB","d":"secret"}]}'}]"#,
                "spec.jwtRules[0].jwks",
            ),
            (
                r#"jwtRules: [{issuer: a, jwks: '{"kty":"oct","k":"c2VjcmV0"}'}]"#,
                "spec.jwtRules[0].jwks",
            ),
            (
                "jwtRules: [{issuer: a, outputClaimToHeaders: [{header: x-a, claim: a}, {header: X-A, claim: b}]}]",
                "spec.jwtRules[0].outputClaimToHeaders[1].header",
            ),
        ];
        for (yaml, path) in cases {
            let got = warnings(&parse(yaml));
            assert_eq!(got.len(), 1, "{yaml}: {got:?}");
            assert_eq!(got[0].0, path, "{yaml}");
        }
    }

    #[test]
    fn schema_errors() {
        let cases = [
            ("jwtRules: [{issuer: a, jwksURI: x}]", "unknown field"),
            ("jwtRule: []", "unknown field"),
            (
                "jwtRules: [{issuer: a, fromHeaders: [{name: a, prefixx: b}]}]",
                "unknown field",
            ),
            (
                "jwtRules: [{issuer: a, jwksUri: x, jwks_uri: y}]",
                "duplicate field",
            ),
        ];
        for (yaml, want) in cases {
            match yaml_serde::from_str::<RequestAuthentication>(yaml) {
                Ok(spec) => panic!("{yaml} parsed: {spec:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{yaml}: {e}"),
            }
        }
    }
}
