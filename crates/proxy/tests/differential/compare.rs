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

/// Headers compared as present or absent only, each with why.
pub const PRESENCE_ONLY_HEADERS: &[(&str, &str)] = &[
    ("x-envoy-upstream-service-time", "a duration in ms"),
    (
        "x-request-id",
        "a fresh UUID per request (a client-sent, non-UUID value is compared as it is)",
    ),
];

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
pub fn fields(resp: &Result<Response, String>, attempts: &[Seen]) -> Fields {
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
            } else {
                value
            };
            f.insert(format!("{p} header {name}"), value);
        }
    }
    f
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
        if !from_backend && name == "content-length" {
            continue;
        }
        let value = if PRESENCE_ONLY_HEADERS.iter().any(|(n, _)| *n == name)
            && !(name == "x-request-id" && uuid::Uuid::parse_str(&value).is_err())
        {
            "<present>".to_owned()
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

/// A difference weft has on purpose: scenario, request label, field, both values, and why.
pub struct Known {
    pub scenario: &'static str,
    pub request: &'static str,
    pub field: &'static str,
    pub weft: &'static str,
    pub envoy: &'static str,
    pub reason: &'static str,
}

impl Known {
    pub fn matches(&self, d: &Difference) -> bool {
        self.scenario == d.scenario
            && self.request == d.request
            && self.field == d.field
            && self.weft == d.weft
            && self.envoy == d.envoy
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  {} / {}: {}\n      weft:  {:?}\n      envoy: {:?}",
            self.scenario, self.request, self.field, self.weft, self.envoy
        )
    }
}
