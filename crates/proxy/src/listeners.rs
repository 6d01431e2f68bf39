//! The running listeners, kept in line with the config: a new config binds the listeners it
//! adds, updates changed ones in place (same socket, new settings for new connections), and
//! drains the ones it removes. Binding happens before anything else changes, so a config whose
//! listener cannot bind is refused whole and the running ones stay as they were.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ConfigError;
use crate::serve::serve_listener;
use crate::snapshot::{ListenerKind, ListenerSpec};
use crate::state::Shared;

/// The listeners serving now, by name.
pub struct Listeners {
    running: Mutex<HashMap<String, Running>>,
    drain_timeout: Duration,
}

struct Running {
    /// As configured (port 0 stays 0, so an unchanged config keeps the same socket).
    address: SocketAddr,
    /// A DNS listener (a UDP socket beside its TCP listener): a listener that becomes one,
    /// or stops being one, is bound anew.
    dns: bool,
    bound: SocketAddr,
    spec: watch::Sender<Arc<ListenerSpec>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A listener that a new config bound.
#[derive(Debug, Clone)]
pub struct Bound {
    pub name: String,
    pub address: SocketAddr,
}

impl Listeners {
    pub fn new(drain_timeout: Duration) -> Self {
        Listeners {
            running: Mutex::new(HashMap::new()),
            drain_timeout,
        }
    }

    /// Brings the running listeners in line with `specs`, calling `commit` (which puts the
    /// matching routes and clusters in force) once every new listener is bound and before
    /// any of them accepts. Returns the listeners it bound; on a bind failure nothing
    /// changes, `commit` is not called, and every failure is returned.
    pub fn apply(
        &self,
        shared: &Arc<Shared>,
        specs: &[ListenerSpec],
        commit: impl FnOnce(),
    ) -> Result<Vec<Bound>, Vec<ConfigError>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // Listeners bound to no port are served through an `original_dst` listener's
        // hand-off, from the snapshot: nothing runs for them here.
        let specs: Vec<&ListenerSpec> = specs.iter().filter(|s| s.bind_to_port).collect();
        // 1. Bind what is new (or moved to another address), before touching anything.
        let mut fresh = Vec::new();
        let mut errors = Vec::new();
        for &spec in &specs {
            let keep = running
                .get(&spec.name)
                .is_some_and(|r| r.address == spec.address && r.dns == is_dns(spec));
            if keep {
                continue;
            }
            match bind_spec(spec) {
                Ok(l) => fresh.push((spec.clone(), l)),
                Err(e) => errors.push(ConfigError::new(
                    format!("listener {:?}", spec.name),
                    "address",
                    format!("cannot bind {}: {e}", spec.address),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        commit();
        // 2. Update listeners that stay on their socket; new connections see the new spec
        // (a new certificate included: connections already up keep theirs).
        for &spec in &specs {
            if let Some(r) = running.get(&spec.name)
                && r.address == spec.address
                && r.dns == is_dns(spec)
                && (r.spec.borrow().config != spec.config
                    || r.spec.borrow().secrets != spec.secrets)
            {
                r.spec.send_replace(Arc::new(spec.clone()));
            }
        }
        // 3. Drain what is gone or moved (their connections finish in the background).
        let wanted: HashMap<&str, (SocketAddr, bool)> = specs
            .iter()
            .map(|s| (s.name.as_str(), (s.address, is_dns(s))))
            .collect();
        let gone: Vec<String> = running
            .iter()
            .filter(|(name, r)| wanted.get(name.as_str()) != Some(&(r.address, r.dns)))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(r) = running.remove(&name) {
                tracing::info!(listener = %name, address = %r.bound, "listener removed: draining");
                r.stop.send_replace(true);
            }
        }
        // 4. Start the new ones.
        let mut bound = Vec::new();
        for (spec, sockets) in fresh {
            let (spec_tx, spec_rx) = watch::channel(Arc::new(spec.clone()));
            let (stop_tx, stop_rx) = watch::channel(false);
            let (address, task) = match sockets {
                Sockets::Stream(listener) => (
                    listener.local_addr().unwrap_or(spec.address),
                    tokio::spawn(serve_listener(
                        shared.clone(),
                        spec_rx,
                        stop_rx,
                        listener,
                        self.drain_timeout,
                    )),
                ),
                Sockets::Dns(tcp, udp) => (
                    udp.local_addr().unwrap_or(spec.address),
                    tokio::spawn(crate::dns::serve_dns(
                        shared.clone(),
                        spec_rx,
                        stop_rx,
                        tcp,
                        udp,
                        self.drain_timeout,
                    )),
                ),
            };
            bound.push(Bound {
                name: spec.name.clone(),
                address,
            });
            running.insert(
                spec.name.clone(),
                Running {
                    address: spec.address,
                    dns: is_dns(&spec),
                    bound: address,
                    spec: spec_tx,
                    stop: stop_tx,
                    task,
                },
            );
        }
        Ok(bound)
    }

    /// Stops every listener and waits for their drains (each bounded by the drain timeout).
    pub async fn shutdown(&self) {
        let running: Vec<Running> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in &running {
            r.stop.send_replace(true);
        }
        for r in running {
            let _ = r.task.await;
        }
    }
}

/// What a listener serves on.
enum Sockets {
    Stream(TcpListener),
    /// A DNS listener: TCP and UDP on the same address.
    Dns(TcpListener, UdpSocket),
}

fn is_dns(spec: &ListenerSpec) -> bool {
    matches!(spec.kind, ListenerKind::Dns { .. })
}

fn bind_spec(spec: &ListenerSpec) -> std::io::Result<Sockets> {
    if is_dns(spec) {
        let (tcp, udp) = bind_dns(spec.address)?;
        Ok(Sockets::Dns(tcp, udp))
    } else {
        bind(spec.address).map(Sockets::Stream)
    }
}

/// UDP and TCP on one address. For port 0, the port the UDP bind got, TCP then bound on it
/// (tried again on another port should TCP find that one taken).
fn bind_dns(address: SocketAddr) -> std::io::Result<(TcpListener, UdpSocket)> {
    const ATTEMPTS: usize = 16;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = std::net::UdpSocket::bind(address)?;
        udp.set_nonblocking(true)?;
        let udp = UdpSocket::from_std(udp)?;
        let port = udp.local_addr()?.port();
        match bind(SocketAddr::new(address.ip(), port)) {
            Ok(tcp) => return Ok((tcp, udp)),
            Err(e)
                if address.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Binds without waiting (a bind does not block), so that config can be applied from
/// synchronous code such as the xDS handler. Must run inside the runtime.
fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std and tokio do on Unix: restarting on a port in TIME_WAIT must work.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}
