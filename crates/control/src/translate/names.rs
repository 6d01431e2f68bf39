//! Resource names, in Istio's scheme so that `istioctl`-trained eyes read them:
//! `outbound|9080|v1|reviews.default.svc.cluster.local`, `inbound|9080||`.

/// Traffic sent to a cluster whose host is outside the registry (ALLOW_ANY).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Where REGISTRY_ONLY sends unknown hosts (a direct 502 names it).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// The sidecar's outbound listener and its route configuration.
pub const OUTBOUND: &str = "outbound";
/// The sidecar's outbound (explicit proxy) port.
pub const OUTBOUND_PORT: u16 = 15001;

/// Which way a cluster sends traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// `direction|port|subset|host` (Istio's `BuildSubsetKey`).
pub fn cluster_name(direction: Direction, port: u32, subset: &str, host: &str) -> String {
    format!("{}|{port}|{subset}|{host}", direction.as_str())
}

/// `outbound|port|subset|host`.
pub fn outbound_cluster(port: u32, subset: &str, host: &str) -> String {
    cluster_name(Direction::Outbound, port, subset, host)
}

/// `inbound|port||`: the application behind a sidecar.
pub fn inbound_cluster(port: u32) -> String {
    cluster_name(Direction::Inbound, port, "", "")
}

/// `inbound|port`: a sidecar's inbound listener and its route configuration.
pub fn inbound_listener(port: u32) -> String {
    format!("inbound|{port}")
}

/// The parts of a cluster name: direction, port, subset, host (Istio's `ParseSubsetKey`).
pub fn parse_cluster_name(name: &str) -> Option<(Direction, u32, &str, &str)> {
    let mut parts = name.splitn(4, '|');
    let direction = match parts.next()? {
        "outbound" => Direction::Outbound,
        "inbound" => Direction::Inbound,
        _ => return None,
    };
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some((direction, port, subset, host))
}

/// `host:port`: a virtual host's name.
pub fn virtual_host(host: &str, port: u32) -> String {
    format!("{host}:{port}")
}

/// `http.PORT`: a gateway's route configuration for a port.
pub fn gateway_routes(port: u32) -> String {
    format!("http.{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_istios() {
        let host = "reviews.default.svc.cluster.local";
        assert_eq!(
            outbound_cluster(9080, "v1", host),
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        );
        assert_eq!(
            outbound_cluster(9080, "", host),
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(inbound_cluster(9080), "inbound|9080||");
        assert_eq!(inbound_listener(9080), "inbound|9080");
        assert_eq!(
            parse_cluster_name("outbound|9080|v1|reviews.default.svc.cluster.local"),
            Some((Direction::Outbound, 9080, "v1", host))
        );
        assert_eq!(
            parse_cluster_name("inbound|9080||"),
            Some((Direction::Inbound, 9080, "", ""))
        );
        for bad in [
            "",
            "outbound",
            "outbound|x||h",
            "sideways|1||h",
            "outbound|1|",
        ] {
            assert_eq!(parse_cluster_name(bad), None, "{bad:?}");
        }
    }
}
