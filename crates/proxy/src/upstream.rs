//! Connections to upstream endpoints: one pool per cluster and protocol, keyed by endpoint
//! address (hyper-util's pooled client), with the cluster's connect and idle timeouts.

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use weft_xds::proto::UpstreamProtocol;

use crate::body::ProxyBody;
use crate::cluster::Cluster;

pub type HttpClient = Client<HttpConnector, ProxyBody>;

/// A cluster's upstream clients; the HTTP/2 one is used for HTTP2 clusters, and for
/// USE_DOWNSTREAM clusters when the downstream request is HTTP/2.
pub struct Upstream {
    pub protocol: UpstreamProtocol,
    pub http1: HttpClient,
    pub http2: HttpClient,
}

impl Upstream {
    pub fn new(cluster: &Cluster) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cluster.connect_timeout()));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let build = |h2: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                // Zero means "never close idle connections", as in Envoy.
                .pool_idle_timeout(
                    (!cluster.idle_timeout().is_zero()).then(|| cluster.idle_timeout()),
                )
                // The proxy sets Host itself (the original authority, or a rewrite).
                .set_host(false)
                .http2_only(h2);
            b.build(connector.clone())
        };
        Upstream {
            protocol: cluster.protocol(),
            http1: build(false),
            http2: build(true),
        }
    }

    /// The client for a request that arrived as HTTP/2 (`downstream_h2`) or not.
    pub fn client(&self, downstream_h2: bool) -> &HttpClient {
        match self.protocol {
            UpstreamProtocol::Http2 => &self.http2,
            UpstreamProtocol::UseDownstream if downstream_h2 => &self.http2,
            _ => &self.http1,
        }
    }
}
