//! `weft proxy-config`: a proxy's listeners, routes, clusters and endpoints, from the
//! control plane's view (`/debug/config_dump`) or from the proxy itself (admin
//! `/config_dump`). Both answer a weft-proxy bootstrap in the proto3 JSON mapping.

use std::io::{self, Write};
use std::process::ExitCode;

use weft_control::translate::names::{Direction, parse_cluster_name};
use weft_xds::proto;

use crate::http_get;
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to show.
    #[arg(value_enum)]
    what: What,
    /// The proxy: `name.namespace`, name, a Workload's name (one replica), or node id.
    /// Optional with --admin.
    #[arg(value_name = "PROXY")]
    proxy: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Short)]
    output: Format,
    /// The control plane's monitoring address (its view of the proxy's config). Default: the
    /// local mesh `weft up` runs (found in the state directory), else http://127.0.0.1:15014.
    #[arg(long = "control-plane", value_name = "URL", conflicts_with = "admin")]
    control_plane: Option<String>,
    /// What the proxy itself runs: its admin URL, or in a local mesh the proxy's name (its
    /// admin address is looked up).
    #[arg(long, value_name = "URL|PROXY")]
    admin: Option<String>,
    /// The local mesh's state directory (as `weft up --state-dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum What {
    Routes,
    Clusters,
    Listeners,
    Endpoints,
    /// The workload certificate and trust bundle in force (read from the proxy itself: keys
    /// and certificates never pass through the control plane).
    Secret,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Yaml,
    Short,
}

pub fn run(args: &Args) -> ExitCode {
    if args.what == What::Secret {
        return print(secret(args));
    }
    let dump = match fetch(args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("weft proxy-config: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = match render(&dump, args.what, args.output) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weft proxy-config: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = io::stdout().lock().write_all(out.as_bytes())
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        eprintln!("weft proxy-config: {e}");
    }
    ExitCode::SUCCESS
}

fn print(out: Result<String, String>) -> ExitCode {
    match out {
        Ok(out) => {
            if let Err(e) = io::stdout().lock().write_all(out.as_bytes())
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                eprintln!("weft proxy-config: {e}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft proxy-config: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `secret`: the proxy's admin `/certs`, as a table or as it is.
fn secret(args: &Args) -> Result<String, String> {
    let proxy = args
        .admin
        .as_deref()
        .or(args.proxy.as_deref())
        .ok_or("name a PROXY (or give --admin URL|PROXY)")?;
    let base = crate::up::state::admin_url(proxy, args.state_dir.as_deref())?;
    let r = http_get::get(&base, "/certs")?;
    if r.status != 200 {
        return Err(format!(
            "{base}/certs: HTTP {}: {}",
            r.status,
            r.body.trim()
        ));
    }
    let certs: serde_json::Value =
        serde_json::from_str(&r.body).map_err(|e| format!("{base}/certs: {e}"))?;
    match args.output {
        Format::Json => serde_json::to_string_pretty(&certs)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Format::Yaml => yaml_serde::to_string(&certs).map_err(|e| e.to_string()),
        Format::Short => Ok(secret_table(&certs)),
    }
}

/// Istio's `proxy-config secret` columns, with the SANs, and the trust bundle's roots.
fn secret_table(certs: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let mut t = Table::new(&[
        "RESOURCE NAME",
        "TYPE",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
        "SANS / SHA-256 FINGERPRINT",
    ]);
    let empty = Vec::new();
    for c in certs["certificates"].as_array().unwrap_or(&empty) {
        let sans: Vec<String> = c["subjectAltNames"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(text)
            .collect();
        t.row(vec![
            text(&c["name"]),
            "Cert Chain".to_owned(),
            text(&c["serialNumber"]),
            text(&c["expirationTime"]),
            text(&c["validFrom"]),
            sans.join(","),
        ]);
        for root in c["trustBundle"]["sha256Fingerprints"]
            .as_array()
            .unwrap_or(&empty)
        {
            t.row(vec![
                text(&c["trustBundle"]["name"]),
                "CA".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                text(root),
            ]);
        }
    }
    if certs["identity"].is_null() {
        return "the proxy has no workload identity (no `identity` in its bootstrap)\n".to_owned();
    }
    let mut out = format!("IDENTITY {}\n", text(&certs["identity"]));
    out.push_str(&t.render());
    out
}

fn fetch(args: &Args) -> Result<proto::Bootstrap, String> {
    let state = args.state_dir.as_deref();
    let (base, path) = match (&args.admin, &args.proxy) {
        (Some(admin), _) => (
            crate::up::state::admin_url(admin, state)?,
            "/config_dump".to_owned(),
        ),
        (None, Some(proxy)) => (
            crate::up::state::control_plane_url(args.control_plane.as_deref(), state),
            format!("/debug/config_dump?proxy={}", encode(proxy)),
        ),
        (None, None) => return Err("name a PROXY (or give --admin URL|PROXY)".to_owned()),
    };
    let base = base.as_str();
    let r = http_get::get(base, &path)?;
    if r.status != 200 {
        return Err(format!(
            "{base}{path}: HTTP {}: {}",
            r.status,
            r.body.trim()
        ));
    }
    serde_json::from_str(&r.body).map_err(|e| format!("{base}{path}: {e}"))
}

/// Percent-encodes what a query value cannot carry as is.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn render(dump: &proto::Bootstrap, what: What, format: Format) -> Result<String, String> {
    let json = |v: serde_json::Value| -> Result<String, String> {
        match format {
            Format::Json => serde_json::to_string_pretty(&v)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string()),
            _ => yaml_serde::to_string(&v).map_err(|e| e.to_string()),
        }
    };
    let value = |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| e.to_string());
    if format != Format::Short {
        return json(match what {
            What::Routes => value(serde_json::to_value(&dump.route_configs))?,
            What::Clusters => value(serde_json::to_value(&dump.clusters))?,
            What::Listeners => value(serde_json::to_value(&dump.listeners))?,
            What::Endpoints => value(serde_json::to_value(endpoints_json(dump)))?,
            What::All | What::Secret => value(serde_json::to_value(dump))?,
        });
    }
    Ok(match what {
        What::Routes => routes(dump),
        What::Clusters => clusters(dump),
        What::Listeners => listeners(dump),
        What::Endpoints => endpoints(dump),
        What::Secret | What::All => [
            clusters(dump),
            listeners(dump),
            routes(dump),
            endpoints(dump),
        ]
        .join("\n"),
    })
}

fn endpoints_json(dump: &proto::Bootstrap) -> Vec<serde_json::Value> {
    dump.clusters
        .iter()
        .filter(|c| !c.endpoints.is_empty())
        .map(|c| serde_json::json!({"cluster": c.name, "endpoints": c.endpoints}))
        .collect()
}

fn clusters(dump: &proto::Bootstrap) -> String {
    let mut t = Table::new(&[
        "SERVICE FQDN",
        "PORT",
        "SUBSET",
        "DIRECTION",
        "ENDPOINTS",
        "LB",
    ]);
    for c in &dump.clusters {
        let (host, port, subset, direction) = match parse_cluster_name(&c.name) {
            Some((d, port, subset, host)) => (
                if host.is_empty() { "-" } else { host }.to_owned(),
                port.to_string(),
                if subset.is_empty() { "-" } else { subset }.to_owned(),
                match d {
                    Direction::Outbound => "outbound",
                    Direction::Inbound => "inbound",
                }
                .to_owned(),
            ),
            None => (c.name.clone(), "-".into(), "-".into(), "-".into()),
        };
        t.row(vec![
            host,
            port,
            subset,
            direction,
            c.endpoints.len().to_string(),
            c.lb_policy().as_str_name().to_owned(),
        ]);
    }
    t.render()
}

fn listeners(dump: &proto::Bootstrap) -> String {
    let mut t = Table::new(&["NAME", "ADDRESS", "PROTOCOL", "DESTINATION"]);
    for l in &dump.listeners {
        use proto::listener::Protocol;
        let (protocol, dest) = match &l.protocol {
            Some(Protocol::Http(h)) => (
                if h.tls.is_some() { "HTTPS" } else { "HTTP" },
                format!(
                    "Route: {}{}{}",
                    h.route_config,
                    if h.explicit_proxy {
                        " (explicit proxy)"
                    } else {
                        ""
                    },
                    match &h.capture {
                        Some(c) => format!(" (captured: {} service ports)", c.services.len()),
                        None => String::new(),
                    }
                ),
            ),
            Some(Protocol::OriginalDst(o)) => (
                "ALL",
                format!(
                    "Listener of the original destination, else {}",
                    if o.passthrough_cluster.is_empty() {
                        "closed"
                    } else {
                        &o.passthrough_cluster
                    }
                ),
            ),
            Some(Protocol::Tcp(tcp)) => ("TCP", format!("Cluster: {}", tcp.cluster)),
            Some(Protocol::TlsPassthrough(p)) => ("TLS", format!("SNI routes: {}", p.routes.len())),
            Some(Protocol::Dns(d)) => ("DNS", format!("names: {}", d.names.len())),
            None => ("-", "-".to_owned()),
        };
        t.row(vec![
            l.name.clone(),
            if l.bind_to_port == Some(false) {
                format!("{} (virtual)", l.address)
            } else {
                l.address.clone()
            },
            protocol.to_owned(),
            dest,
        ]);
    }
    t.render()
}

fn routes(dump: &proto::Bootstrap) -> String {
    let mut t = Table::new(&[
        "NAME",
        "VIRTUAL HOST",
        "DOMAINS",
        "MATCH",
        "DESTINATION",
        "RETRIES",
    ]);
    // A configuration included by another (`includePrefix`) is shown under the one that
    // includes it: that is the table a listener uses.
    let includer = |name: &str| {
        dump.route_configs
            .iter()
            .find(|o| {
                !o.include_prefix.is_empty()
                    && o.name != name
                    && name.starts_with(&o.include_prefix)
            })
            .map(|o| o.name.clone())
    };
    for rc in &dump.route_configs {
        let shown = includer(&rc.name).unwrap_or_else(|| rc.name.clone());
        for vh in &rc.virtual_hosts {
            let domains = summarize(&vh.domains, 2);
            if vh.routes.is_empty() {
                t.row(vec![
                    shown.clone(),
                    vh.name.clone(),
                    domains.clone(),
                    "-".into(),
                    "404".into(),
                    "-".into(),
                ]);
            }
            for r in &vh.routes {
                t.row(vec![
                    shown.clone(),
                    vh.name.clone(),
                    domains.clone(),
                    route_match(r),
                    route_destination(r),
                    route_retries(r),
                ]);
            }
        }
    }
    t.render()
}

fn endpoints(dump: &proto::Bootstrap) -> String {
    let mut t = Table::new(&["ENDPOINT", "WEIGHT", "CLUSTER"]);
    for c in &dump.clusters {
        for e in &c.endpoints {
            t.row(vec![
                e.address.clone(),
                e.weight.max(1).to_string(),
                c.name.clone(),
            ]);
        }
    }
    t.render()
}

fn summarize(items: &[String], max: usize) -> String {
    match items.len() {
        0 => "-".to_owned(),
        n if n <= max => items.join(", "),
        n => format!("{} + {} more...", items[..max].join(", "), n - max),
    }
}

fn string_match(m: &proto::StringMatch) -> String {
    use proto::string_match::MatchType;
    match &m.match_type {
        Some(MatchType::Exact(s)) => s.clone(),
        Some(MatchType::Prefix(s)) => format!("{s}*"),
        Some(MatchType::Regex(s)) => format!("~{s}"),
        #[allow(unreachable_patterns)]
        _ => "?".to_owned(),
    }
}

fn route_match(r: &proto::Route) -> String {
    if r.matches.is_empty() {
        return "/*".to_owned();
    }
    let one = |m: &proto::RouteMatch| {
        let mut parts = Vec::new();
        if let Some(uri) = &m.uri {
            parts.push(string_match(uri));
        }
        if let Some(method) = &m.method {
            parts.push(format!("{} ", string_match(method)));
        }
        let mut headers: Vec<_> = m.headers.iter().collect();
        headers.sort_by_key(|(k, _)| *k);
        for (k, v) in headers {
            parts.push(format!("{k}={}", string_match(v)));
        }
        if parts.is_empty() {
            "/*".to_owned()
        } else {
            parts.join(" ")
        }
    };
    let all: Vec<String> = r.matches.iter().map(one).collect();
    summarize(&all, 2)
}

/// A route's retry policy in a few words: `2x connect-failure,503 per-try 2s other-hosts`
/// (retries, conditions with the retriable status codes in place of `retriable-status-codes`,
/// the per-try timeout, whether retries avoid the endpoints tried already).
fn route_retries(r: &proto::Route) -> String {
    let Some(proto::route::Action::Route(a)) = &r.action else {
        return "-".to_owned();
    };
    let Some(p) = a.retry_policy.as_ref().filter(|p| p.num_retries > 0) else {
        return "-".to_owned();
    };
    let codes: Vec<String> = p
        .retriable_status_codes
        .iter()
        .map(u32::to_string)
        .collect();
    let on: Vec<String> = p
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| match c {
            "retriable-status-codes" if !codes.is_empty() => codes.join(","),
            c => c.to_owned(),
        })
        .collect();
    let mut out = format!("{}x {}", p.num_retries, on.join(","));
    if let Some(d) = &p.per_try_timeout {
        let d = std::time::Duration::new(
            u64::try_from(d.seconds).unwrap_or(0),
            u32::try_from(d.nanos).unwrap_or(0),
        );
        out.push_str(&format!(" per-try {}s", d.as_secs_f64()));
    }
    if p.previous_hosts {
        out.push_str(" other-hosts");
    }
    out
}

fn route_destination(r: &proto::Route) -> String {
    use proto::route::Action;
    match &r.action {
        Some(Action::Route(a)) => {
            let single = a.clusters.len() == 1;
            let ds: Vec<String> = a
                .clusters
                .iter()
                .map(|c| {
                    if single {
                        c.cluster.clone()
                    } else {
                        format!("{} {}%", c.cluster, c.weight)
                    }
                })
                .collect();
            summarize(&ds, 3)
        }
        Some(Action::Redirect(_)) => "redirect".to_owned(),
        Some(Action::DirectResponse(d)) => format!("direct response {}", d.status),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tables_name_what_matters() {
        let dump: proto::Bootstrap = yaml_serde::from_str(
            r#"
listeners:
- {name: outbound, address: "127.0.0.2:15001", http: {routeConfig: outbound, explicitProxy: true}}
routeConfigs:
- name: outbound
  virtualHosts:
  - name: reviews.default.svc.cluster.local:9080
    domains: [reviews.default.svc.cluster.local:9080]
    routes:
    - matches: [{headers: {end-user: {exact: jason}}}]
      route: {clusters: [{cluster: "outbound|9080|v2|reviews.default.svc.cluster.local"}]}
    - route:
        clusters: [{cluster: a, weight: 50}, {cluster: b, weight: 50}]
        retryPolicy: {numRetries: 2, retryOn: "connect-failure,retriable-status-codes", retriableStatusCodes: [503], previousHosts: true}
    - matches: [{uri: {prefix: /slow}}]
      route: {clusters: [{cluster: a}], retryPolicy: {numRetries: 3, retryOn: 5xx, perTryTimeout: 2.5s}}
clusters:
- name: "outbound|9080|v2|reviews.default.svc.cluster.local"
  endpoints: [{address: "127.0.0.5:9080"}]
- {name: PassthroughCluster}
"#,
        )
        .unwrap();
        let r = render(&dump, What::Routes, Format::Short).unwrap();
        assert!(r.contains("end-user=jason"), "{r}");
        assert!(r.contains("a 50%, b 50%"), "{r}");
        let retries: Vec<&str> = r
            .lines()
            .skip(1)
            .map(|l| l.split("  ").filter(|c| !c.is_empty()).last().unwrap_or(""))
            .map(str::trim)
            .collect();
        assert_eq!(
            retries,
            [
                "-",
                "2x connect-failure,503 other-hosts",
                "3x 5xx per-try 2.5s"
            ],
            "{r}"
        );
        let c = render(&dump, What::Clusters, Format::Short).unwrap();
        assert!(
            c.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "reviews.default.svc.cluster.local",
                    "9080",
                    "v2",
                    "outbound",
                    "1",
                    "ROUND_ROBIN"
                ]),
            "{c}"
        );
        let l = render(&dump, What::Listeners, Format::Short).unwrap();
        assert!(l.contains("Route: outbound (explicit proxy)"), "{l}");
        let e = render(&dump, What::Endpoints, Format::Short).unwrap();
        assert!(e.contains("127.0.0.5:9080"), "{e}");
        let j = render(&dump, What::Clusters, Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2));
        assert!(
            render(&dump, What::All, Format::Yaml)
                .unwrap()
                .contains("routeConfigs")
        );
        assert_eq!(encode("a~b|c d"), "a~b%7Cc%20d");
    }
}
