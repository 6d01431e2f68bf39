//! A captured sidecar's resources (Istio's interception mode REDIRECT, `weft up --capture`):
//! iptables sends the workload's outbound connections to 15001 and its inbound ones to
//! 15006, and the proxy routes each by its original destination.
//!
//! - Outbound: the `outbound` listener binds 0.0.0.0:15001 and carries a capture table: every
//!   visible service's virtual IPs and ports, with the virtual host (`host:port`) the
//!   outbound route configuration has for it and the port's protocol (undeclared: sniffed).
//!   Destinations that are no service follow the outbound traffic policy.
//! - Inbound: `virtualInbound` binds 0.0.0.0:15006 and hands each connection to the inbound
//!   listener of its destination port; those bind nothing. Inbound clusters connect to the
//!   application at the pod's address from 127.0.0.6 (Istio's InboundPassthroughBindIpv4), which the capture
//!   rules let through, so the proxy's own connections are not captured again. A port with
//!   no inbound listener goes to `InboundPassthroughCluster`, the original destination.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use weft_xds::proto;

use super::Notes;
use super::names::{PASSTHROUGH_CLUSTER, virtual_host};
use super::scope::Scope;
use crate::mesh_config::{MeshConfig, Mode};
use crate::node::ProxyNode;
use crate::view::ConfigView;

/// The captured sidecar's inbound listener (Istio's name).
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
/// Where iptables redirects inbound connections.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// Inbound connections to a port the workload does not declare go where they were sent.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";

/// The source address of the proxy's connections to its application: Istio's
/// InboundPassthroughBindIpv4 / Ipv6.
pub fn inbound_bind(node: &ProxyNode) -> IpAddr {
    match node.ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)),
    }
}

/// The unspecified address of the node's family: captured listeners take what iptables
/// redirects, whichever local address it was sent to.
fn any(node: &ProxyNode) -> IpAddr {
    match node.ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The outbound listener's address under capture.
pub fn outbound_address(node: &ProxyNode, port: u16) -> String {
    SocketAddr::new(any(node), port).to_string()
}

/// The capture table of the sidecar `node`'s outbound listener.
pub fn outbound_capture(
    node: &ProxyNode,
    mesh: &MeshConfig,
    view: &ConfigView,
) -> proto::OutboundCapture {
    // The outbound half reports the scope's notes already.
    let scope = Scope::for_sidecar(node, mesh, view, &mut Notes::default());
    let mut services = Vec::new();
    for svc in &scope.services {
        if svc.addresses.is_empty() {
            continue;
        }
        for port in &svc.ports {
            let protocol = match port.protocol {
                None => proto::CapturedProtocol::Detect,
                Some(_) if port.is_http() => proto::CapturedProtocol::Http,
                Some(_) => proto::CapturedProtocol::Tcp,
            };
            services.push(proto::CapturedService {
                addresses: svc.addresses.clone(),
                port: port.port,
                authority: virtual_host(&svc.hostname, port.port),
                protocol: protocol as i32,
            });
        }
    }
    proto::OutboundCapture {
        services,
        passthrough_cluster: match scope.mode {
            Mode::AllowAny => PASSTHROUGH_CLUSTER.to_owned(),
            Mode::RegistryOnly => String::new(),
        },
        protocol_detection_timeout: None,
    }
}

/// Turns the sidecar's own resources (`listeners[0]` the outbound listener, then its inbound
/// listeners and clusters) into their captured form, and adds `virtualInbound`.
pub fn capture(
    node: &ProxyNode,
    mesh: &MeshConfig,
    view: &ConfigView,
    out: &mut super::ProxyResources,
) {
    let bind = inbound_bind(node).to_string();
    for l in out.listeners.iter_mut() {
        if l.name == super::names::OUTBOUND {
            l.address = outbound_address(node, super::names::OUTBOUND_PORT);
            if let Some(proto::listener::Protocol::Http(h)) = &mut l.protocol {
                h.capture = Some(outbound_capture(node, mesh, view));
            }
        } else if l.name.starts_with("inbound|") {
            l.bind_to_port = Some(false);
        }
    }
    // The application is reached at the pod's address (as Istio does since 1.10), so that
    // one listening on that address alone is reached too.
    for c in out.clusters.iter_mut() {
        if c.name.starts_with("inbound|") {
            c.upstream_bind_address.clone_from(&bind);
            for e in &mut c.endpoints {
                if let Ok(mut at) = e.address.parse::<SocketAddr>() {
                    at.set_ip(node.ip);
                    e.address = at.to_string();
                }
            }
        }
    }
    let mut passthrough = proto::Cluster {
        name: INBOUND_PASSTHROUGH_CLUSTER.to_owned(),
        connect_timeout: mesh.connect_timeout.as_ref().and_then(super::duration),
        upstream_bind_address: bind,
        ..Default::default()
    };
    passthrough.set_discovery(proto::Discovery::OriginalDst);
    out.clusters.push(passthrough);
    out.listeners.push(proto::Listener {
        name: VIRTUAL_INBOUND.to_owned(),
        address: SocketAddr::new(any(node), INBOUND_CAPTURE_PORT).to_string(),
        protocol: Some(proto::listener::Protocol::OriginalDst(
            proto::OriginalDstListener {
                passthrough_cluster: INBOUND_PASSTHROUGH_CLUSTER.to_owned(),
            },
        )),
        ..Default::default()
    });
}
