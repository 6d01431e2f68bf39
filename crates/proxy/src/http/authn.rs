//! Phase 2a, request authentication: the listener's JWT providers (Istio's
//! RequestAuthentication) check the request's token, as Envoy's jwt_authn filter. A token that
//! does not verify is refused with 401 and Envoy's message; no token (or one of an issuer no
//! provider has) passes with no identity, which authorization may then refuse.

use http::HeaderValue;

use super::downstream::Checked;
use super::{ConnContext, Exchange};
use crate::error::{Cause, Error};
use crate::jwt::Identity;
use std::sync::atomic::Ordering::Relaxed;

pub(super) fn check(
    cx: &ConnContext,
    ex: &mut Exchange,
    authn: Option<&crate::jwt::JwtAuthn>,
    request: &mut Checked,
) -> Result<Option<Identity>, Error> {
    let Some(authn) = authn else {
        return Ok(None);
    };
    let query = request.parts.uri.query().map(str::to_owned);
    let stats = &cx.shared.stats;
    match authn.check(&mut request.parts.headers, query.as_deref()) {
        Ok(identity) => {
            stats.jwt_authn_allowed.fetch_add(1, Relaxed);
            if let Some(id) = &identity {
                tracing::debug!(parent: &ex.span, principal = %id.principal, "jwt verified");
            }
            Ok(identity)
        }
        Err(failure) => {
            stats.jwt_authn_denied.fetch_add(1, Relaxed);
            let path = request.path_and_query.split('?').next().unwrap_or("/");
            // Envoy's challenge: the request's URL as the realm.
            let challenge = format!(
                "Bearer realm=\"{}://{}{path}\", error=\"invalid_token\"",
                request.scheme, request.authority
            );
            let detail = format!(
                "jwt_authn_access_denied{{{}}}",
                failure.message().replace(' ', "_")
            );
            let mut e = Error::new(Cause::JwtRejected(failure), detail);
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                e = e.with_challenge(v);
            }
            Err(e)
        }
    }
}
