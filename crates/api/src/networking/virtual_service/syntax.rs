//! The small languages inside a VirtualService's strings: gateway references, hosts, header
//! names and values, regexes, exportTo entries and base64 bodies.

use std::net::IpAddr;

use crate::validate::{Cx, rules};

/// A gateway reference: `mesh`, `name`, or `namespace/name` (both DNS labels). The legacy
/// `name.namespace.svc.cluster.local` form is accepted with a warning.
pub(super) fn gateway_name(cx: &mut Cx, gateway: &str) {
    match gateway.split_once('/') {
        None => {
            if let Some((name, rest)) = gateway.split_once('.') {
                let ns = rest.split('.').next().unwrap_or_default();
                cx.warn(format!(
                    "gateway {gateway:?} uses the legacy FQDN form; write it as \"{ns}/{name}\""
                ));
            }
            if let Err(e) = rules::fqdn(gateway) {
                cx.error(format!("{gateway:?} is not a valid gateway name: {e}"));
            }
        }
        Some((ns, name)) if ns.is_empty() || name.is_empty() => cx.error(format!(
            "gateway {gateway:?}: both namespace and name are required in `namespace/name`"
        )),
        Some((ns, name)) => {
            if !rules::is_dns1123_label(ns) {
                cx.error(format!(
                    "gateway {gateway:?}: {ns:?} is not a valid namespace name"
                ));
            }
            if !rules::is_dns1123_label(name) {
                cx.error(format!(
                    "gateway {gateway:?}: {name:?} is not a valid gateway name (lower-case \
                     alphanumerics and '-', at most 63 characters)"
                ));
            }
        }
    }
}

/// A host of a VirtualService bound to gateways only. When it has SNI matches, the
/// `outbound_.<port>_._.<host>` names of AUTO_PASSTHROUGH gateways are allowed too.
pub(super) fn gateway_host(host: &str, sni: bool) -> Result<(), String> {
    if sni && host.starts_with("outbound_") {
        return auto_passthrough_sni(host);
    }
    rules::wildcard_host(host)
}

pub(super) fn auto_passthrough_sni(host: &str) -> Result<(), String> {
    const FORMAT: &str = "outbound_.<port>_._.<hostname>";
    if host.len() > 255 {
        return Err(format!("domain name {host:?} too long (max 255)"));
    }
    let parts: Vec<&str> = host.split('_').collect();
    if parts.len() < 4 {
        return Err(format!("{host:?} must have the form {FORMAT}"));
    }
    let port = parts[1].trim_matches('.');
    let name = parts[3].trim_matches('.');
    if !port.bytes().any(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{host:?}: port {port:?} is not a number; the form is {FORMAT}"
        ));
    }
    if !name.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err(format!(
            "{host:?}: {name:?} is not a host name; the form is {FORMAT}"
        ));
    }
    Ok(())
}

pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Istio's `host.Name.Matches`: the two hosts share at least one name.
pub(super) fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a), Some(b)) => a.ends_with(b) || b.ends_with(a),
        (Some(a), None) => b.ends_with(a),
        (None, Some(b)) => a.ends_with(b),
        (None, None) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`: every name `a` stands for is one of `b`'s.
pub(super) fn host_within(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a), Some(b)) => a.ends_with(b),
        (Some(_), None) => false,
        (None, Some(b)) => a.ends_with(b),
        (None, None) => a == b,
    }
}

/// The prefix of header names that match JWT claims (gateways only):
/// `@request.auth.claims.<name>` or `@request.auth.claims[<name>][<nested>]`.
const JWT_CLAIM_PREFIX: &str = "@request.auth.claims";

pub(super) fn is_jwt_claim(name: &str) -> bool {
    let Some(head) = name.get(..JWT_CLAIM_PREFIX.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(JWT_CLAIM_PREFIX) {
        return false;
    }
    let rest = &name[JWT_CLAIM_PREFIX.len()..];
    (rest.starts_with('.') && rest.len() > 1)
        || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

/// HTTP/2 pseudo-headers that header matches may name.
const PSEUDO_HEADERS: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":status"];

/// A header name in `headers` or `withoutHeaders` of a match.
pub(super) fn header_match_name(cx: &mut Cx, name: &str, gateway_only: bool) {
    if name.is_empty() {
        cx.error("header name cannot be empty");
        return;
    }
    if is_jwt_claim(name) {
        if !gateway_only {
            cx.error(
                "routing on JWT claims (@request.auth.claims) only works on gateways; this \
                 VirtualService also applies to sidecars (`mesh`)",
            );
        }
        return;
    }
    if PSEUDO_HEADERS.contains(&name) {
        return;
    }
    if !is_token(name) {
        cx.error(invalid_header_name(name));
        return;
    }
    if matches!(name, "uri" | "scheme" | "method" | "authority") {
        cx.warn(format!(
            "header {name:?} is ignored in header matches; use the match's `{name}` field"
        ));
    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
        cx.warn(format!(
            "header names are compared case-insensitively and written lower-case; use {:?}",
            name.to_ascii_lowercase()
        ));
    }
}

/// RFC 9110 token characters, what a header name is made of.
pub(super) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn invalid_header_name(name: &str) -> String {
    format!("{name:?} is not a valid header name: use letters, digits and !#$%&'*+-.^_`|~")
}

pub(super) fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// A header that request `set`/`add` may write: anything but a pseudo-header, except that
/// `host` and `:authority` rewrite the authority.
pub(super) fn request_header_to_write(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.starts_with(':') && !is_authority_header(name) {
        return Err(format!(
            "header {name:?} cannot be set: pseudo-headers (':') belong to the proxy"
        ));
    }
    Ok(())
}

/// A header that request `remove` and response `set`/`add`/`remove` may touch.
pub(super) fn header_to_change(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(
            "the Host header cannot be changed here; only request `set`/`add` may rewrite it"
                .into(),
        );
    }
    if name.starts_with(':') {
        return Err(format!(
            "header {name:?} cannot be changed: pseudo-headers (':') belong to the proxy"
        ));
    }
    Ok(())
}

/// A header value the proxy accepts: no control characters but tab, and well-formed
/// `%VARIABLE%` expressions.
pub(super) fn header_value(value: &str) -> Result<(), String> {
    if let Some(c) = value
        .chars()
        .find(|&c| (c < ' ' && c != '\t') || c == '\x7f')
    {
        return Err(format!(
            "header value {value:?} contains the control character {c:?}"
        ));
    }
    header_format(value).map_err(|e| format!("header value {value:?}: {e}"))
}

/// Envoy's header value syntax: literal text with `%%` for a percent sign, `%VARIABLE%`, and
/// `%VARIABLE(arg)%` or `%VARIABLE(["arg", ...])%`. Follows Envoy's `HeaderParser`, which Istio
/// mirrors in its validation.
pub(super) fn header_format(value: &str) -> Result<(), &'static str> {
    #[derive(PartialEq)]
    enum State {
        Literal,
        Name,
        ArgsOpen,
        ArgStart,
        Arg,
        ArgEnd,
        ArgsClose,
        VariableClose,
    }
    let bytes = value.as_bytes();
    let mut state = State::Literal;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        state = match state {
            State::Literal if c == b'%' => match bytes.get(i + 1) {
                None => return Err("a lone % at the end; write %% for a percent sign"),
                Some(b'%') => {
                    i += 1;
                    State::Literal
                }
                Some(_) => State::Name,
            },
            State::Literal => State::Literal,
            State::Name => match c {
                b'%' => State::Literal,
                b'(' => State::ArgsOpen,
                _ => State::Name,
            },
            State::ArgsOpen => match c {
                b'[' => State::ArgStart,
                b' ' => State::ArgsOpen,
                _ => State::Arg,
            },
            State::ArgStart => match c {
                b'"' => State::Arg,
                b' ' => State::ArgStart,
                _ => return Err("expected '\"' to start an argument"),
            },
            State::Arg => match c {
                b'\\' if i + 1 == bytes.len() => return Err("unterminated '\\' escape"),
                b'\\' => {
                    i += 1;
                    State::Arg
                }
                b')' => State::VariableClose,
                b'"' => State::ArgEnd,
                _ => State::Arg,
            },
            State::ArgEnd => match c {
                b',' => State::ArgStart,
                b']' => State::ArgsClose,
                b' ' => State::ArgEnd,
                _ => return Err("expected ',' or ']' after an argument"),
            },
            State::ArgsClose => match c {
                b')' => State::VariableClose,
                b' ' => State::ArgsClose,
                _ => return Err("expected ')' after the argument list"),
            },
            State::VariableClose => match c {
                b'%' => State::Literal,
                b' ' => State::VariableClose,
                _ => return Err("expected '%' to close the variable"),
            },
        };
        i += 1;
    }
    if state == State::Literal {
        Ok(())
    } else {
        Err("unterminated %VARIABLE% expression; write %% for a percent sign")
    }
}

/// A regex in a match or rewrite: RE2 syntax, at most 1024 characters (Istio's stand-in for
/// Envoy's program-size limit).
pub(super) fn match_regex(re: &str) -> Result<(), String> {
    if re.is_empty() {
        return Err("regex must not be empty".into());
    }
    if re.len() > 1024 {
        return Err(format!(
            "regex is {} characters long; at most 1024 are allowed",
            re.len()
        ));
    }
    rules::regex(re)
}

pub(super) fn export_to(cx: &mut Cx, entries: &[String]) {
    for (i, entry) in entries.iter().enumerate() {
        cx.index(i, |cx| {
            if entries[..i].contains(entry) {
                cx.error(format!("duplicate exportTo entry {entry:?}"));
                return;
            }
            match entry.as_str() {
                "." | "*" => {}
                "~" => {
                    cx.error("exportTo `~` (visible to no one) is only allowed in a ServiceEntry")
                }
                ns if rules::is_dns1123_label(ns) => {}
                _ => cx.error(format!(
                    "{entry:?} is not a valid exportTo entry: use `.` (this namespace), `*` (all \
                     namespaces) or a namespace name"
                )),
            }
        });
    }
    if entries.len() > 1 && entries.iter().any(|e| e == "*") {
        cx.error(
            "`*` exports to every namespace; it cannot be combined with other exportTo entries",
        );
    }
}

/// Decodes protobuf JSON `bytes`: base64 in the standard or URL-safe alphabet, padded or not.
pub(super) fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let data = text.trim_end_matches('=');
    if data.len() % 4 == 1 {
        return Err("the text is truncated (its length is not a whole number of bytes)".into());
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, c) in data.bytes().enumerate() {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(format!("unexpected character at offset {i}")),
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // Keep the low byte only: that is the one just completed.
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
