//! Where the ingress gateway can be reached: its listeners, each named after the Gateway port
//! it serves (`<ip>_<port>`) and bound at the address the gateway listens on (the Service's
//! target port for that port, see the control plane's gateway translation).

use weft_control::server::MeshSource;
use weft_xds::proto;

use super::plan::{GATEWAY_NAME, GATEWAY_NAMESPACE};

/// [`reachable`] for the ingress gateway as the control plane configures it now.
pub fn reachable_now(source: &MeshSource) -> Vec<String> {
    source
        .config_of(&format!("{GATEWAY_NAME}.{GATEWAY_NAMESPACE}"))
        .map(|(node, resources)| reachable(&resources.bootstrap(&node)))
        .unwrap_or_default()
}

/// One Gateway port and where it is reachable: `port 80 (HTTP): http://127.0.0.1:8080`.
pub fn reachable(bootstrap: &proto::Bootstrap) -> Vec<String> {
    let mut out: Vec<(u32, String)> = bootstrap
        .listeners
        .iter()
        .filter_map(|l| {
            let port: u32 = l.name.rsplit_once('_')?.1.parse().ok()?;
            let (what, scheme) = match l.protocol.as_ref()? {
                proto::listener::Protocol::Http(h) if h.tls.is_some() => ("HTTPS", "https"),
                proto::listener::Protocol::Http(_) => ("HTTP", "http"),
                proto::listener::Protocol::TlsPassthrough(_) => ("TLS passthrough", "tls"),
                proto::listener::Protocol::Tcp(_) => ("TCP", "tcp"),
                proto::listener::Protocol::OriginalDst(_) => return None,
                proto::listener::Protocol::Dns(_) => ("DNS", "dns"),
            };
            Some((
                port,
                format!("port {port} ({what}): {scheme}://{}", l.address),
            ))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, line)| line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gateway_port_says_where_it_listens() {
        let b: proto::Bootstrap = yaml_serde::from_str(
            r#"
listeners:
- {name: 127.0.0.1_80, address: "127.0.0.1:8080", http: {routeConfig: http.80}}
- {name: 127.0.0.1_443, address: "127.0.0.1:8443", http: {routeConfig: https.443, tls: {certificates: [{certFile: c, keyFile: k}]}}}
- {name: 127.0.0.1_9000, address: "127.0.0.1:9000", tcp: {cluster: c}}
"#,
        )
        .expect("bootstrap");
        assert_eq!(
            reachable(&b),
            [
                "port 80 (HTTP): http://127.0.0.1:8080",
                "port 443 (HTTPS): https://127.0.0.1:8443",
                "port 9000 (TCP): tcp://127.0.0.1:9000",
            ]
        );
    }
}
