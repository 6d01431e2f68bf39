//! The request headers bookinfo's services copy onto their outbound calls, so that traces
//! join up and per-user routing (`end-user: jason`) reaches every hop.
//! See https://istio.io/latest/docs/tasks/observability/distributed-tracing/overview/
//! ("Trace context propagation").

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// The headers copied from an inbound request to the calls it makes: request id, every
/// tracing system's context (B3, W3C, OpenTracing, Datadog, Cloud Trace, gRPC, SkyWalking),
/// and the user's identity and session.
const PROPAGATED: &[&str] = &[
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
];

/// The headers of `inbound` to send downstream. `end_user` replaces an inbound `end-user`:
/// productpage names the user from its session, not from what the client sent.
pub(crate) fn forward(inbound: &HeaderMap, end_user: Option<Option<&str>>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in PROPAGATED {
        let name = HeaderName::from_static(name);
        if name == "end-user" && end_user.is_some() {
            continue;
        }
        for value in inbound.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    if let Some(Some(user)) = end_user
        && let Ok(value) = HeaderValue::from_str(user)
    {
        out.insert(HeaderName::from_static("end-user"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_only_trace_and_user_headers() {
        let mut inbound = HeaderMap::new();
        for (k, v) in [
            ("x-request-id", "r1"),
            ("x-b3-traceid", "t"),
            ("traceparent", "00-abc-def-01"),
            ("end-user", "mallory"),
            ("user-agent", "curl"),
            ("accept", "text/html"),
            ("host", "productpage:9080"),
        ] {
            inbound.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = forward(&inbound, None);
        assert_eq!(
            out.get("end-user").map(|v| v.as_bytes()),
            Some(&b"mallory"[..])
        );
        assert_eq!(
            out.get("x-b3-traceid").map(|v| v.as_bytes()),
            Some(&b"t"[..])
        );
        assert!(out.get("accept").is_none() && out.get("host").is_none());
        assert_eq!(out.len(), 5);

        let out = forward(&inbound, Some(Some("jason")));
        assert_eq!(
            out.get("end-user").map(|v| v.as_bytes()),
            Some(&b"jason"[..])
        );
        let out = forward(&inbound, Some(None));
        assert!(out.get("end-user").is_none());
    }
}
