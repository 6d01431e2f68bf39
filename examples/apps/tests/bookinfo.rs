//! bookinfo and httpbin end to end on 127.0.0.1: each app on its own port-0 listener, and a
//! stub "sidecar" standing in for `HTTP_PROXY` that takes absolute-form requests, records
//! them, and forwards them by host name to the apps (or answers a canned status).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use weft_examples::client::{Client, Target};
use weft_examples::{App, Env};

const TIMEOUT: Duration = Duration::from_secs(20);

async fn start(app: App, env: &[(&str, &str)]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let env = Env::from_pairs(env.iter().copied());
    tokio::spawn(weft_examples::serve(app, env, listener));
    addr
}

#[derive(Clone, Copy)]
enum Upstream {
    Forward(SocketAddr),
    Status(u16),
}

/// One request the stub sidecar saw.
#[derive(Clone, Debug)]
struct Seen {
    host: String,
    path: String,
    absolute: bool,
    headers: HeaderMap,
}

#[derive(Clone, Default)]
struct Sidecar {
    routes: Arc<Mutex<HashMap<String, Upstream>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Sidecar {
    async fn start(routes: &[(&str, Upstream)]) -> (Sidecar, String) {
        let sidecar = Sidecar::default();
        for (host, upstream) in routes {
            sidecar
                .routes
                .lock()
                .unwrap()
                .insert((*host).to_owned(), *upstream);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = sidecar.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (sidecar, format!("http://{addr}"))
    }

    fn route(&self, host: &str, upstream: Upstream) {
        self.routes
            .lock()
            .unwrap()
            .insert(host.to_owned(), upstream);
    }

    fn seen(&self, host: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.host == host).cloned().collect()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let uri = req.uri().clone();
        let host = uri.host().unwrap_or("").to_owned();
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        self.seen.lock().unwrap().push(Seen {
            host: host.clone(),
            path: path.clone(),
            absolute: uri.scheme().is_some(),
            headers: req.headers().clone(),
        });
        let upstream = self.routes.lock().unwrap().get(&host).copied();
        let status = |code: u16| {
            let mut r = Response::new(Full::new(Bytes::from_static(b"no healthy upstream")));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        };
        match upstream {
            Some(Upstream::Forward(addr)) => {
                let target = Target::parse(&format!("http://{addr}{path}")).unwrap();
                let mut headers = req.headers().clone();
                headers.remove("host");
                let client = Client::new(None);
                let mut conn = client.connect(&target).await.unwrap();
                match conn
                    .send(Method::GET, &target, &headers, Bytes::new())
                    .await
                {
                    Ok(reply) => {
                        let mut r = Response::new(Full::new(reply.body));
                        *r.status_mut() = reply.status;
                        r
                    }
                    Err(_) => status(503),
                }
            }
            Some(Upstream::Status(code)) => status(code),
            None => status(404),
        }
    }
}

/// A GET (or POST with a form body) straight to `addr`.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let target = Target::parse(&format!("http://{addr}{path}")).unwrap();
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let mut conn = Client::new(None).connect(&target).await.unwrap();
    let reply = tokio::time::timeout(
        TIMEOUT,
        conn.send(method, &target, &map, Bytes::from(body.to_owned())),
    )
    .await
    .unwrap()
    .unwrap();
    (
        reply.status,
        reply.headers,
        String::from_utf8(reply.body.to_vec()).unwrap(),
    )
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let (status, _, body) = call(addr, Method::GET, path, headers, "").await;
    (status, body)
}

/// Starts details, ratings and one reviews version behind a stub sidecar, and productpage
/// using it.
async fn bookinfo(reviews_env: &[(&str, &str)]) -> (Sidecar, SocketAddr) {
    let (sidecar, proxy) = Sidecar::start(&[]).await;
    let proxy_env = [("HTTP_PROXY", proxy.as_str())];
    let details = start(App::Details, &[]).await;
    let ratings = start(App::Ratings, &[]).await;
    let mut env = reviews_env.to_vec();
    env.extend(proxy_env);
    let reviews = start(App::Reviews, &env).await;
    let productpage = start(App::Productpage, &proxy_env).await;
    sidecar.route("details", Upstream::Forward(details));
    sidecar.route("ratings", Upstream::Forward(ratings));
    sidecar.route("reviews", Upstream::Forward(reviews));
    (sidecar, productpage)
}

const V2: &[(&str, &str)] = &[
    ("POD_NAME", "reviews-v2-0"),
    ("ENABLE_RATINGS", "true"),
    ("STAR_COLOR", "black"),
];

#[tokio::test]
async fn product_page_shows_details_and_reviews_with_stars() {
    let (sidecar, productpage) = bookinfo(V2).await;
    let (status, page) = get(productpage, "/productpage", &[("x-request-id", "req-1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<title>Simple Bookstore App</title>"),
        "{page}"
    );
    assert!(page.contains("The Comedy of Errors"));
    assert!(page.contains("PublisherA") && page.contains("1234567890"));
    assert!(page.contains("Reviews served by: reviews-v2-0"), "{page}");
    assert!(page.contains("color:black"), "{page}");
    assert!(page.contains("An extremely entertaining play by Shakespeare"));
    assert!(!page.contains("unavailable"), "{page}");

    // Every hop went through the proxy in absolute form, with the request id copied along.
    for host in ["details", "reviews", "ratings"] {
        let seen = sidecar.seen(host);
        assert_eq!(seen.len(), 1, "{host}: {seen:?}");
        assert!(seen[0].absolute, "{host} was not sent in absolute form");
        assert_eq!(seen[0].headers["x-request-id"], "req-1", "{host}");
        assert!(seen[0].headers.get("end-user").is_none(), "{host}");
    }
    assert_eq!(sidecar.seen("ratings")[0].path, "/ratings/0");
}

#[tokio::test]
async fn reviews_v1_has_no_ratings_and_v3_red_stars() {
    let (sidecar, productpage) = bookinfo(&[("HOSTNAME", "reviews-v1-0")]).await;
    let (_, page) = get(productpage, "/productpage", &[]).await;
    assert!(page.contains("Reviews served by: reviews-v1-0"));
    assert!(!page.contains("&#9733;"));
    assert!(sidecar.seen("ratings").is_empty());

    let (_, productpage) = bookinfo(&[
        ("POD_NAME", "reviews-v3-0"),
        ("ENABLE_RATINGS", "true"),
        ("STAR_COLOR", "red"),
    ])
    .await;
    let (_, page) = get(productpage, "/productpage", &[]).await;
    assert!(
        page.contains("color:red") && page.contains("&#9733;"),
        "{page}"
    );
}

#[tokio::test]
async fn ratings_down_shows_ratings_unavailable() {
    let (sidecar, productpage) = bookinfo(V2).await;
    sidecar.route("ratings", Upstream::Status(503));
    let (status, page) = get(productpage, "/productpage", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Ratings service is currently unavailable"),
        "{page}"
    );
    assert!(page.contains("Reviews served by: reviews-v2-0"));

    // reviews itself, straight: still 200, with the error in each review.
    let direct = start(
        App::Reviews,
        &[
            ("ENABLE_RATINGS", "true"),
            ("RATINGS_HOSTNAME", "127.0.0.1"),
            ("RATINGS_SERVICE_PORT", "1"),
        ],
    )
    .await;
    let (status, body) = get(direct, "/reviews/0", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["reviews"][0]["rating"]["error"],
        "Ratings service is currently unavailable"
    );
    assert_eq!(json["reviews"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn reviews_failure_is_retried_once_then_reported() {
    let (sidecar, productpage) = bookinfo(V2).await;
    sidecar.route("reviews", Upstream::Status(500));
    let (status, page) = get(productpage, "/productpage", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Sorry, product reviews are currently unavailable for this book."));
    assert!(page.contains("Book Details"), "details still shown");
    assert_eq!(sidecar.seen("reviews").len(), 2, "one try and one retry");

    let (status, body) = get(productpage, "/api/v1/products/0/reviews", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("Sorry, product reviews are currently unavailable"));
}

#[tokio::test]
async fn login_sends_end_user_downstream_and_logout_stops_it() {
    let (sidecar, productpage) = bookinfo(V2).await;
    let (status, headers, _) = call(
        productpage,
        Method::POST,
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("referer", "http://localhost:8080/productpage"),
        ],
        "username=jason&passwd=x",
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "http://localhost:8080/productpage");
    let set_cookie = headers["set-cookie"].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("session=jason"), "{set_cookie}");

    let (_, page) = get(
        productpage,
        "/productpage",
        &[("cookie", &cookie), ("end-user", "mallory")],
    )
    .await;
    assert!(
        page.contains("jason") && page.contains("Sign out"),
        "{page}"
    );
    for host in ["details", "reviews", "ratings"] {
        let seen = sidecar.seen(host);
        assert_eq!(seen[0].headers["end-user"], "jason", "{host}");
    }

    let (status, headers, _) = call(
        productpage,
        Method::GET,
        "/logout",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (_, page) = get(productpage, "/productpage", &[]).await;
    assert!(page.contains("Sign in"));
    assert!(
        sidecar
            .seen("reviews")
            .last()
            .unwrap()
            .headers
            .get("end-user")
            .is_none()
    );
}

#[tokio::test]
async fn trace_headers_are_propagated() {
    let (sidecar, productpage) = bookinfo(V2).await;
    let trace = [
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-ot-span-context", "abc"),
        ("user-agent", "weft-test"),
    ];
    let _ = get(productpage, "/productpage", &trace).await;
    for host in ["details", "reviews", "ratings"] {
        let seen = &sidecar.seen(host)[0];
        for (k, v) in trace {
            assert_eq!(seen.headers[k], v, "{host} {k}");
        }
    }
}

#[tokio::test]
async fn product_api_and_health() {
    let (_, productpage) = bookinfo(V2).await;
    let (status, body) = get(productpage, "/api/v1/products", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("The Comedy of Errors"));
    let (status, body) = get(productpage, "/api/v1/products/0", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let details: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(details["ISBN-10"], "1234567890");
    assert_eq!(details["year"], 1595);
    let (status, body) = get(productpage, "/api/v1/products/0/reviews", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let reviews: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reviews["podname"], "reviews-v2-0");
    assert_eq!(reviews["reviews"][0]["rating"]["stars"], 5);
    assert_eq!(reviews["reviews"][1]["rating"]["stars"], 4);
    let (status, body) = get(productpage, "/api/v1/products/0/ratings", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Reviewer1"));
    let (status, body) = get(productpage, "/health", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Product page is healthy")
    );
    let (status, _) = get(productpage, "/nope", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_ids_are_rejected_not_panicked_on() {
    for (app, path) in [
        (App::Details, "/details/x"),
        (App::Reviews, "/reviews/%00"),
        (App::Ratings, "/ratings/1e9999"),
    ] {
        let addr = start(app, &[]).await;
        let (status, _) = get(addr, path, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
}

#[tokio::test]
async fn httpbin_echoes() {
    let addr = start(App::Httpbin, &[("POD_NAME", "httpbin-v1-0")]).await;
    let (status, headers, body) =
        call(addr, Method::GET, "/headers", &[("x-test", "yes")], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-httpbin-pod"], "httpbin-v1-0");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["headers"]["X-Test"], "yes");

    let (status, body) = get(addr, "/get?a=1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["args"]["a"], "1");

    let (status, _) = get(addr, "/status/503", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = get(addr, "/status/teapot", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _, body) = call(addr, Method::POST, "/anything/x", &[], "{\"k\":1}").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["json"]["k"], 1);

    let (status, _) = get(addr, "/delay/0.01", &[]).await;
    assert_eq!(status, StatusCode::OK);
}
