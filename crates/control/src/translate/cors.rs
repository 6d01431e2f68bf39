//! An HTTPRoute's `corsPolicy` -> the proto Route's `cors`: Istio's `TranslateCORSPolicy`
//! (pilot/pkg/networking/core/route), read with the semantics of Envoy's CORS filter, which
//! the proxy's `route/cors.rs` follows.

use weft_api::networking::virtual_service::{CorsPolicy, Matcher, UnmatchedPreflights};
use weft_xds::proto;
use weft_xds::proto::string_match::MatchType;

use super::duration;

/// The proxy's CORS policy for Istio's `policy`. Every field has a counterpart; Istio's
/// defaults are the proto's (no origin allowed, no credentials, unmatched preflights
/// forwarded).
pub(crate) fn cors_policy(policy: &CorsPolicy) -> proto::CorsPolicy {
    // `allowOrigins` wins; the deprecated `allowOrigin` is a list of exact origins.
    let allow_origins = if policy.allow_origins.is_empty() {
        policy
            .allow_origin
            .iter()
            .map(|o| origin(MatchType::Exact(o.clone())))
            .collect()
    } else {
        policy
            .allow_origins
            .iter()
            .filter_map(|m| {
                // A match without a kind is dropped, as Istio's `ConvertToEnvoyMatches` does
                // (validation rejects it).
                Some(origin(match m.matcher()? {
                    Matcher::Exact(v) => MatchType::Exact(v.to_owned()),
                    Matcher::Prefix(v) => MatchType::Prefix(v.to_owned()),
                    Matcher::Regex(v) => MatchType::Regex(v.to_owned()),
                }))
            })
            .collect()
    };
    let unmatched_preflights = match policy.unmatched_preflights {
        Some(UnmatchedPreflights::Ignore) => proto::cors_policy::UnmatchedPreflights::Ignore,
        Some(UnmatchedPreflights::Forward | UnmatchedPreflights::Unspecified) | None => {
            proto::cors_policy::UnmatchedPreflights::Forward
        }
    };
    proto::CorsPolicy {
        allow_origins,
        allow_methods: policy.allow_methods.clone(),
        allow_headers: policy.allow_headers.clone(),
        expose_headers: policy.expose_headers.clone(),
        // Access-Control-Max-Age is in whole seconds (validation rejects fractions).
        max_age: policy.max_age.as_ref().and_then(duration),
        allow_credentials: policy.allow_credentials.unwrap_or(false),
        unmatched_preflights: unmatched_preflights.into(),
    }
}

/// An allowed origin, as written. A match that accepts the literal `*` allows every origin:
/// the proxy does that itself, as Envoy's CORS filter does (`isOriginAllowed`).
fn origin(m: MatchType) -> proto::StringMatch {
    proto::StringMatch {
        match_type: Some(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(yaml: &str) -> proto::CorsPolicy {
        let policy: CorsPolicy = yaml_serde::from_str(yaml).expect("a corsPolicy");
        cors_policy(&policy)
    }

    fn origins(p: &proto::CorsPolicy) -> Vec<MatchType> {
        p.allow_origins
            .iter()
            .filter_map(|m| m.match_type.clone())
            .collect()
    }

    #[test]
    fn defaults_are_istios() {
        let p = translate("{}");
        assert!(p.allow_origins.is_empty());
        assert!(!p.allow_credentials);
        assert_eq!(p.max_age, None);
        assert_eq!(
            p.unmatched_preflights(),
            proto::cors_policy::UnmatchedPreflights::Forward
        );
    }

    #[test]
    fn every_field_is_carried() {
        let p = translate(
            "{allowOrigins: [{exact: 'https://a.example'}, {prefix: 'https://b.'}, \
             {regex: 'https://.*\\.c\\.example'}], allowMethods: [GET, POST], \
             allowHeaders: [x-a, x-b], exposeHeaders: [x-c], maxAge: 24h, \
             allowCredentials: true, unmatchedPreflights: IGNORE}",
        );
        assert_eq!(
            origins(&p),
            vec![
                MatchType::Exact("https://a.example".into()),
                MatchType::Prefix("https://b.".into()),
                MatchType::Regex("https://.*\\.c\\.example".into()),
            ]
        );
        assert_eq!(p.allow_methods, ["GET", "POST"]);
        assert_eq!(p.allow_headers, ["x-a", "x-b"]);
        assert_eq!(p.expose_headers, ["x-c"]);
        assert_eq!(p.max_age.map(|d| (d.seconds, d.nanos)), Some((86400, 0)));
        assert!(p.allow_credentials);
        assert_eq!(
            p.unmatched_preflights(),
            proto::cors_policy::UnmatchedPreflights::Ignore
        );
        let p = translate("{unmatchedPreflights: FORWARD, allowCredentials: false}");
        assert_eq!(
            p.unmatched_preflights(),
            proto::cors_policy::UnmatchedPreflights::Forward
        );
        assert!(!p.allow_credentials);
    }

    #[test]
    fn allow_origin_is_exact_and_loses_to_allow_origins() {
        let p = translate("{allowOrigin: ['https://a.example', 'https://b.example']}");
        assert_eq!(
            origins(&p),
            vec![
                MatchType::Exact("https://a.example".into()),
                MatchType::Exact("https://b.example".into()),
            ]
        );
        let p = translate("{allowOrigin: ['https://a.example'], allowOrigins: [{exact: x}]}");
        assert_eq!(origins(&p), vec![MatchType::Exact("x".into())]);
    }

    #[test]
    fn a_star_origin_is_passed_as_written() {
        // The proxy allows every origin when a match accepts `*`; nothing to rewrite here.
        assert_eq!(
            origins(&translate("{allowOrigins: [{exact: '*'}, {prefix: '*'}]}")),
            vec![MatchType::Exact("*".into()), MatchType::Prefix("*".into())]
        );
        assert_eq!(
            origins(&translate("{allowOrigin: ['*']}")),
            vec![MatchType::Exact("*".into())]
        );
        // A match without a kind is dropped.
        assert!(translate("{allowOrigins: [{}]}").allow_origins.is_empty());
    }
}
