//! Phase 2b, authorization: the listener's AuthorizationPolicies decide, as Envoy's rbac filter
//! decides with what Istio generates. A denied request gets 403 `RBAC: access denied`; the
//! access log's response code details name the policy and rule that denied it
//! (`rbac_access_denied_matched_policy[ns[foo]-policy[deny-get]-rule[0]]`).

use std::sync::atomic::Ordering::Relaxed;

use super::downstream::Checked;
use super::{ConnContext, Exchange};
use crate::error::{Cause, Error};
use crate::jwt::Identity;
use crate::rbac::{Attributes, HttpAttributes, Verdict};

pub(super) fn check(
    cx: &ConnContext,
    ex: &mut Exchange,
    rbac: Option<&crate::rbac::Rbac>,
    request: &Checked,
    identity: Option<&Identity>,
) -> Result<(), Error> {
    let Some(rbac) = rbac else {
        return Ok(());
    };
    let path = request.path_and_query.split('?').next().unwrap_or("/");
    let at = Attributes {
        source_ip: cx.peer.ip(),
        remote_ip: request.client,
        destination_ip: cx.local.ip(),
        destination_port: rbac.destination_port(cx.local.port()),
        principal: cx.peer_identity.as_deref(),
        sni: cx.tls.as_ref().and_then(|t| t.sni.as_deref()),
        http: Some(HttpAttributes {
            host: &request.authority,
            method: request.parts.method.as_str(),
            path,
            headers: &request.parts.headers,
            auth: identity,
        }),
    };
    match rbac.evaluate(&at) {
        Verdict::Allow => {
            cx.shared.stats.rbac_allowed.fetch_add(1, Relaxed);
            Ok(())
        }
        Verdict::Deny(why) => {
            cx.shared.stats.rbac_denied.fetch_add(1, Relaxed);
            tracing::debug!(parent: &ex.span, "{why}");
            Err(Error::new(Cause::AccessDenied, why))
        }
    }
}
