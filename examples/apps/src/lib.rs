//! The demo applications weft's examples run in local mode: Istio's bookinfo (productpage,
//! details, reviews, ratings), rewritten in Rust with the original's user-visible behaviour,
//! an httpbin-like echo service, and a TCP echo server (Istio's tcp-echo sample).
//!
//! Every app follows the local-mode contract (README "The `Workload` kind"): it listens on
//! `WEFT_LISTEN_ADDR`, names itself by `POD_NAME`/`HOSTNAME`, and sends every outbound call
//! through `HTTP_PROXY` (the workload's sidecar) in absolute form, so `http://reviews:9080`
//! reaches the mesh. Nothing else is needed: no config files, no ports on the command line.

pub mod client;
mod details;
mod env;
mod httpbin;
mod productpage;
mod propagate;
mod ratings;
mod reviews;
mod server;

use std::net::SocketAddr;

use tokio::net::TcpListener;

pub use env::Env;

/// One of the applications [`run`] can start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    Productpage,
    Details,
    Reviews,
    Ratings,
    Httpbin,
    /// Istio's tcp-echo: every line it receives comes back prefixed (`hello`, or its second
    /// argument).
    TcpEcho,
}

impl App {
    /// Every app, in the order `weft example --help` lists them.
    pub const ALL: [App; 6] = [
        App::Productpage,
        App::Details,
        App::Reviews,
        App::Ratings,
        App::Httpbin,
        App::TcpEcho,
    ];

    pub fn from_name(name: &str) -> Option<App> {
        App::ALL.into_iter().find(|app| app.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            App::Productpage => "productpage",
            App::Details => "details",
            App::Reviews => "reviews",
            App::Ratings => "ratings",
            App::Httpbin => "httpbin",
            App::TcpEcho => "tcp-echo",
        }
    }

    /// Where the app listens when `WEFT_LISTEN_ADDR` is unset: bookinfo's 9080, httpbin's 8000.
    pub fn default_listen_addr(self) -> SocketAddr {
        let port = match self {
            App::Httpbin => 8000,
            App::TcpEcho => 9000,
            _ => 9080,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

/// Runs `app` until the process ends, configured from the process environment.
///
/// `args` may hold one port number, as the original bookinfo images take it
/// (`productpage.py 9080`); it replaces the port of the listen address.
pub async fn run(app: &str, args: &[String]) -> Result<(), String> {
    let Some(app) = App::from_name(app) else {
        let known: Vec<_> = App::ALL.iter().map(|a| a.name()).collect();
        return Err(format!("unknown app `{app}` (known: {})", known.join(", ")));
    };
    let env = Env::from_process();
    let mut addr = match env.get("WEFT_LISTEN_ADDR") {
        Some(value) => value
            .parse::<SocketAddr>()
            .map_err(|e| format!("WEFT_LISTEN_ADDR={value}: {e}"))?,
        None => app.default_listen_addr(),
    };
    // tcp-echo takes the prefix it answers with after the port, as Istio's image does.
    let (port, prefix) = match args {
        [] => (None, "hello"),
        [port] => (Some(port), "hello"),
        [port, prefix] if app == App::TcpEcho => (Some(port), prefix.as_str()),
        _ if app == App::TcpEcho => return Err("usage: tcp-echo [PORT [PREFIX]]".to_owned()),
        _ => return Err(format!("usage: {} [PORT]", app.name())),
    };
    if let Some(port) = port {
        let port = port
            .parse::<u16>()
            .map_err(|e| format!("port `{port}`: {e}"))?;
        addr.set_port(port);
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{}: cannot listen on {addr}: {e}", app.name()))?;
    println!("{} listening on {addr}", app.name());
    if app == App::TcpEcho {
        return tcp_echo(listener, prefix.to_owned()).await;
    }
    serve(app, env, listener).await
}

/// Serves `app` on `listener` until the listener fails. Tests call this with a listener on
/// 127.0.0.1 port 0 and an [`Env`] built in place of the process environment.
pub async fn serve(app: App, env: Env, listener: TcpListener) -> Result<(), String> {
    match server::Service::new(app, env) {
        Some(service) => server::serve(listener, service).await,
        None => tcp_echo(listener, "hello".to_owned()).await,
    }
}

/// Istio's tcp-echo sample: each line a client sends comes back as `PREFIX LINE`.
async fn tcp_echo(listener: TcpListener, prefix: String) -> Result<(), String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    loop {
        let (stream, peer) = listener
            .accept()
            .await
            .map_err(|e| format!("tcp-echo: accept: {e}"))?;
        println!("{peer} connected");
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if write
                    .write_all(format!("{prefix} {line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}
