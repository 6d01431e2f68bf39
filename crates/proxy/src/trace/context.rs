//! Trace context in request headers: read (B3 multi-header, B3 single `b3`, W3C
//! `traceparent`) and written for the next hop. A header that does not parse is ignored as if
//! absent: a bad header from a client never fails its request, it starts a new trace.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub(crate) static TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub(crate) static SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub(crate) static PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub(crate) static SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub(crate) static FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
pub(crate) static B3: HeaderName = HeaderName::from_static("b3");
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What a request arrived with: the trace it belongs to and the span that sent it (both may
/// be absent), and the sampling decision made upstream of this proxy, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Incoming {
    /// The trace and the caller's span; None: this request starts a trace.
    pub parent: Option<(u128, u64)>,
    /// `Some(true)`: sampled (or debug); `Some(false)`: not; None: no decision yet.
    pub sampled: Option<bool>,
}

/// Which header format is read first when a request carries more than one. Envoy's Zipkin
/// tracer reads B3 first, its OpenTelemetry tracer W3C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    B3,
    W3c,
}

/// Reads the trace context of `headers`. The first format that parses wins (in `prefer`'s
/// order); a sampling decision alone (`x-b3-sampled` or `b3: 0` without ids) is honoured.
pub fn extract(headers: &HeaderMap, prefer: Prefer) -> Incoming {
    let found = match prefer {
        Prefer::B3 => b3_multi(headers)
            .or_else(|| b3_single(headers))
            .or_else(|| traceparent(headers)),
        Prefer::W3c => traceparent(headers)
            .or_else(|| b3_multi(headers))
            .or_else(|| b3_single(headers)),
    };
    if let Some(found) = found {
        return found;
    }
    // A decision without a trace: `x-b3-sampled: 0` or `b3: 0` (B3's "deny" form).
    let sampled = b3_sampled(headers).or_else(|| {
        let b3 = header(headers, &B3)?;
        parse_sampled(b3)
    });
    Incoming {
        parent: None,
        sampled,
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// B3's sampling state: `1`/`true` sampled, `0`/`false` not, `d` debug (sampled).
fn parse_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// `x-b3-flags: 1` (debug) implies sampled; then `x-b3-sampled`.
fn b3_sampled(headers: &HeaderMap) -> Option<bool> {
    if header(headers, &FLAGS) == Some("1") {
        return Some(true);
    }
    parse_sampled(header(headers, &SAMPLED)?)
}

/// A B3 trace id: 16 or 32 lower-case hex digits (a 64-bit id is the low half), not all zero.
fn trace_id(s: &str) -> Option<u128> {
    if !(s.len() == 16 || s.len() == 32) {
        return None;
    }
    hex(s).filter(|v| *v != 0)
}

/// A span id: 16 hex digits, not all zero.
fn span_id(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    hex(s)
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v != 0)
}

fn hex(s: &str) -> Option<u128> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

fn b3_multi(headers: &HeaderMap) -> Option<Incoming> {
    let trace = trace_id(header(headers, &TRACE_ID)?)?;
    let span = span_id(header(headers, &SPAN_ID)?)?;
    Some(Incoming {
        parent: Some((trace, span)),
        sampled: b3_sampled(headers),
    })
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`.
fn b3_single(headers: &HeaderMap) -> Option<Incoming> {
    let value = header(headers, &B3)?;
    let mut parts = value.split('-');
    let trace = trace_id(parts.next()?)?;
    let span = span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some(s) => Some(parse_sampled(s)?),
    };
    if let Some(parent) = parts.next() {
        span_id(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Incoming {
        parent: Some((trace, span)),
        sampled,
    })
}

/// W3C `traceparent: 00-{32 hex trace id}-{16 hex parent id}-{2 hex flags}`; a later version
/// may add fields after the flags (read as version 00), version ff is invalid.
fn traceparent(headers: &HeaderMap) -> Option<Incoming> {
    let value = header(headers, &TRACEPARENT)?;
    let mut parts = value.split('-');
    let version = parts.next()?;
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") || hex(version).is_none() {
        return None;
    }
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let lower = |s: &str| !s.bytes().any(|b| b.is_ascii_uppercase());
    if trace.len() != 32 || !lower(trace) || !lower(span) || flags.len() != 2 {
        return None;
    }
    let flags = u8::try_from(hex(flags)?).ok()?;
    Some(Incoming {
        parent: Some((trace_id(trace)?, span_id(span)?)),
        sampled: Some(flags & 1 == 1),
    })
}

/// The context the next hop gets: this proxy's span as the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub trace: u128,
    pub span: u64,
    /// The span this proxy's span is a child of (B3's x-b3-parentspanid).
    pub parent: Option<u64>,
    pub sampled: bool,
}

/// Writes `ctx` as B3 multi-headers and W3C `traceparent` (both, so that apps and tracers of
/// either kind join the trace); a `b3` single header that arrived is rewritten too, so that
/// no stale context is passed on. `tracestate` passes through unchanged.
pub fn inject(headers: &mut HeaderMap, ctx: &Outgoing) {
    let put = |headers: &mut HeaderMap, name: &HeaderName, value: String| {
        // Hex digits and dashes: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name.clone(), v);
        }
    };
    let sampled = if ctx.sampled { "1" } else { "0" };
    put(headers, &TRACE_ID, format!("{:032x}", ctx.trace));
    put(headers, &SPAN_ID, format!("{:016x}", ctx.span));
    match ctx.parent {
        Some(p) => put(headers, &PARENT_SPAN_ID, format!("{p:016x}")),
        None => {
            headers.remove(&PARENT_SPAN_ID);
        }
    }
    put(headers, &SAMPLED, sampled.to_owned());
    headers.remove(&FLAGS);
    put(
        headers,
        &TRACEPARENT,
        format!("00-{:032x}-{:016x}-0{}", ctx.trace, ctx.span, sampled),
    );
    if headers.contains_key(&B3) {
        let mut single = format!("{:032x}-{:016x}-{sampled}", ctx.trace, ctx.span);
        if let Some(p) = ctx.parent {
            single.push_str(&format!("-{p:016x}"));
        }
        put(headers, &B3, single);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(kv: &[(&'static str, &'static str)]) -> HeaderMap {
        kv.iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    const T: &str = "463ac35c9f6413ad48485a3953bb6124";
    const T_ID: u128 = 0x463ac35c9f6413ad48485a3953bb6124;

    #[test]
    fn b3_multi_headers_are_read_with_their_sampling_state() {
        let h = headers(&[
            ("x-b3-traceid", T),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]);
        let got = extract(&h, Prefer::B3);
        assert_eq!(got.parent, Some((T_ID, 0xa2fb4a1d1a96d312)));
        assert_eq!(got.sampled, Some(true));
        // A 64-bit trace id; no decision; debug implies sampled.
        let h = headers(&[
            ("x-b3-traceid", "48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]);
        assert_eq!(
            extract(&h, Prefer::B3),
            Incoming {
                parent: Some((0x48485a3953bb6124, 0xa2fb4a1d1a96d312)),
                sampled: None
            }
        );
        let h = headers(&[
            ("x-b3-traceid", T),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]);
        assert_eq!(extract(&h, Prefer::B3).sampled, Some(true));
    }

    #[test]
    fn b3_single_header_is_read() {
        let h = headers(&[(
            "b3",
            "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1-0020000000000001",
        )]);
        let got = extract(&h, Prefer::B3);
        assert_eq!(got.parent, Some((T_ID, 0xa2fb4a1d1a96d312)));
        assert_eq!(got.sampled, Some(true));
        let h = headers(&[("b3", "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312")]);
        assert_eq!(extract(&h, Prefer::B3).sampled, None);
        let h = headers(&[("b3", "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-d")]);
        assert_eq!(extract(&h, Prefer::W3c).sampled, Some(true));
        // The deny-only form: no trace, not sampled.
        assert_eq!(
            extract(&headers(&[("b3", "0")]), Prefer::B3),
            Incoming {
                parent: None,
                sampled: Some(false)
            }
        );
    }

    #[test]
    fn traceparent_is_read_and_its_sampled_flag_honoured() {
        let h = headers(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )]);
        let got = extract(&h, Prefer::W3c);
        assert_eq!(
            got.parent,
            Some((0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331))
        );
        assert_eq!(got.sampled, Some(true));
        let h = headers(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )]);
        assert_eq!(extract(&h, Prefer::B3).sampled, Some(false));
        // A future version with more fields is read as 00.
        let h = headers(&[(
            "traceparent",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        )]);
        assert_eq!(extract(&h, Prefer::W3c).sampled, Some(true));
    }

    #[test]
    fn the_preferred_format_wins_when_both_arrive() {
        let h = headers(&[
            ("x-b3-traceid", T),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]);
        assert_eq!(extract(&h, Prefer::B3).parent.map(|p| p.0), Some(T_ID));
        assert_eq!(
            extract(&h, Prefer::W3c).parent.map(|p| p.0),
            Some(0x0af7651916cd43dd8448eb211c80319c)
        );
    }

    #[test]
    fn malformed_headers_are_ignored_not_fatal() {
        for bad in [
            &[("x-b3-traceid", "xyz"), ("x-b3-spanid", "a2fb4a1d1a96d312")][..],
            &[("x-b3-traceid", T), ("x-b3-spanid", "123")],
            &[
                ("x-b3-traceid", "00000000000000000000000000000000"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ],
            &[("b3", "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-x")],
            &[("b3", "463ac35c9f6413ad48485a3953bb6124")],
            &[(
                "traceparent",
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            )],
            &[(
                "traceparent",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )],
            &[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            )],
            &[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            )],
            &[("traceparent", "garbage")],
        ] {
            let got = extract(&headers(bad), Prefer::B3);
            assert_eq!(got.parent, None, "{bad:?}");
        }
        // A bad traceparent does not hide a good B3 context.
        let h = headers(&[
            ("traceparent", "garbage"),
            ("x-b3-traceid", T),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]);
        assert_eq!(extract(&h, Prefer::W3c).parent.map(|p| p.0), Some(T_ID));
    }

    #[test]
    fn injection_writes_b3_and_traceparent_for_the_next_hop() {
        let mut h = headers(&[
            ("b3", "1-2"),
            ("x-b3-flags", "1"),
            ("tracestate", "vendor=1"),
        ]);
        let ctx = Outgoing {
            trace: T_ID,
            span: 0x1111_2222_3333_4444,
            parent: Some(0xa2fb4a1d1a96d312),
            sampled: true,
        };
        inject(&mut h, &ctx);
        let get = |k: &str| h.get(k).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get("x-b3-traceid").as_deref(), Some(T));
        assert_eq!(get("x-b3-spanid").as_deref(), Some("1111222233334444"));
        assert_eq!(
            get("x-b3-parentspanid").as_deref(),
            Some("a2fb4a1d1a96d312")
        );
        assert_eq!(get("x-b3-sampled").as_deref(), Some("1"));
        assert_eq!(get("x-b3-flags"), None);
        assert_eq!(
            get("traceparent").as_deref(),
            Some("00-463ac35c9f6413ad48485a3953bb6124-1111222233334444-01")
        );
        assert_eq!(
            get("b3").as_deref(),
            Some("463ac35c9f6413ad48485a3953bb6124-1111222233334444-1-a2fb4a1d1a96d312")
        );
        assert_eq!(get("tracestate").as_deref(), Some("vendor=1"));
        // What was written reads back as the same context.
        let back = extract(&h, Prefer::W3c);
        assert_eq!(back.parent, Some((T_ID, 0x1111_2222_3333_4444)));
        assert_eq!(back.sampled, Some(true));

        let mut h = HeaderMap::new();
        inject(
            &mut h,
            &Outgoing {
                sampled: false,
                parent: None,
                ..ctx
            },
        );
        assert_eq!(h.get("b3"), None, "no single header unless one arrived");
        assert_eq!(h.get("x-b3-parentspanid"), None);
        assert_eq!(h.get("x-b3-sampled").unwrap(), "0");
        assert!(
            h.get("traceparent")
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("-00")
        );
    }
}
