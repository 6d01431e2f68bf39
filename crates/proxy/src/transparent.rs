//! Transparent capture: connections iptables REDIRECTed to a sidecar (`weft-proxy capture`),
//! routed by where the application sent them.
//!
//! Outbound (15001): the connection's original destination (SO_ORIGINAL_DST) is looked up in
//! the listener's [`CaptureTable`], the services by virtual IP and port, as Envoy's
//! virtualOutbound listener with Istio's per-port filter chains does:
//! - an HTTP service's connection is served as HTTP by the listener's route configuration; a
//!   Host without a port is routed with the destination's port;
//! - a TCP service's connection goes where the route configuration's CONNECT routes for the
//!   service's `host:port` send it (its VirtualService `tcp` routes, else its cluster);
//! - a port that declares no protocol is sniffed ([`detect`]): HTTP/1.x or the HTTP/2 preface
//!   is served as HTTP, anything else as TCP;
//! - a destination that is no service: HTTP is routed by its Host (the `*` virtual host
//!   applies the outbound traffic policy); a TLS ClientHello by its SNI when the route
//!   configuration knows that name; anything else goes to the passthrough cluster, to the
//!   original destination (ALLOW_ANY), or is closed (REGISTRY_ONLY, BlackHoleCluster).
//!
//! Inbound (15006): an [`OriginalDst`](crate::snapshot::ListenerKind::OriginalDst) listener
//! hands each connection to the listener (bound to no port) whose address is its original
//! destination, which then serves it as if it had accepted it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use weft_xds::proto;
use weft_xds::proto::CapturedProtocol as Protocol;

use crate::config::ConfigError;
use crate::http::ConnContext;
use crate::rbac::Cidr;
use crate::route::{Action, RequestView};
use crate::snapshot::{ListenerKind, ListenerSpec};

/// Where the connection was sent before iptables redirected it here; None when it was not
/// redirected (sent to this listener's own address, or no NAT entry for it).
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let socket = socket2::SockRef::from(stream);
    let found = match local {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    };
    let dst = found.ok()?.as_socket()?;
    (dst != local).then_some(dst)
}

/// The listener, bound to no port, that serves connections to `dst`: the one at exactly
/// `dst`, else one at the unspecified address with `dst`'s port.
pub fn handoff(listeners: &[ListenerSpec], dst: SocketAddr) -> Option<&ListenerSpec> {
    let dst = SocketAddr::new(canonical(dst.ip()), dst.port());
    let handed = || {
        listeners
            .iter()
            .filter(|l| !l.bind_to_port && !matches!(l.kind, ListenerKind::OriginalDst { .. }))
    };
    handed().find(|l| l.address == dst).or_else(|| {
        handed().find(|l| l.address.ip().is_unspecified() && l.address.port() == dst.port())
    })
}

/// Serves a connection the outbound listener `cx` took by capture, sent by the application
/// to `dst`.
pub async fn outbound(
    mut cx: ConnContext,
    table: Arc<CaptureTable>,
    stream: TcpStream,
    dst: SocketAddr,
) {
    let service = table.lookup(dst).cloned();
    let sniffed = match service.as_ref().map(|s| s.protocol) {
        Some(Protocol::Http) => Sniffed::Http,
        Some(Protocol::Tcp) => Sniffed::Tcp,
        _ => detect(&stream, table.detection_timeout).await,
    };
    tracing::debug!(%dst, service = service.as_ref().map(|s| &*s.authority), ?sniffed, "captured");
    // The connection is served as if it had been accepted at its original destination, as
    // Envoy's use_original_dst hands it to that address's listener.
    cx.local = dst;
    cx.original_dst = Some(dst);
    match sniffed {
        Sniffed::Http => {
            let max_header_bytes = cx.max_header_bytes;
            let cx = Arc::new(cx);
            let conn = crate::serve::http_conn(cx.clone(), TokioIo::new(stream), max_header_bytes);
            crate::serve::run_http(cx, conn).await;
        }
        Sniffed::Tls | Sniffed::Tcp => {
            let drain = cx.drain.clone();
            drain
                .tunnel(tcp(cx, table, service, stream, dst, sniffed))
                .await;
        }
    }
}

/// A captured connection that is not HTTP: to the cluster the route configuration's CONNECT
/// routes give its service's authority (a TLS ClientHello's SNI when it was sent to no
/// service; else its address, which only the `*` virtual host, the outbound traffic policy,
/// matches).
async fn tcp(
    cx: ConnContext,
    table: Arc<CaptureTable>,
    service: Option<Arc<CapturedService>>,
    mut stream: TcpStream,
    dst: SocketAddr,
    sniffed: Sniffed,
) {
    let mut first = Vec::new();
    let mut sni = None;
    if sniffed == Sniffed::Tls && service.is_none() {
        let hello = tokio::time::timeout(
            crate::tunnel::CLIENT_HELLO_TIMEOUT,
            crate::tls::peek_client_hello(&mut stream),
        )
        .await;
        match hello {
            Ok(Ok((seen, name))) => {
                first = seen;
                sni = name;
            }
            Ok(Err(e)) => {
                tracing::debug!(%dst, "captured TLS: not a ClientHello: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%dst, "captured TLS: no ClientHello in time");
                return;
            }
        }
    }
    let authority = match (&service, &sni) {
        (Some(s), _) => s.authority.to_string(),
        (None, Some(name)) => format!("{name}:{}", dst.port()),
        (None, None) => dst.to_string(),
    };
    let snapshot = cx.shared.snapshot.load_full();
    let cluster = snapshot
        .routes
        .get(&cx.route_config)
        .and_then(|table| {
            let headers = http::HeaderMap::new();
            let view = RequestView {
                method: &http::Method::CONNECT,
                scheme: "http",
                authority: &authority,
                path_and_query: "",
                headers: &headers,
                port: dst.port(),
                source_labels: &snapshot.node.labels,
            };
            match table.route(&view)?.action() {
                Action::Forward(f) => Some(f.pick(fastrand::u32(..)).cluster.clone()),
                // The outbound traffic policy's REGISTRY_ONLY answer: a black hole.
                _ => None,
            }
        })
        .or_else(|| table.passthrough.clone());
    let Some(cluster) = cluster else {
        cx.shared
            .stats
            .local_reply(crate::reply::Flag::NoRoute.code());
        tracing::debug!(%dst, %authority, "captured connection to no allowed destination: closed");
        return;
    };
    crate::tunnel::proxy_captured(
        cx.shared.clone(),
        &cluster,
        stream,
        cx.peer,
        dst,
        &first,
        &cx.reporting,
        cx.access_log.as_ref(),
    )
    .await;
}

/// The services a captured outbound connection may be for, by virtual IP and port.
#[derive(Debug)]
pub struct CaptureTable {
    exact: HashMap<SocketAddr, Arc<CapturedService>>,
    /// CIDR blocks (ServiceEntry addresses), the longest prefix first.
    blocks: Vec<(Cidr, u16, Arc<CapturedService>)>,
    /// ALLOW_ANY's passthrough cluster; None: REGISTRY_ONLY.
    pub passthrough: Option<Arc<str>>,
    /// How long to wait for a client's first bytes before taking it for TCP; None: as long
    /// as it takes.
    pub detection_timeout: Option<Duration>,
}

#[derive(Debug)]
pub struct CapturedService {
    /// `host:port`: the route configuration's virtual host for the service.
    pub authority: Box<str>,
    pub protocol: Protocol,
}

impl CaptureTable {
    /// Builds the table of an HTTP listener's `capture`; errors name `field`'s elements.
    pub fn build(
        capture: &proto::OutboundCapture,
        resource: &str,
        field: &str,
    ) -> Result<CaptureTable, ConfigError> {
        let mut exact = HashMap::new();
        let mut blocks = Vec::new();
        for (i, s) in capture.services.iter().enumerate() {
            let at = |f: &str| format!("{field}.services[{i}].{f}");
            let port = u16::try_from(s.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    ConfigError::new(resource, at("port"), format!("{} is not a port", s.port))
                })?;
            let protocol = Protocol::try_from(s.protocol).map_err(|_| {
                ConfigError::new(
                    resource,
                    at("protocol"),
                    format!("{} is not a captured protocol", s.protocol),
                )
            })?;
            if s.authority.is_empty() {
                return Err(ConfigError::new(resource, at("authority"), "required"));
            }
            let service = Arc::new(CapturedService {
                authority: s.authority.as_str().into(),
                protocol,
            });
            for (j, a) in s.addresses.iter().enumerate() {
                let cidr = Cidr::parse(a).map_err(|why| {
                    ConfigError::new(resource, format!("{}[{j}]", at("addresses")), why)
                })?;
                if cidr.is_host() {
                    // The first service to claim an address and port keeps it.
                    exact
                        .entry(SocketAddr::new(cidr.net(), port))
                        .or_insert_with(|| service.clone());
                } else {
                    blocks.push((cidr, port, service.clone()));
                }
            }
        }
        blocks.sort_by_key(|(cidr, _, _)| std::cmp::Reverse(cidr.bits()));
        let detection_timeout = capture
            .protocol_detection_timeout
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|d| !d.is_zero());
        Ok(CaptureTable {
            exact,
            blocks,
            passthrough: (!capture.passthrough_cluster.is_empty())
                .then(|| capture.passthrough_cluster.as_str().into()),
            detection_timeout,
        })
    }

    /// The service at `dst`: its exact virtual IP, else the narrowest block holding it.
    pub fn lookup(&self, dst: SocketAddr) -> Option<&Arc<CapturedService>> {
        let dst = SocketAddr::new(canonical(dst.ip()), dst.port());
        self.exact.get(&dst).or_else(|| {
            self.blocks
                .iter()
                .find(|(cidr, port, _)| *port == dst.port() && cidr.contains(dst.ip()))
                .map(|(_, _, s)| s)
        })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// What a connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Http,
    /// A TLS ClientHello.
    Tls,
    /// Anything else, or nothing before the detection timeout.
    Tcp,
}

/// HTTP/1.x methods Envoy's http_inspector knows, followed by a space.
const HTTP1_METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
/// The HTTP/2 connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the client's first bytes (they stay in the socket) until they tell the
/// protocol, the client stops sending, or `timeout` passes (then TCP, as Envoy's inspectors
/// give up with `continue_on_listener_filters_timeout`).
pub async fn detect(stream: &TcpStream, timeout: Option<Duration>) -> Sniffed {
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(n) => n,
                Err(_) => return Sniffed::Tcp,
            };
            if n == 0 {
                return Sniffed::Tcp;
            }
            // Every pattern fits the buffer, so a full one is always decided.
            if let Some(s) = classify(&buf[..n]) {
                return s;
            }
            // A prefix of an HTTP method or preface: the rest is on its way.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, sniff).await.unwrap_or(Sniffed::Tcp),
        None => sniff.await,
    }
}

/// The protocol `bytes` (a prefix of what the client sent) show, or None while they could
/// still be either.
pub fn classify(bytes: &[u8]) -> Option<Sniffed> {
    if bytes.is_empty() {
        return None;
    }
    if bytes[0] == 0x16 {
        return Some(Sniffed::Tls);
    }
    let could_be = |pattern: &[u8]| {
        let n = bytes.len().min(pattern.len());
        bytes[..n] == pattern[..n]
    };
    let mut undecided = false;
    for pattern in HTTP1_METHODS.iter().copied().chain([H2_PREFACE]) {
        if could_be(pattern) {
            if bytes.len() >= pattern.len() {
                return Some(Sniffed::Http);
            }
            undecided = true;
        }
    }
    (!undecided).then_some(Sniffed::Tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_http_tls_and_tcp_apart() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Sniffed::Http));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Sniffed::Http));
        assert_eq!(classify(H2_PREFACE), Some(Sniffed::Http));
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Sniffed::Tls));
        // Redis' inline PING and a MySQL-ish binary greeting are TCP.
        assert_eq!(classify(b"PING\r\n"), Some(Sniffed::Tcp));
        assert_eq!(classify(&[0x2a, 0x00, 0x01]), Some(Sniffed::Tcp));
        // Still open: a prefix of a method (or of the HTTP/2 preface).
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b""), None);
        // A method without its space is not HTTP.
        assert_eq!(classify(b"GETX"), Some(Sniffed::Tcp));
    }

    fn table(services: Vec<proto::CapturedService>, passthrough: &str) -> CaptureTable {
        let capture = proto::OutboundCapture {
            services,
            passthrough_cluster: passthrough.into(),
            protocol_detection_timeout: None,
        };
        CaptureTable::build(&capture, "listener \"outbound\"", "http.capture").unwrap()
    }

    fn service(
        addresses: &[&str],
        port: u32,
        authority: &str,
        p: Protocol,
    ) -> proto::CapturedService {
        proto::CapturedService {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            port,
            authority: authority.into(),
            protocol: p as i32,
        }
    }

    #[test]
    fn destinations_find_their_service_by_virtual_ip_port_and_block() {
        let t = table(
            vec![
                service(
                    &["240.240.0.5"],
                    9080,
                    "reviews.default.svc.cluster.local:9080",
                    Protocol::Http,
                ),
                service(
                    &["240.240.0.5"],
                    6379,
                    "redis.default.svc.cluster.local:6379",
                    Protocol::Tcp,
                ),
                service(
                    &["192.0.2.0/24"],
                    443,
                    "api.example.com:443",
                    Protocol::Detect,
                ),
                service(
                    &["192.0.2.128/25"],
                    443,
                    "narrow.example.com:443",
                    Protocol::Detect,
                ),
            ],
            "PassthroughCluster",
        );
        let find = |dst: &str| t.lookup(dst.parse().unwrap()).map(|s| &*s.authority);
        assert_eq!(
            find("240.240.0.5:9080"),
            Some("reviews.default.svc.cluster.local:9080")
        );
        assert_eq!(
            find("240.240.0.5:6379"),
            Some("redis.default.svc.cluster.local:6379")
        );
        assert_eq!(
            find("[::ffff:240.240.0.5]:9080"),
            Some("reviews.default.svc.cluster.local:9080")
        );
        assert_eq!(find("240.240.0.5:80"), None);
        assert_eq!(find("192.0.2.7:443"), Some("api.example.com:443"));
        assert_eq!(find("192.0.2.200:443"), Some("narrow.example.com:443"));
        assert_eq!(find("192.0.3.7:443"), None);
        assert_eq!(t.passthrough.as_deref(), Some("PassthroughCluster"));
        assert!(table(vec![], "").passthrough.is_none());
    }

    #[test]
    fn a_bad_table_is_refused_with_the_field_named() {
        let bad = |s: proto::CapturedService| {
            let capture = proto::OutboundCapture {
                services: vec![s],
                ..Default::default()
            };
            CaptureTable::build(&capture, "listener \"outbound\"", "http.capture")
                .unwrap_err()
                .to_string()
        };
        let e = bad(service(&["240.240.0.300"], 80, "a:80", Protocol::Http));
        assert!(e.contains("http.capture.services[0].addresses[0]"), "{e}");
        let e = bad(service(&["240.240.0.3"], 70000, "a:80", Protocol::Http));
        assert!(e.contains("services[0].port"), "{e}");
        let e = bad(service(&["240.240.0.3"], 80, "", Protocol::Http));
        assert!(e.contains("services[0].authority"), "{e}");
    }

    #[test]
    fn a_redirected_inbound_connection_goes_to_its_ports_listener() {
        let yaml = r#"
listeners:
- {name: "inbound|9080", address: "10.0.0.1:9080", bindToPort: false, tcp: {cluster: c}}
- {name: any, address: "0.0.0.0:9090", bindToPort: false, tcp: {cluster: c}}
- {name: bound, address: "10.0.0.1:7070", tcp: {cluster: c}}
- {name: virtualInbound, address: "0.0.0.0:15006", originalDst: {}}
clusters:
- {name: c, endpoints: [{address: "127.0.0.1:1"}]}
"#;
        let bootstrap: proto::Bootstrap = yaml_serde::from_str(yaml).expect("bootstrap");
        let snapshot =
            crate::snapshot::Snapshot::build(bootstrap, None, &crate::stats::Stats::default())
                .expect("builds");
        let to = |dst: &str| handoff(&snapshot.listeners, dst.parse().unwrap()).map(|l| &*l.name);
        assert_eq!(to("10.0.0.1:9080"), Some("inbound|9080"));
        assert_eq!(to("[::ffff:10.0.0.1]:9080"), Some("inbound|9080"));
        assert_eq!(
            to("10.0.0.2:9090"),
            Some("any"),
            "the unspecified address takes any"
        );
        assert_eq!(to("10.0.0.2:9080"), None, "another address, no listener");
        // A bound listener accepts its own connections; the capture listener never hands
        // one to itself.
        assert_eq!(to("10.0.0.1:7070"), None);
        assert_eq!(to("10.0.0.1:15006"), None);
    }
}
