//! A forwarding route's resilience policy: an HTTPRoute's `timeout`, `retries`, `fault` and
//! `mirror`/`mirrors` -> the proto RouteAction's `timeout`, `retry_policy`, `fault` and
//! `mirrors`. Istio's `applyHTTPRouteDestination`, `retry.ConvertPolicy`, `TranslateFault` and
//! `MirrorPercent` (pilot/pkg/networking/core/route).

use weft_api::networking::virtual_service::{
    Abort, Delay, GRPC_STATUSES, HttpFaultInjection, HttpRetry, HttpRoute, Percent,
};
use weft_xds::proto;

use super::delegate::Site;
use super::http::{RouteCx, destination_cluster};
use super::{Notes, duration};

/// Istio's retries when a route sets none: 2 retries...
const DEFAULT_NUM_RETRIES: u32 = 2;
/// ...on these conditions (Istio's `defaultRetryOn`). `retriable-status-codes` with no codes
/// in the list retries no status; Istio writes it all the same.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

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

/// The retry policy of a route that sets no `retries` (and of default routes to HTTP
/// services), as Istio gives it.
pub(crate) fn default_retry_policy() -> proto::RetryPolicy {
    proto::RetryPolicy {
        num_retries: DEFAULT_NUM_RETRIES,
        retry_on: DEFAULT_RETRY_ON.to_owned(),
        ..Default::default()
    }
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
    action.retry_policy = retry_policy(http.retries.as_ref(), site, notes);
    action.fault = http.fault.as_ref().and_then(fault);
    action.mirrors = mirrors(cx, site.namespace(), http);
}

/// Istio's `ConvertPolicy`: unset gives the default policy, `attempts` 0 (or less) none.
fn retry_policy(
    retries: Option<&HttpRetry>,
    site: &Site<'_>,
    notes: &mut Notes,
) -> Option<proto::RetryPolicy> {
    let Some(h) = retries else {
        return Some(default_retry_policy());
    };
    let num_retries = u32::try_from(h.attempts).ok().filter(|n| *n > 0)?;
    let retry_on = if h.retry_on.trim().is_empty() {
        DEFAULT_RETRY_ON.to_owned()
    } else {
        let mut kept = Vec::new();
        for c in h
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            let status = c.parse::<u16>().is_ok_and(|n| (100..=599).contains(&n));
            if status || PROXY_RETRY_ON.contains(&c) {
                kept.push(c);
            } else {
                site.note(
                    notes,
                    "retries.retryOn",
                    format!(
                        "the proxy does not implement the retry condition {c:?}; it is left out"
                    ),
                );
            }
        }
        if kept.is_empty() {
            // Nothing left to retry on: the proxy would refuse a policy without conditions.
            return None;
        }
        kept.join(",")
    };
    if h.retry_ignore_previous_hosts == Some(false) {
        site.note(
            notes,
            "retries.retryIgnorePreviousHosts",
            "retries always prefer endpoints not tried yet; false is not supported",
        );
    }
    // retryRemoteLocalities: Istio adds Envoy's previous-priorities retry priority, which only
    // matters under locality-prioritised load balancing. weft's load balancers give every
    // locality the same priority, so retries may go to any locality already.
    Some(proto::RetryPolicy {
        num_retries,
        per_try_timeout: h.per_try_timeout.as_ref().and_then(duration),
        retry_on,
        backoff_base: h.backoff.as_ref().and_then(duration),
        buffer_limit_bytes: 0,
    })
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

    fn retries(yaml: Option<&str>) -> (Option<proto::RetryPolicy>, Vec<String>) {
        let h: Option<HttpRetry> = yaml.map(|y| yaml_serde::from_str(y).expect("retries"));
        let mut notes = Notes::default();
        let r = resource();
        let out = retry_policy(h.as_ref(), &Site::own(&r, 0), &mut notes);
        let notes = notes.finish().iter().map(|n| n.reason.clone()).collect();
        (out, notes)
    }

    #[test]
    fn retries_follow_istio() {
        // Unset: Istio's default policy.
        assert_eq!(retries(None).0, Some(default_retry_policy()));
        // attempts 0 disables retries.
        assert_eq!(retries(Some("{attempts: 0}")).0, None);
        // attempts alone keeps the default conditions.
        let (p, _) = retries(Some("{attempts: 3, perTryTimeout: 2s, backoff: 100ms}"));
        let p = p.expect("a policy");
        assert_eq!(p.num_retries, 3);
        assert_eq!(p.retry_on, DEFAULT_RETRY_ON);
        assert_eq!(p.per_try_timeout.map(|d| d.seconds), Some(2));
        assert_eq!(p.backoff_base.map(|d| d.nanos), Some(100_000_000));
        // Status codes pass through; conditions the proxy lacks are noted and left out.
        let (p, notes) = retries(Some(
            "{attempts: 1, retryOn: 'gateway-error, 503,reset-before-request', \
             retryRemoteLocalities: true}",
        ));
        assert_eq!(p.expect("a policy").retry_on, "gateway-error,503");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("reset-before-request"));
        // Nothing left to retry on: no policy.
        assert_eq!(
            retries(Some("{attempts: 1, retryOn: envoy-ratelimited}")).0,
            None
        );
        let (_, notes) = retries(Some("{attempts: 1, retryIgnorePreviousHosts: false}"));
        assert_eq!(notes.len(), 1);
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
        let cx = RouteCx {
            node: &node,
            port: 8000,
            gateway: "istio-system/gw",
            tls: false,
            scope: &scope,
            view: &view,
            mesh: &mesh,
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
