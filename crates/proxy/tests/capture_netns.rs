//! `weft-proxy capture` for real, inside network namespaces this test creates (root only; CI
//! runs as root). Skipped with a printed reason when not root or when `ip` or iptables is
//! missing. Every namespace is deleted when the test ends, pass or fail (`Netns`'s Drop).
//!
//! - the rules are installed, read back with `iptables-save`; a second run changes nothing
//!   (no duplicated jumps); `--cleanup` leaves no ISTIO_ chain and no jump to one;
//! - traffic: in a "pod" namespace joined by a veth pair to a "peer" namespace, a connection
//!   the app makes to the peer reaches the listener on 15001 instead, the same connection made
//!   as uid 1337 (the sidecar) reaches the peer, and a connection from the peer to the pod
//!   reaches the listener on 15006, over IPv4 and IPv6; with DNS capture, port 53 goes to
//!   15053 except the sidecar's own; excluded ports and ranges bypass the sidecar.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

/// Why this test cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for tool in ["ip", "iptables-save", "iptables-restore", "setpriv", "bash"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Why the test is skipped, printed; none when it can run. Under CI (which installs the
/// tools and runs as root) a missing tool fails instead; a sandbox that refuses network
/// namespaces is still only a skip.
fn skip_reason() -> Option<String> {
    let reason = match unavailable() {
        Some(reason) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !(in_ci && reason.contains("not installed")),
                "CI=true but the capture test cannot run: {reason}"
            );
            reason
        }
        None => namespaces_refused()?,
    };
    eprintln!("skipped: {reason} (the capture namespace test needs root, ip and iptables)");
    Some(reason)
}

/// Whether network namespaces can be made here (a container without CAP_SYS_ADMIN cannot).
fn namespaces_refused() -> Option<String> {
    // Tests run side by side: each probe has its own name.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("weft-cap-test-{}-probe{n}", std::process::id());
    let out = Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .ok()?;
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    (!out.status.success()).then(|| {
        format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// A network namespace made for the test, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("weft-cap-test-{}-{role}", std::process::id());
        // A leftover of an earlier run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        must(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command inside the namespace.
    fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    fn run(&self, argv: &[&str]) -> Output {
        self.command(argv).output().expect("ip netns exec runs")
    }

    /// Runs and insists on success; stdout.
    fn ok(&self, argv: &[&str]) -> String {
        must(&mut self.command(argv))
    }

    fn capture(&self, args: &[&str]) -> String {
        let mut argv = vec![BIN, "capture"];
        argv.extend_from_slice(args);
        self.ok(&argv)
    }

    /// `iptables-save -t TABLE` without the comment lines (they carry a time).
    fn save(&self, tool: &str, table: &str) -> String {
        self.ok(&[tool, "-t", table])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn must(c: &mut Command) -> String {
    let out = c.output().expect("command runs");
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn capture_installs_is_idempotent_and_cleans_up() {
    if skip_reason().is_some() {
        return;
    }
    let pod = Netns::new("rules");
    pod.capture(&["-c", "eth7", "--redirect-dns", "--capture-all-dns"]);

    let nat = pod.save("iptables-save", "nat");
    for want in [
        ":ISTIO_INBOUND",
        ":ISTIO_REDIRECT",
        ":ISTIO_IN_REDIRECT",
        ":ISTIO_OUTPUT",
        ":ISTIO_OUTPUT_DNS",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -j ISTIO_OUTPUT",
        "-A PREROUTING -i eth7 -j RETURN",
        "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "--uid-owner 1337 -j RETURN",
        "--gid-owner 1337 -j RETURN",
        "--dport 53 -j REDIRECT --to-ports 15053",
    ] {
        assert!(nat.contains(want), "IPv4 nat lacks {want:?}:\n{nat}");
    }
    let raw = pod.save("iptables-save", "raw");
    assert!(raw.contains("-A OUTPUT -j ISTIO_OUTPUT_DNS"), "{raw}");
    let nat6 = pod.save("ip6tables-save", "nat");
    assert!(
        nat6.contains("-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN"),
        "IPv6 nat:\n{nat6}"
    );

    // Again, and again with another flag: replaced, never duplicated.
    pod.capture(&["-c", "eth7", "--redirect-dns", "--capture-all-dns"]);
    assert_eq!(
        pod.save("iptables-save", "nat"),
        nat,
        "a re-run changed nat"
    );
    assert_eq!(
        pod.save("iptables-save", "raw"),
        raw,
        "a re-run changed raw"
    );
    assert_eq!(pod.save("ip6tables-save", "nat"), nat6);
    pod.capture(&["-c", "eth7", "-p", "15101"]);
    let changed = pod.save("iptables-save", "nat");
    assert!(changed.contains("--to-ports 15101") && !changed.contains("--to-ports 15001"));
    assert_eq!(
        changed.matches("-A OUTPUT -j ISTIO_OUTPUT").count(),
        1,
        "{changed}"
    );
    assert!(
        !changed.contains("ISTIO_OUTPUT_DNS"),
        "DNS chain left:\n{changed}"
    );
    assert!(
        !pod.save("iptables-save", "raw").contains("ISTIO"),
        "raw keeps DNS rules no longer asked for"
    );

    // Someone else's rules in the same chains stay through a cleanup.
    pod.ok(&[
        "iptables", "-t", "nat", "-A", "OUTPUT", "-o", "eth6", "-j", "RETURN",
    ]);
    pod.capture(&["--cleanup", "-c", "eth7"]);
    for tool in ["iptables-save", "ip6tables-save"] {
        for table in ["nat", "raw", "mangle"] {
            let left = pod.save(tool, table);
            assert!(
                !left.contains("ISTIO"),
                "{tool} {table} after cleanup:\n{left}"
            );
            assert!(
                !left.contains("eth7"),
                "{tool} {table} after cleanup:\n{left}"
            );
        }
    }
    assert!(
        pod.save("iptables-save", "nat")
            .contains("-A OUTPUT -o eth6 -j RETURN")
    );
    // Cleaning up what is clean is fine.
    pod.capture(&["--cleanup"]);
}

/// Whether a binary runs here (iptables-legacy needs its kernel modules).
fn works_in(ns: &Netns, argv: &[&str]) -> bool {
    ns.run(argv).status.success()
}

#[test]
fn the_backend_holding_rules_is_kept() {
    if skip_reason().is_some() {
        return;
    }
    let pod = Netns::new("legacy");
    if !works_in(&pod, &["iptables-legacy", "-t", "nat", "-S"])
        || !works_in(&pod, &["iptables-nft", "-t", "nat", "-S"])
    {
        eprintln!("skipped: needs both iptables-legacy and iptables-nft working");
        return;
    }
    // Rules put there with legacy (as a host using iptables-legacy would have): a run
    // without --force-iptables-binary finds them and stays on legacy, replacing them.
    pod.capture(&["--force-iptables-binary", "legacy"]);
    let legacy = pod.save("iptables-legacy-save", "nat");
    assert!(legacy.contains("-A OUTPUT -j ISTIO_OUTPUT"), "{legacy}");
    pod.capture(&[]);
    assert_eq!(pod.save("iptables-legacy-save", "nat"), legacy);
    assert!(
        !pod.save("iptables-nft-save", "nat").contains("ISTIO"),
        "rules were put in nft too, where legacy already held them"
    );
    pod.capture(&["--cleanup"]);
    assert!(!pod.save("iptables-legacy-save", "nat").contains("ISTIO"));
    // Then, with no rules anywhere, nft is chosen; and legacy is left alone.
    pod.capture(&[]);
    assert!(
        pod.save("iptables-nft-save", "nat")
            .contains("-A OUTPUT -j ISTIO_OUTPUT")
    );
    assert!(!pod.save("iptables-legacy-save", "nat").contains("ISTIO"));
}

#[test]
fn a_bad_value_applies_nothing() {
    if skip_reason().is_some() {
        return;
    }
    let pod = Netns::new("bad");
    let out = pod.run(&[BIN, "capture", "-i", "10.0.0.0/33"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-i/--istio-service-cidr"));
    assert!(!pod.save("iptables-save", "nat").contains("ISTIO"));
}

/// Re-executed inside a namespace by the traffic test: listens on each `WEFT_CAPTURE_LISTEN`
/// address (`addr=reply,...`), answers every connection with its reply, until killed.
#[test]
#[ignore = "helper process of traffic_is_redirected_except_the_sidecars"]
fn listener_helper() {
    let Ok(spec) = std::env::var("WEFT_CAPTURE_LISTEN") else {
        return;
    };
    let mut threads = Vec::new();
    for item in spec.split(',') {
        let (addr, reply) = item.split_once('=').expect("addr=reply");
        let listener = TcpListener::bind(addr.parse::<SocketAddr>().expect("address"))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let reply = reply.to_string();
        threads.push(std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut conn = conn;
                let _ = conn.write_all(reply.as_bytes());
            }
        }));
    }
    println!("listening");
    std::io::stdout().flush().expect("stdout");
    for t in threads {
        let _ = t.join();
    }
}

/// A listener helper running in a namespace, killed on drop.
struct Listeners(Child);

impl Listeners {
    fn start(ns: &Netns, spec: &str) -> Listeners {
        let exe = std::env::current_exe().expect("test binary");
        let exe = exe.to_str().expect("utf-8 path");
        let mut child = ns
            .command(&[
                exe,
                "--ignored",
                "--exact",
                "listener_helper",
                "--nocapture",
            ])
            .env("WEFT_CAPTURE_LISTEN", spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("helper starts");
        let mut out = child.stdout.take().expect("stdout");
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 256];
        while !seen.contains("listening") && Instant::now() < deadline {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        assert!(seen.contains("listening"), "helper did not listen: {seen}");
        Listeners(child)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects from inside `ns` (as `uid`, through bash's /dev/tcp) and returns what the other
/// side wrote, or "" when nothing answered (refused, or nothing within 10 seconds).
fn connect(ns: &Netns, uid: u32, addr: &str, port: u16) -> String {
    let script = format!("exec 3<>/dev/tcp/{addr}/{port} && timeout 5 cat <&3");
    let id = uid.to_string();
    let out = ns.run(&[
        "timeout",
        "10",
        "setpriv",
        "--reuid",
        &id,
        "--regid",
        &id,
        "--clear-groups",
        "bash",
        "-c",
        &script,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn traffic_is_redirected_except_the_sidecars() {
    if skip_reason().is_some() {
        return;
    }
    let pod = Netns::new("pod");
    let peer = Netns::new("peer");
    // A veth pair between them: pod 10.77.0.2, peer 10.77.0.9 (addresses of these
    // namespaces only).
    let veth_pod = format!("wcp{}", std::process::id() % 100_000);
    let veth_peer = format!("wcq{}", std::process::id() % 100_000);
    pod.ok(&[
        "ip", "link", "add", &veth_pod, "type", "veth", "peer", "name", &veth_peer,
    ]);
    pod.ok(&["ip", "link", "set", &veth_peer, "netns", &peer.name]);
    pod.ok(&["ip", "addr", "add", "10.77.0.2/24", "dev", &veth_pod]);
    pod.ok(&["ip", "link", "set", &veth_pod, "up"]);
    peer.ok(&["ip", "addr", "add", "10.77.0.9/24", "dev", &veth_peer]);
    peer.ok(&["ip", "link", "set", &veth_peer, "up"]);
    // IPv6 too (unique local addresses; nodad: usable at once).
    pod.ok(&["ip", "addr", "add", "fd77::2/64", "dev", &veth_pod, "nodad"]);
    peer.ok(&[
        "ip",
        "addr",
        "add",
        "fd77::9/64",
        "dev",
        &veth_peer,
        "nodad",
    ]);

    let _peer_app = Listeners::start(
        &peer,
        "10.77.0.9:8080=peer,[fd77::9]:8080=peer6,10.77.0.9:53=resolver",
    );
    // The sidecar's ports on [::] take IPv4 too (dual-stack sockets).
    let _pod_side = Listeners::start(
        &pod,
        "[::]:15001=outbound,[::]:15006=inbound,[::]:15053=dns,10.77.0.2:9080=app,[fd77::2]:9080=app6",
    );
    // Before capture, the app reaches the peer and the peer the app.
    assert_eq!(connect(&pod, 0, "10.77.0.9", 8080), "peer");
    assert_eq!(connect(&pod, 0, "fd77::9", 8080), "peer6");
    assert_eq!(connect(&peer, 0, "10.77.0.2", 9080), "app");

    pod.capture(&[]);
    // The app's outbound connection lands on the sidecar's outbound port, in both families.
    assert_eq!(connect(&pod, 1000, "10.77.0.9", 8080), "outbound");
    assert_eq!(connect(&pod, 1000, "fd77::9", 8080), "outbound");
    // The sidecar's own (uid 1337) is not captured: it reaches the peer.
    assert_eq!(connect(&pod, 1337, "10.77.0.9", 8080), "peer");
    assert_eq!(connect(&pod, 1337, "fd77::9", 8080), "peer6");
    // Inbound to the app lands on the inbound port; the health port (15021) is excluded and
    // nothing listens there, so nothing answers.
    assert_eq!(connect(&peer, 0, "10.77.0.2", 9080), "inbound");
    assert_eq!(connect(&peer, 0, "fd77::2", 9080), "inbound");
    assert_eq!(connect(&peer, 0, "10.77.0.2", 15021), "");
    // Without DNS capture, port 53 is ordinary outbound traffic.
    assert_eq!(connect(&pod, 1000, "10.77.0.9", 53), "outbound");

    // DNS capture: the app's queries go to the sidecar's resolver on 15053, the sidecar's
    // own go out to the real one.
    pod.capture(&["--redirect-dns", "--capture-all-dns"]);
    assert_eq!(connect(&pod, 1000, "10.77.0.9", 53), "dns");
    assert_eq!(connect(&pod, 1337, "10.77.0.9", 53), "resolver");
    assert_eq!(connect(&pod, 1000, "10.77.0.9", 8080), "outbound");
    // An excluded outbound port and range bypass the sidecar.
    pod.capture(&["-o", "8080"]);
    assert_eq!(connect(&pod, 1000, "10.77.0.9", 8080), "peer");
    pod.capture(&["-x", "10.77.0.0/24"]);
    assert_eq!(connect(&pod, 1000, "10.77.0.9", 8080), "peer");

    pod.capture(&["--cleanup"]);
    assert_eq!(connect(&pod, 1000, "10.77.0.9", 8080), "peer");
    assert_eq!(connect(&peer, 0, "10.77.0.2", 9080), "app");
}
