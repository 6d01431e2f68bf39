//! The scenarios: what a VirtualService / DestinationRule would configure, and the requests
//! that show how each proxy behaves with it.

use super::model::*;

/// A route forwarding everything that matches `path` to `cluster`.
fn to(path: PathMatch, cluster: &'static str) -> Route {
    Route {
        path,
        action: Action::Forward(Forward {
            clusters: vec![(cluster, 100)],
            ..Forward::default()
        }),
        ..Route::default()
    }
}

/// `to` with the forward settings changed by `f`.
fn to_with(path: PathMatch, cluster: &'static str, f: impl FnOnce(&mut Forward)) -> Route {
    let mut r = to(path, cluster);
    if let Action::Forward(fw) = &mut r.action {
        f(fw);
    }
    r
}

fn cluster(name: &'static str, endpoints: &[Endpoint]) -> Cluster {
    Cluster {
        name,
        endpoints: endpoints.to_vec(),
        ..Cluster::default()
    }
}

fn echo() -> Cluster {
    cluster("echo", &[Endpoint::Echo])
}

fn redirect(path: &'static str, r: Redirect) -> Route {
    Route {
        path: PathMatch::Exact(path),
        action: Action::Redirect(r),
        ..Route::default()
    }
}

pub fn all() -> Vec<Scenario> {
    let mut all = vec![
        routing(),
        no_route(),
        rewrites(),
        redirects(),
        header_operations(),
        local_replies(),
        retries(),
        timeouts(),
        faults(),
        circuit_breaking(),
        outlier_detection(),
        upgrades(),
        connect(),
        connect_not_routed(),
        http1_edges(),
        response_framing(),
        resets(),
        weighted(),
        cors(),
        gateway_redirects(),
        http2(),
        mirroring(),
        more_retries(),
        forwarded_headers(Listener::Sidecar(Norm::Base), "sidecar-headers"),
        forwarded_headers(Listener::Gateway, "gateway-headers"),
    ];
    all.extend([
        normalization(Norm::Base, "norm-base"),
        normalization(Norm::None, "norm-none"),
        normalization(Norm::MergeSlashes, "norm-merge-slashes"),
        normalization(Norm::DecodeAndMergeSlashes, "norm-decode-and-merge"),
    ]);
    all
}

fn sidecar(name: &'static str) -> Scenario {
    Scenario::new(name, Listener::Sidecar(Norm::Base))
}

fn routing() -> Scenario {
    let tagged = |path, tag: &'static str| {
        let mut r = to(path, "echo");
        r.request_headers.set = vec![("x-route", tag)];
        r
    };
    let mut jason = tagged(PathMatch::Prefix("/reviews"), "jason");
    jason.headers = vec![("end-user", HeaderMatch::Exact("jason"))];
    let mut canary = tagged(PathMatch::Prefix("/reviews"), "canary");
    canary.headers = vec![("x-canary", HeaderMatch::Present)];
    sidecar("routing")
        .route(jason)
        .route(canary)
        .route(tagged(PathMatch::Exact("/exact"), "exact"))
        .route(tagged(PathMatch::Regex("/items/[0-9]+"), "regex"))
        .route(Route {
            path: PathMatch::Exact("/direct"),
            action: Action::Direct {
                status: 200,
                body: "direct answer",
            },
            ..Route::default()
        })
        .route(Route {
            path: PathMatch::Exact("/teapot"),
            action: Action::Direct {
                status: 418,
                body: "",
            },
            ..Route::default()
        })
        .route(tagged(PathMatch::Prefix("/"), "default"))
        .cluster(echo())
        .send(Req::get(
            "by header",
            "/reviews/1",
            &[("end-user", "jason")],
        ))
        .send(Req::get("by presence", "/reviews/1", &[("x-canary", "")]))
        .send(Req::get(
            "other user",
            "/reviews/1",
            &[("end-user", "alice")],
        ))
        .send(Req::get("exact", "/exact", &[]))
        .send(Req::get("exact with query", "/exact?a=1&b=2", &[]))
        .send(Req::get("exact is not prefix", "/exact/more", &[]))
        .send(Req::get("regex", "/items/42", &[]))
        .send(Req::get("regex no match", "/items/4a", &[]))
        .send(Req::get("direct response", "/direct", &[]))
        .send(Req::get("direct empty body", "/teapot", &[]))
        .send(Req::method(
            "post with body",
            "POST",
            "/upload",
            &[("content-type", "text/plain")],
            "hello",
        ))
        .send(Req::raw(
            "host with another port",
            "GET /exact HTTP/1.1\r\nHost: {host}:8080\r\nx-diff-id: {id}\r\n\r\n",
        ))
        .send(Req::raw(
            "host upper case",
            "GET /exact HTTP/1.1\r\nHost: ROUTING.TEST\r\nx-diff-id: {id}\r\n\r\n",
        ))
}

fn no_route() -> Scenario {
    sidecar("no-route")
        .route(to(PathMatch::Exact("/only"), "echo"))
        .cluster(echo())
        .send(Req::get("no route", "/other", &[]))
        .send(Req::raw(
            "unknown host",
            "GET /only HTTP/1.1\r\nHost: nowhere.test\r\nx-diff-id: {id}\r\n\r\n",
        ))
        .send(Req::raw(
            "no host",
            "GET /only HTTP/1.1\r\nx-diff-id: {id}\r\n\r\n",
        ))
}

fn rewrites() -> Scenario {
    sidecar("rewrites")
        .route(to_with(PathMatch::Prefix("/v1/"), "echo", |f| {
            f.prefix_rewrite = Some("/v2/")
        }))
        .route(to_with(PathMatch::Prefix("/legacy"), "echo", |f| {
            f.prefix_rewrite = Some("/modern")
        }))
        .route(to_with(PathMatch::Prefix("/users/"), "echo", |f| {
            f.regex_rewrite = Some(("^/users/([0-9]+)/profile$", "/profile/\\1"))
        }))
        .route(to_with(PathMatch::Prefix("/other-host"), "echo", |f| {
            f.authority_rewrite = Some("backend.internal")
        }))
        .cluster(echo())
        .send(Req::get("prefix", "/v1/books?id=3", &[]))
        .send(Req::get("prefix without slash", "/legacy/x", &[]))
        .send(Req::get("prefix longer segment", "/legacyish", &[]))
        .send(Req::get("regex", "/users/17/profile", &[]))
        .send(Req::get("regex no match", "/users/17/other", &[]))
        .send(Req::get("authority", "/other-host/a", &[]))
}

fn redirects() -> Scenario {
    sidecar("redirects")
        .route(redirect(
            "/old",
            Redirect {
                uri: Some("/new"),
                ..Redirect::default()
            },
        ))
        .route(redirect(
            "/elsewhere",
            Redirect {
                authority: Some("other.test"),
                code: Some(302),
                ..Redirect::default()
            },
        ))
        .route(redirect(
            "/secure",
            Redirect {
                scheme: Some("https"),
                port: Some(8443),
                code: Some(308),
                ..Redirect::default()
            },
        ))
        .route(redirect(
            "/temp",
            Redirect {
                uri: Some("/tmp"),
                code: Some(307),
                ..Redirect::default()
            },
        ))
        .route(redirect(
            "/see",
            Redirect {
                uri: Some("/other"),
                code: Some(303),
                ..Redirect::default()
            },
        ))
        .send(Req::get("uri", "/old", &[]))
        .send(Req::get("uri keeps query", "/old?q=1", &[]))
        .send(Req::get("authority 302", "/elsewhere", &[]))
        .send(Req::get("scheme and port 308", "/secure", &[]))
        .send(Req::get("307", "/temp", &[]))
        .send(Req::get("303", "/see", &[]))
        .send(Req::get(
            "behind TLS termination",
            "/old",
            &[("x-forwarded-proto", "https")],
        ))
        .send(Req::raw(
            "host with port",
            "GET /old HTTP/1.1\r\nHost: {host}:443\r\nx-diff-id: {id}\r\n\r\n",
        ))
}

fn header_operations() -> Scenario {
    let mut r = to(PathMatch::Prefix("/"), "echo");
    r.request_headers = HeaderOps {
        set: vec![("x-set", "route"), ("x-overwrite", "route")],
        add: vec![("x-add", "route")],
        remove: vec!["x-remove"],
    };
    r.response_headers = HeaderOps {
        set: vec![("x-resp-set", "route"), ("x-backend", "overwritten")],
        add: vec![("x-resp-add", "route")],
        remove: vec!["x-backend-extra"],
    };
    sidecar("header-ops")
        .route(r)
        .cluster(echo())
        .send(Req::get("plain", "/", &[]))
        .send(Req::get(
            "client headers",
            "/h",
            &[
                ("x-overwrite", "client"),
                ("x-add", "client"),
                ("x-remove", "client"),
            ],
        ))
}

fn local_replies() -> Scenario {
    let secured = |path, cluster| {
        let mut r = to(PathMatch::Exact(path), cluster);
        r.response_headers.set = vec![("x-frame-options", "DENY")];
        r
    };
    sidecar("local-replies")
        .route(secured("/uh", "empty"))
        .route(secured("/uf", "closed"))
        .route(secured("/nc", "missing"))
        .route(secured("/ok", "echo"))
        .cluster(cluster("empty", &[]))
        .cluster(cluster("closed", &[Endpoint::Closed]))
        .cluster(echo())
        .send(Req::get("no healthy upstream", "/uh", &[]))
        .send(Req::get("connect failure", "/uf", &[]))
        .send(Req::get("no cluster", "/nc", &[]))
        .send(Req::get(
            "grpc connect failure",
            "/uf",
            &[("content-type", "application/grpc")],
        ))
        .send(Req::get("proxied", "/ok", &[]))
}

fn retries() -> Scenario {
    let retry = |attempts, retry_on, per_try| Retry {
        attempts,
        retry_on,
        per_try_timeout: per_try,
        retriable_status_codes: vec![],
    };
    sidecar("retries")
        .route(to_with(PathMatch::Prefix("/5xx"), "echo", |f| {
            f.retry = Some(retry(3, "5xx", None))
        }))
        .route(to_with(PathMatch::Prefix("/per-try"), "echo", |f| {
            f.retry = Some(retry(2, "5xx", Some(0.3)))
        }))
        .route(to_with(PathMatch::Prefix("/gateway-error"), "echo", |f| {
            f.retry = Some(retry(2, "gateway-error", None))
        }))
        .route(to_with(PathMatch::Prefix("/connect"), "closed", |f| {
            f.retry = Some(retry(2, "connect-failure", None))
        }))
        .route(to_with(PathMatch::Prefix("/"), "echo", |f| {
            f.retry = Some(Retry::istio_default())
        }))
        .cluster(echo())
        .cluster(cluster("closed", &[Endpoint::Closed]))
        .send(Req::get(
            "recovers",
            "/5xx",
            &[("x-diff-behave", "fail-first=2")],
        ))
        .send(Req::get(
            "exhausted",
            "/5xx",
            &[("x-diff-behave", "status=500")],
        ))
        .send(Req::get(
            "4xx not retried",
            "/5xx",
            &[("x-diff-behave", "status=404")],
        ))
        .send(Req::get(
            "per-try timeout",
            "/per-try",
            &[("x-diff-behave", "slow-first=1:2000")],
        ))
        .send(Req::get(
            "502 is a gateway error",
            "/gateway-error",
            &[("x-diff-behave", "status=502")],
        ))
        .send(Req::get(
            "500 is not",
            "/gateway-error",
            &[("x-diff-behave", "status=500")],
        ))
        .send(Req::get("connect failure", "/connect", &[]))
        .send(Req::get(
            "istio default on 503",
            "/",
            &[("x-diff-behave", "status=503")],
        ))
        .send(Req::get(
            "istio default on 500",
            "/",
            &[("x-diff-behave", "status=500")],
        ))
        .send(Req::method(
            "body replayed",
            "POST",
            "/5xx",
            &[("x-diff-behave", "fail-first=1")],
            "payload",
        ))
}

fn timeouts() -> Scenario {
    sidecar("timeouts")
        .route(to_with(PathMatch::Prefix("/"), "echo", |f| {
            f.timeout = Some(0.3)
        }))
        .cluster(echo())
        .send(Req::get("in time", "/", &[("x-diff-behave", "delay=10")]))
        .send(Req::get(
            "too slow",
            "/",
            &[("x-diff-behave", "delay=2000")],
        ))
        .send(Req::method(
            "grpc too slow",
            "POST",
            "/pkg.Svc/Method",
            &[
                ("x-diff-behave", "delay=2000"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
            "\0\0\0\0\0",
        ))
}

fn faults() -> Scenario {
    sidecar("faults")
        .route(to_with(PathMatch::Prefix("/abort"), "echo", |f| {
            f.fault = Some(Fault::Abort(418))
        }))
        .route(to_with(PathMatch::Prefix("/grpc-abort"), "echo", |f| {
            f.fault = Some(Fault::GrpcAbort(14))
        }))
        .route(to_with(PathMatch::Prefix("/delay"), "echo", |f| {
            f.fault = Some(Fault::Delay(0.05))
        }))
        .cluster(echo())
        .send(Req::get("abort", "/abort", &[]))
        .send(Req::method(
            "grpc abort",
            "POST",
            "/grpc-abort",
            &[("content-type", "application/grpc")],
            "",
        ))
        .send(Req::get("delay", "/delay", &[]))
}

fn circuit_breaking() -> Scenario {
    let mut c = echo();
    c.max_requests = Some(1);
    sidecar("breaking")
        .route(to(PathMatch::Prefix("/"), "echo"))
        .cluster(c)
        .hold(Req::get(
            "in flight",
            "/held",
            &[("x-diff-behave", "delay=1000")],
        ))
        .send(Req::get("overflow", "/more", &[]))
}

fn outlier_detection() -> Scenario {
    let mut c = cluster("pair", &[Endpoint::Echo, Endpoint::Failing]);
    c.outlier = Some(Outlier {
        consecutive_5xx: 2,
        base_ejection_secs: 30,
    });
    let mut s = sidecar("outlier")
        .route(to(PathMatch::Prefix("/"), "pair"))
        .cluster(c)
        .unordered();
    for _ in 0..8 {
        s = s.send(Req::get("any", "/", &[]));
    }
    s
}

fn upgrades() -> Scenario {
    sidecar("upgrades")
        .route(to(PathMatch::Prefix("/"), "echo"))
        .cluster(echo())
        .send(Req::raw(
            "websocket",
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nx-diff-id: {id}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ))
        .send(Req::raw(
            "other upgrade",
            "GET /foo HTTP/1.1\r\nHost: {host}\r\nx-diff-id: {id}\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
        ))
        .send(Req::raw(
            "h2c",
            "GET /h2c HTTP/1.1\r\nHost: {host}\r\nx-diff-id: {id}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        ))
}

fn connect() -> Scenario {
    let mut tunnel = to(PathMatch::Any, "tunnel");
    tunnel.connect = true;
    sidecar("connect")
        .route(tunnel)
        .route(to(PathMatch::Prefix("/"), "echo"))
        .cluster(cluster("tunnel", &[Endpoint::TcpEcho]))
        .cluster(echo())
        .send(Req::raw(
            "connect",
            "CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n",
        ))
        .send(Req::get("get beside a connect route", "/plain", &[]))
}

fn connect_not_routed() -> Scenario {
    sidecar("connect-catch-all")
        .route(to(PathMatch::Prefix("/"), "echo"))
        .cluster(echo())
        .send(Req::raw(
            "connect to a catch-all",
            "CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\nGET /inside HTTP/1.1\r\nHost: {host}\r\nx-diff-id: {id}\r\n\r\n",
        ).linger())
}

fn http1_edges() -> Scenario {
    let raw = |label, head: &str| Req::raw(label, &head.replace('\n', "\r\n"));
    let big = format!(
        "GET /big HTTP/1.1\nHost: {{host}}\nx-diff-id: {{id}}\nx-big: {}\n\n",
        "a".repeat(61 * 1024)
    );
    let fits = format!(
        "GET /fits HTTP/1.1\nHost: {{host}}\nx-diff-id: {{id}}\nx-big: {}\n\n",
        "a".repeat(50 * 1024)
    );
    sidecar("http1")
        .route(to(PathMatch::Prefix("/"), "echo"))
        .cluster(echo())
        .send(raw("http/1.0", "GET /old HTTP/1.0\nHost: {host}\nx-diff-id: {id}\n\n"))
        .send(raw(
            "gzip, chunked",
            "POST /te HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nTransfer-Encoding: gzip, chunked\n\n0\n\n",
        ))
        .send(raw(
            "chunked",
            "POST /chunked HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n",
        ))
        .send(raw("lower-case method", "get /m HTTP/1.1\nHost: {host}\nx-diff-id: {id}\n\n"))
        .send(raw("unknown method", "FETCHALL /m HTTP/1.1\nHost: {host}\nx-diff-id: {id}\n\n"))
        .send(raw("PATCH", "PATCH /m HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nContent-Length: 2\n\nhi"))
        .send(raw(
            "authority-form GET",
            "GET {host} HTTP/1.1\nHost: {host}\nx-diff-id: {id}\n\n",
        ))
        .send(raw(
            "absolute-form GET",
            "GET http://{host}/abs HTTP/1.1\nHost: {host}\nx-diff-id: {id}\n\n",
        ))
        .send(raw(
            "content-length and chunked",
            "POST /clte HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nContent-Length: 5\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n",
        ))
        .send(raw(
            "two equal content-lengths",
            "POST /cl HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nContent-Length: 5\nContent-Length: 5\n\nhello",
        ))
        .send(raw(
            "two different content-lengths",
            "POST /cl HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nContent-Length: 5\nContent-Length: 6\n\nhello!",
        ))
        .send(raw(
            "expect 100-continue",
            "POST /expect HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nExpect: 100-continue\nContent-Length: 5\n\nhello",
        ))
        .send(raw(
            "hop-by-hop headers",
            "GET /hop HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nConnection: keep-alive, x-hop\nx-hop: 1\nKeep-Alive: timeout=5\nTE: trailers\nProxy-Connection: keep-alive\n\n",
        ))
        .send(raw(
            "underscore header",
            "GET /u HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nx_under: 1\n\n",
        ))
        .send(raw(
            "space before colon",
            "GET /s HTTP/1.1\nHost: {host}\nx-diff-id: {id}\nx-bad : 1\n\n",
        ))
        .send(raw("two hosts", "GET /hh HTTP/1.1\nHost: {host}\nHost: other.test\nx-diff-id: {id}\n\n"))
        .send(Req::raw("headers over 60 KiB", &big.replace('\n', "\r\n")))
        .send(Req::raw("headers under 60 KiB", &fits.replace('\n', "\r\n")))
}

/// What each listener kind does with forwarding headers and `x-envoy-*` from its client.
fn forwarded_headers(listener: Listener, name: &'static str) -> Scenario {
    Scenario::new(name, listener)
        .route(to(PathMatch::Prefix("/"), "echo"))
        .cluster(echo())
        .send(Req::get("plain", "/", &[]))
        .send(Req::get(
            "client forwarding headers",
            "/xff",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "client-chosen-id"),
            ],
        ))
        .send(Req::get(
            "client x-envoy headers",
            "/envoy",
            &[
                ("x-envoy-retry-on", "5xx"),
                ("x-envoy-max-retries", "3"),
                ("x-envoy-upstream-rq-timeout-ms", "1"),
                ("x-envoy-internal", "true"),
                ("x-envoy-original-path", "/forged"),
                ("x-envoy-custom", "1"),
            ],
        ))
}

/// A sidecar with Istio's `meshConfig.pathNormalization` mode `norm`.
fn normalization(norm: Norm, name: &'static str) -> Scenario {
    let tagged = |path, tag: &'static str| {
        let mut r = to(path, "echo");
        r.request_headers.set = vec![("x-route", tag)];
        r
    };
    let mut s = Scenario::new(name, Listener::Sidecar(norm))
        .route(tagged(PathMatch::Exact("/admin"), "admin"))
        .route(tagged(PathMatch::Prefix("/"), "other"))
        .cluster(echo());
    for (label, path) in [
        ("plain", "/admin"),
        ("dot segments", "/a/../admin"),
        ("dot segment", "/./admin"),
        ("escaped unreserved", "/%61dmin"),
        ("double slash", "//admin"),
        ("escaped slash", "/x/..%2Fadmin"),
        ("escaped slash lower", "/admin%2fx"),
        ("escaped backslash", "/admin%5Cx"),
        ("escaped reserved", "/a%3Fb"),
        ("invalid escape", "/admin%zz"),
        ("query kept", "/admin?next=/../x"),
        ("above root", "/../admin"),
        ("trailing dot", "/admin/."),
    ] {
        s = s.send(Req::get(label, path, &[]));
    }
    s
}

/// How responses are framed back to the client: HEAD, bodiless statuses, a chunked upstream.
fn response_framing() -> Scenario {
    sidecar("framing")
        .route(to(PathMatch::Prefix("/"), "echo"))
        .cluster(echo())
        .send(Req::method("HEAD", "HEAD", "/head", &[], ""))
        .send(Req::get("204", "/204", &[("x-diff-behave", "status=204")]))
        .send(Req::get("304", "/304", &[("x-diff-behave", "status=304")]))
        .send(Req::get(
            "chunked upstream",
            "/chunked",
            &[("x-diff-behave", "chunked")],
        ))
        .send(Req::method(
            "HEAD of a chunked upstream",
            "HEAD",
            "/chunked",
            &[("x-diff-behave", "chunked")],
            "",
        ))
        .send(Req::get(
            "closing client",
            "/close",
            &[("connection", "close")],
        ))
}

/// An upstream that closes the connection without answering.
fn resets() -> Scenario {
    sidecar("resets")
        .route(to_with(PathMatch::Prefix("/retried"), "echo", |f| {
            f.retry = Some(Retry {
                attempts: 2,
                retry_on: "reset",
                ..Retry::default()
            })
        }))
        .route(to(PathMatch::Prefix("/"), "echo"))
        .cluster(echo())
        .send(Req::get(
            "reset",
            "/",
            &[("x-diff-behave", "reset-first=1")],
        ))
        .send(Req::get(
            "reset retried",
            "/retried",
            &[("x-diff-behave", "reset-first=1")],
        ))
        .send(Req::get(
            "reset every time",
            "/retried",
            &[("x-diff-behave", "reset-first=5")],
        ))
}

/// Weighted destinations whose outcome does not depend on chance (a weight of 0).
fn weighted() -> Scenario {
    let mut split = to(PathMatch::Prefix("/"), "echo");
    if let Action::Forward(f) = &mut split.action {
        f.clusters = vec![("echo", 100), ("failing", 0)];
    }
    sidecar("weighted")
        .route(split)
        .cluster(echo())
        .cluster(cluster("failing", &[Endpoint::Failing]))
        .send(Req::get("first", "/a", &[]))
        .send(Req::get("second", "/b", &[]))
}

fn cors() -> Scenario {
    let mut r = to(PathMatch::Prefix("/"), "echo");
    r.cors = Some(Cors {
        allow_origins: vec!["https://app.example"],
        allow_methods: vec!["GET", "POST"],
        allow_headers: vec!["x-custom"],
        expose_headers: vec!["x-backend"],
        max_age_secs: Some(3600),
        allow_credentials: true,
    });
    let preflight = |origin| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-custom"),
        ]
    };
    sidecar("cors")
        .route(r)
        .cluster(echo())
        .send(Req::method(
            "preflight",
            "OPTIONS",
            "/api",
            &preflight("https://app.example"),
            "",
        ))
        .send(Req::method(
            "preflight from another origin",
            "OPTIONS",
            "/api",
            &preflight("https://evil.example"),
            "",
        ))
        .send(Req::method(
            "options without preflight headers",
            "OPTIONS",
            "/api",
            &[],
            "",
        ))
        .send(Req::get(
            "actual request",
            "/api",
            &[("origin", "https://app.example")],
        ))
        .send(Req::get(
            "actual request from another origin",
            "/api",
            &[("origin", "https://evil.example")],
        ))
}

/// Redirects at a gateway, whose scheme is its own connection's.
fn gateway_redirects() -> Scenario {
    Scenario::new("gateway-redirects", Listener::Gateway)
        .route(redirect(
            "/old",
            Redirect {
                uri: Some("/new"),
                ..Redirect::default()
            },
        ))
        .route(redirect(
            "/secure",
            Redirect {
                scheme: Some("https"),
                ..Redirect::default()
            },
        ))
        .send(Req::get("uri", "/old", &[]))
        .send(Req::get(
            "client says https",
            "/old",
            &[("x-forwarded-proto", "https")],
        ))
        .send(Req::get("to https", "/secure", &[]))
}

/// HTTP/2 clients (prior knowledge) in front of an HTTP/1.1 upstream.
fn http2() -> Scenario {
    let mut r = to(PathMatch::Prefix("/"), "echo");
    r.response_headers.set = vec![("x-resp-set", "route")];
    sidecar("http2")
        .route(Route {
            path: PathMatch::Exact("/direct"),
            action: Action::Direct {
                status: 200,
                body: "direct answer",
            },
            ..Route::default()
        })
        .route(redirect(
            "/old",
            Redirect {
                uri: Some("/new"),
                ..Redirect::default()
            },
        ))
        .route(r)
        .cluster(echo())
        .send(Req::h2("GET", "GET", "/h2?q=1", &[], ""))
        .send(Req::h2(
            "POST",
            "POST",
            "/h2",
            &[("content-type", "text/plain")],
            "hello",
        ))
        .send(Req::h2(
            "te trailers",
            "GET",
            "/te",
            &[("te", "trailers")],
            "",
        ))
        .send(Req::h2("direct response", "GET", "/direct", &[], ""))
        .send(Req::h2("redirect", "GET", "/old", &[], ""))
        .send(Req::h2(
            "upstream 503",
            "GET",
            "/fail",
            &[("x-diff-behave", "status=503")],
            "",
        ))
}

/// Istio's `mirror`: a copy of each request to another cluster, its answer dropped.
fn mirroring() -> Scenario {
    sidecar("mirror")
        .route(to_with(PathMatch::Prefix("/"), "echo", |f| {
            f.mirror = Some("shadow")
        }))
        .cluster(echo())
        .cluster(cluster("shadow", &[Endpoint::Mirror]))
        .send(Req::get("GET", "/m?x=1", &[]).linger())
        .send(Req::method("POST", "POST", "/m", &[], "copied body").linger())
        .send(Req::get("failing original", "/f", &[("x-diff-behave", "status=503")]).linger())
}

/// Retry conditions on 4xx and gRPC statuses.
fn more_retries() -> Scenario {
    let retry = |retry_on| Retry {
        attempts: 2,
        retry_on,
        ..Retry::default()
    };
    sidecar("more-retries")
        .route(to_with(PathMatch::Prefix("/4xx"), "echo", |f| {
            f.retry = Some(retry("retriable-4xx"))
        }))
        .route(to_with(PathMatch::Prefix("/codes"), "echo", |f| {
            f.retry = Some(Retry {
                retriable_status_codes: vec![418],
                ..retry("retriable-status-codes")
            })
        }))
        .route(to_with(PathMatch::Prefix("/grpc"), "echo", |f| {
            f.retry = Some(retry("unavailable,resource-exhausted"))
        }))
        .cluster(echo())
        .send(Req::get(
            "409 retried",
            "/4xx",
            &[("x-diff-behave", "status=409")],
        ))
        .send(Req::get(
            "404 not",
            "/4xx",
            &[("x-diff-behave", "status=404")],
        ))
        .send(Req::get(
            "listed code",
            "/codes",
            &[("x-diff-behave", "status=418")],
        ))
        .send(Req::get(
            "unlisted code",
            "/codes",
            &[("x-diff-behave", "status=503")],
        ))
        .send(Req::method(
            "grpc unavailable",
            "POST",
            "/grpc",
            &[
                ("content-type", "application/grpc"),
                ("x-diff-behave", "grpc-fail-first=1:14"),
            ],
            "",
        ))
        .send(Req::method(
            "grpc internal not retried",
            "POST",
            "/grpc",
            &[
                ("content-type", "application/grpc"),
                ("x-diff-behave", "grpc-fail-first=1:13"),
            ],
            "",
        ))
}
