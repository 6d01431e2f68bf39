//! httpbin through `weft up`, as Istio's circuit-breaking and mirroring tasks describe them: a
//! client in the mesh (`weft load`, through a sidecar) trips the circuit breaker with three
//! concurrent connections and not with one; mirrored requests reach httpbin v2.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Mesh, WEFT, children, stop, weft};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `weft load` through the sidecar at `proxy`: the count of each status code.
fn load(proxy: &str, connections: u32, requests: u32, url: &str) -> Vec<(i32, u32)> {
    let out = Command::new(WEFT)
        .args([
            "load",
            "-c",
            &connections.to_string(),
            "-n",
            &requests.to_string(),
            url,
        ])
        .env("HTTP_PROXY", format!("http://{proxy}:15001"))
        .output()
        .expect("weft load");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let codes: Vec<(i32, u32)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Code "))
        .filter_map(|l| {
            let (code, rest) = l.split_once(" : ")?;
            let n = rest.split_whitespace().next()?;
            Some((code.trim().parse().ok()?, n.parse().ok()?))
        })
        .collect();
    assert!(!codes.is_empty(), "weft load printed no codes:\n{text}");
    codes
}

/// GET `path` from the sidecar admin port of the instance at `pod_ip` (15000): the body.
fn admin_get(pod_ip: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(format!("{pod_ip}:15000")) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    if s.write_all(req.as_bytes()).is_ok() {
        let _ = s.read_to_string(&mut text);
    }
    text
}

fn count(codes: &[(i32, u32)], code: i32) -> u32 {
    codes
        .iter()
        .filter(|(c, _)| *c == code)
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn circuit_breaking_and_mirroring_through_the_mesh() {
    let tmp = std::env::temp_dir().join(format!("weft-httpbin-test-{}", std::process::id()));
    let state = tmp.join("state");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let (mut mesh, stdout) = Mesh::up(&Path::new(REPO).join("examples/httpbin"), &state);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    // httpbin-v1-0's pod IP, from the table `weft up` prints, once both apps run.
    let start = Instant::now();
    let pod_ip = loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "weft up did not start"
        );
        let found = {
            let lines = lines.lock().expect("lines");
            let ready = lines.iter().any(|l| l.contains("workloads started"));
            lines
                .iter()
                .find(|l| l.starts_with("httpbin-v1-0 "))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
                .filter(|_| ready)
        };
        if let Some(ip) = found {
            break ip;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Until the sidecar routes to httpbin.
    let start = Instant::now();
    while count(&load(&pod_ip, 1, 1, "http://httpbin:8000/get"), 200) != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "httpbin never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // `weft load --from WORKLOAD` sends as that workload does, through its sidecar.
    let from = Command::new(WEFT)
        .args(["load", "--from", "httpbin-v1", "--state-dir"])
        .arg(&state)
        .args(["-c", "1", "-n", "3", "http://httpbin:8000/get"])
        .output()
        .expect("weft load --from");
    let text = String::from_utf8_lossy(&from.stdout);
    assert!(text.contains("Code 200 : 3 (100.0 %)"), "{text}");

    // The task's DestinationRule (maxConnections 1, http1MaxPendingRequests 1) is in
    // httpbin.yaml: one connection never trips it, three concurrent ones do.
    let one = load(&pod_ip, 1, 30, "http://httpbin:8000/get");
    assert_eq!(count(&one, 200), 30, "{one:?}");
    let three = load(&pod_ip, 3, 30, "http://httpbin:8000/get");
    let overflowed = count(&three, 503);
    eprintln!("circuit breaker, 3 connections x 30 requests: {three:?}");
    assert!(overflowed > 0 && count(&three, 200) > 0, "{three:?}");
    assert_eq!(count(&three, 200) + overflowed, 30, "{three:?}");

    // Mirroring, with the mirroring task's DestinationRule (subsets, no circuit breaker: a
    // mirror counts against its cluster's breaker, as in Envoy): every request to v1 is copied
    // to v2.
    let plain_rule = tmp.join("destination-rule.yaml");
    std::fs::write(
        &plain_rule,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: httpbin}\n\
         spec:\n  host: httpbin\n  subsets:\n  - {name: v1, labels: {version: v1}}\n\
         \x20 - {name: v2, labels: {version: v2}}\n",
    )
    .expect("write rule");
    weft(
        &state,
        &["apply", "-f", plain_rule.to_str().expect("utf-8")],
    );
    weft(
        &state,
        &[
            "apply",
            "-f",
            &format!("{REPO}/examples/httpbin/networking/virtual-service-mirror.yaml"),
        ],
    );
    let mirrored = |lines: &Mutex<Vec<String>>| {
        lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|l| l.starts_with("[httpbin-v2-0] ") && l.contains("GET /headers"))
            .count()
    };
    // Until v1's sidecar has the route with the mirror (its admin config dump says so).
    let start = Instant::now();
    while !admin_get(&pod_ip, "/config_dump").contains("\"mirrors\"") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the mirror route never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = mirrored(&lines);
    let sent = load(&pod_ip, 1, 20, "http://httpbin:8000/headers");
    assert_eq!(count(&sent, 200), 20, "{sent:?}");
    let start = Instant::now();
    while mirrored(&lines) < before + 20 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mirrored {} of 20",
            mirrored(&lines) - before
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let kids = children(mesh.0.id());
    stop(&mut mesh, kids);
    let _ = reader.join();
    let _ = std::fs::remove_dir_all(&tmp);
}
