//! What is compared, after normalization, and how differences are reported.

use std::collections::BTreeMap;

use super::backend::{ID_HEADER, Seen};
use super::wire::Response;

/// Client-visible headers left out of the comparison, each with why.
pub const IGNORED_CLIENT_HEADERS: &[(&str, &str)] = &[
    ("date", "the clock"),
    (
        "x-weft-response-flags",
        "weft's own header naming a local reply's response flag (Envoy has it only in its access log)",
    ),
];

/// Headers of a local reply (a response no backend produced) that carry its wording, which
/// weft and Envoy choose differently: the body's length and gRPC's message.
pub const LOCAL_REPLY_WORDING: &[&str] = &["content-length", "grpc-message"];

/// Headers compared as present or absent only, each with why.
pub const PRESENCE_ONLY_HEADERS: &[(&str, &str)] = &[
    ("x-envoy-upstream-service-time", "a duration in ms"),
    (
        "x-request-id",
        "a fresh UUID per request (a client-sent, non-UUID value is compared as it is)",
    ),
];

/// Headers whose value is a list of case-insensitive tokens (RFC 9110 7.6.1), compared in
/// lower case.
pub const TOKEN_HEADERS: &[&str] = &["connection", "upgrade"];

/// Upstream headers left out, with why.
pub const IGNORED_UPSTREAM_HEADERS: &[(&str, &str)] = &[(
    ID_HEADER,
    "the test's request id, different per proxy by construction",
)];

/// One request's outcome through one proxy, as `field -> value` lines.
pub type Fields = BTreeMap<String, String>;

/// The fields of a response and of the attempts that reached a backend.
///
/// The body and `content-length` of a local reply (a response no backend produced) are left
/// out: weft and Envoy word their local replies differently. Their status, content type and
/// other headers are compared.
///
/// Attempts are ordered by the backend that got them (in arrival order for each), so that a
/// mirrored copy racing its original does not change the numbering.
pub fn fields(resp: &Result<Response, String>, attempts: &[Seen]) -> Fields {
    let mut attempts = attempts.to_vec();
    attempts.sort_by_key(|a| a.backend);
    let mut f = Fields::new();
    match resp {
        Err(e) => {
            f.insert("status".into(), format!("no response ({})", error_kind(e)));
        }
        Ok(r) => response_fields(&mut f, r),
    }
    f.insert("attempts".into(), attempts.len().to_string());
    for (i, seen) in attempts.iter().enumerate() {
        let p = format!("upstream[{i}]");
        f.insert(format!("{p} backend"), seen.backend.to_owned());
        f.insert(
            format!("{p} request"),
            format!("{} {} {}", seen.method, seen.target, seen.version),
        );
        if !seen.body.is_empty() {
            f.insert(format!("{p} body"), seen.body.clone());
        }
        for (name, value) in grouped(&seen.headers) {
            if IGNORED_UPSTREAM_HEADERS.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let value = if name == "x-request-id" && uuid::Uuid::parse_str(&value).is_ok() {
                "<uuid>".to_owned()
            } else if name == "x-forwarded-for" {
                host_addresses_named(&value)
            } else if TOKEN_HEADERS.contains(&name.as_str()) {
                value.to_ascii_lowercase()
            } else {
                value
            };
            f.insert(format!("{p} header {name}"), value);
        }
    }
    f
}

/// `x-forwarded-for` with the machine's own addresses (what Envoy appends for a request it
/// originates itself, a mirrored copy) written `<this host>`: they differ per machine. The
/// test's clients are 127.0.0.x and the addresses it sends are from 203.0.113.0/24.
fn host_addresses_named(xff: &str) -> String {
    // Separators are kept as they are: `,` and `, ` are compared.
    xff.split(',')
        .map(|piece| {
            let a = piece.trim();
            let lead = &piece[..piece.len() - piece.trim_start().len()];
            match a.parse::<std::net::IpAddr>() {
                Ok(ip) if !ip.is_loopback() && !a.starts_with("203.0.113.") => {
                    format!("{lead}<this host>")
                }
                _ => piece.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The broad reason a response could not be read: its detail (ports, byte counts) varies.
fn error_kind(e: &str) -> &str {
    e.split(':').next().unwrap_or(e)
}

fn response_fields(f: &mut Fields, r: &Response) {
    f.insert("status".into(), r.status.to_string());
    if !r.interim.is_empty() {
        let interim: Vec<String> = r.interim.iter().map(u16::to_string).collect();
        f.insert("interim".into(), interim.join(","));
    }
    let from_backend = r.headers.iter().any(|(k, _)| k == "x-backend");
    for (name, value) in grouped(&r.headers) {
        if IGNORED_CLIENT_HEADERS.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if !from_backend && LOCAL_REPLY_WORDING.contains(&name.as_str()) {
            continue;
        }
        let value = if PRESENCE_ONLY_HEADERS.iter().any(|(n, _)| *n == name)
            && !(name == "x-request-id" && uuid::Uuid::parse_str(&value).is_err())
        {
            "<present>".to_owned()
        } else if TOKEN_HEADERS.contains(&name.as_str()) {
            value.to_ascii_lowercase()
        } else {
            value
        };
        f.insert(format!("client header {name}"), value);
    }
    if from_backend && !r.body.is_empty() {
        f.insert("client body".into(), r.body.clone());
    }
    if let Some(t) = &r.tunnel {
        f.insert("tunnel".into(), t.clone());
    }
}

/// Headers by name, repeated ones joined with ` | ` in the order received.
fn grouped(headers: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in headers {
        out.entry(k.clone())
            .and_modify(|e| {
                e.push_str(" | ");
                e.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    out
}

/// A field whose values differ.
#[derive(Debug, Clone)]
pub struct Difference {
    pub scenario: &'static str,
    pub request: String,
    pub field: String,
    pub weft: String,
    pub envoy: String,
}

const ABSENT: &str = "<absent>";

pub fn differences(
    scenario: &'static str,
    request: &str,
    weft: &Fields,
    envoy: &Fields,
) -> Vec<Difference> {
    let mut keys: Vec<&String> = weft.keys().chain(envoy.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let w = weft.get(k).map_or(ABSENT, String::as_str);
            let e = envoy.get(k).map_or(ABSENT, String::as_str);
            (w != e).then(|| Difference {
                scenario,
                request: request.to_owned(),
                field: k.clone(),
                weft: w.to_owned(),
                envoy: e.to_owned(),
            })
        })
        .collect()
}

/// A difference listed as known: scenario, request label, field, both values, and why.
pub struct Known {
    pub scenario: &'static str,
    pub request: &'static str,
    pub field: &'static str,
    pub weft: &'static str,
    pub envoy: &'static str,
    pub why: Why,
}

/// Why a known difference is there.
#[derive(Clone, Copy)]
pub enum Why {
    /// weft differs on purpose; the README says so.
    Intended(&'static str),
    /// A difference to remove, recorded so that the suite guards everything else meanwhile
    /// (the README lists these too).
    ToFix(&'static str),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Intended(r) => write!(f, "intended: {r}"),
            Why::ToFix(r) => write!(f, "to fix: {r}"),
        }
    }
}

impl Known {
    /// A known difference in `status` covers every other field of its request too (a
    /// different outcome changes all that follows from it), and one in `attempts` the fields
    /// of the attempts.
    pub fn covers(&self, d: &Difference, found: &[Difference]) -> bool {
        let follows = self.field == "status"
            || (self.field == "attempts" && d.field.starts_with("upstream["));
        self.matches(d)
            || (follows
                && self.scenario == d.scenario
                && self.request == d.request
                && found.iter().any(|s| self.matches(s)))
    }

    pub fn matches(&self, d: &Difference) -> bool {
        self.scenario == d.scenario
            && self.request == d.request
            && self.field == d.field
            && self.weft == d.weft
            && self.envoy == d.envoy
    }
}

/// The differences as text, grouped by scenario and request.
pub fn render(diffs: &[&Difference]) -> String {
    let mut out = String::new();
    let mut last = None;
    for d in diffs {
        let at = (d.scenario, d.request.as_str());
        if last != Some(at) {
            out.push_str(&format!("  {} / {}:\n", d.scenario, d.request));
            last = Some(at);
        }
        out.push_str(&format!(
            "      {}\n          weft:  {:?}\n          envoy: {:?}\n",
            d.field, d.weft, d.envoy
        ));
    }
    out
}
