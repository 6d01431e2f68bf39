//! `weft up` end to end: a tiny mesh (a Gateway, one Workload) on loopback, reached through the
//! ingress gateway; `weft apply`/`get`/`delete` change what it answers; Workloads added,
//! scaled, edited and removed while it runs start and stop their replicas; SIGTERM stops it and
//! leaves no child process behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{Mesh, children, free_port, stop, weft, weft_fails};

/// GET `/` through the gateway: the status and body, or None when nothing answers.
fn get(port: u16) -> Option<(u16, String)> {
    let (status, text) = request(port, "demo.local", "/")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// GET `path` from `host` through the gateway: the status and the whole response.
fn request(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
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
             spec: {{command: [weft, example, httpbin], ports: [{{name: http, port: 9080}}]}}\n"
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

    let (mesh, stdout) = Mesh::up(&dir, &state);
    let up_pid = mesh.pid();
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
    // A kind that does not exist is an error, as in kubectl.
    let typo = weft_fails(&state, &["get", "virtualservce"]);
    assert!(typo.contains("did you mean \"virtualservice\""), "{typo}");

    // proxy-status and proxy-config find the running mesh through the state directory, and
    // take the names the CLI prints (a Workload's name for its only replica, the gateway's).
    let version = weft(&state, &["version"]);
    let v = env!("CARGO_PKG_VERSION");
    assert!(
        version.contains(&format!("client version: {v}"))
            && version.contains(&format!("control plane version: {v}")),
        "{version}"
    );
    let status = weft(&state, &["proxy-status"]);
    assert!(
        status.contains("sleeper-v1-0.default") && status.contains("SYNCED"),
        "{status}"
    );
    let listeners = weft(
        &state,
        &["proxy-config", "listeners", "istio-ingressgateway"],
    );
    assert!(
        listeners.contains(&format!("127.0.0.1:{port}")),
        "{listeners}"
    );
    let routes = weft(&state, &["proxy-config", "routes", "--admin", "sleeper-v1"]);
    assert!(routes.contains("inbound|9080"), "{routes}");

    // A Gateway port the gateway cannot bind: the apply fails, naming the proxy and why.
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let bad = tmp.join("bad-gateway.yaml");
    std::fs::write(
        &bad,
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: taken}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
             \x20 - port: {{number: {taken_port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n"
        ),
    )
    .expect("write bad gateway");
    let refused = weft_fails(&state, &["apply", "-f", bad.to_str().expect("utf-8")]);
    assert!(
        refused.contains("gateway/taken created")
            && refused.contains("istio-ingressgateway-0.istio-system refused the new listeners"),
        "{refused}"
    );
    weft(&state, &["delete", "-f", bad.to_str().expect("utf-8")]);
    drop(taken);

    let out = weft(&state, &["delete", "-f", vs.to_str().expect("utf-8")]);
    assert!(out.contains("virtualservice/hello deleted"), "{out}");
    let again = weft_fails(&state, &["delete", "-f", vs.to_str().expect("utf-8")]);
    assert!(
        again.contains("virtualservice \"hello\" not found"),
        "{again}"
    );
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

/// The httpbin pod that answered `host` through the gateway (its `x-httpbin-pod`), if one did.
fn pod(port: u16, host: &str) -> Option<String> {
    let (status, text) = request(port, host, "/get")?;
    if status != 200 {
        return None;
    }
    let head = text.split_once("\r\n\r\n")?.0;
    head.lines()
        .find_map(|l| l.strip_prefix("x-httpbin-pod: "))
        .map(str::to_owned)
}

/// Polls `what` until it is true, at most `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The child of `up` that runs replica `pod`'s app (`POD_NAME=pod` in its environment).
fn app_pid(up: u32, pod: &str) -> Option<u32> {
    let want = format!("POD_NAME={pod}");
    children(up).into_iter().find(|p| {
        std::fs::read(format!("/proc/{p}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == want.as_bytes()))
    })
}

/// The child of `up` that runs replica `pod`'s sidecar (its bootstrap `<pod>.yaml`).
fn sidecar_pid(up: u32, pod: &str) -> Option<u32> {
    let want = format!("proxies/{pod}.yaml");
    children(up).into_iter().find(|p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&want))
    })
}

/// An httpbin Workload `name` with its Service and a VirtualService routing `name.local`
/// through the gateway to it.
fn httpbin(name: &str, replicas: u32, env: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 8000}}]}}\n\
         ---\napiVersion: weft.dev/v1alpha1\nkind: Workload\n\
         metadata: {{name: {name}-v1, labels: {{app: {name}, version: v1}}}}\n\
         spec: {{command: [weft, example, httpbin], replicas: {replicas}, env: {{{env}}},\n\
         \x20 ports: [{{name: http, port: 8000}}]}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: [{name}.local]\n  gateways: [demo-gateway]\n\
         \x20 http:\n  - route:\n    - destination: {{host: {name}}}\n"
    )
}

#[test]
fn workloads_start_and_stop_while_the_mesh_runs() {
    let tmp = std::env::temp_dir().join(format!("weft-up-live-{}", std::process::id()));
    let dir = tmp.join("mesh");
    let state = tmp.join("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let port = free_port();
    let gateway = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: demo-gateway}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20 - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: ['*']\n---\n"
    );
    let mesh_file = dir.join("mesh.yaml");
    std::fs::write(&mesh_file, format!("{gateway}{}", httpbin("first", 1, ""))).expect("write");
    let second = tmp.join("second.yaml");
    std::fs::write(&second, httpbin("second", 1, "")).expect("write");
    let second_path = second.to_str().expect("utf-8");

    let (mut mesh, stdout) = Mesh::up(&dir, &state);
    let up = mesh.pid();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    let printed = |want: &str| {
        lines
            .lock()
            .expect("lines")
            .iter()
            .find(|l| l.contains(want))
            .cloned()
    };

    eventually(Duration::from_secs(60), "first serves", || {
        pod(port, "first.local").as_deref() == Some("first-v1-0")
    });
    let first = app_pid(up, "first-v1-0").expect("first-v1-0 runs");

    // A Workload applied while the mesh runs: its replica starts and serves.
    let out = weft(&state, &["apply", "-f", second_path]);
    assert!(out.contains("workload/second-v1 created"), "{out}");
    eventually(Duration::from_secs(30), "second serves", || {
        pod(port, "second.local").as_deref() == Some("second-v1-0")
    });
    // The progress lines: the app may answer before its line is read here.
    eventually(Duration::from_secs(5), "second's progress lines", || {
        printed("Workloads changed: starting second-v1-0").is_some()
            && printed("Started second-v1-0").is_some()
    });
    let started = printed("Started second-v1-0").unwrap_or_default();
    // `Started second-v1-0 (pod IP 127.M.2.1, app ...)`: first's block is 1, second's 2.
    let pod_ip: Ipv4Addr = started
        .split("pod IP ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|ip| ip.parse().ok())
        .expect("pod IP in the progress line");
    assert_eq!(pod_ip.octets()[2], 2, "{started}");
    let second_0 = [
        app_pid(up, "second-v1-0").expect("second-v1-0 app"),
        sidecar_pid(up, "second-v1-0").expect("second-v1-0 sidecar"),
    ];

    // Scaled to two: one replica more; the running one is not touched.
    std::fs::write(&second, httpbin("second", 2, "")).expect("write");
    let out = weft(&state, &["apply", "-f", second_path]);
    assert!(out.contains("workload/second-v1 configured"), "{out}");
    let mut seen = std::collections::BTreeSet::new();
    eventually(Duration::from_secs(30), "both replicas serve", || {
        seen.extend(pod(port, "second.local"));
        seen.len() == 2
    });
    assert_eq!(
        app_pid(up, "second-v1-0"),
        Some(second_0[0]),
        "second-v1-0 was restarted by a scale-up"
    );
    let second_1 = [
        app_pid(up, "second-v1-1").expect("second-v1-1 app"),
        sidecar_pid(up, "second-v1-1").expect("second-v1-1 sidecar"),
    ];

    // An invalid edit in DIR: reported with file and field; what runs stays.
    std::fs::write(
        &mesh_file,
        format!("{gateway}{}", httpbin("first", 1, "1BAD: x")),
    )
    .expect("write");
    eventually(Duration::from_secs(10), "the invalid edit reported", || {
        printed("Workload change not applied").is_some()
    });
    let reported = printed("Workload change not applied").unwrap_or_default();
    assert!(reported.contains("mesh.yaml"), "{reported}");
    let diagnostic = printed("Workload default/first-v1").unwrap_or_default();
    assert!(
        diagnostic.contains("mesh.yaml:") && diagnostic.contains("spec.env"),
        "{diagnostic}"
    );
    assert_eq!(pod(port, "first.local").as_deref(), Some("first-v1-0"));
    assert_eq!(app_pid(up, "first-v1-0"), Some(first));

    // A valid edit: first's replica restarts with the new environment.
    std::fs::write(
        &mesh_file,
        format!("{gateway}{}", httpbin("first", 1, "GREETING: hi")),
    )
    .expect("write");
    eventually(Duration::from_secs(30), "first restarted", || {
        printed("restarting first-v1-0").is_some()
            && app_pid(up, "first-v1-0").is_some_and(|p| p != first)
            && pod(port, "first.local").as_deref() == Some("first-v1-0")
    });
    let first = app_pid(up, "first-v1-0").expect("first-v1-0 runs");
    let env = std::fs::read(format!("/proc/{first}/environ")).unwrap_or_default();
    assert!(
        env.split(|b| *b == 0).any(|v| v == b"GREETING=hi"),
        "the restarted replica has the edited env"
    );
    assert_eq!(
        app_pid(up, "second-v1-0"),
        Some(second_0[0]),
        "second-v1-0 was restarted by first's edit"
    );

    // Deleted: both replicas' apps and sidecars stop; first serves on.
    let out = weft(&state, &["delete", "-f", second_path]);
    assert!(out.contains("workload/second-v1 deleted"), "{out}");
    eventually(Duration::from_secs(30), "second's processes gone", || {
        second_0.iter().chain(&second_1).all(|p| !common::alive(*p))
    });
    // Printed once the supervisor has read the last of their output.
    eventually(Duration::from_secs(5), "the stop reported", || {
        printed("Stopped second-v1-0, second-v1-1").is_some()
    });
    assert!(
        TcpStream::connect_timeout(
            &SocketAddr::new(pod_ip.into(), 8000),
            Duration::from_secs(1)
        )
        .is_err(),
        "second-v1-0's sidecar still listens on {pod_ip}:8000"
    );
    assert_eq!(pod(port, "first.local").as_deref(), Some("first-v1-0"));
    assert_eq!(app_pid(up, "first-v1-0"), Some(first));

    stop(&mut mesh, children(up));
    let _ = reader.join();
    let _ = std::fs::remove_dir_all(&tmp);
}
