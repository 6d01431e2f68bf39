//! Golden tests of translation: each directory under `tests/golden/` is a case.
//!
//! - `proxy.yaml` says which extra files to load (`include`, relative to the case directory,
//!   e.g. `examples/bookinfo`), the mesh config, the running workload instances and which
//!   proxies to translate for.
//! - every other `*.yaml` in the directory, except outputs, is input.
//! - `<output>.golden.yaml` is the expected translation for each proxy: listeners, route
//!   configurations, clusters and secrets (private keys redacted) in the proto3 JSON mapping
//!   (what `weft-proxy --config` reads),
//!   the unsupported fields, and the clusters routes name that the proxy has no definition
//!   for (a 503 NC if traffic goes there).
//!
//! With `WEFT_GOLDEN_BOOTSTRAP_DIR=DIR` each output is also written to DIR as a bootstrap file
//! `weft-proxy --config` reads.
//!
//! These outputs are the specification: read them when they change. After an intended change,
//! regenerate with `WEFT_UPDATE_GOLDEN=1 cargo test -p weft-control --test golden` and review
//! the diff.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_api::networking::gateway::Protocol;
use weft_api::{Severity, Spec};
use weft_control::registry::InstancePort;
use weft_control::{
    ConfigView, MeshConfig, ProxyKind, ProxyNode, ProxyResources, WorkloadInstance,
};
use weft_xds::proto;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    include: Vec<PathBuf>,
    #[serde(default)]
    mesh: Option<MeshConfig>,
    #[serde(default)]
    instances: Vec<InstanceSpec>,
    proxies: Vec<ProxySpec>,
    /// What DNS names resolve to (the control plane's resolver, `weft_control::dns`).
    #[serde(default)]
    dns: BTreeMap<String, Vec<IpAddr>>,
    /// Names whose lookup failed, with the reason.
    #[serde(default)]
    dns_errors: BTreeMap<String, String>,
}

/// A workload instance: a replica of a `Workload` resource (`workload:`), or spelt out.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InstanceSpec {
    #[serde(default)]
    workload: Option<String>,
    #[serde(default)]
    replica: u32,
    ip: IpAddr,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    ports: Vec<PortSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSpec {
    name: String,
    port: u32,
    #[serde(default)]
    protocol: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProxySpec {
    /// `sidecar` or `router`.
    kind: String,
    /// The instance's name (`namespace/name` when ambiguous).
    instance: String,
    /// Output file stem: `<output>.golden.yaml`.
    output: String,
    /// iptables captures the workload's traffic (interception mode REDIRECT).
    #[serde(default)]
    capture: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rendered<'a> {
    node: String,
    listeners: &'a [proto::Listener],
    route_configs: &'a [proto::RouteConfiguration],
    clusters: &'a [proto::Cluster],
    /// Private keys redacted, as every dump shows them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<proto::Secret>,
    unsupported: Vec<String>,
    missing_clusters: Vec<String>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn instances(case: &CaseFile, view_resources: &[weft_api::Resource]) -> Vec<WorkloadInstance> {
    case.instances
        .iter()
        .map(|spec| match &spec.workload {
            Some(w) => {
                let ns = spec.namespace.as_deref().unwrap_or("default");
                let r = view_resources
                    .iter()
                    .find(|r| {
                        matches!(r.spec, Spec::Workload(_)) && r.name() == w && r.namespace() == ns
                    })
                    .unwrap_or_else(|| panic!("no Workload {ns}/{w}"));
                WorkloadInstance::from_workload(r, spec.replica, spec.ip).expect("a Workload")
            }
            None => WorkloadInstance {
                name: spec.name.clone(),
                namespace: spec.namespace.clone().unwrap_or_else(|| "default".into()),
                labels: spec.labels.clone(),
                service_account: spec
                    .service_account
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                ip: spec.ip,
                ports: spec
                    .ports
                    .iter()
                    .map(|p| InstancePort {
                        name: p.name.clone(),
                        port: p.port,
                        protocol: Protocol::parse(&p.protocol),
                    })
                    .collect(),
                ready: true,
            },
        })
        .collect()
}

/// Proto map fields (hash maps, in random order): their keys are sorted so the output is
/// stable. Messages keep the proto's field order.
const MAP_FIELDS: &[&str] = &[
    "labels",
    "headers",
    "withoutHeaders",
    "queryParams",
    "set",
    "add",
];

fn sorted(v: yaml_serde::Value, is_map: bool) -> yaml_serde::Value {
    match v {
        yaml_serde::Value::Mapping(m) => {
            let mut entries: Vec<(yaml_serde::Value, yaml_serde::Value)> = m.into_iter().collect();
            if is_map {
                entries.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
            }
            let mut out = yaml_serde::Mapping::new();
            for (k, v) in entries {
                let child_is_map = !is_map && k.as_str().is_some_and(|k| MAP_FIELDS.contains(&k));
                out.insert(k, sorted(v, child_is_map));
            }
            yaml_serde::Value::Mapping(out)
        }
        yaml_serde::Value::Sequence(a) => {
            yaml_serde::Value::Sequence(a.into_iter().map(|v| sorted(v, false)).collect())
        }
        other => other,
    }
}

/// What the proxy would reject, checked here so a golden file is always loadable: unique
/// names, defined route configurations, unique domains, `ip:port` addresses. Returns the
/// clusters routes name without a definition.
fn check(res: &ProxyResources, output: &str) -> Vec<String> {
    let routes: HashSet<&str> = res.route_configs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        routes.len(),
        res.route_configs.len(),
        "{output}: route config defined twice"
    );
    let clusters: HashSet<&str> = res.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        clusters.len(),
        res.clusters.len(),
        "{output}: cluster defined twice"
    );
    let mut addresses = HashSet::new();
    let mut referenced = Vec::new();
    for l in &res.listeners {
        assert!(
            addresses.insert(l.address.as_str()),
            "{output}: {} bound twice",
            l.address
        );
        l.address
            .parse::<SocketAddr>()
            .unwrap_or_else(|_| panic!("{output}: listener {}", l.address));
        match &l.protocol {
            Some(proto::listener::Protocol::Http(h)) => {
                assert!(
                    routes.contains(h.route_config.as_str()),
                    "{output}: {} undefined",
                    h.route_config
                )
            }
            Some(proto::listener::Protocol::Tcp(t)) => referenced.push(t.cluster.clone()),
            Some(proto::listener::Protocol::TlsPassthrough(p)) => {
                referenced.extend(p.routes.iter().map(|r| r.cluster.clone()))
            }
            Some(proto::listener::Protocol::OriginalDst(o)) => {
                referenced.push(o.passthrough_cluster.clone())
            }
            Some(proto::listener::Protocol::Dns(_)) => {}
            None => panic!("{output}: listener {} has no protocol", l.name),
        }
    }
    for rc in &res.route_configs {
        let mut domains = HashSet::new();
        for vh in &rc.virtual_hosts {
            assert!(
                !vh.domains.is_empty(),
                "{output}: {} has no domains",
                vh.name
            );
            for d in &vh.domains {
                assert!(
                    domains.insert(d.to_ascii_lowercase()),
                    "{output}: domain {d} twice in {}",
                    rc.name
                );
            }
            for r in &vh.routes {
                match &r.action {
                    Some(proto::route::Action::Route(a)) => {
                        assert!(!a.clusters.is_empty(), "{output}: route without clusters");
                        referenced.extend(a.clusters.iter().map(|c| c.cluster.clone()));
                    }
                    Some(_) => {}
                    None => panic!("{output}: route without action in {}", vh.name),
                }
            }
        }
    }
    for c in &res.clusters {
        for e in &c.endpoints {
            e.address
                .parse::<SocketAddr>()
                .unwrap_or_else(|_| panic!("{output}: cluster {} endpoint {}", c.name, e.address));
        }
    }
    let mut missing: Vec<String> = referenced
        .into_iter()
        .filter(|c| !clusters.contains(c.as_str()))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

fn run_case(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("proxy.yaml")).expect("proxy.yaml");
    let case: CaseFile =
        yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = case.include.iter().map(|p| dir.join(p)).collect();
    let mut local: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("case dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".yaml") && name != "proxy.yaml" && !name.ends_with(".golden.yaml")
        })
        .collect();
    local.sort();
    files.extend(local);
    let loaded = weft_api::load_paths(&files);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "{}: inputs do not load:\n{}",
        dir.display(),
        errors.join("\n")
    );
    let resources: Vec<weft_api::Resource> = loaded.effective().into_iter().cloned().collect();
    let instances = instances(&case, &resources);
    let mut dns = weft_control::dns::DnsTable::default();
    for (name, ips) in &case.dns {
        dns.insert(name.clone(), Ok(ips.clone()));
    }
    for (name, why) in &case.dns_errors {
        dns.insert(name.clone(), Err(why.clone()));
    }
    let view = ConfigView::new(resources, instances).with_dns(std::sync::Arc::new(dns));
    let mesh = case.mesh.clone().unwrap_or_default();

    let mut failures = Vec::new();
    for p in &case.proxies {
        let kind = match p.kind.as_str() {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Gateway,
            other => panic!("{}: kind {other:?}", dir.display()),
        };
        let (ns, name) = p
            .instance
            .split_once('/')
            .unwrap_or(("", p.instance.as_str()));
        let inst = view
            .registry()
            .instances()
            .iter()
            .find(|i| i.name == name && (ns.is_empty() || i.namespace == ns))
            .unwrap_or_else(|| panic!("{}: no instance {}", dir.display(), p.instance));
        let mut node = ProxyNode::for_instance(kind, inst);
        node.capture = p.capture;
        // The id round-trips, and completing a parsed id from the registry gives the same node.
        let mut parsed = ProxyNode::parse_id(&node.id()).expect("node id parses");
        view.complete_node(&mut parsed);
        // Capture travels beside the id, as the app host does (the instances file).
        parsed.capture = p.capture;
        assert_eq!(parsed, node, "node id round trip");

        let res = weft_control::translate(&node, &mesh, &view);
        let missing_clusters = check(&res, &p.output);
        let mut unsupported: Vec<String> =
            view.unsupported().iter().map(ToString::to_string).collect();
        unsupported.extend(res.unsupported.iter().map(ToString::to_string));
        let rendered = Rendered {
            node: node.id(),
            listeners: &res.listeners,
            route_configs: &res.route_configs,
            clusters: &res.clusters,
            secrets: weft_xds::resource::redacted(&res.bootstrap(&node)).secrets,
            unsupported,
            missing_clusters,
        };
        let value = sorted(yaml_serde::to_value(&rendered).expect("serializes"), false);
        let got = yaml_serde::to_string(&value).expect("yaml");
        // The output reads back as the proxy's config types.
        let json = serde_json::to_value(&rendered).expect("serializes");
        let again: proto::Bootstrap = serde_json::from_value(serde_json::json!({
            "listeners": json["listeners"],
            "routeConfigs": json["routeConfigs"],
            "clusters": json["clusters"],
        }))
        .expect("golden output reads back as a Bootstrap");
        assert_eq!(again.listeners, res.listeners);
        assert_eq!(again.route_configs, res.route_configs);
        assert_eq!(again.clusters, res.clusters);

        // For checking outputs against the proxy itself: write them as bootstrap files.
        if let Some(out) = std::env::var_os("WEFT_GOLDEN_BOOTSTRAP_DIR") {
            let case = dir.file_name().and_then(|n| n.to_str()).unwrap_or("case");
            let file = Path::new(&out).join(format!("{case}.{}.yaml", p.output));
            let bootstrap = yaml_serde::to_string(&res.bootstrap(&node)).expect("yaml");
            std::fs::write(file, bootstrap).expect("write bootstrap");
        }
        let path = dir.join(format!("{}.golden.yaml", p.output));
        if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).expect("write golden");
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failures.push(format!("{} differs", path.display()));
        }
    }
    failures
}

#[test]
fn translation_matches_golden_files() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("proxy.yaml").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "{} cases", dirs.len());
    let failures: Vec<String> = dirs.iter().flat_map(|d| run_case(d)).collect();
    assert!(
        failures.is_empty(),
        "translation changed; see the doc comment to regenerate:\n{}",
        failures.join("\n")
    );
}
