//! Findings about services and workloads: port naming, labels, selectors.

use std::collections::BTreeMap;

use super::mesh::Mesh;
use super::{BUILTIN_GATEWAY_LABELS, finding};
use crate::diag::{Diagnostic, Severity, code};
use crate::kube::service::{IntOrString, ServicePort};
use crate::resource::{Resource, Spec};

pub fn check(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    gateway_selectors(mesh, out);
    gateway_secrets(mesh, out);
    port_protocols(mesh, out);
    app_version_labels(mesh, out);
    ports_selected_twice(mesh, out);
    runnable_workloads(mesh, out);
}

/// A Workload `weft up` could not start on this machine: a command found neither as a path
/// nor in `PATH` (`weft` itself always runs), or a `workingDir` that is no directory. A
/// warning, since the machine that runs the mesh may differ. `workingDir` is relative to the
/// directory of the Workload's file (`weft up DIR` reads DIR's top-level files).
fn runnable_workloads(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    for r in mesh.resources {
        let Spec::Workload(w) = &r.spec else { continue };
        let base = r
            .origin
            .as_ref()
            .and_then(|o| o.source.path.parent())
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let dir = w.working_dir.as_ref().map(|d| base.join(d));
        if let Some(d) = &dir
            && !d.is_dir()
        {
            out.push(finding(
                r,
                "spec.workingDir",
                Severity::Warning,
                code::WORKLOAD_NOT_RUNNABLE,
                format!(
                    "{} is not a directory (workingDir is relative to the directory of this file)",
                    d.display()
                ),
            ));
        }
        let Some(program) = w.command.first() else {
            continue;
        };
        if program == "weft" || found_program(program, dir.as_deref().unwrap_or(&base)) {
            continue;
        }
        out.push(finding(
            r,
            "spec.command[0]",
            Severity::Warning,
            code::WORKLOAD_NOT_RUNNABLE,
            format!(
                "{program:?} is found neither as a path nor in PATH on this machine \
                 (`weft ...` runs weft itself: the demo apps are `weft example <app>`)"
            ),
        ));
    }
}

/// Whether `program` can be started: a path (relative to `cwd`, as a child started there
/// sees it) that exists, or a name found in one of `PATH`'s directories.
fn found_program(program: &str, cwd: &std::path::Path) -> bool {
    if program.contains('/') {
        return cwd.join(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Istio's protocols, as a Service port name prefix (`http-web`) or `appProtocol` names them.
/// <https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/>
const PROTOCOLS: &[&str] = &[
    "http", "http2", "https", "grpc", "grpc-web", "tcp", "tls", "mongo", "mysql", "redis", "udp",
];

/// The protocol a Service port declares, from `appProtocol` or the name prefix.
pub fn port_protocol(port: &ServicePort) -> Option<String> {
    if let Some(app) = port.app_protocol.as_deref() {
        let app = app.to_ascii_lowercase();
        if app == "kubernetes.io/h2c" {
            return Some("http2".into());
        }
        if PROTOCOLS.contains(&app.as_str()) {
            return Some(app);
        }
    }
    let name = port.name.as_deref()?.to_ascii_lowercase();
    // `grpc-web` is a protocol of its own, not `grpc` with a suffix.
    if name == "grpc-web" || name.starts_with("grpc-web-") {
        return Some("grpc-web".into());
    }
    let prefix = name.split('-').next().unwrap_or("");
    PROTOCOLS.contains(&prefix).then(|| prefix.to_owned())
}

fn gateway_selectors(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    for r in mesh.resources {
        let Spec::Gateway(gw) = &r.spec else { continue };
        if gw.selector.is_empty() {
            continue;
        }
        let builtin = gw.selector.iter().all(|(k, v)| {
            BUILTIN_GATEWAY_LABELS
                .iter()
                .any(|(bk, bv)| bk == k && bv == v)
        });
        // Istio matches gateway selectors against workloads in every namespace.
        let found = builtin
            || mesh
                .workloads
                .iter()
                .any(|w| crate::common::selector_matches(&gw.selector, w.labels));
        if !found {
            let sel = gw
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            out.push(finding(
                r,
                "spec.selector",
                Severity::Warning,
                code::GATEWAY_SELECTOR_NO_WORKLOAD,
                format!("selector {sel} matches no workload in this configuration (the gateway may run elsewhere)"),
            ));
        }
    }
}

/// The namespaces the gateway workloads a selector picks run in (Istio reads a Gateway's
/// credentials there, not in the Gateway's own namespace): the namespaces of the matching
/// workloads, and `istio-system` for the gateways every weft mesh runs.
fn gateway_namespaces<'m>(
    mesh: &Mesh<'m>,
    selector: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeSet<&'m str> {
    let mut namespaces: std::collections::BTreeSet<&str> = mesh
        .workloads
        .iter()
        .filter(|w| crate::common::selector_matches(selector, w.labels))
        .map(|w| w.resource.namespace())
        .collect();
    let builtin = !selector.is_empty()
        && selector.iter().all(|(k, v)| {
            BUILTIN_GATEWAY_LABELS
                .iter()
                .any(|(bk, bv)| bk == k && bv == v)
        });
    if builtin {
        namespaces.insert(BUILTIN_GATEWAY_NAMESPACE);
    }
    namespaces
}

/// Where the built-in gateways run (Istio's default profile installs them there).
const BUILTIN_GATEWAY_NAMESPACE: &str = "istio-system";

/// A `credentialName` (or one of `credentialNames`) with no Secret of that name in the
/// namespace of a gateway the Gateway selects (Istio's IST0161 InvalidGatewayCredential). The
/// control plane leaves such a server out, so its hosts are not served on that port. A
/// warning: the Secret may be applied apart from this configuration. `file://` names are
/// files, not Secrets; a selector matching no workload is WA0106's finding.
fn gateway_secrets(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    let secrets: std::collections::HashSet<(&str, &str)> = mesh
        .resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::Secret(_)))
        .map(|r| (r.namespace(), r.name()))
        .collect();
    for r in mesh.resources {
        let Spec::Gateway(gw) = &r.spec else { continue };
        let namespaces = gateway_namespaces(mesh, &gw.selector);
        for (i, server) in gw.servers.iter().enumerate() {
            let Some(tls) = &server.tls else { continue };
            let mut names: Vec<(String, &str)> = Vec::new();
            if !tls.credential_name.is_empty() {
                names.push((
                    format!("spec.servers[{i}].tls.credentialName"),
                    &tls.credential_name,
                ));
            }
            for (j, n) in tls.credential_names.iter().enumerate() {
                names.push((format!("spec.servers[{i}].tls.credentialNames[{j}]"), n));
            }
            for (field, name) in names {
                if name.starts_with("file://") {
                    continue;
                }
                for ns in &namespaces {
                    if secrets.contains(&(*ns, name)) {
                        continue;
                    }
                    out.push(finding(
                        r,
                        &field,
                        Severity::Warning,
                        code::GATEWAY_SECRET_NOT_FOUND,
                        format!(
                            "Secret {ns}/{name} not found: credentialName is read from the \
                             namespace of the gateway the selector picks ({ns}); until the \
                             Secret exists this server is left out (not served)"
                        ),
                    ));
                }
            }
        }
    }
}

/// Namespaces of the cluster's own system Services, which are not in the mesh (Istio's
/// analysis leaves them out too).
const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// Values of `gateway.istio.io/managed` for the Services Istio deploys itself (gateways and
/// waypoints of the Gateway API): their ports are Istio's, not the user's.
const ISTIO_MANAGED: &[&str] = &[
    "istio.io-gateway-controller",
    "istio.io-mesh-controller",
    "istio.io-eastwest-controller",
];

/// Whether a Service's port names are left alone: system namespaces, Istio's own control
/// plane (labelled `istio` or `release: istio`) and Services Istio manages.
fn port_names_exempt(r: &Resource) -> bool {
    let labels = &r.metadata.labels;
    SYSTEM_NAMESPACES.contains(&r.namespace())
        || labels.contains_key("istio")
        || labels.get("release").is_some_and(|v| v == "istio")
        || labels
            .get("gateway.istio.io/managed")
            .is_some_and(|v| ISTIO_MANAGED.contains(&v.as_str()))
}

fn port_protocols(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    for r in mesh.resources {
        let Spec::Service(svc) = &r.spec else {
            continue;
        };
        if port_names_exempt(r) {
            continue;
        }
        let external_name = svc
            .spec
            .service_type
            .as_deref()
            .is_some_and(|t| t == "ExternalName");
        for (i, port) in svc.spec.ports.iter().enumerate() {
            if external_name {
                external_name_port(r, i, port, out);
                continue;
            }
            if port
                .protocol
                .as_deref()
                .is_some_and(|p| !p.eq_ignore_ascii_case("TCP"))
            {
                continue; // UDP/SCTP ports are not proxied.
            }
            if port_protocol(port).is_none() {
                let name = port.name.as_deref().unwrap_or("");
                out.push(finding(
                    r,
                    &format!("spec.ports[{i}]"),
                    Severity::Warning,
                    code::PORT_PROTOCOL_UNKNOWN,
                    format!(
                        "port {} ({}) does not name its protocol: name it `<protocol>[-<suffix>]` (http, http2, https, grpc, grpc-web, tcp, tls, mongo, mysql, redis) or set appProtocol; weft detects HTTP on it outbound but treats it as TCP inbound, where metrics and authorization then see TCP",
                        port.port,
                        if name.is_empty() { "unnamed".to_owned() } else { format!("name {name:?}") }
                    ),
                ));
            }
        }
    }
}

/// An ExternalName Service's port must name a protocol other than plain `tcp`: the proxy
/// forwards such a port by destination address, which an ExternalName Service does not have,
/// so its TCP traffic (and whatever no route matches) is not forwarded as meant (Istio's
/// IST0150).
fn external_name_port(r: &Resource, i: usize, port: &ServicePort, out: &mut Vec<Diagnostic>) {
    let proto = port_protocol(port);
    let plain_tcp = port.name.as_deref() == Some("tcp");
    if proto.is_some() && !plain_tcp {
        return;
    }
    let name = port.name.as_deref().unwrap_or("");
    out.push(finding(
        r,
        &format!("spec.ports[{i}]"),
        Severity::Warning,
        code::EXTERNAL_NAME_PORT_NAME,
        format!(
            "port {} ({}) of an ExternalName Service is served as TCP, which the proxy forwards by destination address, and an ExternalName Service has none: name the port for its protocol (`http-`, `https-`, `tls-`, ...) so that it is forwarded by host",
            port.port,
            if name.is_empty() { "unnamed".to_owned() } else { format!("name {name:?}") }
        ),
    ));
}

fn app_version_labels(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    for w in &mesh.workloads {
        if !matches!(w.resource.spec, Spec::Deployment(_) | Spec::Workload(_)) {
            continue;
        }
        let missing: Vec<&str> = ["app", "version"]
            .into_iter()
            .filter(|l| !w.labels.contains_key(*l))
            .collect();
        if !missing.is_empty() {
            out.push(finding(
                w.resource,
                w.labels_path,
                Severity::Warning,
                code::MISSING_APP_VERSION_LABELS,
                format!(
                    "missing label(s) {}: metrics, tracing and subsets identify workloads by `app` and `version`",
                    missing.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(" and ")
                ),
            ));
        }
    }
}

/// A workload port that two Services route to, reported on the workload (as Istio's IST0116
/// and IST0137 are). With different protocols the sidecar cannot serve both (error, WA0109).
/// With the same protocol it works, and per-version Services beside the main one are a
/// common pattern (Istio's own samples use it): info. Different Service port numbers for the
/// one workload port are a warning of their own (WA0137): Istio keys inbound routing by
/// Service port. Workloads out of the mesh (`sidecar.istio.io/inject: "false"`) have no
/// sidecar to confuse and are skipped, as in Istio.
fn ports_selected_twice(mesh: &Mesh<'_>, out: &mut Vec<Diagnostic>) {
    struct Use<'a> {
        service: &'a Resource,
        port_index: usize,
        number: u32,
        proto: Option<String>,
    }
    // (workload index, target port) -> the Service ports routing to it.
    let mut targets: BTreeMap<(usize, u32), Vec<Use<'_>>> = BTreeMap::new();
    for r in mesh.resources {
        let Spec::Service(svc) = &r.spec else {
            continue;
        };
        for wi in mesh.selected(r.namespace(), &svc.spec.selector) {
            let w = &mesh.workloads[wi];
            if !w.injected {
                continue;
            }
            for (pi, port) in svc.spec.ports.iter().enumerate() {
                let target = match &port.target_port {
                    None => port.port,
                    Some(IntOrString::Int(n)) => *n,
                    Some(IntOrString::String(name)) => {
                        match w.ports.iter().find(|(n, _)| *n == Some(name.as_str())) {
                            Some((_, p)) => *p,
                            None => continue,
                        }
                    }
                };
                let uses = targets.entry((wi, target)).or_default();
                // The same Service in two files (WA0006) is one Service.
                if uses.iter().any(|u| u.service.reference() == r.reference()) {
                    continue;
                }
                uses.push(Use {
                    service: r,
                    port_index: pi,
                    number: port.port,
                    proto: port_protocol(port),
                });
            }
        }
    }
    // A workload defined in several files (WA0006) is one workload: report it once.
    let mut reported: std::collections::BTreeSet<(String, u32)> = Default::default();
    for ((wi, target), uses) in targets {
        if uses.len() < 2 {
            continue;
        }
        let w = &mesh.workloads[wi];
        if !reported.insert((w.resource.reference().to_string(), target)) {
            continue;
        }
        let list = uses
            .iter()
            .map(|u| {
                format!(
                    "Service {}/{} port {} (spec.ports[{}], {})",
                    u.service.namespace(),
                    u.service.name(),
                    u.number,
                    u.port_index,
                    u.proto.as_deref().unwrap_or("tcp")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let conflict = uses.iter().any(|u| u.proto != uses[0].proto);
        let (severity, why) = if conflict {
            (
                Severity::Error,
                "with different protocols; the sidecar cannot serve both",
            )
        } else {
            (Severity::Info, "with the same protocol")
        };
        out.push(finding(
            w.resource,
            w.labels_path,
            severity,
            code::PORT_SELECTED_BY_TWO_SERVICES,
            format!("port {target} is the target of {list}, {why}"),
        ));
        if uses.iter().any(|u| u.number != uses[0].number) {
            out.push(finding(
                w.resource,
                w.labels_path,
                Severity::Warning,
                code::DEPLOYMENT_SERVICES,
                format!(
                    "port {target} is the target of different Service ports ({list}); the sidecar routes inbound traffic by Service port, so the two Services' settings for it may clash: use one port number"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::diag::code;

    #[test]
    fn workloads_that_cannot_start_here_are_warned_of() {
        let dir = std::env::temp_dir().join(format!("weft-runnable-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("app")).expect("mkdir");
        let yaml = |command: &str, working_dir: &str| {
            format!(
                "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
                 metadata: {{name: w, labels: {{app: w, version: v1}}}}\n\
                 spec: {{command: {command}, workingDir: {working_dir}}}\n"
            )
        };
        let findings = |command: &str, working_dir: &str| -> Vec<String> {
            let loaded = crate::load_str(dir.join("mesh.yaml"), &yaml(command, working_dir));
            super::super::analyze(&loaded.resources)
                .into_iter()
                .filter(|d| d.code == code::WORKLOAD_NOT_RUNNABLE)
                .map(|d| format!("{}: {}", d.field.unwrap_or_default(), d.message))
                .collect()
        };
        // weft itself, a program in PATH, and a path relative to workingDir all run.
        assert!(findings("[weft, example, reviews]", "app").is_empty());
        assert!(findings("[sh, -c, 'true']", "app").is_empty());
        std::fs::write(dir.join("app/run.sh"), "").expect("write");
        assert!(findings("[./run.sh]", "app").is_empty());
        // workingDir is relative to the file's directory, and must be a directory.
        let missing = findings("[weft, example, reviews]", "nowhere");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].starts_with("spec.workingDir: ") && missing[0].contains("nowhere"),
            "{missing:?}"
        );
        let unknown = findings("[./run.sh]", "nowhere");
        assert_eq!(unknown.len(), 2, "{unknown:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
