//! Scenarios, described once: virtual host, routes, clusters and the requests to send. The
//! description is rendered into a weft-proxy bootstrap ([`weft_config`]) and into an Envoy v3
//! bootstrap ([`envoy_config`]) with the settings Istio's pilot gives Envoy for the same
//! Istio resources (HttpConnectionManager and route options as a sidecar or gateway gets them).

use std::net::SocketAddr;

use serde_json::{Value, json};

/// Where a scenario's requests arrive: a sidecar's HTTP listener with one of Istio's
/// `meshConfig.pathNormalization` modes, or a gateway's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Sidecar(Norm),
    Gateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    Base,
    None,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl Listener {
    pub const ALL: [Listener; 5] = [
        Listener::Sidecar(Norm::Base),
        Listener::Sidecar(Norm::None),
        Listener::Sidecar(Norm::MergeSlashes),
        Listener::Sidecar(Norm::DecodeAndMergeSlashes),
        Listener::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Listener::Sidecar(Norm::Base) => "sidecar-base",
            Listener::Sidecar(Norm::None) => "sidecar-none",
            Listener::Sidecar(Norm::MergeSlashes) => "sidecar-merge-slashes",
            Listener::Sidecar(Norm::DecodeAndMergeSlashes) => "sidecar-decode-and-merge-slashes",
            Listener::Gateway => "gateway",
        }
    }

    fn norm(self) -> Norm {
        match self {
            Listener::Sidecar(n) => n,
            // Istio's default mesh config.
            Listener::Gateway => Norm::Base,
        }
    }
}

/// One scenario: its own virtual host (`<name>.test`) and clusters (named `<name>-<cluster>`,
/// so that breaker and outlier state is the scenario's own).
pub struct Scenario {
    pub name: &'static str,
    pub listener: Listener,
    pub routes: Vec<Route>,
    pub clusters: Vec<Cluster>,
    pub steps: Vec<Step>,
    /// Compare the observations as multisets: the order in which endpoints are picked (round
    /// robin's starting point) is not part of the behaviour compared.
    pub unordered: bool,
}

impl Scenario {
    pub fn new(name: &'static str, listener: Listener) -> Scenario {
        Scenario {
            name,
            listener,
            routes: Vec::new(),
            clusters: Vec::new(),
            steps: Vec::new(),
            unordered: false,
        }
    }

    pub fn domain(&self) -> String {
        format!("{}.test", self.name)
    }

    /// The virtual host's domains: the name alone and with port 443, as Istio lists a
    /// service's host with and without its port.
    fn domains(&self) -> Vec<String> {
        vec![self.domain(), format!("{}:443", self.domain())]
    }

    pub fn route(mut self, r: Route) -> Self {
        self.routes.push(r);
        self
    }

    pub fn cluster(mut self, c: Cluster) -> Self {
        self.clusters.push(c);
        self
    }

    pub fn send(mut self, r: Req) -> Self {
        self.steps.push(Step::Send(r));
        self
    }

    /// Sends `r` and goes on once the backend has it, without waiting for its response (it
    /// is compared at the end): a request kept in flight, for circuit breaking.
    pub fn hold(mut self, r: Req) -> Self {
        self.steps.push(Step::Hold(r));
        self
    }

    pub fn unordered(mut self) -> Self {
        self.unordered = true;
        self
    }
}

pub enum Step {
    Send(Req),
    Hold(Req),
}

impl Step {
    pub fn req(&self) -> &Req {
        match self {
            Step::Send(r) | Step::Hold(r) => r,
        }
    }
}

/// A request as raw HTTP/1.1 bytes. `{host}` is replaced by the scenario's domain and `{id}`
/// by the request's id; [`Req::get`] and friends add the id header themselves.
pub struct Req {
    pub label: &'static str,
    pub raw: String,
    /// A CONNECT: a 2xx response opens a tunnel the client probes.
    pub connect: bool,
    /// Sent over HTTP/2 (prior knowledge) instead of the raw bytes.
    pub h2: Option<H2Req>,
    /// The connection is held open a little after the response, and the backends read after
    /// that: for what happens after the response (a second request in the same bytes, a
    /// mirrored copy), so that it does not depend on timing.
    pub linger: bool,
}

impl Req {
    /// `GET path` with `Host: {host}`, the id header and `headers`.
    pub fn get(label: &'static str, path: &str, headers: &[(&str, &str)]) -> Req {
        Req::method(label, "GET", path, headers, "")
    }

    /// `method path` with a body (Content-Length) when it is not empty.
    pub fn method(
        label: &'static str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Req {
        let mut raw =
            format!("{method} {path} HTTP/1.1\r\nHost: {{host}}\r\nx-diff-id: {{id}}\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        raw.push_str(body);
        Req {
            label,
            raw,
            connect: false,
            linger: false,
            h2: None,
        }
    }

    /// Exactly these bytes (after `{host}`/`{id}` substitution).
    pub fn raw(label: &'static str, raw: &str) -> Req {
        Req {
            label,
            raw: raw.to_owned(),
            connect: raw.starts_with("CONNECT "),
            linger: false,
            h2: None,
        }
    }

    /// `method path` over HTTP/2 with `:authority` the scenario's domain, the id header and
    /// `headers`.
    pub fn h2(
        label: &'static str,
        method: &'static str,
        path: &'static str,
        headers: &[(&'static str, &'static str)],
        body: &'static str,
    ) -> Req {
        Req {
            label,
            raw: String::new(),
            connect: false,
            linger: false,
            h2: Some(H2Req {
                method,
                path,
                headers: headers.to_vec(),
                body,
            }),
        }
    }

    /// See [`Req::linger`].
    pub fn linger(mut self) -> Self {
        self.linger = true;
        self
    }

    pub fn bytes(&self, host: &str, id: &str) -> Vec<u8> {
        self.raw
            .replace("{host}", host)
            .replace("{id}", id)
            .into_bytes()
    }
}

/// An HTTP/2 request's parts.
pub struct H2Req {
    pub method: &'static str,
    pub path: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static str,
}

#[derive(Clone, Default)]
pub struct Route {
    pub path: PathMatch,
    pub headers: Vec<(&'static str, HeaderMatch)>,
    pub connect: bool,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub cors: Option<Cors>,
}

/// Istio's corsPolicy (exact origins only).
#[derive(Clone, Default)]
pub struct Cors {
    pub allow_origins: Vec<&'static str>,
    pub allow_methods: Vec<&'static str>,
    pub allow_headers: Vec<&'static str>,
    pub expose_headers: Vec<&'static str>,
    pub max_age_secs: Option<u32>,
    pub allow_credentials: bool,
}

#[derive(Clone, Default)]
pub enum PathMatch {
    #[default]
    Any,
    Prefix(&'static str),
    Exact(&'static str),
    Regex(&'static str),
}

#[derive(Clone)]
pub enum HeaderMatch {
    Exact(&'static str),
    Present,
}

#[derive(Clone)]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    Direct { status: u16, body: &'static str },
}

impl Default for Action {
    fn default() -> Self {
        Action::Forward(Forward::default())
    }
}

#[derive(Clone, Default)]
pub struct Forward {
    /// (cluster, weight); one cluster forwards to it alone.
    pub clusters: Vec<(&'static str, u32)>,
    pub prefix_rewrite: Option<&'static str>,
    pub regex_rewrite: Option<(&'static str, &'static str)>,
    pub authority_rewrite: Option<&'static str>,
    /// Seconds; None: no timeout (Istio's default).
    pub timeout: Option<f64>,
    pub retry: Option<Retry>,
    pub fault: Option<Fault>,
    /// A cluster every request is copied to (Istio's `mirror`, 100%).
    pub mirror: Option<&'static str>,
}

#[derive(Clone, Default)]
pub struct Retry {
    pub attempts: u32,
    pub retry_on: &'static str,
    pub per_try_timeout: Option<f64>,
    pub retriable_status_codes: Vec<u32>,
}

impl Retry {
    /// The policy Istio gives a route whose VirtualService sets no `retries`.
    pub fn istio_default() -> Retry {
        Retry {
            attempts: 2,
            retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            per_try_timeout: None,
            retriable_status_codes: vec![503],
        }
    }
}

#[derive(Clone)]
pub enum Fault {
    Abort(u32),
    GrpcAbort(u32),
    /// Seconds, every request.
    Delay(f64),
}

#[derive(Clone, Default)]
pub struct Redirect {
    pub uri: Option<&'static str>,
    pub authority: Option<&'static str>,
    pub port: Option<u16>,
    pub scheme: Option<&'static str>,
    pub code: Option<u16>,
}

#[derive(Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(&'static str, &'static str)>,
    pub add: Vec<(&'static str, &'static str)>,
    pub remove: Vec<&'static str>,
}

/// Which server an endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Records and answers 200 (or as the request asks).
    Echo,
    /// Records and answers 503 to everything.
    Failing,
    /// A port nothing listens on.
    Closed,
    /// A TCP echo server: a CONNECT tunnel's far end.
    TcpEcho,
    /// Records and answers 200, under its own name: where mirrored copies go.
    Mirror,
}

#[derive(Clone, Default)]
pub struct Cluster {
    pub name: &'static str,
    pub endpoints: Vec<Endpoint>,
    pub max_requests: Option<u32>,
    pub outlier: Option<Outlier>,
}

#[derive(Clone)]
pub struct Outlier {
    pub consecutive_5xx: u32,
    pub base_ejection_secs: u32,
}

/// Where each kind of endpoint listens.
pub trait Addresses {
    fn of(&self, e: Endpoint) -> SocketAddr;
}

fn cluster_name(s: &Scenario, c: &str) -> String {
    format!("{}-{c}", s.name)
}

fn secs(s: f64) -> String {
    format!("{s}s")
}

// ---- weft ---------------------------------------------------------------------------------

/// A weft-proxy bootstrap (without `admin`, which the harness adds) serving every scenario on
/// the listeners of `gateway` or sidecar kind. The node id decides gateway behaviour, as
/// Istio's `router~` ids do.
pub fn weft_config(scenarios: &[Scenario], gateway: bool, addrs: &dyn Addresses) -> String {
    let node = if gateway {
        json!({"id": "router~127.0.0.1~gateway.istio-system~istio-system.svc.cluster.local", "namespace": "istio-system"})
    } else {
        json!({"id": "sidecar~127.0.0.1~app.default~default.svc.cluster.local", "namespace": "default"})
    };
    let listeners: Vec<Value> = Listener::ALL
        .iter()
        .filter(|l| (**l == Listener::Gateway) == gateway)
        .map(|l| {
            let norm = match l.norm() {
                Norm::Base => "BASE",
                Norm::None => "NONE",
                Norm::MergeSlashes => "MERGE_SLASHES",
                Norm::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
            };
            json!({"name": l.name(), "address": "127.0.0.1:0",
                   "http": {"routeConfig": "all", "pathNormalization": norm}})
        })
        .collect();
    let vhosts: Vec<Value> = scenarios.iter().map(weft_vhost).collect();
    let clusters: Vec<Value> = scenarios
        .iter()
        .flat_map(|s| s.clusters.iter().map(move |c| weft_cluster(s, c, addrs)))
        .collect();
    // Each top-level value as one line of YAML flow style (JSON is valid flow YAML).
    format!(
        "node: {node}\nlisteners: {}\nrouteConfigs: {}\nclusters: {}\n",
        Value::from(listeners),
        json!([{"name": "all", "virtualHosts": vhosts}]),
        Value::from(clusters),
    )
}

fn weft_vhost(s: &Scenario) -> Value {
    let routes: Vec<Value> = s.routes.iter().map(|r| weft_route(s, r)).collect();
    json!({"name": s.name, "domains": s.domains(), "routes": routes})
}

fn weft_string_match(m: &PathMatch) -> Option<Value> {
    match m {
        PathMatch::Any => None,
        PathMatch::Prefix(p) => Some(json!({"prefix": p})),
        PathMatch::Exact(p) => Some(json!({"exact": p})),
        PathMatch::Regex(p) => Some(json!({"regex": p})),
    }
}

fn weft_route(s: &Scenario, r: &Route) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(uri) = weft_string_match(&r.path) {
        m.insert("uri".into(), uri);
    }
    if !r.headers.is_empty() {
        let headers: serde_json::Map<String, Value> = r
            .headers
            .iter()
            .map(|(n, h)| {
                let v = match h {
                    HeaderMatch::Exact(v) => json!({"exact": v}),
                    HeaderMatch::Present => json!({}),
                };
                ((*n).to_owned(), v)
            })
            .collect();
        m.insert("headers".into(), Value::Object(headers));
    }
    let mut route = json!({});
    if !m.is_empty() {
        route["matches"] = json!([m]);
    }
    if r.connect {
        route["connect"] = json!(true);
    }
    match &r.action {
        Action::Forward(f) => {
            let clusters: Vec<Value> = f
                .clusters
                .iter()
                .map(|(c, w)| json!({"cluster": cluster_name(s, c), "weight": w}))
                .collect();
            let mut a = json!({"clusters": clusters});
            let mut rewrite = json!({});
            if let Some(p) = f.prefix_rewrite {
                rewrite["uri"] = json!(p);
            }
            if let Some((pattern, sub)) = f.regex_rewrite {
                rewrite["uriRegex"] = json!({"pattern": pattern, "substitution": sub});
            }
            if let Some(h) = f.authority_rewrite {
                rewrite["authority"] = json!(h);
            }
            if rewrite != json!({}) {
                a["rewrite"] = rewrite;
            }
            if let Some(t) = f.timeout {
                a["timeout"] = json!(secs(t));
            }
            if let Some(retry) = &f.retry {
                let mut p = json!({"numRetries": retry.attempts, "retryOn": retry.retry_on,
                    "retriableStatusCodes": retry.retriable_status_codes,
                    "previousHosts": true, "hostSelectionRetryMaxAttempts": 5});
                if let Some(t) = retry.per_try_timeout {
                    p["perTryTimeout"] = json!(secs(t));
                }
                a["retryPolicy"] = p;
            }
            if let Some(m) = f.mirror {
                a["mirrors"] = json!([{"cluster": cluster_name(s, m), "percentage": 100}]);
            }
            match &f.fault {
                Some(Fault::Abort(code)) => {
                    a["fault"] = json!({"abort": {"httpStatus": code, "percentage": 100}})
                }
                Some(Fault::GrpcAbort(code)) => {
                    a["fault"] = json!({"abort": {"grpcStatus": code, "percentage": 100}})
                }
                Some(Fault::Delay(d)) => {
                    a["fault"] = json!({"delay": {"fixedDelay": secs(*d), "percentage": 100}})
                }
                None => {}
            }
            route["route"] = a;
        }
        Action::Redirect(rd) => {
            let mut v = json!({});
            if let Some(u) = rd.uri {
                v["uri"] = json!(u);
            }
            if let Some(a) = rd.authority {
                v["authority"] = json!(a);
            }
            if let Some(p) = rd.port {
                v["port"] = json!(p);
            }
            if let Some(sc) = rd.scheme {
                v["scheme"] = json!(sc);
            }
            if let Some(c) = rd.code {
                v["code"] = json!(c);
            }
            route["redirect"] = v;
        }
        Action::Direct { status, body } => {
            route["directResponse"] = json!({"status": status, "body": body});
        }
    }
    if let Some(c) = &r.cors {
        let origins: Vec<Value> = c
            .allow_origins
            .iter()
            .map(|o| json!({"exact": o}))
            .collect();
        let mut v = json!({"allowOrigins": origins, "allowMethods": c.allow_methods,
            "allowHeaders": c.allow_headers, "exposeHeaders": c.expose_headers,
            "allowCredentials": c.allow_credentials});
        if let Some(age) = c.max_age_secs {
            v["maxAge"] = json!(format!("{age}s"));
        }
        route["cors"] = v;
    }
    if let Some(ops) = weft_ops(&r.request_headers) {
        route["requestHeaders"] = ops;
    }
    if let Some(ops) = weft_ops(&r.response_headers) {
        route["responseHeaders"] = ops;
    }
    route
}

fn weft_ops(ops: &HeaderOps) -> Option<Value> {
    if ops.set.is_empty() && ops.add.is_empty() && ops.remove.is_empty() {
        return None;
    }
    let map = |kv: &[(&str, &str)]| -> Value {
        Value::Object(
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect(),
        )
    };
    Some(json!({"set": map(&ops.set), "add": map(&ops.add), "remove": ops.remove}))
}

fn weft_cluster(s: &Scenario, c: &Cluster, addrs: &dyn Addresses) -> Value {
    let endpoints: Vec<Value> = c
        .endpoints
        .iter()
        .map(|e| json!({"address": addrs.of(*e).to_string()}))
        .collect();
    let mut v =
        json!({"name": cluster_name(s, c.name), "endpoints": endpoints, "connectTimeout": "2s"});
    if let Some(n) = c.max_requests {
        v["circuitBreakers"] = json!({"maxRequests": n});
    }
    if let Some(o) = &c.outlier {
        v["outlierDetection"] = json!({"consecutive5xx": o.consecutive_5xx,
            "interval": "1s", "baseEjectionTime": format!("{}s", o.base_ejection_secs),
            "maxEjectionPercent": 100});
    }
    v
}

// ---- Envoy --------------------------------------------------------------------------------

/// An Envoy v3 bootstrap with one listener per [`Listener`], each an HttpConnectionManager
/// configured as Istio's pilot configures a sidecar's or a gateway's, all routing with the
/// same route configuration.
pub fn envoy_config(scenarios: &[Scenario], addrs: &dyn Addresses) -> Value {
    let vhosts: Vec<Value> = scenarios.iter().map(envoy_vhost).collect();
    let route_config = json!({"name": "all", "virtual_hosts": vhosts,
        // Istio: clusters are checked by the proxy at request time (503 NC), not at load.
        "validate_clusters": false});
    let listeners: Vec<Value> = Listener::ALL
        .iter()
        .map(|l| envoy_listener(*l, &route_config))
        .collect();
    let clusters: Vec<Value> = scenarios
        .iter()
        .flat_map(|s| s.clusters.iter().map(move |c| envoy_cluster(s, c, addrs)))
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

fn typed(t: &str) -> Value {
    json!({"@type": format!("type.googleapis.com/{t}")})
}

fn envoy_listener(l: Listener, route_config: &Value) -> Value {
    let gateway = l == Listener::Gateway;
    let (normalize, merge, escaped) = match l.norm() {
        Norm::None => (false, false, "KEEP_UNCHANGED"),
        Norm::Base => (true, false, "KEEP_UNCHANGED"),
        Norm::MergeSlashes => (true, true, "KEEP_UNCHANGED"),
        Norm::DecodeAndMergeSlashes => (true, true, "UNESCAPE_AND_FORWARD"),
    };
    let mut hcm =
        typed("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    let settings = json!({
        "stat_prefix": l.name(),
        "codec_type": "AUTO",
        "server_name": "istio-envoy",
        // Sidecars trust their (in-mesh) callers' x-forwarded-for; gateways append the peer.
        "use_remote_address": gateway,
        "normalize_path": normalize,
        "merge_slashes": merge,
        "path_with_escaped_slashes_action": escaped,
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        // Istio's ENABLE_100_CONTINUE_HEADERS, on by default.
        "proxy_100_continue": true,
        "route_config": route_config,
        "http_filters": [
            {"name": "envoy.filters.http.fault",
             "typed_config": typed("envoy.extensions.filters.http.fault.v3.HTTPFault")},
            {"name": "envoy.filters.http.cors",
             "typed_config": typed("envoy.extensions.filters.http.cors.v3.Cors")},
            {"name": "envoy.filters.http.router",
             "typed_config": typed("envoy.extensions.filters.http.router.v3.Router")},
        ],
    });
    merge_into(&mut hcm, settings);
    json!({
        "name": l.name(),
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]}],
    })
}

fn merge_into(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

fn envoy_vhost(s: &Scenario) -> Value {
    let routes: Vec<Value> = s.routes.iter().map(|r| envoy_route(s, r)).collect();
    json!({"name": s.name, "domains": s.domains(), "routes": routes,
        // Istio sets it on every virtual host.
        "include_request_attempt_count": true})
}

fn envoy_route(s: &Scenario, r: &Route) -> Value {
    let mut m = if r.connect {
        json!({"connect_matcher": {}})
    } else {
        match r.path {
            PathMatch::Any => json!({"prefix": "/"}),
            PathMatch::Prefix(p) => json!({"prefix": p}),
            PathMatch::Exact(p) => json!({"path": p}),
            PathMatch::Regex(p) => json!({"safe_regex": {"regex": p}}),
        }
    };
    if !r.headers.is_empty() {
        let headers: Vec<Value> = r
            .headers
            .iter()
            .map(|(n, h)| match h {
                HeaderMatch::Exact(v) => json!({"name": n, "string_match": {"exact": v}}),
                HeaderMatch::Present => json!({"name": n, "present_match": true}),
            })
            .collect();
        m["headers"] = json!(headers);
    }
    let mut route = json!({"match": m});
    match &r.action {
        Action::Forward(f) => {
            let mut a = if f.clusters.len() == 1 {
                json!({"cluster": cluster_name(s, f.clusters[0].0)})
            } else {
                let cs: Vec<Value> = f
                    .clusters
                    .iter()
                    .map(|(c, w)| json!({"name": cluster_name(s, c), "weight": w}))
                    .collect();
                json!({"weighted_clusters": {"clusters": cs}})
            };
            // Istio writes the route timeout out; 0s is none (Envoy's own default is 15s).
            a["timeout"] = json!(secs(f.timeout.unwrap_or(0.0)));
            if let Some(p) = f.prefix_rewrite {
                a["prefix_rewrite"] = json!(p);
            }
            if let Some((pattern, sub)) = f.regex_rewrite {
                a["regex_rewrite"] = json!({"pattern": {"regex": pattern}, "substitution": sub});
            }
            if let Some(h) = f.authority_rewrite {
                a["host_rewrite_literal"] = json!(h);
            }
            if let Some(retry) = &f.retry {
                let mut p = json!({
                    "retry_on": retry.retry_on,
                    "num_retries": retry.attempts,
                    "retriable_status_codes": retry.retriable_status_codes,
                    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                        "typed_config": typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate")}],
                    "host_selection_retry_max_attempts": 5,
                });
                if let Some(t) = retry.per_try_timeout {
                    p["per_try_timeout"] = json!(secs(t));
                }
                a["retry_policy"] = p;
            }
            if let Some(m) = f.mirror {
                a["request_mirror_policies"] = json!([{"cluster": cluster_name(s, m),
                    "runtime_fraction": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}}]);
            }
            if r.connect {
                a["upgrade_configs"] = json!([{"upgrade_type": "CONNECT", "connect_config": {}}]);
            }
            if let Some(fault) = &f.fault {
                let hundred = json!({"numerator": 100, "denominator": "HUNDRED"});
                let mut cfg = typed("envoy.extensions.filters.http.fault.v3.HTTPFault");
                let body = match fault {
                    Fault::Abort(c) => {
                        json!({"abort": {"http_status": c, "percentage": hundred}})
                    }
                    Fault::GrpcAbort(c) => {
                        json!({"abort": {"grpc_status": c, "percentage": hundred}})
                    }
                    Fault::Delay(d) => {
                        json!({"delay": {"fixed_delay": secs(*d), "percentage": hundred}})
                    }
                };
                merge_into(&mut cfg, body);
                route["typed_per_filter_config"] = json!({"envoy.filters.http.fault": cfg});
            }
            route["route"] = a;
        }
        Action::Redirect(rd) => {
            let mut v = json!({});
            if let Some(u) = rd.uri {
                v["path_redirect"] = json!(u);
            }
            if let Some(a) = rd.authority {
                v["host_redirect"] = json!(a);
            }
            if let Some(p) = rd.port {
                v["port_redirect"] = json!(p);
            }
            if let Some(sc) = rd.scheme {
                v["scheme_redirect"] = json!(sc);
            }
            let code = match rd.code.unwrap_or(301) {
                301 => "MOVED_PERMANENTLY",
                302 => "FOUND",
                303 => "SEE_OTHER",
                307 => "TEMPORARY_REDIRECT",
                _ => "PERMANENT_REDIRECT",
            };
            v["response_code"] = json!(code);
            route["redirect"] = v;
        }
        Action::Direct { status, body } => {
            route["direct_response"] = json!({"status": status, "body": {"inline_string": body}});
        }
    }
    if let Some(c) = &r.cors {
        let origins: Vec<Value> = c
            .allow_origins
            .iter()
            .map(|o| json!({"exact": o}))
            .collect();
        let mut cfg = typed("envoy.extensions.filters.http.cors.v3.CorsPolicy");
        let mut v = json!({"allow_origin_string_match": origins,
            "allow_methods": c.allow_methods.join(","),
            "allow_headers": c.allow_headers.join(","),
            "expose_headers": c.expose_headers.join(","),
            "allow_credentials": c.allow_credentials});
        if let Some(age) = c.max_age_secs {
            v["max_age"] = json!(age.to_string());
        }
        merge_into(&mut cfg, v);
        if route.get("typed_per_filter_config").is_none() {
            route["typed_per_filter_config"] = json!({});
        }
        route["typed_per_filter_config"]["envoy.filters.http.cors"] = cfg;
    }
    envoy_ops(&mut route, "request", &r.request_headers);
    envoy_ops(&mut route, "response", &r.response_headers);
    route
}

fn envoy_ops(route: &mut Value, which: &str, ops: &HeaderOps) {
    let mut add: Vec<Value> = Vec::new();
    for (k, v) in &ops.set {
        add.push(json!({"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}));
    }
    for (k, v) in &ops.add {
        add.push(
            json!({"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}),
        );
    }
    if !add.is_empty() {
        route[format!("{which}_headers_to_add")] = json!(add);
    }
    if !ops.remove.is_empty() {
        route[format!("{which}_headers_to_remove")] = json!(ops.remove);
    }
}

fn envoy_cluster(s: &Scenario, c: &Cluster, addrs: &dyn Addresses) -> Value {
    let lb_endpoints: Vec<Value> = c
        .endpoints
        .iter()
        .map(|e| {
            let a = addrs.of(*e);
            json!({"endpoint": {"address": {"socket_address":
                {"address": a.ip().to_string(), "port_value": a.port()}}}})
        })
        .collect();
    // Istio writes every threshold out; unset ones are the maximum.
    const MAX: u32 = u32::MAX;
    let mut v = json!({
        "name": cluster_name(s, c.name),
        "type": "STATIC",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": cluster_name(s, c.name),
            "endpoints": [{"lb_endpoints": lb_endpoints}]},
        "circuit_breakers": {"thresholds": [{
            "max_connections": MAX, "max_pending_requests": MAX,
            "max_requests": c.max_requests.unwrap_or(MAX), "max_retries": MAX}]},
    });
    if let Some(o) = &c.outlier {
        v["outlier_detection"] = json!({
            "consecutive_5xx": o.consecutive_5xx,
            "interval": "1s",
            "base_ejection_time": format!("{}s", o.base_ejection_secs),
            "max_ejection_percent": 100,
            // Istio turns off the detectors the DestinationRule does not name.
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
        });
        // Istio maps minHealthPercent (default 0) to the panic threshold.
        v["common_lb_config"] = json!({"healthy_panic_threshold": {"value": 0}});
    }
    v
}
