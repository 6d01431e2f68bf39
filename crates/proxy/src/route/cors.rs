//! CORS (Istio's corsPolicy, with Envoy's CORS filter semantics): a preflight from an allowed
//! origin is answered by the proxy; an actual request from an allowed origin gets the CORS
//! response headers; requests without Origin are untouched.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use weft_xds::proto;

use super::Cx;
use super::matcher::StringMatch;
use crate::config::{ConfigError, duration};

#[derive(Debug)]
pub struct Cors {
    allow_origins: Vec<StringMatch>,
    /// Some origin matcher accepts the literal `*`: every origin is allowed, as in Envoy's
    /// CORS filter (`isOriginAllowed` tries each matcher on the origin and on `*`). Known when
    /// the policy is built, since it does not depend on the request.
    allow_any_origin: bool,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
    forward_unmatched_preflights: bool,
}

/// What CORS makes of a request.
#[derive(Debug)]
pub enum Verdict {
    /// Not a CORS request, or a preflight to forward: route as usual.
    PassThrough,
    /// An actual request from an allowed origin: route as usual, then decorate the response.
    Decorate(HeaderValue),
    /// A preflight the proxy answers itself (status 200, these headers).
    Answer(HeaderMap),
}

impl Cors {
    pub(super) fn build(p: &proto::CorsPolicy, cx: &Cx<'_>, at: &str) -> Result<Cors, ConfigError> {
        let allow_origins = p
            .allow_origins
            .iter()
            .enumerate()
            .map(|(i, m)| StringMatch::build(m, cx, &format!("{at}.allowOrigins[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let allow_any_origin = allow_origins.iter().any(|m| m.matches(b"*"));
        let joined = |list: &[String], field: &str| -> Result<Option<HeaderValue>, ConfigError> {
            if list.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(&list.join(","))
                .map(Some)
                .map_err(|_| cx.error(format!("{at}.{field}"), "not valid in a header value"))
        };
        let max_age = match &p.max_age {
            Some(d) => {
                let d: Duration = duration(d, &cx.resource, &format!("{at}.maxAge"))?;
                Some(HeaderValue::from(d.as_secs()))
            }
            None => None,
        };
        Ok(Cors {
            allow_origins,
            allow_any_origin,
            allow_methods: joined(&p.allow_methods, "allowMethods")?,
            allow_headers: joined(&p.allow_headers, "allowHeaders")?,
            expose_headers: joined(&p.expose_headers, "exposeHeaders")?,
            max_age,
            allow_credentials: p.allow_credentials,
            forward_unmatched_preflights: p.unmatched_preflights()
                == proto::cors_policy::UnmatchedPreflights::Forward,
        })
    }

    /// Decides what to do with a request.
    pub fn verdict(&self, method: &Method, headers: &HeaderMap) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Verdict::PassThrough;
        };
        let allowed = self.allow_any_origin
            || self
                .allow_origins
                .iter()
                .any(|m| m.matches(origin.as_bytes()));
        let preflight = method == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        match (preflight, allowed) {
            (false, true) => Verdict::Decorate(origin.clone()),
            (false, false) => Verdict::PassThrough,
            (true, false) if self.forward_unmatched_preflights => Verdict::PassThrough,
            (true, false) => Verdict::Answer(HeaderMap::new()),
            (true, true) => {
                let mut h = HeaderMap::new();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                if let Some(v) = &self.allow_methods {
                    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
                }
                if let Some(v) = &self.allow_headers {
                    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
                }
                // Envoy's CORS filter lists the exposed headers on the preflight answer too.
                if let Some(v) = &self.expose_headers {
                    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
                }
                if let Some(v) = &self.max_age {
                    h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
                }
                if self.allow_credentials {
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
                Verdict::Answer(h)
            }
        }
    }

    /// The headers an actual response to an allowed origin carries.
    pub fn decorate(&self, origin: HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Some(v) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The status a preflight answer has.
pub const PREFLIGHT_STATUS: StatusCode = StatusCode::OK;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeInfo;

    fn policy(yaml: &str) -> Cors {
        let p: proto::CorsPolicy = yaml_serde::from_str(yaml)
            .unwrap_or_else(|e| panic!("test policy does not parse: {e}\n{yaml}"));
        let node = NodeInfo::default();
        let cx = Cx {
            resource: "route_config \"test\"".into(),
            node: &node,
        };
        Cors::build(&p, &cx, "cors").unwrap_or_else(|e| panic!("test policy is rejected: {e}"))
    }

    fn request(method: Method, origin: &'static str, preflight: bool) -> (Method, HeaderMap) {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static(origin));
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_REQUEST_METHOD,
                HeaderValue::from_static("POST"),
            );
        }
        (method, h)
    }

    /// The origin an actual request from `origin` is decorated with, if it is allowed.
    fn allowed(cors: &Cors, origin: &'static str) -> Option<HeaderValue> {
        let (method, headers) = request(Method::GET, origin, false);
        match cors.verdict(&method, &headers) {
            Verdict::Decorate(v) => Some(v),
            Verdict::PassThrough => None,
            Verdict::Answer(h) => panic!("an actual request was answered: {h:?}"),
        }
    }

    #[test]
    fn origins_allowed_as_envoy_allows_them() {
        let cases: &[(&str, &str, bool)] = &[
            // (allowOrigins, origin, allowed)
            ("[{exact: 'https://a.example'}]", "https://a.example", true),
            ("[{exact: 'https://a.example'}]", "https://b.example", false),
            ("[{prefix: 'https://dev.'}]", "https://dev.example", true),
            ("[{prefix: 'https://dev.'}]", "http://dev.example", false),
            (
                "[{regex: 'https://.*\\.example'}]",
                "https://x.example",
                true,
            ),
            (
                "[{regex: 'https://.*\\.example'}]",
                "https://x.example.org",
                false,
            ),
            // A matcher that accepts the literal `*` allows every origin, whatever it is.
            ("[{exact: '*'}]", "https://anything.example", true),
            ("[{prefix: '*'}]", "https://anything.example", true),
            ("[{regex: '\\*'}]", "https://anything.example", true),
            ("[{regex: '.*'}]", "https://anything.example", true),
            (
                "[{exact: 'https://a.example'}, {exact: '*'}]",
                "https://b.example",
                true,
            ),
            // Only the literal `*`: a wildcard-looking origin is a plain string.
            ("[{exact: '*.example'}]", "https://a.example", false),
            ("[{prefix: '**'}]", "https://a.example", false),
            ("[{regex: 'x\\*'}]", "https://a.example", false),
            ("[]", "https://a.example", false),
        ];
        for (origins, origin, want) in cases {
            let cors = policy(&format!("allowOrigins: {origins}"));
            let got = allowed(&cors, origin);
            assert_eq!(got.is_some(), *want, "{origins} with origin {origin}");
            // Envoy echoes the request's origin, also when `*` allowed it.
            if let Some(v) = got {
                assert_eq!(v, *origin, "{origins}");
            }
        }
    }

    #[test]
    fn a_star_policy_answers_every_preflight() {
        let cors = policy(
            "{allowOrigins: [{exact: '*'}], allowMethods: [GET, POST], exposeHeaders: [x-a, x-b]}",
        );
        let (method, headers) = request(Method::OPTIONS, "https://any.example", true);
        let Verdict::Answer(h) = cors.verdict(&method, &headers) else {
            panic!("a preflight from an allowed origin is answered");
        };
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://any.example"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET,POST");
        // As Envoy's answer: the exposed headers are listed on the preflight too.
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-a,x-b");

        // Without `*`, another origin's preflight is forwarded (unmatchedPreflights FORWARD).
        let cors = policy("{allowOrigins: [{exact: 'https://a.example'}]}");
        assert!(matches!(
            cors.verdict(&method, &headers),
            Verdict::PassThrough
        ));
        // A request without Origin is not a CORS request, even under `*`.
        let cors = policy("{allowOrigins: [{exact: '*'}]}");
        assert!(matches!(
            cors.verdict(&Method::GET, &HeaderMap::new()),
            Verdict::PassThrough
        ));
    }
}
