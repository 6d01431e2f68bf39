//! `weft apply`, `weft delete`, `weft get`: kubectl's verbs against the local mesh.
//!
//! Applied resources are files in `<state-dir>/applied/`, one per resource
//! (`<kind>.<namespace>.<name>.yaml`), which the running control plane watches (an apply is
//! live within a second) and `weft up` loads after DIR's files (an applied resource replaces
//! DIR's definition of the same kind, namespace and name, and outlives the mesh).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Deserialize;
use weft_api::Severity;
use weft_control::server::api::{NackInfo, SyncStatus};
use yaml_serde::Value;

use super::state::{self, RunningMesh};
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Files, directories (their top-level YAML files) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    files: Vec<PathBuf>,
    /// The mesh's state directory (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Files, directories (their top-level YAML files) or `-` for stdin: the resources they
    /// name (kind, namespace, name) are removed.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Do not fail for resources that are not applied.
    #[arg(long)]
    ignore_not_found: bool,
    /// The mesh's state directory (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The kind: `virtualservice`, `vs`, `destinationrules`, `gw`, `svc`, `workload`, `all`.
    kind: String,
    /// One resource's name.
    name: Option<String>,
    /// Only this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// `yaml` prints the resources themselves.
    #[arg(short = 'o', long = "output", value_name = "FORMAT")]
    output: Option<String>,
    /// The mesh's state directory (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// A document read from a file, with what identifies it.
struct Doc {
    kind: String,
    namespace: String,
    name: String,
    value: Value,
    /// Where it was read from.
    from: PathBuf,
}

impl Doc {
    fn file_name(&self) -> String {
        format!(
            "{}.{}.{}.yaml",
            self.kind.to_ascii_lowercase(),
            self.namespace,
            self.name
        )
    }

    fn display(&self) -> String {
        format!("{}/{}", self.kind.to_ascii_lowercase(), self.name)
    }
}

/// The inputs of `-f`, read: `(path, text)`.
fn read_inputs(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("stdin: {e}"))?;
            out.push((PathBuf::from("<stdin>"), text));
        } else if p.is_dir() {
            for f in state::top_level_files(p).map_err(|e| format!("{}: {e}", p.display()))? {
                let text =
                    std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                out.push((f, text));
            }
        } else {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            out.push((p.clone(), text));
        }
    }
    Ok(out)
}

/// The documents of a YAML stream, `kind: List` items expanded; documents without kind or name
/// are an error.
fn documents(path: &Path, text: &str) -> Result<Vec<Doc>, String> {
    let mut docs = Vec::new();
    for de in yaml_serde::Deserializer::from_str(text) {
        let value = Value::deserialize(de).map_err(|e| format!("{}: {e}", path.display()))?;
        if value.is_null() {
            continue;
        }
        let items = match (
            value.get("kind").and_then(Value::as_str),
            value.get("items"),
        ) {
            (Some("List"), Some(items)) => items.as_sequence().cloned().unwrap_or_default(),
            _ => vec![value],
        };
        for value in items {
            let kind = value.get("kind").and_then(Value::as_str);
            let meta = value.get("metadata");
            let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
            let (Some(kind), Some(name)) = (kind, name) else {
                return Err(format!(
                    "{}: a document has no kind or metadata.name",
                    path.display()
                ));
            };
            // Names become file names: keep to what Kubernetes allows.
            let namespace = meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            let safe = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            };
            if !safe(kind) || !safe(name) || !safe(namespace) {
                return Err(format!(
                    "{}: {kind}/{name}: names must be letters, digits, '-', '.' or '_'",
                    path.display()
                ));
            }
            docs.push(Doc {
                kind: kind.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                value,
                from: path.to_owned(),
            });
        }
    }
    Ok(docs)
}

pub fn apply(args: &ApplyArgs) -> ExitCode {
    let inputs = match read_inputs(&args.files) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("weft apply: {e}");
            return ExitCode::from(2);
        }
    };
    // Validate everything first: a file with an error applies nothing.
    let mut errors = 0;
    let mut docs = Vec::new();
    for (path, text) in &inputs {
        let loaded = weft_api::load_str(path.clone(), text);
        for d in &loaded.diagnostics {
            if d.severity >= Severity::Warning {
                eprintln!("{d}");
            }
        }
        errors += loaded.error_count();
        match documents(path, text) {
            Ok(d) => docs.extend(d),
            Err(e) => {
                eprintln!("weft apply: {e}");
                errors += 1;
            }
        }
    }
    if errors > 0 {
        eprintln!("weft apply: {errors} error(s); nothing applied");
        return ExitCode::FAILURE;
    }
    let state = state::state_dir(args.state_dir.as_deref());
    let applied = state::applied_dir(&state);
    if let Err(e) = std::fs::create_dir_all(&applied) {
        eprintln!("weft apply: {}: {e}", applied.display());
        return ExitCode::from(2);
    }
    let running = RunningMesh::read(&state);
    // What the proxies had refused before, so that only this apply's refusals count.
    let before = running
        .as_ref()
        .and_then(|m| m.monitoring_address)
        .and_then(|a| crate::proxy_status::fetch(&format!("http://{a}")).ok());
    let mut changed = false;
    for doc in &docs {
        let text = match yaml_serde::to_string(&doc.value) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("weft apply: {}: {e}", doc.display());
                return ExitCode::FAILURE;
            }
        };
        let file = applied.join(doc.file_name());
        let verb = match std::fs::read_to_string(&file) {
            Ok(old) if old == text => "unchanged",
            Ok(_) => "configured",
            Err(_) => "created",
        };
        if verb != "unchanged" {
            // A Secret's key material is the owner's alone.
            let mode = if doc.kind == "Secret" { 0o600 } else { 0o644 };
            if let Err(e) = state::write_atomic_mode(&file, text.as_bytes(), mode) {
                eprintln!("weft apply: {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
            changed = true;
        }
        println!("{} {verb}", doc.display());
    }
    warn_findings(&state, running.as_ref(), &docs);
    let Some(mesh) = running else {
        eprintln!(
            "weft apply: no mesh is running (state {}); the resources apply at the next `weft up`",
            state.display()
        );
        return ExitCode::SUCCESS;
    };
    let (Some(monitoring), Some(before)) = (mesh.monitoring_address, before) else {
        return ExitCode::SUCCESS;
    };
    let monitoring = format!("http://{monitoring}");
    let code = if changed {
        wait_for_acks(&monitoring, &before)
    } else {
        ExitCode::SUCCESS
    };
    // A Gateway applied: say where its ports can be reached.
    if docs.iter().any(|d| d.kind == "Gateway") {
        for line in gateway_reachable(&monitoring) {
            println!("Ingress gateway {line}");
        }
    }
    code
}

/// Findings of `weft analyze` worth saying at apply time (over the mesh's resources as `weft up`
/// loads them), for the resources just applied: a Gateway whose `credentialName` has no
/// Secret where the gateway reads it (WA0117: the control plane leaves such a server out
/// until the Secret exists), whatever weft reads but does not enforce (WA0139, WA0143:
/// never silently accepted), and Telemetry providers the mesh does not have (WA0144).
fn warn_findings(state: &Path, running: Option<&RunningMesh>, docs: &[Doc]) {
    use weft_api::diag::code;
    let applied: Vec<(&str, &str, &str)> = docs
        .iter()
        .map(|d| (d.kind.as_str(), d.namespace.as_str(), d.name.as_str()))
        .collect();
    let worth = |kind: &str, c: &str| {
        (kind == "Gateway" && c == code::GATEWAY_SECRET_NOT_FOUND)
            || c == code::NOT_ENFORCED
            || c == code::JWT_RULE_WITHOUT_KEYS
            || c == code::TELEMETRY_UNKNOWN_PROVIDER
    };
    let kinds_worth = [
        "Gateway",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "RequestAuthentication",
        "Telemetry",
    ];
    if !docs.iter().any(|d| kinds_worth.contains(&d.kind.as_str())) {
        return;
    }
    let mut paths = vec![state::builtin_dir(state)];
    if let Some(mesh) = running {
        paths.push(mesh.dir.clone());
    }
    paths.push(state::applied_dir(state));
    let mut files = Vec::new();
    for p in &paths {
        files.extend(state::top_level_files(p).unwrap_or_default());
    }
    let loaded = weft_api::load::load_paths(&files);
    let resources: Vec<weft_api::Resource> = loaded.effective().into_iter().cloned().collect();
    for d in weft_api::analyze::analyze(&resources) {
        let ours = d.resource.as_ref().is_some_and(|r| {
            applied.contains(&(r.kind.as_str(), r.namespace.as_str(), r.name.as_str()))
                && worth(&r.kind, d.code)
        });
        if ours {
            let field = d.field.as_deref().unwrap_or_default();
            let r = d
                .resource
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let severity = match d.severity {
                weft_api::Severity::Error => "error",
                _ => "warning",
            };
            eprintln!("weft apply: {severity}: {r} {field}: {}", d.message);
        }
    }
}

/// Where the local mesh's ingress gateway listens, as its control plane configures it.
fn gateway_reachable(monitoring: &str) -> Vec<String> {
    let path = format!(
        "/debug/config_dump?proxy={}.{}",
        super::plan::GATEWAY_NAME,
        super::plan::GATEWAY_NAMESPACE
    );
    crate::http_get::get(monitoring, &path)
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| serde_json::from_str::<weft_xds::proto::Bootstrap>(&r.body).ok())
        .map(|b| super::gateway::reachable(&b))
        .unwrap_or_default()
}

/// How long `weft apply` waits for the proxies to take a change.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// The control plane reads a changed file within its poll interval and a quiet period; until
/// then every proxy still looks in sync with the old config.
const PICKUP: Duration = Duration::from_millis(500);

/// Waits up to [`ACK_WAIT`] for every proxy to ACK what the control plane now has: SUCCESS when
/// all did (or some are still catching up, said as a warning), FAILURE naming each proxy that
/// refused it and why.
fn wait_for_acks(monitoring: &str, before: &[SyncStatus]) -> ExitCode {
    let start = Instant::now();
    let refused_before = |s: &SyncStatus, what: &str, nack: &NackInfo| {
        before.iter().any(|b| {
            b.node_id == s.node_id && nack_of(b, what).is_some_and(|n| n.version == nack.version)
        })
    };
    let mut last = Vec::new();
    while start.elapsed() < ACK_WAIT {
        std::thread::sleep(Duration::from_millis(100));
        let Ok(now) = crate::proxy_status::fetch(monitoring) else {
            continue;
        };
        let refusals: Vec<String> = now
            .iter()
            .flat_map(|s| {
                ["clusters", "listeners", "routes"]
                    .into_iter()
                    .filter_map(move |what| Some((s, what, nack_of(s, what)?)))
            })
            .filter(|(s, what, nack)| !refused_before(s, what, nack))
            .map(|(s, what, nack)| format!("{} refused the new {what}: {}", s.proxy, nack.reason))
            .collect();
        if !refusals.is_empty() {
            for r in &refusals {
                eprintln!("weft apply: {r}");
            }
            eprintln!(
                "weft apply: {} refusal(s); those proxies keep their previous config \
                 (`weft proxy-status` shows it)",
                refusals.len()
            );
            return ExitCode::FAILURE;
        }
        if start.elapsed() >= PICKUP && now.iter().all(|s| s.in_sync) {
            return ExitCode::SUCCESS;
        }
        last = now;
    }
    let behind: Vec<&str> = last
        .iter()
        .filter(|s| !s.in_sync)
        .map(|s| s.proxy.as_str())
        .collect();
    if !behind.is_empty() {
        eprintln!(
            "weft apply: not yet ACKed after {ACK_WAIT:?} by {} (`weft proxy-status` follows it)",
            behind.join(", ")
        );
    }
    ExitCode::SUCCESS
}

fn nack_of<'a>(s: &'a SyncStatus, what: &str) -> Option<&'a NackInfo> {
    match what {
        "clusters" => s.clusters.last_nack.as_ref(),
        "listeners" => s.listeners.last_nack.as_ref(),
        _ => s.routes.last_nack.as_ref(),
    }
}

pub fn delete(args: &DeleteArgs) -> ExitCode {
    let inputs = match read_inputs(&args.files) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("weft delete: {e}");
            return ExitCode::from(2);
        }
    };
    let state = state::state_dir(args.state_dir.as_deref());
    let applied = state::applied_dir(&state);
    let mut failed = false;
    for (path, text) in &inputs {
        let docs = match documents(path, text) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("weft delete: {e}");
                failed = true;
                continue;
            }
        };
        for doc in docs {
            match std::fs::remove_file(applied.join(doc.file_name())) {
                Ok(()) => println!("{} deleted", doc.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !args.ignore_not_found {
                        // kubectl's words; a resource of weft up's DIR is edited in its file.
                        eprintln!(
                            "Error from server (NotFound): {} {:?} not found in namespace {:?} \
                             (`weft delete` removes what `weft apply` added; resources of \
                             `weft up`'s DIR are removed from their files)",
                            doc.kind.to_ascii_lowercase(),
                            doc.name,
                            doc.namespace
                        );
                        failed = true;
                    }
                }
                Err(e) => {
                    eprintln!("weft delete: {}: {e}", doc.display());
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The canonical kind for what a user types (`vs`, `virtualservices`, `VirtualService`).
fn canonical_kind(kind: &str) -> String {
    let k = kind.to_ascii_lowercase();
    let k = k.split('.').next().unwrap_or_default();
    let alias = match k {
        "vs" => "virtualservice",
        "dr" => "destinationrule",
        "gw" => "gateway",
        "se" => "serviceentry",
        "svc" => "service",
        "pa" => "peerauthentication",
        "ap" => "authorizationpolicy",
        "ra" => "requestauthentication",
        "we" => "workloadentry",
        "sa" => "serviceaccount",
        other => other,
    };
    match alias.strip_suffix("ies") {
        Some(stem) => format!("{stem}y"),
        None => alias
            .strip_suffix("es")
            .filter(|s| s.ends_with("ss"))
            .or_else(|| alias.strip_suffix('s').filter(|s| !s.ends_with('s')))
            .unwrap_or(alias)
            .to_owned(),
    }
}

/// What `weft get` takes besides kinds.
const GET_ALL: &str = "all";

pub fn get(args: &GetArgs) -> ExitCode {
    let want = canonical_kind(&args.kind);
    if want != GET_ALL && !weft_api::resource::kind_names().any(|k| k.eq_ignore_ascii_case(&want)) {
        // kubectl's words for a kind it does not know.
        let known: Vec<String> = weft_api::resource::kind_names()
            .map(str::to_ascii_lowercase)
            .collect();
        let hint = weft_api::suggest::did_you_mean(&want, known.iter().map(String::as_str))
            .map_or(String::new(), |k| format!("; did you mean {k:?}?"));
        eprintln!(
            "error: the server doesn't have a resource type {:?}{hint} (known: {}, all)",
            args.kind,
            known.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let state = state::state_dir(args.state_dir.as_deref());
    let mut files = Vec::new();
    if let Some(mesh) = RunningMesh::read(&state) {
        files.extend(state::top_level_files(&state::builtin_dir(&state)).unwrap_or_default());
        files.extend(state::top_level_files(&mesh.dir).unwrap_or_default());
    }
    files.extend(state::top_level_files(&state::applied_dir(&state)).unwrap_or_default());
    // Later definitions replace earlier ones, as the control plane applies them.
    let mut docs: Vec<Doc> = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let Ok(found) = documents(f, &text) else {
            continue;
        };
        for d in found {
            docs.retain(|o| (&o.kind, &o.namespace, &o.name) != (&d.kind, &d.namespace, &d.name));
            docs.push(d);
        }
    }
    docs.retain(|d| {
        (want == GET_ALL || d.kind.to_ascii_lowercase() == want)
            && args.name.as_ref().is_none_or(|n| *n == d.name)
            && args.namespace.as_ref().is_none_or(|n| *n == d.namespace)
    });
    docs.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    if docs.is_empty() {
        match &args.name {
            Some(n) => eprintln!("weft get: {} {n:?} not found", args.kind),
            None => eprintln!("No resources found."),
        }
        return if args.name.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    match args.output.as_deref() {
        Some("yaml") => {
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                match yaml_serde::to_string(&redact(d)) {
                    Ok(t) => print!("{t}"),
                    Err(e) => eprintln!("weft get: {}: {e}", d.display()),
                }
            }
        }
        None => {
            let mut t = Table::new(&["KIND", "NAMESPACE", "NAME", "FROM"]);
            for d in &docs {
                t.row(vec![
                    d.kind.clone(),
                    d.namespace.clone(),
                    d.name.clone(),
                    d.from.display().to_string(),
                ]);
            }
            print!("{}", t.render());
        }
        Some(other) => {
            eprintln!("weft get: output format {other:?}: only `yaml` is supported");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// A document as `weft get -o yaml` prints it: a Secret's values replaced by their size, so
/// key material never reaches a terminal or a log.
fn redact(d: &Doc) -> Value {
    let mut value = d.value.clone();
    if d.kind != "Secret" {
        return value;
    }
    for field in ["data", "stringData"] {
        if let Some(Value::Mapping(m)) = value.get_mut(field) {
            for (_, v) in m.iter_mut() {
                let len = v.as_str().map_or(0, str::len);
                *v = Value::String(format!("[redacted: {len} characters]"));
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_printed_redacted() {
        let docs = documents(
            Path::new("s.yaml"),
            "kind: Secret\nmetadata: {name: c, namespace: istio-system}\ntype: kubernetes.io/tls\n\
             data: {tls.key: S0VZS0VZ}\nstringData: {ca.crt: TOPSECRET}\n---\n\
             kind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
        )
        .expect("docs");
        let secret = yaml_serde::to_string(&redact(&docs[0])).unwrap();
        assert!(
            !secret.contains("S0VZS0VZ") && !secret.contains("TOPSECRET"),
            "{secret}"
        );
        assert!(
            secret.contains("tls.key: '[redacted: 8 characters]'"),
            "{secret}"
        );
        assert!(secret.contains("type: kubernetes.io/tls"), "{secret}");
        assert_eq!(redact(&docs[1]), docs[1].value);
    }

    #[test]
    fn kinds_are_read_as_kubectl_reads_them() {
        for (typed, kind) in [
            ("vs", "virtualservice"),
            ("VirtualServices", "virtualservice"),
            ("destinationrules", "destinationrule"),
            ("gateway", "gateway"),
            ("svc", "service"),
            ("serviceentries", "serviceentry"),
            ("AuthorizationPolicies", "authorizationpolicy"),
            ("address", "address"),
            ("workloads", "workload"),
        ] {
            assert_eq!(canonical_kind(typed), kind, "{typed}");
        }
    }

    #[test]
    fn documents_expand_lists_and_refuse_unsafe_names() {
        let docs = documents(
            Path::new("t.yaml"),
            "kind: List\nitems:\n- {kind: Service, metadata: {name: a}}\n- {kind: Gateway, metadata: {name: b, namespace: x}}\n---\n",
        )
        .expect("docs");
        let names: Vec<String> = docs.iter().map(Doc::file_name).collect();
        assert_eq!(names, ["service.default.a.yaml", "gateway.x.b.yaml"]);
        assert!(documents(Path::new("t"), "kind: Service\nmetadata: {name: ../x}\n").is_err());
        assert!(documents(Path::new("t"), "kind: Service\n").is_err());
    }
}
