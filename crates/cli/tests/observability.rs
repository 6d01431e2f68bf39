//! Observability of a running local mesh, end to end: bookinfo under `weft up --prometheus`
//! with a known request mix; Istio's dashboard and Kiali queries asked of the real
//! Prometheus (Debian's `prometheus`), `weft stat`, and the service graph page loaded in
//! headless Chromium (Debian's `chromium`).
//!
//! Without `prometheus` or `chromium` on PATH the parts that need them are skipped with a
//! message, except under CI=true, where `.ci/run` installs them and their absence fails.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Mesh, WEFT, children, free_port, stop, weft};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Anonymous page loads (reviews v1: no ratings call) and jason's (reviews v2, whose ratings
/// calls the fault answers with 500).
const ANONYMOUS: usize = 40;
const JASON: usize = 20;
/// The fault delay on details: every page's details call takes at least this long.
const DETAILS_DELAY_MS: f64 = 300.0;

/// Whether `tool` is on PATH; without it the test skips, or fails under CI=true.
fn have(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is not installed; .ci/run installs it (apt-get install {tool})"
        );
        eprintln!("SKIPPED: {tool} is not on PATH (Debian: apt-get install {tool})");
    }
    found
}

/// GET `target` from `addr`: status and body (Connection: close; chunked bodies joined).
fn get(addr: SocketAddr, target: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_owned()
        },
    ))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

fn gateway(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Logs in as `user` through the gateway; the session cookie.
fn login(port: u16, user: &str) -> String {
    let body = format!("username={user}");
    let mut s = TcpStream::connect(gateway(port)).expect("gateway");
    write!(
        s,
        "POST /login HTTP/1.1\r\nHost: bookinfo.local\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let cookie = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .expect("login sets a cookie");
    cookie.split(';').next().unwrap_or_default().to_owned()
}

fn page(port: u16, cookie: Option<&str>) -> (u16, String) {
    let h = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    get(gateway(port), "/productpage", &h).unwrap_or((0, String::new()))
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result vector of an instant query: (labels, value) per series.
fn query(prometheus: SocketAddr, q: &str) -> Vec<(serde_json::Value, f64)> {
    let (status, body) = get(
        prometheus,
        &format!("/api/v1/query?query={}", encode(q)),
        "",
    )
    .expect("prometheus answers");
    assert_eq!(status, 200, "{q}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["data"]["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|r| {
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            (r["metric"].clone(), value)
        })
        .collect()
}

fn state_json(state: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(state.join("mesh.json")).expect("mesh.json"))
        .expect("json")
}

#[test]
fn prometheus_stat_and_service_graph_see_the_request_mix() {
    let with_prometheus = have("prometheus");
    let with_chromium = have("chromium");
    let tmp = std::env::temp_dir().join(format!("weft-observability-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let dir = tmp.join("bookinfo");
    let state = tmp.join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        Path::new(REPO).join("examples/bookinfo/bookinfo.yaml"),
        dir.join("bookinfo.yaml"),
    )
    .unwrap();
    let port = free_port();
    let networking = Path::new(REPO).join("examples/bookinfo/networking");
    let gateway_yaml = std::fs::read_to_string(networking.join("bookinfo-gateway.yaml"))
        .unwrap()
        .replace("number: 80\n", &format!("number: {port}\n"));
    let gateway_file = tmp.join("gateway.yaml");
    std::fs::write(&gateway_file, gateway_yaml).unwrap();
    let details_delay = tmp.join("details-delay.yaml");
    std::fs::write(
        &details_delay,
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: details}}\n\
             spec:\n  hosts: [details]\n  http:\n  - fault:\n      delay:\n        percentage: {{value: 100}}\n        fixedDelay: {}ms\n    route:\n    - destination: {{host: details}}\n",
            DETAILS_DELAY_MS
        ),
    )
    .unwrap();

    let mut cmd = Command::new(WEFT);
    cmd.arg("up").arg(&dir).arg("--state-dir").arg(&state);
    if with_prometheus {
        cmd.arg("--prometheus");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("weft up");
    let stdout = child.stdout.take().unwrap();
    let mut mesh = Mesh(child);
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(l);
        }
    });
    // The summary names the graph, and Prometheus (or how to run it).
    let mut summary = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !summary
        .iter()
        .any(|l: &String| l.starts_with("Apply more config"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => summary.push(l),
            Err(_) => panic!("no summary from weft up: {summary:#?}"),
        }
    }
    std::thread::spawn(move || lines.into_iter().count());
    let text = summary.join("\n");
    assert!(text.contains("/dashboard (`weft dashboard`)"), "{text}");
    let prom_config = state.join("prometheus/prometheus.yml");
    assert!(prom_config.is_file());
    if with_prometheus {
        assert!(text.contains("Prometheus: http://127.0.0.1:"), "{text}");
    } else {
        assert!(text.contains("Prometheus scrape config: "), "{text}");
    }
    // Every proxy is a target: six sidecars and the gateway.
    let targets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("prometheus/proxies.json")).unwrap(),
    )
    .unwrap();
    let pods: Vec<&str> = targets
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["labels"]["pod"].as_str())
        .collect();
    assert_eq!(pods.len(), 7, "{targets}");
    assert!(pods.contains(&"reviews-v2-0") && pods.contains(&"istio-ingressgateway"));

    for f in [
        gateway_file.clone(),
        networking.join("destination-rule-all.yaml"),
        networking.join("virtual-service-reviews-test-v2.yaml"),
        networking.join("virtual-service-ratings-test-abort.yaml"),
        details_delay.clone(),
    ] {
        weft(&state, &["apply", "-f", f.to_str().unwrap()]);
    }
    // Routing in force: jason's page comes from reviews v2 and says ratings are unavailable.
    let jason = login(port, "jason");
    let start = Instant::now();
    loop {
        let (status, html) = page(port, Some(jason.as_str()));
        if status == 200
            && html.contains("reviews-v2")
            && html.contains("Ratings service is currently unavailable")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "routing never took effect: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // `weft stat` over a window inside the traffic.
    let stat_state = state.clone();
    let stat = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        weft(&stat_state, &["stat", "-o", "json", "--window", "6s"])
    });
    // The mix, interleaved so that every series spans the same time: two anonymous pages,
    // one of jason's.
    let traffic_started = Instant::now();
    let (mut anonymous, mut jasons) = (0, 0);
    while anonymous < ANONYMOUS || jasons < JASON {
        for _ in 0..2 {
            if anonymous < ANONYMOUS {
                let (s, html) = page(port, None);
                assert_eq!(s, 200);
                assert!(html.contains("reviews-v1"), "anonymous pages come from v1");
                anonymous += 1;
            }
        }
        if jasons < JASON {
            assert_eq!(page(port, Some(jason.as_str())).0, 200);
            jasons += 1;
        }
    }
    eprintln!("traffic: {:?}", traffic_started.elapsed());

    // weft stat: the server's view of productpage is all success; the clients' view of
    // details includes the fault delay; ratings failed every call it got (all jason's).
    // Its output, then whatever it said on stderr (a target that did not answer, say).
    let stat_out = stat.join().unwrap();
    let stat: serde_json::Value = serde_json::Deserializer::from_str(&stat_out)
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON from weft stat: {stat_out}"));
    let row = |table: &str, name: &str| {
        stat[table]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {table} row {name}: {stat:#}"))
            .clone()
    };
    let pp = row("workloads", "productpage-v1");
    assert_eq!(pp["successRate"].as_f64(), Some(1.0), "{pp}");
    assert!(pp["rps"].as_f64().unwrap() > 0.5, "{pp}");
    let details = row("services", "details.default.svc.cluster.local");
    assert!(
        details["p50Ms"].as_f64().unwrap() >= DETAILS_DELAY_MS * 0.8,
        "{details}"
    );
    let reviews_v1 = row("workloads", "reviews-v1");
    assert!(
        reviews_v1["p99Ms"].as_f64().unwrap() < DETAILS_DELAY_MS,
        "{reviews_v1}"
    );

    let monitoring: SocketAddr = state_json(&state)["monitoringAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The graph's data: bookinfo's edges with non-zero rates (while the window holds them).
    let (status, graph) = get(monitoring, "/dashboard/graph.json?window=1m", "").unwrap();
    assert_eq!(status, 200);
    let graph: serde_json::Value = serde_json::from_str(&graph).unwrap();
    let edge = |s: &str, t: &str| {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == s && e["target"] == t)
            .unwrap_or_else(|| panic!("no edge {s} -> {t}: {graph:#}"))
            .clone()
    };
    let v1 = edge(
        "service:reviews.default.svc.cluster.local",
        "workload:default/reviews-v1",
    );
    let v2 = edge(
        "service:reviews.default.svc.cluster.local",
        "workload:default/reviews-v2",
    );
    let split = v1["requests"].as_f64().unwrap() / v2["requests"].as_f64().unwrap();
    assert!(
        (1.5..=2.7).contains(&split),
        "v1:v2 should be about 2:1: {v1} {v2}"
    );
    assert_eq!(v1["mtls"].as_bool(), Some(true), "{v1}");
    // A service's routing config, one click away.
    let (status, routing) = get(
        monitoring,
        "/dashboard/routing?host=details.default.svc.cluster.local",
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(routing.contains("\"fixedDelay\": \"300ms\""), "{routing}");

    if with_chromium {
        let dom = chromium_dom(&format!("http://{monitoring}/dashboard?window=1m"));
        for (s, t) in [
            (
                "workload:istio-system/istio-ingressgateway",
                "service:productpage.default.svc.cluster.local",
            ),
            (
                "service:productpage.default.svc.cluster.local",
                "workload:default/productpage-v1",
            ),
            (
                "workload:default/productpage-v1",
                "service:details.default.svc.cluster.local",
            ),
            (
                "workload:default/productpage-v1",
                "service:reviews.default.svc.cluster.local",
            ),
            (
                "service:reviews.default.svc.cluster.local",
                "workload:default/reviews-v1",
            ),
            (
                "service:reviews.default.svc.cluster.local",
                "workload:default/reviews-v2",
            ),
        ] {
            let rps = dom_edge_rps(&dom, s, t)
                .unwrap_or_else(|| panic!("no edge {s} -> {t} in the page:\n{dom}"));
            assert!(rps > 0.0, "{s} -> {t}: {rps} rps");
        }
    }

    if with_prometheus {
        check_prometheus(&state);
    }

    let kids = children(mesh.pid());
    stop(&mut mesh, kids);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The DOM of `url` after its script ran (headless Chromium, a few seconds of virtual time).
fn chromium_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("weft-chromium-{}", std::process::id()));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `data-rps` of the label of the edge `source -> target` in the page's SVG.
fn dom_edge_rps(dom: &str, source: &str, target: &str) -> Option<f64> {
    let at = dom.find(&format!(
        "data-source=\"{source}\" data-target=\"{target}\""
    ))?;
    let rest = &dom[at..];
    let end = rest.find("</g>")?;
    let rps = rest[..end].split("data-rps=\"").nth(1)?.split('"').next()?;
    rps.parse().ok()
}

/// Istio's dashboard and Kiali queries, asked of the Prometheus `weft up --prometheus` runs.
fn check_prometheus(state: &Path) {
    let prometheus: SocketAddr = state_json(state)["prometheusAddress"]
        .as_str()
        .expect("weft up records where Prometheus runs")
        .parse()
        .unwrap();
    // Two scrapes (5 s apart) after the traffic ended, so every series has its last value.
    let up = |job: &str| {
        query(prometheus, &format!("sum(up{{job=\"{job}\"}})"))
            .first()
            .map_or(0.0, |(_, v)| *v)
    };
    let start = Instant::now();
    while up("envoy-stats") < 7.0 || up("pilot") < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "targets never all up"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(11));

    // Istio's dashboard: the mesh's success rate. Client-reported requests: the gateway's
    // 61 pages (and the login), productpage's 60 to details and 60 to reviews, reviews v2's
    // 20 to ratings, which the fault answers with 500.
    let success = query(
        prometheus,
        "sum(rate(istio_requests_total{reporter=\"source\",response_code!~\"5..\"}[1m])) / sum(rate(istio_requests_total{reporter=\"source\"}[1m]))",
    );
    let expected = 1.0
        - JASON as f64
            / (2.0 * (ANONYMOUS + JASON) as f64 + (ANONYMOUS + JASON + 2) as f64 + JASON as f64);
    // Prometheus extrapolates each series' rate to the window's edges from its own first and
    // last samples; for a burst of traffic inside the window, series that started at
    // different times are stretched differently (by up to a third here). The rates are checked
    // loosely, and the same queries over the counters themselves exactly.
    assert_eq!(success.len(), 1, "{success:?}");
    assert!(
        (success[0].1 - expected).abs() < 0.08,
        "success rate {} (expected about {expected:.3})",
        success[0].1
    );
    let exact = query(
        prometheus,
        "sum(istio_requests_total{reporter=\"source\",response_code!~\"5..\"}) / sum(istio_requests_total{reporter=\"source\"})",
    );
    assert!(
        (exact[0].1 - expected).abs() < 0.005,
        "success ratio {} (expected {expected:.3})",
        exact[0].1
    );
    let kiali = query(
        prometheus,
        "sum(rate(istio_requests_total{reporter=\"source\"}[1m])) by (source_workload, destination_workload, response_code)",
    );
    assert!(
        kiali
            .iter()
            .any(|(m, v)| m["source_workload"] == "productpage-v1"
                && m["destination_workload"] == "details-v1"
                && *v > 0.0),
        "{kiali:?}"
    );

    // Kiali's edges by client, server and code, counted.
    let edges = query(
        prometheus,
        "sum(istio_requests_total{reporter=\"source\"}) by (source_workload, destination_workload, response_code)",
    );
    let rate = |src: &str, dst: Option<&str>, code: &str| -> f64 {
        edges
            .iter()
            .filter(|(m, _)| {
                m["source_workload"] == src
                    && dst.is_none_or(|d| m["destination_workload"] == d)
                    && m["response_code"] == code
            })
            .map(|(_, v)| v)
            .sum()
    };
    let to_details = rate("productpage-v1", Some("details-v1"), "200");
    let to_v1 = rate("productpage-v1", Some("reviews-v1"), "200");
    let to_v2 = rate("productpage-v1", Some("reviews-v2"), "200");
    let ratings_500 = rate("reviews-v2", None, "500");
    assert!(
        to_details > 0.0 && to_v2 > 0.0 && ratings_500 > 0.0,
        "{edges:?}"
    );
    assert!((to_v1 / to_v2 - 2.0).abs() < 0.5, "v1:v2 {to_v1}:{to_v2}");
    assert!(
        (to_details / ratings_500 - 3.0).abs() < 0.2,
        "details:ratings 500 {to_details}:{ratings_500}"
    );
    assert_eq!(
        rate("reviews-v2", None, "200"),
        0.0,
        "every ratings call failed: {edges:?}"
    );
    let gateway_ok = rate("istio-ingressgateway", Some("productpage-v1"), "200");
    assert!(
        (gateway_ok / to_details - 1.0).abs() < 0.05,
        "{gateway_ok} vs {to_details}"
    );

    // Istio's dashboard: p99 latency by workload. details answers quickly, but its clients
    // waited for the fault's delay: half of its observations are above 250 ms.
    let p99 = query(
        prometheus,
        "histogram_quantile(0.99, sum by (le, destination_workload)(rate(istio_request_duration_milliseconds_bucket[1m])))",
    );
    let of = |w: &str| {
        p99.iter()
            .find(|(m, _)| m["destination_workload"] == w)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no p99 for {w}: {p99:?}"))
    };
    assert!(
        (250.0..=500.0).contains(&of("details-v1")),
        "details p99 {}",
        of("details-v1")
    );
    assert!(
        of("reviews-v1") < 250.0,
        "reviews-v1 p99 {}",
        of("reviews-v1")
    );

    // The control plane is scraped too, under istiod's names.
    let proxies = query(prometheus, "sum(pilot_xds)");
    assert_eq!(proxies.first().map(|(_, v)| *v), Some(7.0), "{proxies:?}");
    let pushes = query(prometheus, "sum(pilot_xds_pushes)");
    assert!(pushes.first().is_some_and(|(_, v)| *v > 0.0), "{pushes:?}");
}
