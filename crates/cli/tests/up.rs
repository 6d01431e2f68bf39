//! `weft up` end to end: a tiny mesh (a Gateway, one Workload) on loopback, reached through the
//! ingress gateway; `weft apply`/`get`/`delete` change what it answers; SIGTERM stops it and
//! leaves no child process behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

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

fn weft(state: &Path, args: &[&str]) -> String {
    let out = Command::new(WEFT)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run weft");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "weft {args:?}: {text}");
    text
}

/// The direct children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with(['Z', 'X']))
    })
}

struct Mesh(Child);

impl Drop for Mesh {
    fn drop(&mut self) {
        // A failed test must not leave a mesh running.
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
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

    // Every child: sidecar, gateway, workload.
    let kids = children(up_pid);
    assert!(kids.len() >= 3, "children of weft up: {kids:?}");
    let _ = Command::new("kill")
        .args(["-TERM", &up_pid.to_string()])
        .status();
    let mut mesh = mesh;
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = mesh.0.try_wait() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "weft up still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "weft up exited with {status}");
    let left: Vec<u32> = kids.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
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
