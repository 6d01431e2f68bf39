//! What the `weft up` tests share: running `weft`, watching its children, stopping it.

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A port free on 127.0.0.1 for a server the test starts later (a Gateway's). Taken below
/// Linux's ephemeral range (32768-60999): a port 0 bind would hand out one of those, which an
/// outgoing connection of a test running alongside may take before the server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(7, Ordering::Relaxed));
        let port = 20_000 + (n % 12_000) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999 on 127.0.0.1");
}

/// Runs `weft ARGS --state-dir STATE`: whether it succeeded, and its output.
fn run_weft(state: &Path, args: &[&str]) -> (bool, String) {
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
    (out.status.success(), text)
}

/// Runs `weft ARGS --state-dir STATE`, which must succeed; its output.
pub fn weft(state: &Path, args: &[&str]) -> String {
    let (ok, text) = run_weft(state, args);
    assert!(ok, "weft {args:?}: {text}");
    text
}

/// Runs `weft ARGS --state-dir STATE`, which must fail; its output.
pub fn weft_fails(state: &Path, args: &[&str]) -> String {
    let (ok, text) = run_weft(state, args);
    assert!(!ok, "weft {args:?} succeeded: {text}");
    text
}

/// The direct children of `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
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

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with(['Z', 'X']))
    })
}

pub struct Mesh(pub Child);

impl Mesh {
    /// Starts `weft up dir --state-dir state`, its stdout piped (the caller must drain it),
    /// its stderr the test's.
    pub fn up(dir: &Path, state: &Path) -> (Mesh, ChildStdout) {
        let mut child = Command::new(WEFT)
            .arg("up")
            .arg(dir)
            .arg("--state-dir")
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("weft up");
        let stdout = child.stdout.take().expect("stdout");
        (Mesh(child), stdout)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

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

/// SIGTERM to `weft up`; waits up to 30 s for it to exit 0, and checks that none of `kids`
/// is left.
pub fn stop(mesh: &mut Mesh, kids: Vec<u32>) {
    let pid = mesh.0.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
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
}

/// One HTTP/1.1 GET to `to` with `target` (absolute-form for a sidecar's outbound port):
/// the status, or why there was none.
pub fn get(to: SocketAddr, host: &str, target: &str) -> Result<(u16, String), String> {
    get_with(to, host, target, "")
}

/// [`get`] with `extra` header lines (each ending in CRLF).
pub fn get_with(
    to: SocketAddr,
    host: &str,
    target: &str,
    extra: &str,
) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response ({} bytes)", raw.len()))?;
    Ok((status, text))
}

/// Polls `f` every 50 ms until it holds, for at most `limit`.
pub fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within {limit:?}: {what}");
}

pub fn apply_yaml(state: &Path, tmp: &Path, name: &str, yaml: &str) {
    let file = tmp.join(name);
    std::fs::write(&file, yaml).expect("write");
    weft(state, &["apply", "-f", file.to_str().expect("utf-8")]);
}

/// What `weft up` printed: every stdout line so far.
pub type Lines = Arc<Mutex<Vec<String>>>;

pub fn line_with(lines: &Lines, needle: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(l) = lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
        {
            return l;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "weft up never printed {needle:?}: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pod IP of `workload` in `weft up`'s table.
pub fn pod_ip(lines: &Lines, workload: &str) -> std::net::IpAddr {
    let row = line_with(lines, &format!("{workload} "));
    row.split_whitespace()
        .nth(1)
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no pod IP in {row:?}"))
}

/// A `weft up` of example files, its output collected.
pub struct Up {
    pub mesh: Mesh,
    pub lines: Lines,
    pub state: PathBuf,
    pub tmp: PathBuf,
}

/// Runs `weft up` on copies of `examples` (paths under examples/), with `extra` flags, and
/// waits for its workloads to start.
pub fn up(tag: &str, examples: &[&str], extra: &[&str]) -> Up {
    let tmp = std::env::temp_dir().join(format!("weft-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let dir = tmp.join("bookinfo");
    let state = tmp.join("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for example in examples {
        let from = Path::new(REPO).join("examples").join(example);
        let name = from.file_name().expect("a file name").to_owned();
        std::fs::copy(&from, dir.join(name)).expect("copy an example");
    }
    let mut child = Command::new(WEFT)
        .arg("up")
        .arg(&dir)
        .arg("--state-dir")
        .arg(&state)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("weft up");
    let stdout = child.stdout.take().expect("stdout");
    let lines: Lines = Arc::default();
    let keep = lines.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            keep.lock().unwrap().push(l);
        }
    });
    let up = Up {
        mesh: Mesh(child),
        lines,
        state,
        tmp,
    };
    line_with(&up.lines, "workloads started");
    up
}

impl Up {
    pub fn sidecar(&self, workload: &str) -> SocketAddr {
        SocketAddr::new(pod_ip(&self.lines, workload), 15001)
    }

    pub fn inbound(&self, workload: &str) -> SocketAddr {
        SocketAddr::new(pod_ip(&self.lines, workload), 9080)
    }

    pub fn admin(&self, workload: &str) -> SocketAddr {
        SocketAddr::new(pod_ip(&self.lines, workload), 15000)
    }

    pub fn finish(mut self) {
        let kids = children(self.mesh.pid());
        stop(&mut self.mesh, kids);
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}
