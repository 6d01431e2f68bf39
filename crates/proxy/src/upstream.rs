//! Connections to upstream endpoints. Each endpoint has its own pools (HTTP/1.1 with idle
//! timeout, HTTP/2 multiplexed), so requests carry their real authority (`:authority` on
//! HTTP/2) while connections go to the endpoint the load balancer picked. TLS origination,
//! when the cluster has `tls`, happens in the connector, below both protocols and TCP.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use weft_xds::proto::UpstreamProtocol;

use crate::body::ProxyBody;
use crate::cluster::{Cluster, Endpoint};
use crate::config::ConfigError;
use crate::tls::{ClientTls, client_tls};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to an endpoint, plaintext or TLS.
pub type UpstreamStream = MaybeHttpsStream<TokioIo<TcpStream>>;

pub type HttpClient = Client<EndpointConnector, ProxyBody>;

/// A cluster's connections: pools per endpoint address.
pub struct Upstream {
    protocol: UpstreamProtocol,
    tls: bool,
    /// In the cluster's endpoint order ([`Endpoint::index`]).
    endpoints: Vec<Arc<EndpointPools>>,
}

/// One endpoint's pools. The HTTP/2 one serves HTTP2 clusters, and USE_DOWNSTREAM clusters
/// when the downstream request is HTTP/2.
struct EndpointPools {
    address: SocketAddr,
    /// The endpoint's `plaintext` flag when built (auto mTLS: no sidecar there).
    plaintext: bool,
    http1: HttpClient,
    http2: HttpClient,
    /// For TCP proxying and CONNECT: a connection of its own, TLS without ALPN.
    raw: EndpointConnector,
}

impl Upstream {
    /// Fails when the cluster's TLS files cannot be read or do not make a valid config.
    pub fn new(cluster: &Cluster) -> Result<Self, ConfigError> {
        Self::new_after(cluster, None)
    }

    /// As [`Upstream::new`]; when `previous` served this cluster before a change of its
    /// endpoint list alone, an endpoint that stays (same address) keeps its pools and their
    /// connections.
    pub fn new_after(cluster: &Cluster, previous: Option<&Upstream>) -> Result<Self, ConfigError> {
        let resource = format!("cluster {:?}", cluster.name());
        let mut endpoints = Vec::with_capacity(cluster.endpoints().len());
        // Roots and client certificates are read once for the cluster, when an endpoint
        // first needs them, not once per endpoint.
        let mut tls: Option<ClientTls> = None;
        for e in cluster.endpoints() {
            let kept = previous.and_then(|p| {
                p.endpoints
                    .iter()
                    .find(|k| k.address == e.address && k.plaintext == e.plaintext)
            });
            if let Some(pools) = kept {
                endpoints.push(pools.clone());
                continue;
            }
            let endpoint_tls = match &cluster.config().tls {
                // Auto mTLS: an endpoint without a sidecar is sent plaintext.
                Some(t) if t.mesh && e.plaintext => None,
                Some(t) => {
                    let base = match &tls {
                        Some(base) => base,
                        None => tls.insert(client_tls(t, None, &resource)?),
                    };
                    Some(base.for_endpoint(t, e.address.ip()))
                }
                None => None,
            };
            let mut pools = EndpointPools::new(cluster, e.address, endpoint_tls);
            pools.plaintext = e.plaintext;
            endpoints.push(Arc::new(pools));
        }
        Ok(Upstream {
            protocol: cluster.protocol(),
            // Mesh mTLS carries plain `http` requests (the sidecar's peer terminates it).
            tls: cluster.config().tls.as_ref().is_some_and(|t| !t.mesh),
            endpoints,
        })
    }

    /// The client for `endpoint` and a request that arrived as HTTP/2 (`downstream_h2`) or
    /// not, and whether it speaks HTTP/2.
    pub fn client(&self, endpoint: &Endpoint, downstream_h2: bool) -> Option<(&HttpClient, bool)> {
        let pools = self.pools(endpoint)?;
        Some(match self.protocol {
            UpstreamProtocol::Http2 => (&pools.http2, true),
            UpstreamProtocol::UseDownstream if downstream_h2 => (&pools.http2, true),
            _ => (&pools.http1, false),
        })
    }

    /// The URI scheme upstream requests carry (`:scheme` on HTTP/2).
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// A fresh byte stream to `endpoint` (TLS when the cluster originates it).
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<UpstreamStream, BoxError> {
        let mut connector = match self.pools(endpoint) {
            Some(p) => p.raw.clone(),
            None => {
                let address = endpoint.address;
                return Err(format!("{address} is not an endpoint of the cluster").into());
            }
        };
        tower_service::Service::call(&mut connector, Uri::default()).await
    }

    /// The pools of `endpoint`, which must be one of this cluster's.
    fn pools(&self, endpoint: &Endpoint) -> Option<&EndpointPools> {
        self.endpoints
            .get(endpoint.index)
            .filter(|p| p.address == endpoint.address)
            .map(|p| &**p)
    }

    /// Whether this and `other` use the very same pools for `address`.
    #[cfg(test)]
    pub(crate) fn shares_pools(&self, other: &Upstream, address: SocketAddr) -> bool {
        let of = |u: &Upstream| u.endpoints.iter().find(|p| p.address == address).cloned();
        matches!((of(self), of(other)), (Some(a), Some(b)) if Arc::ptr_eq(&a, &b))
    }
}

impl EndpointPools {
    fn new(cluster: &Cluster, address: SocketAddr, tls: Option<ClientTls>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cluster.connect_timeout()));
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_local_address(cluster.bind_address());
        // Checked by Cluster::build: an ip:port is always a valid authority.
        let target = Uri::try_from(format!("http://{address}")).unwrap_or_default();
        let connector =
            |config: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>| EndpointConnector {
                http: http.clone(),
                target: target.clone(),
                tls: config.map(|(c, name)| (tokio_rustls::TlsConnector::from(c), name)),
                handshake_timeout: cluster.connect_timeout(),
            };
        let with = |pick: fn(&ClientTls) -> &Arc<rustls::ClientConfig>| {
            tls.as_ref()
                .map(|t| (pick(t).clone(), t.server_name.clone()))
        };
        let build = |h2: bool, connector: EndpointConnector| {
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
            if cluster
                .config()
                .circuit_breakers
                .as_ref()
                .is_some_and(|c| c.max_requests_per_connection == 1)
            {
                // maxRequestsPerConnection 1: a connection per request, no keep-alive.
                b.pool_max_idle_per_host(0);
            }
            b.build(connector)
        };
        EndpointPools {
            address,
            plaintext: false,
            http1: build(false, connector(with(|t| &t.http1))),
            http2: build(true, connector(with(|t| &t.http2))),
            raw: connector(with(|t| &t.raw)),
        }
    }
}

/// Connects to one endpoint whatever the request URI says (the URI carries the request's
/// authority), then does the TLS handshake when the cluster originates TLS.
#[derive(Clone)]
pub struct EndpointConnector {
    http: HttpConnector,
    target: Uri,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The TLS handshake's bound: the cluster's connect timeout, as for the TCP connect (a
    /// server that accepts and never answers must not hold the request until the route
    /// timeout, or forever without one).
    handshake_timeout: std::time::Duration,
}

impl tower_service::Service<Uri> for EndpointConnector {
    type Response = UpstreamStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, _request_uri: Uri) -> Self::Future {
        let connecting = self.http.call(self.target.clone());
        let tls = self.tls.clone();
        let handshake_timeout = self.handshake_timeout;
        Box::pin(async move {
            let tcp = connecting.await?;
            let Some((connector, name)) = tls else {
                return Ok(MaybeHttpsStream::Http(tcp));
            };
            let handshake = connector.connect(name, TokioIo::new(tcp));
            let stream = tokio::time::timeout(handshake_timeout, handshake)
                .await
                .map_err(|_| format!("TLS handshake: timed out after {handshake_timeout:?}"))?
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Ok(MaybeHttpsStream::Https(TokioIo::new(stream)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::proto;

    #[test]
    fn roots_are_read_once_per_cluster() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let path = std::env::temp_dir().join(format!(
            "weft-roots-once-{}-{}.pem",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, ca.pem()).unwrap();
        let endpoints: Vec<String> = (1..=20)
            .map(|i| format!("{{address: \"10.0.0.{i}:443\"}}"))
            .collect();
        let yaml = format!(
            "{{name: c, tls: {{caFile: \"{}\"}}, endpoints: [{}]}}",
            path.display(),
            endpoints.join(", ")
        );
        let config: proto::Cluster = yaml_serde::from_str(&yaml).expect("cluster");
        let cluster = Cluster::build(&config).expect("builds");
        let before = crate::tls::ROOT_LOADS.with(std::cell::Cell::get);
        let upstream = Upstream::new(&cluster);
        let loads = crate::tls::ROOT_LOADS.with(std::cell::Cell::get) - before;
        let _ = std::fs::remove_file(&path);
        assert!(upstream.is_ok());
        assert_eq!(
            loads, 1,
            "the CA file was read {loads} times for 20 endpoints"
        );
    }

    #[tokio::test]
    async fn the_tls_handshake_is_bounded_by_the_connect_timeout() {
        // A server that accepts and never answers the ClientHello.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = silent.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                open.push(s);
            }
        });
        let yaml = format!(
            "{{name: c, connectTimeout: 0.2s, tls: {{insecureSkipVerify: true}}, \
             endpoints: [{{address: \"{address}\"}}]}}"
        );
        let config: proto::Cluster = yaml_serde::from_str(&yaml).expect("cluster");
        let cluster = Cluster::build(&config).expect("builds");
        let upstream = Upstream::new(&cluster).expect("upstream");
        let endpoint = &cluster.endpoints()[0];
        // The outer bound only keeps a failing test from hanging.
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            upstream.connect(endpoint),
        )
        .await
        .expect("the handshake gave up on its own");
        let Err(e) = result else {
            panic!("a handshake with a silent server succeeded");
        };
        assert_eq!(e.to_string(), "TLS handshake: timed out after 200ms");
        held.abort();
    }
}
