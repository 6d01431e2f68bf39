//! The certificate service over TLS (Istio's 15012): [`CaService`] decides, [`serve`] accepts.
//!
//! The service's own certificate is signed by the CA at start with the names proxies check
//! (`istiod.istio-system.svc`, and the loopback names for local mode); proxies verify it
//! against the trust bundle they were given.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use weft_xds::ca::{CertificateServer, IstioCertificateRequest, IstioCertificateResponse, Signer};

use super::auth::{AuthError, Authenticator};
use super::{Authority, CaError, SignError, spiffe_id};

/// The names the service's certificate carries: Istio's istiod service name, and loopback.
pub const SERVER_NAMES: &[&str] = &["istiod.istio-system.svc", "localhost", "127.0.0.1", "::1"];

/// The CA as the certificate service sees it: who callers are, and what is signed for them.
pub struct CaService {
    authority: Arc<super::Reloading>,
    authenticator: Arc<dyn Authenticator>,
    trust_domain: String,
}

impl CaService {
    pub fn new(
        authority: Arc<super::Reloading>,
        authenticator: Arc<dyn Authenticator>,
        trust_domain: String,
    ) -> CaService {
        CaService {
            authority,
            authenticator,
            trust_domain,
        }
    }

    /// Signs `request` for the caller holding `token`: only the identity the token is bound to.
    pub fn create(
        &self,
        token: Option<&str>,
        request: &IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, tonic::Status> {
        let who = self.authenticator.authenticate(token).map_err(|e| {
            tracing::warn!("certificate request refused: {e}");
            match e {
                AuthError::Missing | AuthError::Unknown => {
                    tonic::Status::unauthenticated(e.to_string())
                }
            }
        })?;
        let identity = spiffe_id(&self.trust_domain, &who.namespace, &who.service_account);
        let ttl = Duration::from_secs(request.validity_duration.max(0).unsigned_abs());
        match self.authority.current().sign(&request.csr, &identity, ttl) {
            Ok(signed) => {
                tracing::debug!(%identity, "signed a workload certificate");
                Ok(IstioCertificateResponse {
                    cert_chain: signed.cert_chain,
                })
            }
            Err(e @ SignError::NotYours { .. }) => {
                tracing::warn!(%identity, "certificate request refused: {e}");
                Err(tonic::Status::permission_denied(e.to_string()))
            }
            Err(e @ SignError::BadCsr(_)) => Err(tonic::Status::invalid_argument(e.to_string())),
            Err(e @ SignError::Sign(_)) => Err(tonic::Status::internal(e.to_string())),
        }
    }
}

impl Signer for CaService {
    async fn sign(
        &self,
        token: Option<&str>,
        request: IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, tonic::Status> {
        self.create(token, &request)
    }
}

/// The service's TLS config: a certificate from `authority` for [`SERVER_NAMES`], ALPN h2.
pub fn tls_config(authority: &Authority) -> Result<Arc<rustls::ServerConfig>, CaError> {
    let (chain, key) = authority.server_certificate(SERVER_NAMES)?;
    let chain = chain
        .iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Sign(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| CaError::Sign(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CaError::Sign(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the certificate service on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Arc<CaService>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(16);
    // Handshakes run on their own tasks: one slow client holds up no other.
    let accept = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("CA accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "CA TLS handshake: {e}"),
                    Err(_) => tracing::debug!(%peer, "CA TLS handshake timed out"),
                }
            });
        }
    });
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    let served = tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(CertificateServer::new(service), incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    accept.abort();
    served
}

/// A TLS connection as tonic's server takes it.
struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
