//! A forwarding route's resilience policy: an HTTPRoute's `timeout`, `retries`, `fault` and
//! `mirror`/`mirrors` -> the proto RouteAction's `timeout`, `retry_policy`, `fault` and
//! `mirrors`. Istio's `applyHTTPRouteDestination`, `retry.ConvertPolicy`, `TranslateFault` and
//! `MirrorPercent` (pilot/pkg/networking/core/route).

use weft_api::networking::virtual_service::{
    Abort, Delay, Destination, GRPC_STATUSES, HttpFaultInjection, HttpRetry, HttpRoute, Percent,
};
use weft_xds::proto;

use super::delegate::Site;
use super::http::{RouteCx, destination_cluster};
use super::{Notes, duration};
use crate::mesh_config::MeshConfig;

/// Istio's retries when a route sets none (`retry.DefaultPolicy`): 2 retries...
const DEFAULT_NUM_RETRIES: u32 = 2;
/// ...on these conditions...
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// ...the retriable status being 503 (Istio's default; its `EXCLUDE_503_FROM_DEFAULT_RETRIES`
/// flag is not offered)...
const DEFAULT_RETRIABLE_STATUS_CODES: &[u32] = &[503];
/// ...and a retry's pick drawn again up to 5 times while it lands on an endpoint already tried.
const HOST_SELECTION_RETRY_MAX_ATTEMPTS: u32 = 5;

/// The retry conditions the proxy implements; HTTP status codes are accepted besides.
const PROXY_RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Istio's default policy: `retry.DefaultPolicy`, or `DefaultConsistentHashPolicy` (no
/// previous-hosts predicate) when the route's destination balances by consistent hash.
fn default_policy(hashed: bool) -> proto::RetryPolicy {
    proto::RetryPolicy {
        num_retries: DEFAULT_NUM_RETRIES,
        retry_on: DEFAULT_RETRY_ON.to_owned(),
        retriable_status_codes: DEFAULT_RETRIABLE_STATUS_CODES.to_vec(),
        previous_hosts: !hashed,
        host_selection_retry_max_attempts: HOST_SELECTION_RETRY_MAX_ATTEMPTS,
        ..Default::default()
    }
}

/// The retry policy of a default route (a service port no VirtualService routes): the mesh's
/// `defaultHttpRetryPolicy`, else Istio's default (`BuildDefaultHTTPOutboundRoute`).
pub(crate) fn default_route_retries(
    mesh: &MeshConfig,
    hashed: bool,
    notes: &mut Notes,
) -> Option<proto::RetryPolicy> {
    let mut note = |field: &str, reason: String| {
        notes.add(
            None,
            format!("meshConfig.defaultHttpRetryPolicy.{field}"),
            reason,
        )
    };
    convert_policy(mesh.default_http_retry_policy.as_ref(), hashed, &mut note)
}

/// Sets the timeout, retries, fault and mirrors of the forwarding `http` route written at
/// `site`.
pub(crate) fn apply(
    action: &mut proto::RouteAction,
    cx: &RouteCx<'_>,
    site: &Site<'_>,
    http: &HttpRoute,
    notes: &mut Notes,
) {
    // Istio: no timeout unless the route sets one; `0s` also means none.
    action.timeout = http
        .timeout
        .as_ref()
        .and_then(duration)
        .filter(|d| d.seconds != 0 || d.nanos != 0);
    let hashed = match http.route.as_slice() {
        // Istio looks at the hash policy of a single destination only.
        [only] => hashes_consistently(cx, &only.destination, site.namespace()),
        _ => false,
    };
    // A route without `retries` takes the mesh's `defaultHttpRetryPolicy`, as in Istio.
    action.retry_policy = match &http.retries {
        Some(retries) => {
            let mut note =
                |field: &str, reason: String| site.note(notes, &format!("retries.{field}"), reason);
            convert_policy(Some(retries), hashed, &mut note)
        }
        None => default_route_retries(cx.mesh, hashed, notes),
    };
    action.fault = http.fault.as_ref().and_then(fault);
    action.mirrors = mirrors(cx, site.namespace(), http);
}

/// Whether the cluster `dest` names balances by consistent hash.
fn hashes_consistently(cx: &RouteCx<'_>, dest: &Destination, namespace: &str) -> bool {
    cx.hashed
        .contains(&destination_cluster(dest, namespace, cx.port, cx.scope))
}

/// Istio's `retry.ConvertPolicy`: unset gives the default policy; `attempts` 0 (or less)
/// none; otherwise the default with what the user wrote on top:
/// - `retryOn` replaces the conditions, integers in it being the retriable status codes
///   (`retriable-status-codes` is added when there are some; none are kept from the
///   default);
/// - `retryIgnorePreviousHosts` sets or clears the previous-hosts predicate (default: set,
///   unless the destination hashes consistently);
/// - `perTryTimeout` and `backoff` as written.
///
/// Conditions the proxy lacks are left out with a note (`note(field, reason)`); a policy left
/// with no condition is none.
fn convert_policy(
    retries: Option<&HttpRetry>,
    hashed: bool,
    note: &mut dyn FnMut(&str, String),
) -> Option<proto::RetryPolicy> {
    let mut out = default_policy(hashed);
    let Some(h) = retries else {
        return Some(out);
    };
    out.num_retries = u32::try_from(h.attempts).ok().filter(|n| *n > 0)?;
    if !h.retry_on.trim().is_empty() {
        let mut conditions = Vec::new();
        out.retriable_status_codes.clear();
        for c in h
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            // Istio: an integer Go knows as an HTTP status is a retriable status code.
            let status = c.parse::<u16>().ok().filter(|n| {
                http::StatusCode::from_u16(*n).is_ok_and(|s| s.canonical_reason().is_some())
            });
            if let Some(code) = status {
                out.retriable_status_codes.push(u32::from(code));
            } else if PROXY_RETRY_ON.contains(&c) {
                conditions.push(c);
            } else {
                note(
                    "retryOn",
                    format!(
                        "the proxy does not implement the retry condition {c:?}; it is left out"
                    ),
                );
            }
        }
        if !out.retriable_status_codes.is_empty() && !conditions.contains(&"retriable-status-codes")
        {
            conditions.push("retriable-status-codes");
        }
        if conditions.is_empty() {
            // Nothing left to retry on: the proxy would refuse a policy without conditions.
            return None;
        }
        out.retry_on = conditions.join(",");
    }
    if let Some(ignore) = h.retry_ignore_previous_hosts {
        out.previous_hosts = ignore;
    }
    out.per_try_timeout = h.per_try_timeout.as_ref().and_then(duration);
    out.backoff_base = h.backoff.as_ref().and_then(duration);
    // retryRemoteLocalities: Istio adds Envoy's previous-priorities retry priority, which only
    // matters under locality-prioritised load balancing. weft's load balancers give every
    // locality the same priority, so retries may go to any locality already.
    Some(out)
}

/// A percentage as Istio's `Percent`, in 0..=100.
fn percent(p: &Percent) -> f64 {
    p.value.clamp(0.0, 100.0)
}

/// Istio's `TranslateFault`. A delay or abort that can never happen (no percentage, or no
/// fixed delay / status) is left out; `None` when nothing is left.
fn fault(f: &HttpFaultInjection) -> Option<proto::FaultInjection> {
    let out = proto::FaultInjection {
        delay: f.delay.as_ref().and_then(delay),
        abort: f.abort.as_ref().and_then(abort),
    };
    (out.delay.is_some() || out.abort.is_some()).then_some(out)
}

fn delay(d: &Delay) -> Option<proto::FaultDelay> {
    // `percentage` wins; otherwise the deprecated integer `percent`; neither is 0% (the API:
    // "if left unspecified, no request will be delayed").
    let percentage = match (&d.percentage, d.percent) {
        (Some(p), _) => percent(p),
        (None, Some(p)) => f64::from(p.clamp(0, 100)),
        (None, None) => 0.0,
    };
    // Istio drops a delay that is not fixed (exponentialDelay is not implemented).
    let fixed_delay = d.fixed_delay.as_ref().and_then(duration)?;
    (percentage > 0.0).then_some(proto::FaultDelay {
        fixed_delay: Some(fixed_delay),
        percentage,
    })
}

fn abort(a: &Abort) -> Option<proto::FaultAbort> {
    use proto::fault_abort::ErrorType;
    // An unset percentage is 0%, as Envoy reads Istio's abort without one.
    let percentage = a.percentage.as_ref().map_or(0.0, percent);
    let error_type = if let Some(status) = a.http_status {
        ErrorType::HttpStatus(u32::try_from(status).ok()?)
    } else if let Some(name) = &a.grpc_status {
        let code = GRPC_STATUSES.iter().position(|s| s == name)?;
        ErrorType::GrpcStatus(u32::try_from(code).ok()?)
    } else {
        // http2Error (rejected by validation) or nothing: Istio drops the abort.
        return None;
    };
    (percentage > 0.0).then_some(proto::FaultAbort {
        error_type: Some(error_type),
        percentage,
    })
}

/// Istio's `mirror` (with `mirrorPercentage`, else the deprecated `mirrorPercent`, else 100%)
/// and `mirrors` (each with its `percentage`, else 100%). An explicit 0 mirrors nothing and is
/// left out. The clusters are named as route destinations are (subset and port aware).
/// Short hosts resolve in `namespace`.
fn mirrors(cx: &RouteCx<'_>, namespace: &str, http: &HttpRoute) -> Vec<proto::RequestMirror> {
    let mut out = Vec::new();
    let mut push = |dest, percentage: f64| {
        if percentage > 0.0 {
            out.push(proto::RequestMirror {
                cluster: destination_cluster(dest, namespace, cx.port, cx.scope),
                percentage,
            });
        }
    };
    if let Some(dest) = &http.mirror {
        let percentage = match (&http.mirror_percentage, http.mirror_percent) {
            (Some(p), _) => percent(p),
            (None, Some(p)) => f64::from(p.min(100)),
            (None, None) => 100.0,
        };
        push(dest, percentage);
    }
    for m in &http.mirrors {
        push(&m.destination, m.percentage.as_ref().map_or(100.0, percent));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::Resource;

    fn resource() -> Resource {
        let loaded = weft_api::load_str(
            "vs.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {name: r, namespace: default}\n\
             spec: {hosts: [r], http: [{route: [{destination: {host: r}}]}]}\n",
        );
        loaded.resources[0].clone()
    }

    /// `retries` (YAML) converted for a route whose destination hashes or not; the policy
    /// and the notes' fields and reasons.
    fn retries(yaml: Option<&str>, hashed: bool) -> (Option<proto::RetryPolicy>, Vec<String>) {
        let h: Option<HttpRetry> = yaml.map(|y| yaml_serde::from_str(y).expect("retries"));
        let mut notes = Vec::new();
        let out = convert_policy(h.as_ref(), hashed, &mut |field: &str, reason: String| {
            notes.push(format!("{field}: {reason}"))
        });
        (out, notes)
    }

    /// What a policy says, in the words `weft proxy-config routes` would use.
    fn summary(p: &proto::RetryPolicy) -> String {
        format!(
            "{} on {} codes {:?} previous_hosts {} per_try {:?}",
            p.num_retries,
            p.retry_on,
            p.retriable_status_codes,
            p.previous_hosts,
            p.per_try_timeout.map(|d| (d.seconds, d.nanos)),
        )
    }

    #[test]
    fn retries_follow_istio_convert_policy() {
        let default = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
        let cases: &[(&str, Option<&str>, bool, Option<String>)] = &[
            (
                "no retries block: Istio's default, 503 retried on other hosts",
                None,
                false,
                Some(format!(
                    "2 on {default} codes [503] previous_hosts true per_try None"
                )),
            ),
            (
                "no retries block, consistent hash: no previous-hosts predicate",
                None,
                true,
                Some(format!(
                    "2 on {default} codes [503] previous_hosts false per_try None"
                )),
            ),
            (
                "attempts 0 disables retries",
                Some("{attempts: 0}"),
                false,
                None,
            ),
            (
                "attempts alone keeps the default conditions and codes",
                Some("{attempts: 3}"),
                false,
                Some(format!(
                    "3 on {default} codes [503] previous_hosts true per_try None"
                )),
            ),
            (
                "retryOn with codes: integers are codes, retriable-status-codes added",
                Some("{attempts: 1, retryOn: '503,connect-failure, 429'}"),
                false,
                Some(
                    "1 on connect-failure,retriable-status-codes codes [503, 429] \
                     previous_hosts true per_try None"
                        .to_owned(),
                ),
            ),
            (
                "retryOn without codes keeps none of the default's",
                Some("{attempts: 2, retryOn: 5xx}"),
                false,
                Some("2 on 5xx codes [] previous_hosts true per_try None".to_owned()),
            ),
            (
                "an integer that is no HTTP status is a condition, left out",
                Some("{attempts: 2, retryOn: '5xx,999'}"),
                false,
                Some("2 on 5xx codes [] previous_hosts true per_try None".to_owned()),
            ),
            (
                "perTryTimeout",
                Some("{attempts: 2, perTryTimeout: 2.5s}"),
                false,
                Some(format!(
                    "2 on {default} codes [503] previous_hosts true per_try Some((2, 500000000))"
                )),
            ),
            (
                "retryIgnorePreviousHosts: false clears the predicate",
                Some("{attempts: 2, retryIgnorePreviousHosts: false}"),
                false,
                Some(format!(
                    "2 on {default} codes [503] previous_hosts false per_try None"
                )),
            ),
            (
                "retryIgnorePreviousHosts: true sets it even when hashing",
                Some("{attempts: 2, retryIgnorePreviousHosts: true}"),
                true,
                Some(format!(
                    "2 on {default} codes [503] previous_hosts true per_try None"
                )),
            ),
            (
                "a retries block on a consistent-hash route starts from the hash default",
                Some("{attempts: 4, retryOn: gateway-error}"),
                true,
                Some("4 on gateway-error codes [] previous_hosts false per_try None".to_owned()),
            ),
            (
                "nothing the proxy can retry on: no policy",
                Some("{attempts: 1, retryOn: envoy-ratelimited}"),
                false,
                None,
            ),
        ];
        for (what, yaml, hashed, want) in cases {
            let (got, _) = retries(*yaml, *hashed);
            assert_eq!(got.as_ref().map(summary), *want, "{what}");
            if let Some(p) = got {
                assert_eq!(p.host_selection_retry_max_attempts, 5, "{what}");
            }
        }
        let (p, notes) = retries(Some("{attempts: 1, backoff: 100ms}"), false);
        assert_eq!(
            p.and_then(|p| p.backoff_base).map(|d| d.nanos),
            Some(100_000_000)
        );
        assert!(notes.is_empty(), "{notes:?}");
        // Conditions the proxy lacks are noted and left out.
        let (p, notes) = retries(
            Some("{attempts: 1, retryOn: 'gateway-error, 503,reset-before-request'}"),
            false,
        );
        assert_eq!(
            p.map(|p| p.retry_on).as_deref(),
            Some("gateway-error,retriable-status-codes")
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("retryOn: ") && notes[0].contains("reset-before-request"));
    }

    #[test]
    fn the_mesh_default_policy_replaces_istios() {
        let mesh: MeshConfig =
            yaml_serde::from_str("defaultHttpRetryPolicy: {attempts: 5, retryOn: '5xx,reset'}")
                .expect("mesh config");
        let mut notes = Notes::default();
        let p = default_route_retries(&mesh, false, &mut notes).expect("a policy");
        assert_eq!(
            summary(&p),
            "5 on 5xx,reset codes [] previous_hosts true per_try None"
        );
        let off: MeshConfig =
            yaml_serde::from_str("defaultHttpRetryPolicy: {attempts: 0}").expect("mesh config");
        assert_eq!(default_route_retries(&off, false, &mut notes), None);
        let none = MeshConfig::default();
        assert_eq!(
            default_route_retries(&none, true, &mut notes),
            Some(default_policy(true))
        );
    }

    #[test]
    fn faults_follow_istio() {
        let f = |yaml: &str| {
            let f: HttpFaultInjection = yaml_serde::from_str(yaml).expect("fault");
            fault(&f)
        };
        // No percentage: nothing is delayed or aborted.
        assert_eq!(f("{delay: {fixedDelay: 7s}}"), None);
        assert_eq!(f("{abort: {httpStatus: 500}}"), None);
        let d = f("{delay: {fixedDelay: 7s, percent: 10}}").and_then(|f| f.delay);
        assert_eq!(d.map(|d| d.percentage), Some(10.0));
        // percentage wins over the deprecated percent.
        let d = f("{delay: {fixedDelay: 7s, percent: 10, percentage: {value: 0.5}}}");
        assert_eq!(d.and_then(|f| f.delay).map(|d| d.percentage), Some(0.5));
        let a = f("{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}");
        assert_eq!(
            a.and_then(|f| f.abort).and_then(|a| a.error_type),
            Some(proto::fault_abort::ErrorType::GrpcStatus(14))
        );
        let a = f("{abort: {grpcStatus: UNAUTHENTICATED, percentage: {value: 1}}}");
        assert_eq!(
            a.and_then(|f| f.abort).and_then(|a| a.error_type),
            Some(proto::fault_abort::ErrorType::GrpcStatus(16))
        );
        let both = f("{delay: {fixedDelay: 1s, percentage: {value: 0}}, \
             abort: {httpStatus: 503, percentage: {value: 50}}}")
        .expect("a fault");
        assert!(both.delay.is_none());
        assert_eq!(both.abort.map(|a| a.percentage), Some(50.0));
    }

    #[test]
    fn mirror_percentages_follow_istio() {
        let view = crate::ConfigView::new(Vec::new(), Vec::new());
        let mesh = crate::MeshConfig::default();
        let node = crate::ProxyNode::parse_id(
            "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local",
        )
        .expect("node");
        let scope = super::super::scope::Scope::for_gateway(&node, &mesh, &view);
        let hashed = std::collections::HashSet::new();
        let cx = RouteCx {
            node: &node,
            port: 8000,
            gateway: "istio-system/gw",
            tls: false,
            scope: &scope,
            view: &view,
            mesh: &mesh,
            hashed: &hashed,
        };
        let r = resource();
        let mirrors = |yaml: &str| -> Vec<(String, f64)> {
            let http: HttpRoute = yaml_serde::from_str(yaml).expect("http route");
            mirrors(&cx, r.namespace(), &http)
                .into_iter()
                .map(|m| (m.cluster, m.percentage))
                .collect()
        };
        let v2 = "outbound|8000|v2|httpbin.default.svc.cluster.local".to_owned();
        let mirror = "mirror: {host: httpbin, subset: v2}";
        assert_eq!(mirrors(&format!("{{{mirror}}}")), vec![(v2.clone(), 100.0)]);
        assert_eq!(
            mirrors(&format!("{{{mirror}, mirrorPercent: 30}}")),
            vec![(v2.clone(), 30.0)]
        );
        assert_eq!(
            mirrors(&format!(
                "{{{mirror}, mirrorPercent: 30, mirrorPercentage: {{value: 2.5}}}}"
            )),
            vec![(v2.clone(), 2.5)]
        );
        assert!(mirrors(&format!("{{{mirror}, mirrorPercentage: {{value: 0}}}}")).is_empty());
        assert_eq!(
            mirrors(
                "{mirrors: [{destination: {host: httpbin, subset: v2, port: {number: 9000}}}, \
                 {destination: {host: other.ns.svc.cluster.local}, percentage: {value: 10}}, \
                 {destination: {host: httpbin}, percentage: {value: 0}}]}"
            ),
            vec![
                (
                    "outbound|9000|v2|httpbin.default.svc.cluster.local".to_owned(),
                    100.0
                ),
                ("outbound|8000||other.ns.svc.cluster.local".to_owned(), 10.0),
            ]
        );
    }
}
