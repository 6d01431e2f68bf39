//! Primitive field rules shared by every kind. Each returns `Err(reason)`; callers report it at
//! the field path with [`super::Cx::check`]. Wording and limits follow Istio's validation
//! (istio/istio `pkg/config/validation/agent`) and Kubernetes' (`apimachinery/pkg/util/validation`).

use std::net::IpAddr;

/// `1..=65535`.
pub fn port(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// An integer percentage, `0..=100`.
pub fn percent(value: i64) -> Result<(), String> {
    if (0..=100).contains(&value) {
        Ok(())
    } else {
        Err(format!("percentage {value} is not in range 0..100"))
    }
}

/// A fractional percentage (Istio's `Percent.value`), `0.0..=100.0`.
pub fn percentage(value: f64) -> Result<(), String> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("percentage {value} is not in range 0..100"))
    }
}

/// An HTTP status code a proxy may send: `200..=599`, as Envoy requires.
pub fn http_status(code: u32) -> Result<(), String> {
    if (200..=599).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP status {code} is not in range 200..599"))
    }
}

/// RFC 1123 label: lower-case alphanumerics and `-`, at most 63, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A Kubernetes object name (DNS subdomain), as in `metadata.name`.
pub fn object_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is required".into());
    }
    if is_dns1123_subdomain(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: lower-case alphanumerics, '-' and '.', \
             starting and ending with an alphanumeric, at most 253 characters"
        ))
    }
}

/// A namespace name (DNS label).
pub fn namespace(ns: &str) -> Result<(), String> {
    if is_dns1123_label(ns) {
        Ok(())
    } else {
        Err(format!(
            "{ns:?} is not a valid namespace: lower-case alphanumerics and '-', \
             starting and ending with an alphanumeric, at most 63 characters"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label (or annotation) key: `[prefix/]name`, prefix a DNS subdomain.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_dns1123_subdomain(p))
    {
        return Err(format!(
            "label key {key:?}: prefix {p:?} must be a DNS subdomain (lower-case, '-' and '.')"
        ));
    }
    if !is_label_name(name) {
        return Err(format!(
            "label key {key:?}: name part must be at most 63 characters of alphanumerics, \
             '-', '_' or '.', starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// A label value: empty, or like a label name.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} must be at most 63 characters of alphanumerics, '-', '_' \
             or '.', starting and ending with an alphanumeric"
        ))
    }
}

/// Every key and value of a label map (labels, selectors).
pub fn labels<'a>(cx: &mut super::Cx, labels: impl IntoIterator<Item = (&'a String, &'a String)>) {
    for (k, v) in labels {
        cx.key(k, |cx| {
            cx.check(label_key(k));
            cx.check(label_value(v));
        });
    }
}

fn dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let last = parts.len() - 1;
    if !parts[last].is_empty() && parts[last].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {:?} cannot be all-numeric)",
            parts[last]
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == last && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

fn dns_preconditions(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    Ok(())
}

/// A fully qualified name, no wildcard.
pub fn fqdn(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    dns1123_labels(name)
}

/// A host that may start with a wildcard label: `*`, `*.example.com`, `reviews`,
/// `reviews.default.svc.cluster.local`. As in Istio, the first label may also be a wildcard
/// prefix (`*foo.com`, `*-foo.com`); wildcards anywhere else (`foo.*.com`) are not allowed.
/// Gateway and Sidecar hosts are stricter: see [`namespaced_host`].
pub fn wildcard_host(host: &str) -> Result<(), String> {
    dns_preconditions(host)?;
    let (first, rest) = match host.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (host, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name {host:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(r) => dns1123_labels(r),
        None => Ok(()),
    }
}

/// `*`, a DNS label, or a DNS label prefixed with `*` or `*-` (Istio's `IsWildcardDNS1123Label`).
fn is_wildcard_label(label: &str) -> bool {
    if label == "*" {
        return true;
    }
    let rest = label
        .strip_prefix("*-")
        .or_else(|| label.strip_prefix('*'))
        .unwrap_or(label);
    label.len() <= 63 && is_dns1123_label(rest)
}

/// `namespace/dnsName` as in Sidecar egress hosts and Gateway server hosts. The namespace part
/// may be `*`, `.` or a namespace (Sidecar also allows `~`-prefixed exclusion). A Gateway also
/// accepts a bare host (old style) and an IP.
pub fn namespaced_host(host: &str, is_gateway: bool) -> Result<(), String> {
    let Some((ns, name)) = host.split_once('/') else {
        if is_gateway {
            return gateway_or_sidecar_host_part(host, true);
        }
        return Err(format!("host {host:?} must be of form namespace/dnsName"));
    };
    if ns.is_empty() || name.is_empty() {
        return Err(format!(
            "host {host:?}: config namespace and dnsName in host entry cannot be empty"
        ));
    }
    let ns_ok = match ns {
        "*" | "." => true,
        _ if is_gateway => is_dns1123_label(ns),
        // Sidecar: `~` alone, or `~ns` to exclude a namespace.
        _ => match ns.strip_prefix('~') {
            Some("") => true,
            Some(rest) => is_dns1123_label(rest),
            None => is_dns1123_label(ns),
        },
    };
    if !ns_ok {
        return Err(format!(
            "invalid namespace value {ns:?} in {}",
            if is_gateway { "gateway" } else { "sidecar" }
        ));
    }
    gateway_or_sidecar_host_part(name, is_gateway)
}

fn gateway_or_sidecar_host_part(name: &str, is_gateway: bool) -> Result<(), String> {
    if is_gateway && name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if name.contains('*') && name != "*" && !name.starts_with("*.") {
        return Err(format!(
            "partial wildcard {name:?} not allowed: a wildcard must be the whole first label"
        ));
    }
    if name != "*" && !name.contains('.') {
        return Err(format!(
            "host {name:?}: short names (non FQDN) are not allowed here; write e.g. {name}.default.svc.cluster.local"
        ));
    }
    wildcard_host(name)
}

/// An IP address.
pub fn ip(addr: &str) -> Result<(), String> {
    addr.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("{addr:?} is not a valid IP address"))
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub fn ip_or_cidr(s: &str) -> Result<(), String> {
    let Some((addr, bits)) = s.split_once('/') else {
        return ip(s);
    };
    let bad = || format!("{s:?} is not a valid CIDR block");
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return Err(bad());
    }
    Ok(())
}

/// A regular expression in Istio's `regex` fields. Istio (Envoy) uses RE2 and matches the
/// whole value. Rust's `regex` shares RE2's guarantees (no backreferences or look-around,
/// linear time) and syntax; where they differ: `\d`, `\w`, `\s` and `\b` are Unicode-aware in
/// Rust and ASCII-only in RE2, and RE2's `\C` (any byte) is not supported.
pub fn regex(pattern: &str) -> Result<(), String> {
    // Parsing is what validation needs (and far cheaper than compiling a matcher); the proxy
    // compiles each regex once when config arrives.
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(|_| ())
        .map_err(|e| {
            // regex-syntax's message is multi-line with a caret diagram; keep the last line.
            let detail = e.to_string();
            let last = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!(
                "invalid regex {pattern:?}: {}",
                last.trim().trim_start_matches("error: ")
            )
        })
}

/// Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` conditions.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// A comma-separated `retryOn` list: Envoy conditions or HTTP status codes.
pub fn retry_on(list: &str) -> Result<(), String> {
    for policy in list.split(',') {
        let policy = policy.trim();
        let is_status = policy
            .parse::<u16>()
            .is_ok_and(|c| (100..=599).contains(&c));
        if !is_status && !RETRY_ON.contains(&policy) {
            let hint = crate::suggest::did_you_mean(policy, RETRY_ON.iter().copied())
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            return Err(format!("{policy:?} is not a valid retryOn policy{hint}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let ok = [
            "reviews",
            "reviews.default.svc.cluster.local",
            "*",
            "*.example.com",
            "bookinfo.com",
            "istio.io.",
        ];
        for h in ok {
            assert_eq!(wildcard_host(h), Ok(()), "{h}");
        }
        assert_eq!(wildcard_host("*foo.com"), Ok(()));
        assert_eq!(wildcard_host("*-foo.com"), Ok(()));
        let bad = [
            "",
            "**.com",
            "foo.*.com",
            "Reviews",
            "-a.com",
            "a..com",
            "foo.123",
            "under_score.com",
        ];
        for h in bad {
            assert!(wildcard_host(h).is_err(), "{h:?} should fail");
        }
        assert!(fqdn("*.example.com").is_err());
    }

    #[test]
    fn namespaced_hosts() {
        for (h, gw) in [
            ("./*", false),
            ("istio-system/*", false),
            ("*/bookinfo.com", true),
            ("~/*.example.com", false),
            ("bookinfo.com", true),
            ("*", true),
            ("10.0.0.1", true),
        ] {
            assert_eq!(namespaced_host(h, gw), Ok(()), "{h}");
        }
        for (h, gw) in [
            ("bookinfo.com", false),
            ("ns/", false),
            ("/x.com", true),
            ("BAD/x.com", true),
            ("ns/reviews", false),
            ("ns/*foo.com", true),
        ] {
            assert!(namespaced_host(h, gw).is_err(), "{h:?} should fail");
        }
    }

    #[test]
    fn label_rules() {
        for k in ["app", "app.kubernetes.io/name", "version", "a_b.c-d"] {
            assert_eq!(label_key(k), Ok(()), "{k}");
        }
        for k in ["", "-app", "app-", "Foo_/x", "/x", &"a".repeat(64)] {
            assert!(label_key(k).is_err(), "{k:?}");
        }
        assert!(label_value("").is_ok());
        assert!(label_value("v1").is_ok());
        assert!(label_value("v 1").is_err());
    }

    #[test]
    fn numbers() {
        assert!(port(0).is_err());
        assert!(port(1).is_ok());
        assert!(port(65535).is_ok());
        assert!(port(65536).is_err());
        assert!(percent(101).is_err());
        assert!(percent(-1).is_err());
        assert!(percentage(100.0).is_ok());
        assert!(percentage(100.5).is_err());
        assert!(http_status(503).is_ok());
        assert!(http_status(99).is_err());
        assert!(http_status(600).is_err());
    }

    #[test]
    fn regexes() {
        assert!(regex("^/api/v[0-9]+/.*").is_ok());
        let err = regex("(unclosed").unwrap_err();
        assert!(err.contains("invalid regex"), "{err}");
        // RE2 has no backreferences; neither does Rust's regex.
        assert!(regex(r"(a)\1").is_err());
    }

    #[test]
    fn retry_on_lists() {
        assert!(retry_on("5xx,connect-failure,refused-stream").is_ok());
        assert!(retry_on("gateway-error,503").is_ok());
        let err = retry_on("5xx,conect-failure").unwrap_err();
        assert!(err.contains("did you mean \"connect-failure\""), "{err}");
    }

    #[test]
    fn addresses() {
        assert!(ip("10.0.0.1").is_ok());
        assert!(ip("::1").is_ok());
        assert!(ip("10.0.0").is_err());
        assert!(ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(ip_or_cidr("10.0.0.0/33").is_err());
        assert!(ip_or_cidr("2001:db8::/32").is_ok());
    }
}
