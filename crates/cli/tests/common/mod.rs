//! What the `weft up` tests share: running `weft`, watching its children, stopping it.

#![allow(dead_code)] // each test binary uses part of it

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

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
