//! `weft up --capture` end to end: replicas in network namespaces, their traffic captured by
//! iptables into their sidecars, the applications unmodified (no HTTP_PROXY).
//!
//! Needs root, iproute2, iptables and setpriv (CI has them); elsewhere each test says why it
//! is skipped. Every namespace, link and rule is the mesh's own, removed when it stops (which
//! the tests check). The only "external" server is one the test runs on the mesh's bridge.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use common::{Up, get, line_with, pod_ip, until, up, weft};

/// Why these tests cannot run here, if they cannot.
fn unsupported() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        == Some("0");
    if !root {
        return Some("not root".into());
    }
    for tool in ["ip", "iptables-restore", "setpriv", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("no {tool}"));
        }
    }
    None
}

macro_rules! require_capture {
    () => {
        if let Some(why) = unsupported() {
            // CI runs as root with the tools `.ci/run` installs: a skip there would hide a
            // regression.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "`weft up --capture` cannot run under CI: {why}"
            );
            eprintln!("skipped: `weft up --capture` needs root and its tools here ({why})");
            return;
        }
    };
}

/// Runs `argv` inside `workload`'s replica 0 (`weft exec`), which must succeed; its stdout,
/// trimmed.
fn exec(mesh: &Up, workload: &str, argv: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["exec", workload, "--state-dir"])
        .arg(&mesh.state)
        .arg("--")
        .args(argv)
        .output()
        .expect("weft exec");
    assert!(
        out.status.success(),
        "weft exec {workload} {argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs Python `code` inside `workload`'s replica 0; its output.
fn exec_py(mesh: &Up, workload: &str, code: &str) -> String {
    exec(mesh, workload, &["python3", "-c", code])
}

/// An HTTP GET from inside `workload`: `STATUS BODY`, or `error ...`.
fn http_from(mesh: &Up, workload: &str, url: &str) -> String {
    let code = format!(
        "import urllib.request,urllib.error\n\
         try:\n  r=urllib.request.urlopen('{url}',timeout=5); print(r.status, r.read().decode())\n\
         except urllib.error.HTTPError as e: print(e.code, e.read().decode())\n\
         except Exception as e: print('error', e)"
    );
    exec_py(mesh, workload, &code)
}

/// One line sent to `host:port` from inside `workload`, and the line that came back (or
/// `closed` / `error ...`).
fn tcp_from(mesh: &Up, workload: &str, host: &str, port: u16, line: &str) -> String {
    let code = format!(
        "import socket\n\
         try:\n  s=socket.create_connection(('{host}',{port}),timeout=5); s.sendall(b'{line}\\n')\n  \
         d=s.recv(200).decode().strip(); print(d if d else 'closed')\n\
         except Exception as e: print('error', e)"
    );
    exec_py(mesh, workload, &code)
}

/// The mesh octet `M` of a captured mesh, from a pod IP `100.(64+M).w.r`.
fn octet(pod: IpAddr) -> u8 {
    match pod {
        IpAddr::V4(v4) => v4.octets()[1] - 64,
        IpAddr::V6(_) => panic!("a v4 pod IP"),
    }
}

/// The network namespaces and links a captured mesh with octet `m` has.
fn leftovers(m: u8) -> Vec<String> {
    let list = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut found: Vec<String> = list(&["netns", "list"])
        .lines()
        .filter(|l| l.starts_with(&format!("weft{m}-")))
        .map(str::to_owned)
        .collect();
    found.extend(
        list(&["-o", "link", "show"])
            .lines()
            .filter(|l| l.contains(&format!(": weft{m}:")) || l.contains(&format!(": wv{m}-")))
            .map(str::to_owned),
    );
    found
}

/// The Prometheus text of the proxy whose admin port is at `pod`.
fn metrics(pod: IpAddr) -> String {
    let (status, body) =
        get(SocketAddr::new(pod, 15000), "admin", "/stats/prometheus").expect("metrics");
    assert_eq!(status, 200);
    body
}

#[test]
fn bookinfo_runs_captured_with_its_apps_unmodified() {
    require_capture!();
    let mesh = up(
        "capture-bookinfo",
        &["bookinfo/bookinfo.yaml"],
        &["--capture"],
    );
    let productpage = pod_ip(&mesh.lines, "productpage-v1-0");
    let reviews: Vec<IpAddr> = ["reviews-v1-0", "reviews-v2-0", "reviews-v3-0"]
        .iter()
        .map(|r| pod_ip(&mesh.lines, r))
        .collect();
    assert!(
        productpage.to_string().starts_with("100."),
        "pod IPs on the pod network: {productpage}"
    );
    let m = octet(productpage);
    assert!(!leftovers(m).is_empty(), "the mesh's namespaces exist");

    // An unmodified client in productpage's namespace reaches reviews by its short name:
    // the sidecar's DNS proxy answers, iptables takes the connection to the sidecar.
    let reply = http_from(&mesh, "productpage-v1", "http://reviews:9080/reviews/0");
    assert!(reply.starts_with("200 "), "{reply}");
    assert!(reply.contains("podname"), "{reply}");
    // The whole page, which the productpage app builds from details and reviews.
    let page = http_from(
        &mesh,
        "productpage-v1",
        "http://productpage:9080/productpage",
    );
    assert!(
        page.starts_with("200 ") && page.contains("Book Details"),
        "{page}"
    );

    // The server's connection came from its sidecar, from 127.0.0.6 ...
    let served = line_with(&mesh.lines, "\"GET /reviews/0 HTTP/1.1\" 200");
    assert!(served.contains("127.0.0.6:"), "{served}");
    // ... and both sidecars counted the request.
    until("both sidecars counted", Duration::from_secs(10), || {
        let client = metrics(productpage);
        // Whichever version served it.
        let servers: String = reviews.iter().map(|r| metrics(*r)).collect();
        client.lines().any(|l| {
            l.starts_with("istio_requests_total{reporter=\"source\"")
                && l.contains("destination_service_name=\"reviews\"")
        }) && servers.lines().any(|l| {
            l.starts_with("istio_requests_total{reporter=\"destination\"")
                && l.contains("source_workload=\"productpage-v1\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")
        })
    });

    // Istio's request-routing task, unchanged: every reviews call goes to v1.
    for file in ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/bookinfo/networking")
            .join(file);
        weft(&mesh.state, &["apply", "-f", path.to_str().expect("utf-8")]);
    }
    for _ in 0..6 {
        let reply = http_from(&mesh, "productpage-v1", "http://reviews:9080/reviews/0");
        assert!(reply.contains("\"podname\":\"reviews-v1-0\""), "{reply}");
    }

    // The proxy's config, read from the captured sidecar (its bootstrap lives in /run).
    let listeners = weft(
        &mesh.state,
        &["proxy-config", "listeners", "--admin", "productpage-v1-0"],
    );
    assert!(
        listeners.contains("virtualInbound") && listeners.contains("(captured:"),
        "{listeners}"
    );

    // The ingress gateway, on the host, reaches the pods through the bridge.
    let gateway_yaml = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/bookinfo/networking/bookinfo-gateway.yaml");
    weft(
        &mesh.state,
        &["apply", "-f", gateway_yaml.to_str().expect("utf-8")],
    );
    line_with(&mesh.lines, "Ingress gateway port 80");
    let gateway = SocketAddr::from(([127, 0, 0, 1], 8080));
    until(
        "the gateway serves the page",
        Duration::from_secs(10),
        || {
            get(gateway, "bookinfo", "/productpage")
                .is_ok_and(|(s, b)| s == 200 && b.contains("Book Details"))
        },
    );

    mesh.finish();
    assert_eq!(leftovers(m), Vec::<String>::new(), "removed at stop");
}

#[test]
fn tcp_dns_and_the_outbound_policy_under_capture() {
    require_capture!();
    let tmp = std::env::temp_dir().join(format!("weft-capture-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let mesh_config = tmp.join("mesh.yaml");
    std::fs::write(&mesh_config, "outboundTrafficPolicy: {mode: ALLOW_ANY}\n").expect("write");
    let mesh = up(
        "capture-tcp",
        &["tcp-echo/tcp-echo.yaml", "httpbin/httpbin.yaml"],
        &[
            "--capture",
            "--mesh-config",
            mesh_config.to_str().expect("utf-8"),
        ],
    );
    let sleep = pod_ip(&mesh.lines, "sleep-0");
    let m = octet(sleep);

    // DNS: mesh names get the service's virtual IP.
    let hosts = exec(&mesh, "sleep", &["getent", "hosts", "tcp-echo"]);
    assert!(hosts.starts_with("240.240."), "{hosts}");
    let fqdn = exec(
        &mesh,
        "sleep",
        &["getent", "hosts", "tcp-echo.default.svc.cluster.local"],
    );
    assert_eq!(
        fqdn.split_whitespace().next(),
        hosts.split_whitespace().next()
    );

    // A TCP service through both sidecars, to either version.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let reply = tcp_from(&mesh, "sleep", "tcp-echo", 9000, "world");
        assert!(reply == "one world" || reply == "two world", "{reply}");
        seen.insert(reply);
    }
    assert_eq!(seen.len(), 2, "both versions answer: {seen:?}");
    let client = metrics(sleep);
    assert!(
        client.lines().any(|l| l
            .starts_with("istio_tcp_connections_opened_total{reporter=\"source\"")
            && l.contains("destination_service_name=\"tcp-echo\"")),
        "{client}"
    );

    // HTTP on a port that declares no protocol (an unnamed Service port) is detected as
    // HTTP and routed as such, as Istio's protocol sniffing does.
    common::apply_yaml(
        &mesh.state,
        &mesh.tmp,
        "raw.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: httpbin-raw}\n\
         spec: {selector: {app: httpbin}, ports: [{port: 8000}]}\n",
    );
    let reply = http_from(&mesh, "sleep", "http://httpbin-raw:8000/get?x=1");
    assert!(
        reply.starts_with("200 ") && reply.contains("\"x\""),
        "{reply}"
    );
    until("counted as HTTP", Duration::from_secs(10), || {
        metrics(sleep).lines().any(|l| {
            l.starts_with("istio_requests_total{reporter=\"source\"")
                && l.contains("destination_service_name=\"httpbin-raw\"")
                && l.contains("response_code=\"200\"")
        })
    });

    // An address outside the registry: a server this test runs on the mesh's bridge.
    let bridge = Ipv4Addr::new(100, 64 + m, 0, 1);
    let external = TcpListener::bind((bridge, 0)).expect("bind on the bridge");
    let port = external.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in external.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_ok() {
                let _ = reader.get_mut().write_all(b"external\n");
            }
        }
    });
    let host = bridge.to_string();
    // ALLOW_ANY: passed through to where it was sent.
    assert_eq!(tcp_from(&mesh, "sleep", &host, port, "hi"), "external");
    // REGISTRY_ONLY: the black hole.
    std::fs::write(
        &mesh_config,
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    )
    .expect("write");
    until("REGISTRY_ONLY blocks it", Duration::from_secs(15), || {
        tcp_from(&mesh, "sleep", &host, port, "hi") != "external"
    });
    // The mesh's own services still answer.
    let reply = tcp_from(&mesh, "sleep", "tcp-echo", 9000, "again");
    assert!(reply.ends_with(" again"), "{reply}");

    // A replica that does not exist is named as such.
    let (ok, text) = {
        let out = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["exec", "nosuch", "--state-dir"])
            .arg(&mesh.state)
            .args(["--", "true"])
            .output()
            .expect("weft exec");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(
        !ok && text.contains("no replica 0 of workload nosuch"),
        "{text}"
    );

    mesh.finish();
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(leftovers(m), Vec::<String>::new(), "removed at stop");
}

#[test]
fn without_privileges_capture_says_what_is_missing() {
    require_capture!();
    // As an unprivileged user: a copy of weft it may run, in a directory it may read.
    let tmp = std::env::temp_dir().join(format!("weft-capture-nobody-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("mesh")).expect("mkdir");
    let exe = tmp.join("weft");
    std::fs::copy(env!("CARGO_BIN_EXE_weft"), &exe).expect("copy weft");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    std::fs::copy(
        examples.join("tcp-echo/tcp-echo.yaml"),
        tmp.join("mesh/tcp-echo.yaml"),
    )
    .expect("copy the example");
    let chmod = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&tmp)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["up", "--capture"])
        .arg(tmp.join("mesh"))
        .arg("--state-dir")
        .arg(tmp.join("state"))
        .output()
        .expect("weft up as nobody");
    let _ = std::fs::remove_dir_all(&tmp);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--capture needs root"), "{stderr}");
    assert!(
        stderr.contains("without --capture"),
        "names the mode that works: {stderr}"
    );
}
