//! The CA's certificate service on the wire: Istio's
//! `istio.v1.auth.IstioCertificateService/CreateCertificate` (`proto/istio/v1/auth/ca.proto`).
//!
//! The transport knows nothing of certificates: a control plane implements [`Signer`] (who
//! the caller is, from its bearer token; what to sign) and serves [`CertificateServer`]; a
//! proxy calls [`create_certificate`] on a channel it built (with TLS: the channel's connector
//! does the handshake, so this crate stays free of a TLS stack).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{Body, StdError, http};

pub mod proto {
    // Generated code: lints are the generator's business.
    #![allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
    include!(concat!(env!("OUT_DIR"), "/istio.v1.auth.rs"));
}

pub use proto::{IstioCertificateRequest, IstioCertificateResponse};

/// The gRPC service name, Istio's.
pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
/// The one method's path.
pub const CREATE_CERTIFICATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// What a CA does with one request: `token` is the caller's bearer credential (from the
/// `authorization` metadata), `None` when it sent none. Errors are gRPC statuses
/// (`Unauthenticated`, `PermissionDenied`, `InvalidArgument`) the caller sees.
pub trait Signer: Send + Sync + 'static {
    fn sign(
        &self,
        token: Option<&str>,
        request: IstioCertificateRequest,
    ) -> impl Future<Output = Result<IstioCertificateResponse, tonic::Status>> + Send;
}

/// The bearer token of a request's `authorization` metadata (`Bearer TOKEN`).
pub fn bearer_token<T>(request: &tonic::Request<T>) -> Option<String> {
    let value = request.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// `IstioCertificateService` as a tonic service, around a [`Signer`].
pub struct CertificateServer<S> {
    signer: Arc<S>,
}

impl<S> CertificateServer<S> {
    pub fn new(signer: Arc<S>) -> CertificateServer<S> {
        CertificateServer { signer }
    }
}

impl<S> Clone for CertificateServer<S> {
    fn clone(&self) -> Self {
        CertificateServer {
            signer: self.signer.clone(),
        }
    }
}

impl<S> tonic::server::NamedService for CertificateServer<S> {
    const NAME: &'static str = SERVICE_NAME;
}

/// The unary method, as tonic's server machinery calls it.
struct CreateCertificate<S>(Arc<S>);

impl<S: Signer> tonic::server::UnaryService<IstioCertificateRequest> for CreateCertificate<S> {
    type Response = IstioCertificateResponse;
    type Future = Pin<
        Box<dyn Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        let signer = self.0.clone();
        Box::pin(async move {
            let token = bearer_token(&request);
            let response = signer.sign(token.as_deref(), request.into_inner()).await?;
            Ok(tonic::Response::new(response))
        })
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<S, B> tonic::codegen::Service<http::Request<B>> for CertificateServer<S>
where
    S: Signer,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CREATE_CERTIFICATE {
            return Box::pin(async {
                let status = tonic::Status::unimplemented("no such method");
                Ok(status.into_http())
            });
        }
        let signer = self.signer.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::default();
            // A CSR and a chain are a few KiB; refuse anything much larger.
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(64 * 1024), None);
            Ok(grpc.unary(CreateCertificate(signer), req).await)
        })
    }
}

/// Asks the CA behind `channel` for a certificate, with `token` as the bearer credential.
pub async fn create_certificate(
    channel: tonic::transport::Channel,
    token: &str,
    request: IstioCertificateRequest,
) -> Result<IstioCertificateResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("CA not reachable: {e}")))?;
    let mut request = tonic::Request::new(request);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::invalid_argument("the token is not a valid header value"))?;
    request.metadata_mut().insert("authorization", value);
    let path = http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE);
    let codec = tonic_prost::ProstCodec::default();
    Ok(grpc.unary(request, path, codec).await?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_metadata() {
        let mut r = tonic::Request::new(());
        assert_eq!(bearer_token(&r), None);
        r.metadata_mut()
            .insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&r).as_deref(), Some("abc"));
        r.metadata_mut()
            .insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&r), None);
    }
}
