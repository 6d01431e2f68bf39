//! AuthorizationPolicy and RequestAuthentication, per proxy: the policies that select the
//! proxy's workload (its namespace's, with a matching selector or none; the root namespace's
//! mesh-wide), compiled into the listener's `Rbac` and `JwtAuthn`. They apply to what the
//! workload receives: a sidecar's inbound listeners, a gateway's listeners.
//!
//! What the proxy evaluates is Istio's policy as written (string forms, keys) with these
//! rewritten here: `serviceAccounts` and `source.serviceAccount` become principals, the
//! `istio.io/dry-run` annotation a flag. What weft cannot enforce fails closed, as Istio
//! does with a policy it cannot translate, and is reported: an ALLOW rule is dropped (it
//! allows nothing), a DENY or CUSTOM policy denies every request.

use weft_api::Resource;
use weft_api::common::selector_matches;
use weft_api::resource::Spec;
use weft_api::security::authorization_policy::{
    Action, AuthorizationPolicy, Condition, Operation, Rule, Source,
};
use weft_api::security::request_authentication::{JwtPresence, RequestAuthentication};
use weft_xds::proto;

use super::Notes;
use crate::jwks::JwksTable;
use crate::mesh_config::MeshConfig;
use crate::node::ProxyNode;
use crate::view::ConfigView;

/// The annotation that makes a policy log its decision without enforcing it.
const DRY_RUN: &str = "istio.io/dry-run";

/// The keys of `when` weft evaluates (besides `request.headers[...]` and
/// `request.auth.claims[...]`), and those it rewrites.
const KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

/// What applies to one workload's inbound side.
#[derive(Debug, Default, Clone)]
pub(crate) struct Security {
    pub rbac: Option<proto::Rbac>,
    pub jwt_authn: Option<proto::JwtAuthn>,
}

/// Whether a policy in `r`'s namespace with `selector` applies to `node`.
fn selects(
    r: &Resource,
    selector: Option<&weft_api::common::WorkloadSelector>,
    targeted: bool,
    node: &ProxyNode,
    mesh: &MeshConfig,
) -> bool {
    if targeted {
        return false;
    }
    let in_scope = r.namespace() == node.namespace || r.namespace() == mesh.root_namespace;
    in_scope && selector.is_none_or(|s| selector_matches(&s.match_labels, &node.labels))
}

/// The policies that apply to `node`, compiled; what cannot be enforced noted on `notes`.
pub(crate) fn for_workload(
    node: &ProxyNode,
    mesh: &MeshConfig,
    view: &ConfigView,
    notes: &mut Notes,
) -> Security {
    let mut policies = Vec::new();
    let mut providers = Vec::new();
    let mut resources: Vec<&Resource> = view.resources().iter().collect();
    resources.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    for r in resources {
        match &r.spec {
            Spec::AuthorizationPolicy(ap) => {
                let targeted = ap.target_ref.is_some() || !ap.target_refs.is_empty();
                if targeted && (r.namespace() == node.namespace) {
                    notes.add(
                        Some(r),
                        "spec.targetRef",
                        "policies attached by targetRef (Gateway API) are not supported; \
                         the policy applies to nothing",
                    );
                }
                if selects(r, ap.selector.as_ref(), targeted, node, mesh) {
                    policies.push(policy(r, ap, notes));
                }
            }
            Spec::RequestAuthentication(ra) => {
                let targeted = ra.target_ref.is_some() || !ra.target_refs.is_empty();
                if targeted && (r.namespace() == node.namespace) {
                    notes.add(
                        Some(r),
                        "spec.targetRef",
                        "policies attached by targetRef (Gateway API) are not supported; \
                         the policy applies to nothing",
                    );
                }
                if selects(r, ra.selector.as_ref(), targeted, node, mesh) {
                    providers.extend(jwt_providers(r, ra, view.jwks(), notes));
                }
            }
            _ => {}
        }
    }
    Security {
        rbac: (!policies.is_empty()).then_some(proto::Rbac {
            policies,
            destination_port: 0,
        }),
        jwt_authn: (!providers.is_empty()).then_some(proto::JwtAuthn { providers }),
    }
}

fn policy(r: &Resource, ap: &AuthorizationPolicy, notes: &mut Notes) -> proto::RbacPolicy {
    let dry_run = r
        .metadata
        .annotations
        .get(DRY_RUN)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut out = proto::RbacPolicy {
        namespace: r.namespace().to_owned(),
        name: r.name().to_owned(),
        action: match ap.action {
            Action::Allow => proto::RbacAction::Allow,
            Action::Deny | Action::Custom => proto::RbacAction::Deny,
            Action::Audit => proto::RbacAction::Audit,
        } as i32,
        dry_run,
        rules: Vec::new(),
    };
    if ap.action == Action::Custom {
        // Failing closed: what the external authorizer would have decided is denied.
        notes.add(
            Some(r),
            "spec.action",
            "CUSTOM (ext_authz) is not supported by weft: requests this policy matches are \
             denied (fail closed)",
        );
    }
    let fail_closed = ap.action != Action::Allow;
    for (i, rule) in ap.rules.iter().enumerate() {
        match translate_rule(r, rule) {
            Ok(rule) => out.rules.push(rule),
            Err((field, why)) => {
                let field = format!("spec.rules[{i}].{field}");
                if fail_closed {
                    notes.add(
                        Some(r),
                        field,
                        format!("{why}; the policy denies every request (fail closed, as Istio)"),
                    );
                    out.rules = vec![proto::RbacRule::default()];
                    return out;
                }
                notes.add(
                    Some(r),
                    field,
                    format!("{why}; the rule is left out, it allows nothing (as Istio)"),
                );
            }
        }
    }
    out
}

type RuleError = (String, String);

fn translate_rule(r: &Resource, rule: &Rule) -> Result<proto::RbacRule, RuleError> {
    let mut out = proto::RbacRule::default();
    for (j, from) in rule.from.iter().flatten().enumerate() {
        if let Some(s) = &from.source {
            out.from
                .push(source(r, s).map_err(|(f, w)| (format!("from[{j}].source.{f}"), w))?);
        }
    }
    for (j, to) in rule.to.iter().flatten().enumerate() {
        if let Some(o) = &to.operation {
            out.to
                .push(operation(o).map_err(|(f, w)| (format!("to[{j}].operation.{f}"), w))?);
        }
    }
    for (j, c) in rule.when.iter().enumerate() {
        out.when
            .push(condition(r, c).map_err(|(f, w)| (format!("when[{j}].{f}"), w))?);
    }
    Ok(out)
}

/// `sa` or `ns/sa` -> the principal of any trust domain: `*/ns/NS/sa/SA`.
fn service_account_principal(r: &Resource, sa: &str) -> String {
    let (ns, name) = sa.split_once('/').unwrap_or((r.namespace(), sa));
    format!("*/ns/{ns}/sa/{name}")
}

fn source(r: &Resource, s: &Source) -> Result<proto::RbacSource, RuleError> {
    if !s.trust_domains.is_empty() || !s.not_trust_domains.is_empty() {
        return Err((
            "trustDomains".into(),
            "trustDomains is not supported by weft yet".into(),
        ));
    }
    let accounts = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|sa| service_account_principal(r, sa))
            .collect()
    };
    let mut principals = s.principals.clone();
    principals.extend(accounts(&s.service_accounts));
    let mut not_principals = s.not_principals.clone();
    not_principals.extend(accounts(&s.not_service_accounts));
    Ok(proto::RbacSource {
        principals,
        not_principals,
        request_principals: s.request_principals.clone(),
        not_request_principals: s.not_request_principals.clone(),
        namespaces: s.namespaces.clone(),
        not_namespaces: s.not_namespaces.clone(),
        ip_blocks: s.ip_blocks.clone(),
        not_ip_blocks: s.not_ip_blocks.clone(),
        remote_ip_blocks: s.remote_ip_blocks.clone(),
        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
    })
}

fn operation(o: &Operation) -> Result<proto::RbacOperation, RuleError> {
    Ok(proto::RbacOperation {
        hosts: o.hosts.clone(),
        not_hosts: o.not_hosts.clone(),
        ports: o.ports.clone(),
        not_ports: o.not_ports.clone(),
        methods: o.methods.clone(),
        not_methods: o.not_methods.clone(),
        paths: o.paths.clone(),
        not_paths: o.not_paths.clone(),
    })
}

fn condition(r: &Resource, c: &Condition) -> Result<proto::RbacCondition, RuleError> {
    let key = c.key.as_str();
    let supported = KEYS.contains(&key)
        || key.starts_with("request.headers[")
        || key.starts_with("request.auth.claims[");
    if supported {
        return Ok(proto::RbacCondition {
            key: c.key.clone(),
            values: c.values.clone(),
            not_values: c.not_values.clone(),
        });
    }
    if key == "source.serviceAccount" {
        let p = |v: &[String]| {
            v.iter()
                .map(|sa| service_account_principal(r, sa))
                .collect()
        };
        return Ok(proto::RbacCondition {
            key: "source.principal".into(),
            values: p(&c.values),
            not_values: p(&c.not_values),
        });
    }
    Err((
        "key".into(),
        format!("the condition key {key:?} is not supported by weft"),
    ))
}

/// A RequestAuthentication's rules as providers. A rule whose keys are not known yet (a
/// `jwksUri` not fetched) is noted; the proxy then has no provider for its issuer.
fn jwt_providers(
    r: &Resource,
    ra: &RequestAuthentication,
    jwks: &JwksTable,
    notes: &mut Notes,
) -> Vec<proto::JwtProvider> {
    let mut out = Vec::new();
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let at = |f: &str| format!("spec.jwtRules[{i}].{f}");
        if rule.presence == Some(JwtPresence::Required) {
            notes.add(
                Some(r),
                at("presence"),
                "presence REQUIRED is not supported by weft yet: a request without a token \
                 passes (require one with an AuthorizationPolicy's requestPrincipals)",
            );
        }
        let keys = if !rule.jwks.is_empty() {
            rule.jwks.clone()
        } else if !rule.jwks_uri.is_empty() {
            let fetched = jwks.get(&rule.jwks_uri);
            match fetched.and_then(|f| f.error.as_ref()) {
                Some(e) if fetched.is_some_and(|f| f.keys.is_some()) => notes.add(
                    Some(r),
                    at("jwksUri"),
                    format!("the last fetch failed ({e}); the last good keys are in use"),
                ),
                Some(e) => notes.add(
                    Some(r),
                    at("jwksUri"),
                    format!("the keys could not be fetched ({e}); tokens of this issuer are refused"),
                ),
                None if fetched.is_none() => notes.add(
                    Some(r),
                    at("jwksUri"),
                    "the keys are not fetched yet; tokens of this issuer are refused until they are",
                ),
                None => {}
            }
            fetched.and_then(|f| f.keys.clone()).unwrap_or_default()
        } else {
            notes.add(
                Some(r),
                at("jwks"),
                "no jwks and no jwksUri: OpenID discovery is not supported by weft; tokens of \
                 this issuer are refused",
            );
            String::new()
        };
        if rule.issuer.is_empty() {
            notes.add(
                Some(r),
                at("issuer"),
                "a rule without an issuer is not supported by weft; it is left out",
            );
            continue;
        }
        out.push(proto::JwtProvider {
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.clone(),
            jwks: keys,
            from_headers: rule
                .from_headers
                .iter()
                .map(|h| proto::JwtHeader {
                    name: h.name.clone(),
                    prefix: h.prefix.clone(),
                })
                .collect(),
            from_params: rule.from_params.clone(),
            from_cookies: rule.from_cookies.clone(),
            forward_original_token: rule.forward_original_token,
            output_payload_to_header: rule.output_payload_to_header.clone(),
            output_claim_to_headers: rule
                .output_claim_to_headers
                .iter()
                .map(|c| proto::JwtClaimToHeader {
                    header: c.header.clone(),
                    claim: c.claim.clone(),
                })
                .collect(),
            source: format!("{}/{}", r.namespace(), r.name()),
            space_delimited_claims: rule.space_delimited_claims.clone(),
        });
    }
    out
}

/// Puts `security` on every listener in `listeners` (a workload's inbound side): HTTP ones
/// get authentication and authorization, TCP ones authorization per connection.
pub(crate) fn apply(listeners: &mut [proto::Listener], security: &Security) {
    for l in listeners {
        match &mut l.protocol {
            Some(proto::listener::Protocol::Http(h)) => {
                h.rbac.clone_from(&security.rbac);
                h.jwt_authn.clone_from(&security.jwt_authn);
            }
            Some(proto::listener::Protocol::Tcp(t)) => {
                t.rbac.clone_from(&security.rbac);
            }
            _ => {}
        }
    }
}
