//! The JWKS fetcher: fetches the key sets RequestAuthentications name by `jwksUri`
//! ([`crate::jwks::uris`]) when they first appear and every [`REFRESH`] after (sooner,
//! [`RETRY`], after a failure), and publishes the table the push reads. A fetch that fails
//! keeps the URI's last good keys; the failure is reported by translation.
//!
//! `http://` URIs are fetched with hyper; `https://` ones over rustls (aws-lc-rs) with the
//! system's roots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::store::ConfigSnapshot;
use crate::jwks::{self, Fetched, JwksTable};

/// How often keys are fetched again (Istio's default JWT public key refresh interval).
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// How soon a failed fetch is tried again.
pub const RETRY: Duration = Duration::from_secs(30);
/// The most of a key set that is read.
const MAX_BYTES: usize = 1 << 20;

/// Fetches until `tx` has no receivers left or the config's sender is gone.
pub async fn fetch_loop(
    mut config: watch::Receiver<Arc<ConfigSnapshot>>,
    tx: watch::Sender<Arc<JwksTable>>,
) {
    let mut known: BTreeMap<String, Duration> = BTreeMap::new();
    let mut next = tokio::time::Instant::now();
    loop {
        let snapshot = config.borrow_and_update().clone();
        let uris = jwks::uris(&snapshot.resources);
        let now = tokio::time::Instant::now();
        if uris != known || now >= next {
            let previous = tx.borrow().clone();
            let table = fetch_all(&uris, &previous).await;
            let failed = uris
                .keys()
                .any(|u| table.get(u).is_some_and(|f| f.error.is_some()));
            tx.send_if_modified(|current| {
                if **current == table {
                    return false;
                }
                *current = Arc::new(table);
                true
            });
            known = uris;
            next = tokio::time::Instant::now() + if failed { RETRY } else { REFRESH };
        }
        tokio::select! {
            r = config.changed() => if r.is_err() { return },
            () = tokio::time::sleep_until(next) => {}
            () = tx.closed() => return,
        }
    }
}

async fn fetch_all(uris: &BTreeMap<String, Duration>, previous: &JwksTable) -> JwksTable {
    let mut fetches = tokio::task::JoinSet::new();
    for (uri, timeout) in uris {
        let (uri, timeout) = (uri.clone(), *timeout);
        fetches.spawn(async move {
            let got = match tokio::time::timeout(timeout, fetch(&uri)).await {
                Ok(got) => got,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            (uri, got)
        });
    }
    let mut table = JwksTable::default();
    while let Some(done) = fetches.join_next().await {
        let Ok((uri, got)) = done else { continue };
        let fetched = match got.and_then(|text| jwks::check(&text).map(|()| text)) {
            Ok(keys) => Fetched {
                keys: Some(keys),
                error: None,
            },
            Err(e) => {
                let last = previous.get(&uri).and_then(|f| f.keys.clone());
                tracing::warn!(
                    uri,
                    kept_last_good = last.is_some(),
                    "jwksUri fetch failed: {e}"
                );
                Fetched {
                    keys: last,
                    error: Some(e),
                }
            }
        };
        table.insert(uri, fetched);
    }
    table
}

/// GETs `uri`: its body on a 200.
async fn fetch(uri: &str) -> Result<String, String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("{e}"))?;
    let https = match parsed.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("only http and https URIs are fetched".into()),
    };
    let host = parsed.host().ok_or("no host")?.to_owned();
    let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let authority = parsed.authority().map_or(host.clone(), |a| a.to_string());
    if https {
        let tls = tls_connect(&host, tcp).await?;
        get(TokioIo::new(tls), &authority, &path).await
    } else {
        get(TokioIo::new(tcp), &authority, &path).await
    }
}

async fn tls_connect(
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))
}

async fn get<I>(io: I, authority: &str, path: &str) -> Result<String, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(uri: &str) -> Arc<ConfigSnapshot> {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\n\
             spec:\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwksUri: {uri}\n"
        );
        let loaded = weft_api::load_str("t.yaml", &yaml);
        assert!(loaded.resources.len() == 1, "{:?}", loaded.diagnostics);
        Arc::new(ConfigSnapshot {
            generation: 1,
            resources: loaded.resources,
            errors: Vec::new(),
        })
    }

    /// A server on loopback answering `body` to every request, until `up` is false.
    async fn jwks_server(body: &'static str, up: Arc<std::sync::atomic::AtomicBool>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let up = up.load(std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let resp = if up {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
                    };
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/jwks.json")
    }

    const KEYS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#;

    #[tokio::test]
    async fn keys_are_fetched_and_the_last_good_ones_kept_when_a_fetch_fails() {
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let uri = jwks_server(KEYS, up.clone()).await;
        let got = fetch_all(
            &jwks::uris(&snapshot(&uri).resources),
            &JwksTable::default(),
        )
        .await;
        let first = got.get(&uri).expect("fetched").clone();
        assert_eq!(
            first,
            Fetched {
                keys: Some(KEYS.into()),
                error: None
            }
        );

        up.store(false, std::sync::atomic::Ordering::SeqCst);
        let again = fetch_all(&jwks::uris(&snapshot(&uri).resources), &got).await;
        let kept = again.get(&uri).expect("entry");
        assert_eq!(kept.keys.as_deref(), Some(KEYS), "the last good keys");
        assert_eq!(
            kept.error.as_deref(),
            Some("status 503 Service Unavailable")
        );

        // Never fetched, failing: no keys, the reason.
        let fresh = fetch_all(
            &jwks::uris(&snapshot(&uri).resources),
            &JwksTable::default(),
        )
        .await;
        assert_eq!(fresh.get(&uri).and_then(|f| f.keys.clone()), None);
    }

    #[tokio::test]
    async fn the_loop_publishes_a_table_when_a_uri_appears() {
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let uri = jwks_server(KEYS, up).await;
        let (_config_tx, config) = watch::channel(snapshot(&uri));
        let (tx, mut rx) = watch::channel(Arc::new(JwksTable::default()));
        let task = tokio::spawn(fetch_loop(config, tx));
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("in time")
            .expect("a table");
        assert!(
            rx.borrow()
                .get(&uri)
                .and_then(|f| f.keys.as_ref())
                .is_some()
        );
        task.abort();
    }
}
