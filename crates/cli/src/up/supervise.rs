//! Child processes of `weft up`: started, their output prefixed, restarted with backoff when
//! they exit, and stopped one by one (a Workload removed while the mesh runs) or all together.
//!
//! Every child leads its own process group, so that a terminal's Ctrl-C reaches only `weft up`
//! (which then drains the proxies in order) and so that stopping a child also stops whatever it
//! started: SIGTERM to the group, then SIGKILL after the grace period.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// The first restart waits this long; each crash in a row doubles it up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A child that ran this long before exiting starts again from [`FIRST_BACKOFF`].
const STABLE_RUN: Duration = Duration::from_secs(10);
/// The line a proxy prints once it has its first config.
const PROXY_READY: &str = "weft-proxy: ready";
/// How often an app that is not listening yet is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// A process to run and keep running.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The log prefix: `reviews-v2-0`, `reviews-v2-0.proxy`.
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Index into the label palette.
    pub color: usize,
    /// When the child counts as ready.
    pub readiness: Readiness,
}

/// When a child counts as ready, until it exits.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// A proxy: once it prints that it has its first config.
    ProxyLine,
    /// An application: once every one of these addresses accepts a connection (right away
    /// when there are none), as a Kubernetes tcpSocket readiness probe sees it.
    Listening(Vec<std::net::SocketAddr>),
    /// An application under capture: once its sidecar's `/healthz/ready` at this address
    /// answers 200 (the sidecar probes the application's ports inside its namespace).
    Healthy(std::net::SocketAddr),
}

/// Where every child's lines and the runner's events go: stdout, one line at a time.
#[derive(Debug)]
pub struct Output {
    color: bool,
}

const PALETTE: &[&str] = &["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

impl Output {
    pub fn new() -> Output {
        Output {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// A line of a child's output, prefixed with its label.
    pub fn child_line(&self, label: &str, color: usize, line: &str) {
        let mut out = std::io::stdout().lock();
        // A closed stdout (`weft up | head`) must not stop the mesh.
        let _ = if self.color {
            let c = PALETTE[color % PALETTE.len()];
            writeln!(out, "\x1b[{c}m[{label}]\x1b[0m {line}")
        } else {
            writeln!(out, "[{label}] {line}")
        };
    }

    /// A runner event: `✔ ...` or `✘ ...`.
    pub fn event(&self, ok: bool, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = match (ok, self.color) {
            (true, true) => writeln!(out, "\x1b[32m✔\x1b[0m {text}"),
            (true, false) => writeln!(out, "✔ {text}"),
            (false, true) => writeln!(out, "\x1b[31m✘\x1b[0m {text}"),
            (false, false) => writeln!(out, "✘ {text}"),
        };
    }

    pub fn text(&self, text: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
}

/// The running children.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    out: Arc<Output>,
    grace: Duration,
}

impl Supervisor {
    /// `grace`: how long a stopped child may take to exit after SIGTERM before SIGKILL.
    pub fn new(out: Arc<Output>, grace: Duration) -> Supervisor {
        Supervisor {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
            out,
            grace,
        }
    }

    /// Starts `spec` and keeps it running until [`Child::stop`] or [`Supervisor::shutdown`].
    /// Dropping the returned handle leaves the child running.
    pub fn spawn(&mut self, spec: ChildSpec) -> Child {
        // Children stopped one by one leave finished tasks behind.
        while self.tasks.try_join_next().is_some() {}
        let (ready, ready_rx) = watch::channel(false);
        let (stop_one, stop_one_rx) = watch::channel(false);
        let (exited, exited_rx) = oneshot::channel();
        let stop = StopSignal {
            all: self.stop.subscribe(),
            this: stop_one_rx,
        };
        let (out, grace) = (self.out.clone(), self.grace);
        self.tasks.spawn(async move {
            supervise(spec, stop, ready, out, grace).await;
            drop(exited);
        });
        Child {
            ready: ready_rx,
            stop: stop_one,
            exited: exited_rx,
        }
    }

    /// Stops every child (SIGTERM to its group, SIGKILL after the grace period) and waits
    /// until all have exited.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One running child, as [`Supervisor::spawn`] started it.
#[derive(Debug)]
pub struct Child {
    ready: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    /// Closed when the child's task has ended.
    exited: oneshot::Receiver<()>,
}

impl Child {
    /// Turns true when the child is ready (its [`Readiness`]), false again when it exits.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Stops the child as shutdown does (SIGTERM to its group, SIGKILL after the grace period)
    /// and returns once it has exited.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        // An error is the task's end too: its sender went with it.
        let _ = self.exited.await;
    }
}

/// What stops a child: the supervisor's shutdown, or its own [`Child::stop`].
struct StopSignal {
    all: watch::Receiver<bool>,
    this: watch::Receiver<bool>,
}

impl StopSignal {
    /// Resolves when a stop is asked for.
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.all.wait_for(|s| *s) => {}
            // A dropped handle (the sender gone) is no stop: the child runs on.
            Ok(_) = self.this.wait_for(|s| *s) => {}
        }
    }

    fn asked(&self) -> bool {
        *self.all.borrow() || *self.this.borrow()
    }
}

async fn supervise(
    spec: ChildSpec,
    mut stop: StopSignal,
    ready: watch::Sender<bool>,
    out: Arc<Output>,
    grace: Duration,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // Should this task be dropped without a shutdown, the child goes with it.
            .kill_on_drop(true);
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        match cmd.spawn() {
            Err(e) => {
                // A missing working directory fails the spawn with the same error as a missing
                // program: say which it is.
                let why = match &spec.cwd {
                    Some(dir) if !dir.is_dir() => {
                        format!("working directory {}: not a directory", dir.display())
                    }
                    _ => format!("{}: {e}", spec.program.display()),
                };
                out.event(false, &format!("[{}] cannot start: {why}", spec.label));
            }
            Ok(mut child) => {
                let group = child
                    .id()
                    .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?));
                let mut pumps = JoinSet::new();
                if let Some(s) = child.stdout.take() {
                    pumps.spawn(pump(s, spec.clone(), out.clone(), None));
                }
                if let Some(s) = child.stderr.take() {
                    let proxy = matches!(spec.readiness, Readiness::ProxyLine);
                    pumps.spawn(pump(
                        s,
                        spec.clone(),
                        out.clone(),
                        proxy.then(|| ready.clone()),
                    ));
                }
                let listening = async {
                    match &spec.readiness {
                        Readiness::Listening(addrs) => {
                            wait_listening(addrs).await;
                            let _ = ready.send(true);
                        }
                        Readiness::Healthy(health) => {
                            wait_healthy(*health).await;
                            let _ = ready.send(true);
                        }
                        Readiness::ProxyLine => {}
                    }
                };
                tokio::pin!(listening);
                let mut probing = true;
                let status = loop {
                    tokio::select! {
                        s = child.wait() => break Some(s),
                        () = stop.wait() => break None,
                        () = &mut listening, if probing => probing = false,
                    }
                };
                let Some(status) = status else {
                    terminate(&mut child, group, grace).await;
                    // Output still buffered in the pipes is worth reading; a grandchild that
                    // kept a pipe open is not worth waiting for.
                    let _ = tokio::time::timeout(Duration::from_millis(200), async {
                        while pumps.join_next().await.is_some() {}
                    })
                    .await;
                    return;
                };
                // Not ready from the moment it is gone (what the endpoints follow).
                let _ = ready.send(false);
                // Whatever the child left running in its group goes with it.
                if let Some(g) = group {
                    let _ = kill_process_group(g, Signal::KILL);
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    while pumps.join_next().await.is_some() {}
                })
                .await;
                let why = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                };
                if stop.asked() {
                    return;
                }
                if started.elapsed() >= STABLE_RUN {
                    backoff = FIRST_BACKOFF;
                }
                out.event(
                    false,
                    &format!(
                        "[{}] exited ({why}); restarting in {}",
                        spec.label,
                        humanize(backoff)
                    ),
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            () = stop.wait() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Returns once every address in `addrs` accepts a TCP connection, probing every
/// [`PROBE_INTERVAL`].
async fn wait_listening(addrs: &[std::net::SocketAddr]) {
    for addr in addrs {
        loop {
            let probe = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                break;
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
}

/// Returns once `GET /healthz/ready` at `health` answers 200.
async fn wait_healthy(health: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(health).await.ok()?;
            s.write_all(b"GET /healthz/ready HTTP/1.0\r\nHost: weft\r\n\r\n")
                .await
                .ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.ok()?;
            Some(head.ends_with(b" 200"))
        };
        if let Ok(Some(true)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
            return;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// SIGTERM to the child's group; SIGKILL to it if the child has not exited within `grace`.
async fn terminate(child: &mut tokio::process::Child, group: Option<Pid>, grace: Duration) {
    if let Some(g) = group {
        let _ = kill_process_group(g, Signal::TERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    // The leader is gone; members of its group that ignored SIGTERM are not kept either.
    if let Some(g) = group {
        let _ = kill_process_group(g, Signal::KILL);
    }
}

/// Copies a child's output to ours, line by line, prefixed. On stderr, also watches for the
/// proxy's ready line.
async fn pump(
    stream: impl AsyncRead + Unpin,
    spec: ChildSpec,
    out: Arc<Output>,
    ready: Option<watch::Sender<bool>>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        out.child_line(&spec.label, spec.color, line);
        if let Some(ready) = &ready
            && line == PROXY_READY
        {
            let _ = ready.send(true);
        }
    }
}

fn humanize(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}
