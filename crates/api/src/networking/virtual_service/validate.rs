//! The structure of a VirtualService, following Istio's `ValidateVirtualService`,
//! `validateHTTPRoute`, `validateTLSRoute` and `validateTCPRoute` (istio/istio
//! `pkg/config/validation`): hosts and gateways, which actions an HTTP rule may combine,
//! matches, destinations and weights.

use std::collections::BTreeMap;

use super::shadowing::{http_match_covers, same_http_match, unreachable_rules};
use super::syntax::{
    export_to, gateway_host, gateway_name, header_match_name, host_within, hosts_overlap,
    is_authority_header, is_ip, match_regex,
};
use super::*;
use crate::validate::{Cx, Validate, rules};

/// What an HTTP or TLS rule's checks depend on in the VirtualService around it.
#[derive(Clone, Copy)]
struct Scope<'a> {
    /// The VirtualService has no hosts, so it is a delegate.
    delegate: bool,
    /// The VirtualService lists gateways and not `mesh`: sidecars never apply it.
    gateway_only: bool,
    hosts: &'a [String],
}

impl Scope<'static> {
    /// For a rule validated on its own: a plain mesh VirtualService, hosts unknown.
    const STANDALONE: Self = Scope {
        delegate: false,
        gateway_only: false,
        hosts: &[],
    };
}

impl<'a> Scope<'a> {
    fn of(vs: &'a VirtualService) -> Self {
        Scope {
            delegate: vs.is_delegate(),
            gateway_only: !vs.applies_to_mesh(),
            hosts: &vs.hosts,
        }
    }
}

impl Validate for VirtualService {
    fn validate(&self, cx: &mut Cx) {
        let scope = Scope::of(self);
        if self.is_delegate() {
            if !self.gateways.is_empty() {
                cx.error_at(
                    "hosts",
                    "hosts is required: a VirtualService without hosts is a delegate, and a \
                     delegate cannot list gateways (its root VirtualService decides where it applies)",
                );
            }
            for (field, list_len) in [("tls", self.tls.len()), ("tcp", self.tcp.len())] {
                if list_len > 0 {
                    cx.error_at(
                        field,
                        format!(
                            "a delegate VirtualService (one without hosts) can only have http \
                             routes, not {field}"
                        ),
                    );
                }
            }
        }
        cx.each("gateways", &self.gateways, |cx, g| gateway_name(cx, g));
        self.validate_hosts(cx, &scope);
        if self.http.is_empty() && self.tls.is_empty() && self.tcp.is_empty() {
            cx.error("at least one of http, tls or tcp routes is required");
        }
        cx.each("http", &self.http, |cx, r| r.validate_in(cx, &scope));
        cx.each("tls", &self.tls, |cx, r| r.validate_in(cx, &scope));
        cx.each("tcp", &self.tcp, |cx, r| r.validate(cx));
        cx.field("exportTo", |cx| export_to(cx, &self.export_to));

        let http: Vec<&[HttpMatchRequest]> = self.http.iter().map(|r| &r.matches[..]).collect();
        unreachable_rules(cx, "http", &http, same_http_match, http_match_covers);
        let tls: Vec<&[TlsMatchAttributes]> = self.tls.iter().map(|r| &r.matches[..]).collect();
        unreachable_rules(cx, "tls", &tls, PartialEq::eq, |_, _| false);
        let tcp: Vec<&[L4MatchAttributes]> = self.tcp.iter().map(|r| &r.matches[..]).collect();
        unreachable_rules(cx, "tcp", &tcp, PartialEq::eq, |_, _| false);
    }
}

impl VirtualService {
    fn validate_hosts(&self, cx: &mut Cx, scope: &Scope<'_>) {
        let sni = self
            .tls
            .iter()
            .flat_map(|t| &t.matches)
            .any(|m| !m.sni_hosts.is_empty());
        let mut all_valid = true;
        cx.each("hosts", &self.hosts, |cx, host| {
            let checked = if scope.gateway_only {
                gateway_host(host, sni)
            } else {
                rules::wildcard_host(host)
            };
            match checked {
                // Istio lets an IP address through wherever a host name fails.
                Err(e) if !is_ip(host) => {
                    cx.error(e);
                    all_valid = false;
                }
                Ok(()) if !scope.gateway_only && host == "*" => {
                    cx.error(
                        "host `*` is only allowed when the VirtualService is bound to gateways \
                         only (without `mesh`); sidecars need specific hosts",
                    );
                    all_valid = false;
                }
                _ => {}
            }
        });
        if !all_valid {
            return;
        }
        for (j, later) in self.hosts.iter().enumerate() {
            if let Some(i) = self.hosts[..j].iter().position(|h| hosts_overlap(h, later)) {
                let earlier = &self.hosts[i];
                cx.field("hosts", |cx| {
                    cx.index(j, |cx| {
                        cx.error(format!(
                            "host {later:?} duplicates or overlaps hosts[{i}] {earlier:?}; \
                             list each host once"
                        ))
                    })
                });
            }
        }
    }
}

impl Validate for HttpRoute {
    fn validate(&self, cx: &mut Cx) {
        self.validate_in(cx, &Scope::STANDALONE);
    }
}

impl HttpRoute {
    fn validate_in(&self, cx: &mut Cx, scope: &Scope<'_>) {
        self.check_action(cx, scope);
        cx.each("match", &self.matches, |cx, m| m.validate_in(cx, scope));
        cx.each("route", &self.route, |cx, d| d.validate(cx));
        cx.field("route", |cx| {
            total_weight(cx, self.route.iter().map(|d| d.weight))
        });
        cx.opt("redirect", &self.redirect, |cx, r| {
            r.validate_in(cx, &self.matches)
        });
        cx.opt("directResponse", &self.direct_response, |cx, r| {
            r.validate(cx)
        });
        cx.opt("delegate", &self.delegate, |cx, d| d.validate(cx));
        cx.opt("rewrite", &self.rewrite, |cx, r| r.validate(cx));
        cx.opt("timeout", &self.timeout, |cx, t| cx.check(t.check()));
        cx.opt("retries", &self.retries, |cx, r| r.validate(cx));
        cx.opt("fault", &self.fault, |cx, f| f.validate(cx));
        cx.opt("mirror", &self.mirror, |cx, d| d.validate(cx));
        cx.each("mirrors", &self.mirrors, |cx, m| m.validate(cx));
        self.check_mirror_percent(cx);
        cx.opt("corsPolicy", &self.cors_policy, |cx, c| c.validate(cx));
        cx.opt("headers", &self.headers, |cx, h| h.validate(cx));
        self.check_authority_rewrite(cx);
    }

    /// Which of route, redirect, directResponse and delegate may be combined, as Istio allows.
    fn check_action(&self, cx: &mut Cx, scope: &Scope<'_>) {
        let has_route = !self.route.is_empty();
        if self.delegate.is_some() && !scope.delegate {
            let why = "cannot be combined with delegate: the delegate VirtualService's rules \
                       decide what happens to the request";
            if self.redirect.is_some() {
                cx.error_at("redirect", format!("redirect {why}"));
            }
            if has_route {
                cx.error_at("route", format!("route {why}"));
            }
            return;
        }
        if scope.delegate && self.delegate.is_some() {
            cx.error_at(
                "delegate",
                "a delegate VirtualService (one without hosts) cannot delegate again: only one \
                 level of delegation is supported",
            );
        }
        let action = if self.redirect.is_some() {
            Some("redirect")
        } else if self.direct_response.is_some() {
            Some("directResponse")
        } else {
            None
        };
        match action {
            Some(action) => {
                let conflicts = [
                    ("route", has_route),
                    ("fault", self.fault.is_some()),
                    ("rewrite", self.rewrite.is_some()),
                    (
                        "directResponse",
                        action == "redirect" && self.direct_response.is_some(),
                    ),
                ];
                for (field, _) in conflicts.iter().filter(|(_, set)| *set) {
                    cx.error_at(field, format!("{field} cannot be combined with {action}"));
                }
            }
            None if !has_route => cx.error(if scope.delegate {
                "an HTTP rule needs one of route, redirect or directResponse"
            } else {
                "an HTTP rule needs one of route, redirect, directResponse or delegate"
            }),
            None => {}
        }
        if self.mirror.is_some() && !self.mirrors.is_empty() {
            cx.error_at(
                "mirrors",
                "mirror and mirrors cannot both be set; list every mirror under mirrors",
            );
        }
    }

    fn check_mirror_percent(&self, cx: &mut Cx) {
        if let Some(percent) = self.mirror_percent {
            cx.deprecated(
                "mirrorPercent",
                "mirrorPercentage (e.g. `mirrorPercentage: {value: 50}`)",
            );
            if percent > 100 {
                cx.error_at(
                    "mirrorPercent",
                    format!("mirrorPercent {percent} is over 100"),
                );
            }
            if self.mirror_percentage.is_some() {
                cx.field("mirrorPercent", |cx| {
                    cx.warn("mirrorPercent is ignored because mirrorPercentage is set")
                });
            }
        }
        cx.opt("mirrorPercentage", &self.mirror_percentage, |cx, p| {
            p.validate(cx)
        });
        if self.mirror.is_none() {
            for (field, set) in [
                ("mirrorPercent", self.mirror_percent.is_some()),
                ("mirrorPercentage", self.mirror_percentage.is_some()),
            ] {
                if set {
                    cx.field(field, |cx| {
                        cx.warn(format!(
                            "{field} has no effect without mirror (each mirrors entry has its \
                             own percentage)"
                        ))
                    });
                }
            }
        }
    }

    /// The authority may be rewritten in one place only: `rewrite.authority`, or a `host` /
    /// `:authority` entry in the request headers' `set` or `add`.
    fn check_authority_rewrite(&self, cx: &mut Cx) {
        let mut first = self
            .rewrite
            .as_ref()
            .filter(|r| !r.authority.is_empty())
            .map(|_| "rewrite.authority".to_owned());
        let Some(request) = self.headers.as_ref().and_then(|h| h.request.as_ref()) else {
            return;
        };
        for (op, entries) in [("set", &request.set), ("add", &request.add)] {
            for name in entries.keys().filter(|n| is_authority_header(n)) {
                match &first {
                    Some(earlier) => cx.field("headers", |cx| {
                        cx.field("request", |cx| {
                            cx.field(op, |cx| {
                                cx.key(name, |cx| {
                                    cx.error(format!(
                                        "the authority is already rewritten by {earlier}; \
                                         rewrite it in one place only"
                                    ))
                                })
                            })
                        })
                    }),
                    None => first = Some(format!("headers.request.{op}[{name}]")),
                }
            }
        }
    }
}

impl Validate for HttpMatchRequest {
    fn validate(&self, cx: &mut Cx) {
        self.validate_in(cx, &Scope::STANDALONE);
    }
}

impl HttpMatchRequest {
    fn validate_in(&self, cx: &mut Cx, scope: &Scope<'_>) {
        // An empty URI prefix is allowed (it matches everything); the other matches follow
        // Envoy's string matcher, which rejects an empty prefix.
        cx.opt("uri", &self.uri, |cx, m| m.check(cx, true));
        cx.opt("scheme", &self.scheme, |cx, m| m.validate(cx));
        cx.opt("method", &self.method, |cx, m| m.validate(cx));
        cx.opt("authority", &self.authority, |cx, m| m.validate(cx));
        cx.field("headers", |cx| {
            for (name, m) in &self.headers {
                cx.key(name, |cx| {
                    header_match_name(cx, name, scope.gateway_only);
                    m.validate(cx);
                });
            }
        });
        cx.field("withoutHeaders", |cx| {
            for (name, m) in &self.without_headers {
                cx.key(name, |cx| {
                    header_match_name(cx, name, scope.gateway_only);
                    // `regex: "*"` is not a regex: it means "header absent".
                    if m.regex.as_deref() != Some("*") {
                        m.validate(cx);
                    }
                });
            }
        });
        cx.field("queryParams", |cx| {
            for (name, m) in &self.query_params {
                cx.key(name, |cx| m.validate(cx));
            }
        });
        if self.port != 0 {
            cx.check_at("port", rules::port(self.port));
        }
        cx.field("sourceLabels", |cx| rules::labels(cx, &self.source_labels));
        cx.each("gateways", &self.gateways, |cx, g| gateway_name(cx, g));
        if !self.source_namespace.is_empty() {
            cx.check_at("sourceNamespace", rules::namespace(&self.source_namespace));
        }
        if self.ignore_uri_case && self.uri.as_ref().is_some_and(|u| u.regex.is_some()) {
            cx.field("ignoreUriCase", |cx| {
                cx.warn(
                    "ignoreUriCase applies to exact and prefix URI matches only; for a regex, \
                     use the (?i) flag",
                )
            });
        }
    }
}

impl StringMatch {
    pub(super) fn set_count(&self) -> usize {
        [
            self.exact.is_some(),
            self.prefix.is_some(),
            self.regex.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }

    pub(super) fn check(&self, cx: &mut Cx, empty_prefix_ok: bool) {
        if self.set_count() > 1 {
            cx.error("set only one of exact, prefix or regex");
        }
        if !empty_prefix_ok && self.prefix.as_deref() == Some("") {
            cx.error_at(
                "prefix",
                "prefix must not be empty (omit the match to match anything)",
            );
        }
        if let Some(re) = &self.regex {
            cx.check_at("regex", match_regex(re));
        }
    }
}

impl Validate for StringMatch {
    fn validate(&self, cx: &mut Cx) {
        self.check(cx, false);
    }
}

impl Validate for HttpRouteDestination {
    fn validate(&self, cx: &mut Cx) {
        required_destination(cx, &self.destination);
        if self.weight < 0 {
            cx.error_at(
                "weight",
                format!("weight {} is negative; weights are 0 or more", self.weight),
            );
        }
        cx.opt("headers", &self.headers, |cx, h| h.validate(cx));
    }
}

impl Validate for RouteDestination {
    fn validate(&self, cx: &mut Cx) {
        required_destination(cx, &self.destination);
        if self.weight < 0 {
            cx.error_at(
                "weight",
                format!("weight {} is negative; weights are 0 or more", self.weight),
            );
        }
    }
}

pub(super) fn required_destination(cx: &mut Cx, destination: &Destination) {
    if *destination == Destination::default() {
        cx.error_at("destination", "destination is required");
    } else {
        cx.field("destination", |cx| destination.validate(cx));
    }
}

/// Several destinations all weighted 0 receive no traffic at all.
fn total_weight(cx: &mut Cx, weights: impl ExactSizeIterator<Item = i32>) {
    let count = weights.len();
    let total: i64 = weights.map(i64::from).sum();
    if count > 1 && total == 0 {
        cx.error(
            "the destinations' weights add up to 0, so none of them receives traffic; give at \
             least one a positive weight",
        );
    }
}

impl Validate for Destination {
    fn validate(&self, cx: &mut Cx) {
        match self.host.as_str() {
            "" => cx.error_at("host", "host is required"),
            "*" => cx.error_at("host", "destination host cannot be `*`: name one service"),
            host => cx.check_at("host", rules::wildcard_host(host)),
        }
        if !self.subset.is_empty() && !rules::is_dns1123_label(&self.subset) {
            cx.error_at(
                "subset",
                format!(
                    "{:?} is not a valid subset name: lower-case alphanumerics and '-', at most \
                     63 characters",
                    self.subset
                ),
            );
        }
        cx.opt("port", &self.port, |cx, p| p.validate(cx));
    }
}

impl Validate for PortSelector {
    fn validate(&self, cx: &mut Cx) {
        cx.check_at("number", rules::port(self.number));
    }
}

impl Validate for Percent {
    fn validate(&self, cx: &mut Cx) {
        cx.check_at("value", rules::percentage(self.value));
    }
}

impl Validate for Delegate {
    fn validate(&self, cx: &mut Cx) {
        if self.name.is_empty() {
            cx.error_at("name", "name of the delegate VirtualService is required");
        } else {
            cx.check_at("name", rules::object_name(&self.name));
        }
        if !self.namespace.is_empty() {
            cx.check_at("namespace", rules::namespace(&self.namespace));
        }
    }
}

impl Validate for TlsRoute {
    fn validate(&self, cx: &mut Cx) {
        self.validate_in(cx, &Scope::STANDALONE);
    }
}

impl TlsRoute {
    fn validate_in(&self, cx: &mut Cx, scope: &Scope<'_>) {
        if self.matches.is_empty() {
            cx.error_at(
                "match",
                "a TLS rule needs at least one match (with sniHosts)",
            );
        }
        cx.each("match", &self.matches, |cx, m| m.validate_in(cx, scope));
        if self.route.is_empty() {
            cx.error_at("route", "a TLS rule needs at least one route destination");
        }
        cx.each("route", &self.route, |cx, d| d.validate(cx));
        cx.field("route", |cx| {
            total_weight(cx, self.route.iter().map(|d| d.weight))
        });
    }
}

impl Validate for TlsMatchAttributes {
    fn validate(&self, cx: &mut Cx) {
        self.validate_in(cx, &Scope::STANDALONE);
    }
}

impl TlsMatchAttributes {
    fn validate_in(&self, cx: &mut Cx, scope: &Scope<'_>) {
        if self.sni_hosts.is_empty() {
            cx.error_at("sniHosts", "a TLS match needs at least one SNI host");
        }
        cx.each("sniHosts", &self.sni_hosts, |cx, sni| {
            sni_host(cx, sni, scope)
        });
        l4_match(
            cx,
            &self.destination_subnets,
            self.port,
            &self.source_labels,
            &self.gateways,
            &self.source_namespace,
        );
    }
}

fn sni_host(cx: &mut Cx, sni: &str, scope: &Scope<'_>) {
    let checked = if scope.gateway_only {
        gateway_host(sni, true)
    } else {
        rules::wildcard_host(sni)
    };
    if let Err(e) = checked {
        if is_ip(sni) {
            cx.warn(format!(
                "{sni:?} is an IP address: SNI carries host names only (RFC 6066), and most \
                 clients never send an IP"
            ));
        } else {
            cx.error(e);
        }
        return;
    }
    // A delegate VirtualService (no hosts) with TLS rules is already an error.
    if !scope.hosts.is_empty() && !scope.hosts.iter().any(|h| host_within(sni, h)) {
        cx.error(format!(
            "SNI host {sni:?} is not within any of the VirtualService's hosts [{}]",
            scope.hosts.join(", ")
        ));
    }
}

impl Validate for TcpRoute {
    fn validate(&self, cx: &mut Cx) {
        cx.each("match", &self.matches, |cx, m| m.validate(cx));
        if self.route.is_empty() {
            cx.error_at("route", "a TCP rule needs at least one route destination");
        }
        cx.each("route", &self.route, |cx, d| d.validate(cx));
        cx.field("route", |cx| {
            total_weight(cx, self.route.iter().map(|d| d.weight))
        });
    }
}

impl Validate for L4MatchAttributes {
    fn validate(&self, cx: &mut Cx) {
        l4_match(
            cx,
            &self.destination_subnets,
            self.port,
            &self.source_labels,
            &self.gateways,
            &self.source_namespace,
        );
        if !self.source_subnet.is_empty() {
            cx.check_at("sourceSubnet", rules::ip_or_cidr(&self.source_subnet));
        }
    }
}

/// The checks TLS and TCP matches share.
fn l4_match(
    cx: &mut Cx,
    destination_subnets: &[String],
    port: u32,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
    source_namespace: &str,
) {
    cx.each("destinationSubnets", destination_subnets, |cx, s| {
        cx.check(rules::ip_or_cidr(s))
    });
    if port != 0 {
        cx.check_at("port", rules::port(port));
    }
    cx.field("sourceLabels", |cx| rules::labels(cx, source_labels));
    cx.each("gateways", gateways, |cx, g| gateway_name(cx, g));
    if !source_namespace.is_empty() {
        cx.check_at("sourceNamespace", rules::namespace(source_namespace));
    }
}
