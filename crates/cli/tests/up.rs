//! `weft up` end to end: a tiny mesh (a Gateway, one Workload) on loopback, reached through the
//! ingress gateway; `weft apply`/`get`/`delete` change what it answers; SIGTERM stops it and
//! leaves no child process behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Mesh, WEFT, children, free_port, stop, weft};

/// GET `/` through the gateway: the status and body, or None when nothing answers.
fn get(port: u16) -> Option<(u16, String)> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: demo.local\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// Polls `get` until `want` holds, at most `limit`; returns how long it took.
fn until(port: u16, limit: Duration, what: &str, want: impl Fn(u16, &str) -> bool) -> Duration {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        last = get(port);
        if let Some((s, b)) = &last
            && want(*s, b)
        {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what}: not within {limit:?}; last answer {last:?}");
}

#[test]
fn up_serves_through_the_gateway_applies_live_and_stops_cleanly() {
    let tmp = std::env::temp_dir().join(format!("weft-up-test-{}", std::process::id()));
    let dir = tmp.join("mesh");
    let state = tmp.join("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let port = free_port();
    std::fs::write(
        dir.join("mesh.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: demo-gateway}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
             \x20 - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n\
             ---\napiVersion: v1\nkind: Service\nmetadata: {{name: sleeper}}\n\
             spec: {{selector: {{app: sleeper}}, ports: [{{name: http, port: 9080}}]}}\n\
             ---\napiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {{name: sleeper-v1, labels: {{app: sleeper, version: v1}}}}\n\
             spec: {{command: [sleep, '600'], ports: [{{name: http, port: 9080}}]}}\n"
        ),
    )
    .expect("write mesh");
    let vs = tmp.join("vs.yaml");
    std::fs::write(
        &vs,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: hello}\n\
         spec:\n  hosts: ['*']\n  gateways: [demo-gateway]\n  http:\n\
         \x20 - directResponse: {status: 200, body: {string: hello from weft}}\n",
    )
    .expect("write vs");

    let mut child = Command::new(WEFT)
        .arg("up")
        .arg(&dir)
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("weft up");
    let stdout = child.stdout.take().expect("stdout");
    let up_pid = child.id();
    let mesh = Mesh(child);
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    // A Gateway with no VirtualService bound: the gateway answers 404.
    let startup = until(port, Duration::from_secs(60), "gateway 404", |s, _| {
        s == 404
    });
    eprintln!("start-up (spawn to gateway answering): {startup:?}");

    // apply: the gateway's answer changes while the mesh runs.
    let applied = Instant::now();
    let out = weft(&state, &["apply", "-f", vs.to_str().expect("utf-8")]);
    assert!(out.contains("virtualservice/hello created"), "{out}");
    let live = until(port, Duration::from_secs(10), "applied route", |s, b| {
        s == 200 && b.contains("hello from weft")
    });
    eprintln!(
        "apply to live: {:?} (after the apply returned: {live:?})",
        applied.elapsed()
    );

    let listed = weft(&state, &["get", "vs"]);
    assert!(
        listed.contains("hello") && listed.contains("VirtualService"),
        "{listed}"
    );
    let yaml = weft(&state, &["get", "virtualservice", "hello", "-o", "yaml"]);
    assert!(yaml.contains("directResponse"), "{yaml}");
    let gw = weft(&state, &["get", "gateways"]);
    assert!(gw.contains("demo-gateway"), "{gw}");

    let out = weft(&state, &["delete", "-f", vs.to_str().expect("utf-8")]);
    assert!(out.contains("virtualservice/hello deleted"), "{out}");
    until(port, Duration::from_secs(10), "route deleted", |s, _| {
        s == 404
    });

    // A new file in DIR while it runs is picked up too (a subdirectory's is not).
    let routes = std::fs::read_to_string(&vs)
        .expect("vs")
        .replace("hello from weft", "from a new file");
    std::fs::create_dir_all(dir.join("later")).expect("mkdir");
    std::fs::write(
        dir.join("later/ignored.yaml"),
        routes.replace("from a new file", "wrong"),
    )
    .expect("write");
    std::fs::write(dir.join("added.yaml"), &routes).expect("write");
    until(
        port,
        Duration::from_secs(10),
        "new top-level file",
        |s, b| s == 200 && b.contains("from a new file"),
    );
    std::fs::remove_file(dir.join("added.yaml")).expect("remove");
    until(port, Duration::from_secs(10), "file removed", |s, _| {
        s == 404
    });

    // Every child: sidecar, gateway, workload.
    let kids = children(up_pid);
    assert!(kids.len() >= 3, "children of weft up: {kids:?}");
    let mut mesh = mesh;
    stop(&mut mesh, kids);
    let log = reader.join().unwrap_or_default().join("\n");
    for want in [
        "✔ Control plane ready",
        "1 sidecars ready",
        "✔ 1 workloads started",
        "sleeper-v1-0",
        "[sleeper-v1-0.proxy] weft-proxy: ready",
        "✔ Stopped",
    ] {
        assert!(log.contains(want), "{want:?} not in the output:\n{log}");
    }
    assert!(!state.join("mesh.json").exists(), "mesh.json left behind");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_detached_mesh_restarts_crashed_workloads_and_stops_with_down() {
    let tmp = std::env::temp_dir().join(format!("weft-up-detach-{}", std::process::id()));
    let dir = tmp.join("mesh");
    let state = tmp.join("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("mesh.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: crasher}\n\
         spec: {selector: {app: crasher}, ports: [{name: http, port: 9080}]}\n\
         ---\napiVersion: weft.dev/v1alpha1\nkind: Workload\n\
         metadata: {name: crasher-v1, labels: {app: crasher, version: v1}}\n\
         spec: {command: [sh, -c, 'echo crashing; exit 3'], ports: [{name: http, port: 9080}]}\n",
    )
    .expect("write mesh");

    let out = weft(&state, &["up", dir.to_str().expect("utf-8"), "--detach"]);
    assert!(out.contains("Mesh running in the background"), "{out}");
    let mesh_json = std::fs::read_to_string(state.join("mesh.json")).expect("mesh.json");
    let pid: u32 = mesh_json
        .split("\"pid\":")
        .nth(1)
        .and_then(|r| r.trim_start().split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .expect("pid in mesh.json");

    // The workload crashes at once: reported, restarted with backoff, again and again.
    let log = state.join("up.log");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("[crasher-v1-0] exited").count() >= 2 {
            assert!(text.contains("restarting in"), "{text}");
            assert!(text.contains("[crasher-v1-0] crashing"), "{text}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no restarts seen:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let kids = children(pid);
    let out = weft(&state, &["down"]);
    assert!(out.contains("Mesh stopped"), "{out}");
    let left: Vec<u32> = kids
        .into_iter()
        .chain([pid])
        .filter(|p| common::alive(*p))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}
