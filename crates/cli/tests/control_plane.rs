//! `weft control-plane` with real `weft-proxy` sidecars, all on loopback: config becomes
//! routing, edits are pushed, a bad file keeps the old routing, a NACK shows in
//! `weft proxy-status` while traffic flows, and the control plane can die under load and come
//! back.
//!
//! The sidecar binary is `weft-proxy` from the same target directory: `cargo test --workspace`
//! builds it; with `cargo test -p weft` build it first (`cargo build -p weft-proxy`), or point
//! `WEFT_PROXY_BIN` at one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: productpage}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: productpage}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: ratings}
"#;

/// From examples/bookinfo/networking/destination-rule-all.yaml (the reviews part).
const DESTINATION_RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"#;

fn reviews_to(subset: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: {subset}
"#
    )
}

/// A misspelt `destination` (line 11): weft-api rejects the file.
const REVIEWS_BROKEN: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subsett: v1
"#;

/// Valid for weft-api, refused by the proxy: the CA file does not exist.
const RATINGS_BAD_TLS: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
  trafficPolicy:
    tls:
      mode: SIMPLE
      caCertificates: /nonexistent/weft-test/ca.pem
"#;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new directory under the system temp dir, with an empty `config/` in it.
fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config")).expect("dir");
    dir
}

/// Writes through a rename, as editors do: the reader never sees half a file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A child process whose stderr lines are collected; killed on drop.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn spawn(mut cmd: Command) -> Process {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = keep.lock() {
                    l.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        Process {
            child,
            lines: rx,
            log,
        }
    }

    /// The first line starting with `prefix`, within 30 s.
    fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line {prefix:?}; stderr:\n{}", self.log());
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_after(line: &str) -> SocketAddr {
    line.rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

struct ControlPlane {
    process: Process,
    xds: SocketAddr,
    monitoring: SocketAddr,
}

fn start_control_plane(dir: &Path, xds: SocketAddr) -> ControlPlane {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.arg("control-plane")
        .arg("--config")
        .arg(dir.join("config"))
        .arg("--instances")
        .arg(dir.join("instances.yaml"))
        .arg("--xds-address")
        .arg(xds.to_string())
        .arg("--monitoring-address")
        .arg("127.0.0.1:0");
    let mesh = dir.join("mesh.yaml");
    if mesh.exists() {
        cmd.arg("--mesh-config").arg(mesh);
    }
    let process = Process::spawn(cmd);
    let xds = addr_after(&process.wait_line("weft control-plane: xds on "));
    let monitoring = addr_after(&process.wait_line("weft control-plane: monitoring on "));
    ControlPlane {
        process,
        xds,
        monitoring,
    }
}

fn proxy_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WEFT_PROXY_BIN") {
        return PathBuf::from(p);
    }
    let weft = Path::new(env!("CARGO_BIN_EXE_weft"));
    let path = weft.with_file_name("weft-proxy");
    assert!(
        path.exists(),
        "weft-proxy not found at {}: build it first (`cargo build -p weft-proxy`; \
         `cargo test --workspace` builds it), or set WEFT_PROXY_BIN",
        path.display()
    );
    path
}

struct Sidecar {
    _process: Process,
    outbound: SocketAddr,
    admin: SocketAddr,
}

fn start_sidecar(dir: &Path, name: &str, ip: IpAddr, xds: SocketAddr) -> Sidecar {
    let bootstrap = dir.join(format!("{name}.bootstrap.yaml"));
    let node = format!("sidecar~{ip}~{name}.default~default.svc.cluster.local");
    std::fs::write(
        &bootstrap,
        format!(
            "admin: {{address: \"127.0.0.1:0\", healthAddress: \"127.0.0.1:0\", drainTimeout: 1s}}\n\
             node: {{id: \"{node}\"}}\n\
             xds: {{address: \"http://{xds}\"}}\n"
        ),
    )
    .expect("bootstrap");
    let mut cmd = Command::new(proxy_binary());
    cmd.arg("--config")
        .arg(&bootstrap)
        .arg("--concurrency")
        .arg("1");
    let process = Process::spawn(cmd);
    let admin = addr_after(&process.wait_line("weft-proxy: admin on "));
    process.wait_line("weft-proxy: ready");
    Sidecar {
        _process: process,
        outbound: SocketAddr::new(ip, 15001),
        admin,
    }
}

/// A stand-in application: answers every request with `name`, keep-alive.
fn app(addr: SocketAddr, name: &'static str) {
    let listener =
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind app {name} on {addr}: {e}"));
    serve_app(listener, name);
}

/// [`app`] on a listener already bound (a port 0 one keeps its port: released and bound again,
/// an outgoing connection of a test running alongside may take it meanwhile).
fn serve_app(listener: TcpListener, name: &'static str) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    buf.drain(..end);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{name}",
                        name.len()
                    );
                    if stream.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// One HTTP/1.1 GET to `to` (`target` may be absolute-form, for the explicit proxy).
fn http_get(to: SocketAddr, host: &str, target: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no response head")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Which reviews version answers through a sidecar's outbound (explicit proxy) listener.
fn reviews_via(sidecar: &Sidecar) -> Result<String, String> {
    match http_get(sidecar.outbound, "reviews:9080", "http://reviews:9080/")? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("{status}: {body}")),
    }
}

/// Polls `f` every 20 ms until it holds, for at most 20 s; returns how long it took.
fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within 20 s: {what}");
}

/// As [`eventually`], for a check that says what it saw: the panic names the last of it.
fn eventually_saw<T: std::fmt::Debug + PartialEq>(what: &str, want: &T, mut f: impl FnMut() -> T) {
    let start = Instant::now();
    let mut last = f();
    while &last != want {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not within 20 s: {what}; last seen: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
        last = f();
    }
}

fn weft(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .output()
        .expect("run weft");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "weft {args:?}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn all_synced(status: &str, proxies: usize) -> bool {
    let rows: Vec<&str> = status.lines().skip(1).filter(|l| !l.is_empty()).collect();
    rows.len() == proxies
        && rows.iter().all(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1..4) == Some(&["SYNCED", "SYNCED", "SYNCED"][..])
        })
}

#[test]
fn control_plane_drives_real_sidecars() {
    // A /24 of loopback of our own (fixed ports: 15001 and 9080 on each address), drawn
    // per run so that concurrent runs do not meet.
    let net = 100 + (std::process::id() % 150) as u8;
    let ip = |host: u8| IpAddr::from([127, 0, net, host]);
    let dir = fresh_dir("weft-cp-e2e");
    let _cleanup = TempDir(dir.clone());
    let config = dir.join("config");
    write(&config.join("services.yaml"), SERVICES);
    write(&config.join("destination-rules.yaml"), DESTINATION_RULES);
    let vs = config.join("virtual-service-reviews.yaml");
    write(&vs, &reviews_to("v1"));
    // Each instance: its sidecar on .N, its application on .(N+100).
    let instances = [
        ("productpage-v1-0", "productpage", "v1", 2u8),
        ("reviews-v1-0", "reviews", "v1", 3),
        ("reviews-v2-0", "reviews", "v2", 4),
        ("ratings-v1-0", "ratings", "v1", 5),
    ];
    let mut list = String::new();
    for (name, app, version, host) in instances {
        list.push_str(&format!(
            "- name: {name}\n  labels: {{app: {app}, version: {version}}}\n  ip: {}\n  appHost: {}\n  ports: [{{name: http, port: 9080, protocol: HTTP}}]\n",
            ip(host),
            ip(host + 100)
        ));
    }
    write(&dir.join("instances.yaml"), &list);
    app(SocketAddr::new(ip(103), 9080), "reviews-v1");
    app(SocketAddr::new(ip(104), 9080), "reviews-v2");

    let mut cp = start_control_plane(&dir, "127.0.0.1:0".parse().unwrap());
    let xds = cp.xds;
    assert_eq!(
        http_get(cp.monitoring, "cp", "/ready").map(|(s, _)| s),
        Ok(200)
    );
    let sidecars: Vec<Sidecar> = instances[..3]
        .iter()
        .map(|(name, _, _, host)| start_sidecar(&dir, name, ip(*host), xds))
        .collect();

    // Config became routing: every sidecar sends reviews to v1 (through reviews-v1's
    // sidecar, which forwards to the application).
    for s in &sidecars {
        eventually("reviews v1 through every sidecar", || {
            reviews_via(s).is_ok_and(|b| b == "reviews-v1")
        });
    }
    let cp_url = |cp: &ControlPlane| format!("http://{}", cp.monitoring);
    let url = cp_url(&cp);
    eventually("all proxies SYNCED", || {
        all_synced(&weft(&["proxy-status", "--control-plane", &url]), 3)
    });
    let routes = weft(&[
        "proxy-config",
        "routes",
        "productpage-v1-0.default",
        "--control-plane",
        &url,
    ]);
    assert!(
        routes.contains("outbound|9080|v1|reviews.default.svc.cluster.local"),
        "{routes}"
    );
    let admin = format!("http://{}", sidecars[0].admin);
    let clusters = weft(&["proxy-config", "clusters", "--admin", &admin]);
    assert!(
        clusters
            .lines()
            .any(|l| l.starts_with("reviews.default.svc.cluster.local") && l.contains(" v2 ")),
        "{clusters}"
    );
    let json = weft(&[
        "proxy-config",
        "listeners",
        "reviews-v1-0",
        "-o",
        "json",
        "--control-plane",
        &url,
    ]);
    assert!(json.contains(&format!("{}:9080", ip(3))), "{json}");

    // Edit the VirtualService: every sidecar routes to v2.
    write(&vs, &reviews_to("v2"));
    let edited = Instant::now();
    for s in &sidecars {
        eventually("reviews v2 after the edit", || {
            reviews_via(s).is_ok_and(|b| b == "reviews-v2")
        });
    }
    let took = edited.elapsed();
    eprintln!(
        "edit -> new routing on all {} sidecars: {took:?}",
        sidecars.len()
    );
    // The control plane's metrics (istiod's names): three weft proxies connected, pushes
    // made, and the edit converged on every sidecar (each ACKed what it caused).
    let metric = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let version = env!("CARGO_PKG_VERSION");
    eventually("the edit converged on three proxies", || {
        http_get(cp.monitoring, "cp", "/metrics").is_ok_and(|(_, m)| {
            metric(&m, "pilot_proxy_convergence_time_count").is_some_and(|n| n >= 3.0)
        })
    });
    let (status, m) = http_get(cp.monitoring, "cp", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        metric(&m, &format!("pilot_xds{{version=\"{version}\"}}")),
        Some(3.0),
        "{m}"
    );
    assert!(
        metric(&m, "pilot_xds_pushes{type=\"rds\"}").is_some_and(|n| n >= 3.0),
        "{m}"
    );
    assert!(
        metric(&m, "pilot_xds_push_time_count{type=\"lds\"}").is_some_and(|n| n >= 3.0),
        "{m}"
    );
    assert!(m.contains("# TYPE pilot_total_xds_rejects counter"), "{m}");

    // An invalid edit: reported with file:line, the old routing stays.
    write(&vs, REVIEWS_BROKEN);
    eventually("the broken file in /debug/config_errors", || {
        http_get(cp.monitoring, "cp", "/debug/config_errors").is_ok_and(|(_, body)| {
            body.contains("virtual-service-reviews.yaml:12:") && body.contains("subsett")
        })
    });
    for s in &sidecars {
        for _ in 0..5 {
            assert_eq!(reviews_via(s).as_deref(), Ok("reviews-v2"));
        }
    }
    write(&vs, &reviews_to("v2"));
    eventually("the error clears", || {
        http_get(cp.monitoring, "cp", "/debug/config_errors")
            .is_ok_and(|(_, body)| !body.contains("virtual-service-reviews.yaml"))
    });

    // A resource the proxies refuse: NACK with its reason in proxy-status; traffic flows.
    let bad_dr = config.join("ratings-tls.yaml");
    write(&bad_dr, RATINGS_BAD_TLS);
    let mut status = String::new();
    eventually("NACK in proxy-status", || {
        status = weft(&["proxy-status", "--control-plane", &url]);
        status.matches("CLUSTERS NACK").count() == 3
    });
    assert!(status.contains("/nonexistent/weft-test/ca.pem"), "{status}");
    eprintln!("proxy-status with the NACK:\n{status}");
    for s in &sidecars {
        assert_eq!(reviews_via(s).as_deref(), Ok("reviews-v2"));
    }
    std::fs::remove_file(&bad_dr).expect("remove");
    eventually("SYNCED again without the bad rule", || {
        all_synced(&weft(&["proxy-status", "--control-plane", &url]), 3)
    });

    // Kill the control plane under load: no request fails; it comes back on the same port,
    // with a change made while it was down, and the proxies resync.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let targets: Vec<SocketAddr> = sidecars.iter().map(|s| s.outbound).collect();
    let load: Vec<_> = (0..3)
        .map(|i| {
            let (stop, ok, failed, to) = (stop.clone(), ok.clone(), failed.clone(), targets[i]);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http_get(to, "reviews:9080", "http://reviews:9080/") {
                        Ok((200, b)) if b.starts_with("reviews-") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            if let Ok(mut f) = failed.lock() {
                                f.push(format!("{to}: {other:?}"));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let _ = cp.process.child.kill();
    let _ = cp.process.child.wait();
    std::thread::sleep(Duration::from_millis(500));
    write(&vs, &reviews_to("v1"));
    std::thread::sleep(Duration::from_millis(500));
    cp = start_control_plane(&dir, xds);
    let url = cp_url(&cp);
    for s in &sidecars {
        eventually("resync: reviews v1 after the restart", || {
            reviews_via(s).is_ok_and(|b| b == "reviews-v1")
        });
    }
    eventually("all proxies SYNCED after the restart", || {
        all_synced(&weft(&["proxy-status", "--control-plane", &url]), 3)
    });
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let _ = t.join();
    }
    let failed = failed.lock().map(|f| f.clone()).unwrap_or_default();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!(
        "under load across the restart: {ok} ok, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 0);

    // SIGTERM stops it cleanly.
    let pid = cp.process.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Ok(Some(status)) = cp.process.child.try_wait() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "control plane did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "{}", cp.process.log());
}

/// Egress: under ALLOW_ANY a host outside the registry is reached where it was addressed;
/// a DNS ServiceEntry's name is resolved by the control plane; editing the mesh config file to
/// REGISTRY_ONLY closes the passthrough live, and a bad edit keeps the last good mesh config.
#[test]
fn egress_follows_the_mesh_outbound_traffic_policy() {
    let net = 100 + ((std::process::id() + 75) % 150) as u8;
    let ip = |host: u8| IpAddr::from([127, 0, net, host]);
    let dir = fresh_dir("weft-cp-egress");
    let _cleanup = TempDir(dir.clone());
    // An application outside the mesh, and one behind a DNS name (localhost).
    let outside = SocketAddr::new(ip(200), 8080);
    app(outside, "outside");
    let named = TcpListener::bind("127.0.0.1:0").expect("bind");
    let named_port = named.local_addr().expect("addr").port();
    serve_app(named, "by-dns");
    write(
        &dir.join("config").join("egress.yaml"),
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: partner}}\n\
             spec:\n  hosts: [partner.example]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  \
             ports: [{{number: 80, name: http, protocol: HTTP}}]\n  \
             endpoints: [{{address: localhost, ports: {{http: {named_port}}}}}]\n"
        ),
    );
    write(
        &dir.join("instances.yaml"),
        &format!(
            "- {{name: sleep-0, labels: {{app: sleep}}, ip: {}}}\n",
            ip(2)
        ),
    );
    let mesh = dir.join("mesh.yaml");
    write(&mesh, "outboundTrafficPolicy: {mode: ALLOW_ANY}\n");
    let cp = start_control_plane(&dir, "127.0.0.1:0".parse().unwrap());
    let sleep = start_sidecar(&dir, "sleep-0", ip(2), cp.xds);
    let get = |host: &str| http_get(sleep.outbound, host, &format!("http://{host}/"));

    eventually("the outside app through the passthrough", || {
        get(&outside.to_string()) == Ok((200, "outside".into()))
    });
    eventually_saw(
        "the ServiceEntry's DNS name resolved to its app",
        &Ok((200, "by-dns".into())),
        || get("partner.example"),
    );
    let admin = format!("http://{}", sleep.admin);
    let clusters = weft(&["proxy-config", "clusters", "--admin", &admin]);
    assert!(clusters.contains("PassthroughCluster"), "{clusters}");

    // REGISTRY_ONLY: the outside host now gets 502 (BlackHoleCluster); registered hosts still
    // work.
    write(&mesh, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
    eventually("the passthrough closed", || {
        get(&outside.to_string()).is_ok_and(|(status, _)| status == 502)
    });
    assert_eq!(get("partner.example"), Ok((200, "by-dns".into())));

    // A bad edit is reported and changes nothing.
    write(&mesh, "outboundTrafficPolicy: {mode: WIDE_OPEN}\n");
    let url = format!("http://{}", cp.monitoring);
    eventually("the bad mesh config reported", || {
        http_get(cp.monitoring, "cp", "/debug/config_errors")
            .is_ok_and(|(_, body)| body.contains("meshConfig") && body.contains("WIDE_OPEN"))
    });
    assert!(get(&outside.to_string()).is_ok_and(|(status, _)| status == 502));
    assert!(all_synced(
        &weft(&["proxy-status", "--control-plane", &url]),
        1
    ));
}

/// `meshConfig.accessLogFile` with a format makes every sidecar log its requests in that
/// format; a Telemetry turns the log off for one workload; Telemetry settings weft does not
/// apply (an unknown provider) are listed on `/debug/config_errors`.
#[test]
fn access_logs_follow_the_mesh_config_and_telemetry() {
    let net = 100 + ((std::process::id() + 37) % 150) as u8;
    let ip = |host: u8| IpAddr::from([127, 0, net, host]);
    let dir = fresh_dir("weft-cp-access-log");
    let _cleanup = TempDir(dir.clone());
    let outside = SocketAddr::new(ip(200), 8080);
    app(outside, "outside");
    write(
        &dir.join("instances.yaml"),
        &format!(
            "- {{name: sleep-0, labels: {{app: sleep}}, ip: {}}}\n\
             - {{name: curl-0, labels: {{app: curl}}, ip: {}}}\n",
            ip(2),
            ip(3)
        ),
    );
    let log = dir.join("access.log");
    write(
        &dir.join("mesh.yaml"),
        &format!(
            "accessLogFile: {}\naccessLogFormat: \"%DOWNSTREAM_LOCAL_ADDRESS% %REQ(:METHOD)% \
             %RESPONSE_CODE% %REQ(:AUTHORITY)% %UPSTREAM_CLUSTER% %REQ(X-MISSING?USER-AGENT):4%\"\n",
            log.display()
        ),
    );
    let cp = start_control_plane(&dir, "127.0.0.1:0".parse().unwrap());
    let sleep = start_sidecar(&dir, "sleep-0", ip(2), cp.xds);
    let curl = start_sidecar(&dir, "curl-0", ip(3), cp.xds);
    let get = |s: &Sidecar| {
        http_get(
            s.outbound,
            &outside.to_string(),
            &format!("http://{outside}/"),
        )
    };
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    let line_of = |s: &Sidecar| format!("{} GET 200 {outside} PassthroughCluster -\n", s.outbound);

    eventually("sleep's request logged in the mesh's format", || {
        get(&sleep) == Ok((200, "outside".into())) && lines().contains(&line_of(&sleep))
    });
    eventually("curl's request logged", || {
        get(&curl).is_ok() && lines().contains(&line_of(&curl))
    });

    // A Telemetry turns sleep's access log off; curl's stays.
    write(
        &dir.join("config").join("telemetry.yaml"),
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: quiet, namespace: default}\n\
         spec:\n  selector: {matchLabels: {app: sleep}}\n  accessLogging: [{disabled: true}]\n---\n\
         apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: traced, namespace: default}\n\
         spec:\n  selector: {matchLabels: {app: curl}}\n  tracing: [{randomSamplingPercentage: 5}]\n  \
         accessLogging: [{providers: [{name: envoy}, {name: nope}]}]\n",
    );
    let count = |s: &Sidecar| lines().matches(&line_of(s)).count();
    eventually("sleep no longer logs", || {
        let before = count(&sleep);
        let _ = get(&sleep);
        std::thread::sleep(Duration::from_millis(300));
        count(&sleep) == before
    });
    let before = count(&sleep);
    for _ in 0..3 {
        assert_eq!(get(&sleep), Ok((200, "outside".into())));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&sleep), before, "{}", lines());

    // curl's Telemetry names the built-in `envoy` provider (stdout) and an unknown one:
    // neither is silently accepted or dropped.
    // (Its tracing is applied, and so not listed.)
    eventually("the unknown provider reported", || {
        http_get(cp.monitoring, "cp", "/debug/config_errors").is_ok_and(|(_, body)| {
            body.contains("Telemetry default/traced")
                && body.contains("nope")
                && !body.contains("spec.tracing")
        })
    });
}

/// Asks `server` over UDP for the A records of `name`: the addresses, or None when nothing
/// answers within a second.
fn dns_a(server: SocketAddr, name: &str) -> Option<Vec<std::net::Ipv4Addr>> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    socket
        .send_to(&query.to_vec().expect("encode"), server)
        .expect("send");
    let mut buf = [0u8; 4096];
    let len = socket.recv(&mut buf).ok()?;
    let reply = Message::from_vec(&buf[..len]).expect("a DNS reply");
    Some(
        reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
    )
}

/// DNS proxying (`ISTIO_META_DNS_CAPTURE` in the mesh config): the sidecar gets a `dns`
/// listener over xDS (on its own loopback IP, as sidecars share the host's network here)
/// that answers a Service's short name with its clusterIP and a ServiceEntry host with the
/// address the registry allocated; turning the switch off removes it. Only mesh names are
/// asked (a miss would go to the machine's resolver).
#[test]
fn dns_capture_gives_sidecars_a_dns_proxy_over_xds() {
    let net = 100 + ((std::process::id() + 101) % 150) as u8;
    let ip = |host: u8| IpAddr::from([127, 0, net, host]);
    let dir = fresh_dir("weft-cp-dns");
    let _cleanup = TempDir(dir.clone());
    write(
        &dir.join("config").join("services.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n\
         spec:\n  clusterIP: 10.96.0.20\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n\
         ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: partner}\n\
         spec:\n  hosts: [api.partner.example]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  \
         ports: [{number: 443, name: tls, protocol: TLS}]\n",
    );
    write(
        &dir.join("instances.yaml"),
        &format!(
            "- {{name: sleep-0, labels: {{app: sleep}}, ip: {}}}\n",
            ip(2)
        ),
    );
    let mesh = dir.join("mesh.yaml");
    write(
        &mesh,
        "defaultConfig: {proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}}\n",
    );
    let cp = start_control_plane(&dir, "127.0.0.1:0".parse().unwrap());
    let sleep = start_sidecar(&dir, "sleep-0", ip(2), cp.xds);
    let dns = SocketAddr::new(ip(2), 15053);

    for name in [
        "reviews.",
        "reviews.default.",
        "reviews.default.svc.cluster.local.",
    ] {
        assert_eq!(
            dns_a(dns, name),
            Some(vec![std::net::Ipv4Addr::new(10, 96, 0, 20)]),
            "{name}"
        );
    }
    let partner = dns_a(dns, "api.partner.example.").expect("an answer");
    assert!(
        partner.len() == 1 && partner[0].octets()[..2] == [240, 240],
        "an allocated address: {partner:?}"
    );
    let admin = format!("http://{}", sleep.admin);
    let listeners = weft(&["proxy-config", "listeners", "--admin", &admin]);
    assert!(
        listeners.contains("dns") && listeners.contains("DNS"),
        "{listeners}"
    );

    // Off: the listener goes away.
    write(&mesh, "defaultConfig: {proxyMetadata: {}}\n");
    eventually("the DNS listener removed", || {
        dns_a(dns, "reviews.").is_none()
    });
}
