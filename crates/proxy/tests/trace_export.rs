//! Distributed tracing on a real weft-proxy: the context it sends upstream, and the spans it
//! exports, to a Zipkin-compatible collector (POST /api/v2/spans, a hyper server here) and to
//! an OTLP/gRPC collector (a tonic server here).

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::{Proxy, backend, client, get};
use weft_xds::opentelemetry::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// A Zipkin collector: every span POSTed to /api/v2/spans, in arrival order.
async fn zipkin_collector() -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = spans.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let ok = req.method() == http::Method::POST
                            && req.uri().path() == "/api/v2/spans"
                            && req.headers()["content-type"] == "application/json";
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let status = match serde_json::from_slice::<Vec<Value>>(&body) {
                            Ok(batch) if ok => {
                                store.lock().unwrap().extend(batch);
                                202
                            }
                            _ => 400,
                        };
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, spans)
}

/// Waits (bounded) until `n` spans arrived.
async fn wait_for<T: Clone>(store: &Arc<Mutex<Vec<T>>>, n: usize) -> Vec<T> {
    for _ in 0..100 {
        let got = store.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} spans exported within 5s");
}

fn config(kind: &str, provider: &str, collector: &str, app: std::net::SocketAddr) -> String {
    format!(
        r#"
node: {{id: "sidecar~127.0.0.1~productpage-v1-0.default~default.svc.cluster.local"}}
listeners:
- name: inbound
  address: 127.0.0.1:0
  workload: {{canonicalService: productpage, namespace: default}}
  http:
    routeConfig: main
    tracing:
      provider: {provider}
      collector: "{collector}"
      sampling: 100
      spanKind: {kind}
      serviceName: productpage.default
      customTags: [{{tag: team, literal: books}}]
routeConfigs:
- name: main
  virtualHosts: [{{name: all, domains: ["*"], routes: [{{route: {{clusters: [{{cluster: app}}]}}}}]}}]
clusters:
- {{name: app, endpoints: [{{address: "{app}"}}]}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_spans_carry_istio_tags_and_the_context_goes_upstream() {
    let app = backend("app").await;
    let (collector, spans) = zipkin_collector().await;
    let proxy = Proxy::start(&config("SERVER", "ZIPKIN", &collector.to_string(), app));
    let c = client();
    let addr = proxy.addr("inbound");

    // A request that arrives in a sampled trace: a child span, its context passed on.
    let got = get(
        &c,
        addr,
        "productpage:9080",
        "/productpage?u=1",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let echoed = |k: &str| {
        got.headers
            .get(format!("x-echo-{k}"))
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        echoed("x-b3-traceid").as_deref(),
        Some("463ac35c9f6413ad48485a3953bb6124")
    );
    assert_eq!(
        echoed("x-b3-parentspanid").as_deref(),
        Some("a2fb4a1d1a96d312")
    );
    let sent_span = echoed("x-b3-spanid").expect("span id upstream");
    assert_ne!(sent_span, "a2fb4a1d1a96d312");
    assert_eq!(
        echoed("traceparent"),
        Some(format!(
            "00-463ac35c9f6413ad48485a3953bb6124-{sent_span}-01"
        ))
    );

    let s = wait_for(&spans, 1).await.remove(0);
    assert_eq!(s["traceId"], "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(s["parentId"], "a2fb4a1d1a96d312");
    assert_eq!(
        s["id"],
        sent_span.as_str(),
        "the span the app's calls are children of"
    );
    assert_eq!(s["kind"], "SERVER");
    assert_eq!(s["localEndpoint"]["serviceName"], "productpage.default");
    let tags = &s["tags"];
    for (k, v) in [
        ("component", "proxy"),
        ("istio.canonical_service", "productpage"),
        ("istio.namespace", "default"),
        (
            "node_id",
            "sidecar~127.0.0.1~productpage-v1-0.default~default.svc.cluster.local",
        ),
        ("http.method", "GET"),
        ("http.url", "http://productpage:9080/productpage?u=1"),
        ("http.status_code", "200"),
        ("upstream_cluster", "app"),
        ("response_flags", "-"),
        ("peer.address", "127.0.0.1"),
        ("team", "books"),
    ] {
        assert_eq!(tags[k], v, "tag {k}: {tags}");
    }

    // Not sampled upstream: no span, the decision passed on.
    let got = get(&c, addr, "productpage:9080", "/", &[("x-b3-sampled", "0")]).await;
    assert_eq!(got.headers["x-echo-x-b3-sampled"], "0");
    // A malformed context starts a new trace (the request is served).
    let got = get(
        &c,
        addr,
        "productpage:9080",
        "/",
        &[("traceparent", "junk")],
    )
    .await;
    assert_eq!(got.status, 200);
    let spans = wait_for(&spans, 2).await;
    assert_eq!(spans.len(), 2, "the unsampled request made no span");
    assert_eq!(spans[1]["parentId"], Value::Null, "a new trace's root span");
    assert_ne!(spans[1]["traceId"], "463ac35c9f6413ad48485a3953bb6124");

    // The counters say what was sent.
    let stats = get(&c, proxy.admin, "admin", "/stats", &[]).await.body;
    assert!(stats.contains("tracing.spans_sent: 2"), "{stats}");
    assert!(stats.contains("tracing.spans_dropped: 0"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_to_a_collector_that_is_down_are_dropped_and_counted() {
    let app = backend("app").await;
    let dead = support::free_port();
    let proxy = Proxy::start(&config(
        "CLIENT",
        "ZIPKIN",
        &format!("127.0.0.1:{dead}"),
        app,
    ));
    let c = client();
    for _ in 0..3 {
        let got = get(&c, proxy.addr("inbound"), "app", "/", &[]).await;
        assert_eq!(
            got.status, 200,
            "requests are served whatever the collector"
        );
    }
    for _ in 0..100 {
        let stats = get(&c, proxy.admin, "admin", "/stats", &[]).await.body;
        if stats.contains("tracing.spans_dropped: 3") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the 3 spans were not counted as dropped");
}

/// An OTLP/gRPC collector: `TraceService/Export` as a tonic service.
#[derive(Clone)]
struct OtlpCollector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl tonic::server::NamedService for OtlpCollector {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct Export(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl tonic::server::UnaryService<ExportTraceServiceRequest> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = Pin<
        Box<dyn Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<ExportTraceServiceRequest>) -> Self::Future {
        self.0.lock().unwrap().push(request.into_inner());
        Box::pin(async { Ok(tonic::Response::new(ExportTraceServiceResponse::default())) })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for OtlpCollector
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let store = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != "/opentelemetry.proto.collector.trace.v1.TraceService/Export" {
                return Ok(tonic::Status::unimplemented("no such method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(Export(store), req).await)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_export_reaches_a_collector() {
    let app = backend("app").await;
    let requests = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder().serve_with_incoming_shutdown(
        OtlpCollector(requests.clone()),
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        std::future::pending::<()>(),
    );
    tokio::spawn(server);
    let proxy = Proxy::start(&config(
        "CLIENT",
        "OPENTELEMETRY",
        &format!("127.0.0.1:{port}"),
        app,
    ));
    let c = client();
    let got = get(
        &c,
        proxy.addr("inbound"),
        "details:9080",
        "/details/0",
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
    )
    .await;
    assert_eq!(got.status, 200);
    let exported = wait_for(&requests, 1).await.remove(0);
    let rs = &exported.resource_spans[0];
    let service = &rs.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(
        span.trace_id,
        0x0af7651916cd43dd8448eb211c80319c_u128.to_be_bytes()
    );
    assert_eq!(span.parent_span_id, 0xb7ad6b7169203331_u64.to_be_bytes());
    assert_eq!(span.kind, 3, "SPAN_KIND_CLIENT");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref()?.value.clone())
    };
    use weft_xds::opentelemetry::proto::common::v1::any_value::Value as V;
    assert_eq!(attr("http.status_code"), Some(V::StringValue("200".into())));
    assert_eq!(attr("component"), Some(V::StringValue("proxy".into())));
    assert_eq!(
        attr("http.url"),
        Some(V::StringValue("http://details:9080/details/0".into()))
    );
}
