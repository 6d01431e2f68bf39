//! Envoy access log format strings (`[%START_TIME%] "%REQ(:METHOD)% ..."`), parsed into parts
//! once: the proxy compiles a listener's format with it when the listener is built, and the
//! control plane checks `meshConfig.accessLogFormat` (and providers' `logFormat`) with it, so
//! both accept and refuse the same strings.
//!
//! Grammar, as Envoy's: `%NAME%`, `%NAME(ARGS)%` and `%NAME(ARGS):N%` (N truncates the value
//! to N bytes); anything between operators is literal text. A `%` that does not start a known
//! operator is an error (Envoy refuses it too), so a typo never turns into a silent literal.

use std::fmt;

/// One piece of a format: text copied as is, or an operator's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Op {
        op: Operator,
        /// `:N`: at most N bytes of the value.
        max_len: Option<usize>,
    },
}

/// The command operators weft implements (see the README's list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `%START_TIME%` (RFC 3339 with milliseconds, UTC) or `%START_TIME(strftime)%`.
    StartTime(Option<Vec<TimePart>>),
    /// `%REQ(NAME?ALT)%`: a request header (or pseudo-header `:method`, `:path`,
    /// `:authority`, `:scheme`), the alternative when the first is absent. Names lower-case.
    Req {
        name: String,
        alt: Option<String>,
    },
    /// `%RESP(NAME?ALT)%`: a response header.
    Resp {
        name: String,
        alt: Option<String>,
    },
    /// `%ENVIRONMENT(NAME)%`: the proxy's environment variable, read once at config time.
    Environment(String),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamLocalPort,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamRemotePort,
    RequestedServerName,
    RouteName,
    DownstreamPeerUriSan,
    Hostname,
}

impl Operator {
    /// Whether the value is a number (JSON keeps it one).
    pub fn numeric(&self) -> bool {
        matches!(
            self,
            Operator::ResponseCode
                | Operator::BytesReceived
                | Operator::BytesSent
                | Operator::Duration
                | Operator::DownstreamLocalPort
                | Operator::DownstreamRemotePort
        )
    }
}

/// A piece of a `%START_TIME(...)%` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimePart {
    Literal(String),
    /// `%Y`
    Year,
    /// `%m`
    Month,
    /// `%d`
    Day,
    /// `%H`
    Hour,
    /// `%M`
    Minute,
    /// `%S`
    Second,
    /// `%s`: seconds since the epoch.
    EpochSeconds,
    /// `%z`: always `+0000` (times are UTC).
    Offset,
    /// `%Nf` (1..=9 digits of the second's fraction); `%f` is 9.
    Fraction(u8),
}

/// Operators without arguments, by name.
const SIMPLE: &[(&str, Operator)] = &[
    ("PROTOCOL", Operator::Protocol),
    ("RESPONSE_CODE", Operator::ResponseCode),
    ("RESPONSE_FLAGS", Operator::ResponseFlags),
    ("RESPONSE_CODE_DETAILS", Operator::ResponseCodeDetails),
    (
        "CONNECTION_TERMINATION_DETAILS",
        Operator::ConnectionTerminationDetails,
    ),
    (
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
        Operator::UpstreamTransportFailureReason,
    ),
    ("BYTES_RECEIVED", Operator::BytesReceived),
    ("BYTES_SENT", Operator::BytesSent),
    ("DURATION", Operator::Duration),
    ("UPSTREAM_HOST", Operator::UpstreamHost),
    ("UPSTREAM_CLUSTER", Operator::UpstreamCluster),
    ("UPSTREAM_CLUSTER_RAW", Operator::UpstreamCluster),
    ("UPSTREAM_LOCAL_ADDRESS", Operator::UpstreamLocalAddress),
    ("DOWNSTREAM_LOCAL_ADDRESS", Operator::DownstreamLocalAddress),
    (
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        Operator::DownstreamLocalAddressWithoutPort,
    ),
    ("DOWNSTREAM_LOCAL_PORT", Operator::DownstreamLocalPort),
    (
        "DOWNSTREAM_REMOTE_ADDRESS",
        Operator::DownstreamRemoteAddress,
    ),
    (
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        Operator::DownstreamRemoteAddressWithoutPort,
    ),
    ("DOWNSTREAM_REMOTE_PORT", Operator::DownstreamRemotePort),
    (
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
        Operator::DownstreamRemoteAddress,
    ),
    (
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
        Operator::DownstreamRemoteAddressWithoutPort,
    ),
    ("REQUESTED_SERVER_NAME", Operator::RequestedServerName),
    ("ROUTE_NAME", Operator::RouteName),
    ("DOWNSTREAM_PEER_URI_SAN", Operator::DownstreamPeerUriSan),
    ("HOSTNAME", Operator::Hostname),
];

/// Every operator name weft accepts, for docs and messages.
pub fn operator_names() -> impl Iterator<Item = &'static str> {
    ["START_TIME", "REQ", "RESP", "ENVIRONMENT"]
        .into_iter()
        .chain(SIMPLE.iter().map(|(n, _)| *n))
}

/// Why a format string is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// Byte offset of the offending `%`.
    pub at: usize,
    pub message: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.at, self.message)
    }
}

impl std::error::Error for FormatError {}

/// Parses a format string into its parts.
pub fn parse(format: &str) -> Result<Vec<Part>, FormatError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = format;
    while let Some(i) = rest.find('%') {
        literal.push_str(&rest[..i]);
        let at = format.len() - rest.len() + i;
        let (part, len) = operator(&rest[i..], at)?;
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(part);
        rest = &rest[i + len..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// The operator at the start of `s` (which starts with `%`), and how many bytes it spans.
fn operator(s: &str, at: usize) -> Result<(Part, usize), FormatError> {
    let err = |message: String| FormatError { at, message };
    let body = &s[1..];
    let name_len = body
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(body.len());
    let name = &body[..name_len];
    if name.is_empty() {
        return Err(err(
            "`%` must start a command operator such as %RESPONSE_CODE%".into(),
        ));
    }
    let mut pos = name_len;
    let mut args = None;
    if body[pos..].starts_with('(') {
        let close = body[pos..]
            .find(')')
            .ok_or_else(|| err(format!("%{name}( has no closing `)`")))?;
        args = Some(&body[pos + 1..pos + close]);
        pos += close + 1;
    }
    let mut max_len = None;
    if body[pos..].starts_with(':') {
        let digits = body[pos + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(body.len() - pos - 1);
        let n = &body[pos + 1..pos + 1 + digits];
        max_len = Some(
            n.parse::<usize>()
                .map_err(|_| err(format!("%{name}: `:` must be followed by a length")))?,
        );
        pos += 1 + digits;
    }
    if !body[pos..].starts_with('%') {
        return Err(err(format!("%{name} is not closed by `%`")));
    }
    let op = named(name, args).map_err(err)?;
    Ok((Part::Op { op, max_len }, 1 + pos + 1))
}

fn named(name: &str, args: Option<&str>) -> Result<Operator, String> {
    let header = |args: Option<&str>| -> Result<(String, Option<String>), String> {
        let a = args.ok_or_else(|| format!("%{name}% needs a header name: %{name}(NAME)%"))?;
        let (main, alt) = match a.split_once('?') {
            Some((m, alt)) => (m, Some(alt.to_ascii_lowercase())),
            None => (a, None),
        };
        if main.is_empty() || alt.as_deref() == Some("") {
            return Err(format!("%{name}({a})% names an empty header"));
        }
        Ok((main.to_ascii_lowercase(), alt))
    };
    match name {
        "START_TIME" => Ok(Operator::StartTime(args.map(time_format).transpose()?)),
        "REQ" | "REQUEST_HEADER" => {
            let (name, alt) = header(args)?;
            Ok(Operator::Req { name, alt })
        }
        "RESP" | "RESPONSE_HEADER" => {
            let (name, alt) = header(args)?;
            Ok(Operator::Resp { name, alt })
        }
        "ENVIRONMENT" => match args {
            Some(v) if !v.is_empty() => Ok(Operator::Environment(v.to_owned())),
            _ => Err("%ENVIRONMENT% needs a variable name: %ENVIRONMENT(NAME)%".into()),
        },
        _ => {
            let Some((_, op)) = SIMPLE.iter().find(|(n, _)| *n == name) else {
                return Err(format!(
                    "%{name}% is not a command operator weft supports (supported: {})",
                    operator_names().collect::<Vec<_>>().join(", ")
                ));
            };
            if args.is_some() {
                return Err(format!("%{name}% takes no arguments"));
            }
            Ok(op.clone())
        }
    }
}

/// A `%START_TIME(...)%` strftime subset.
fn time_format(s: &str) -> Result<Vec<TimePart>, String> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let spec = chars.next().ok_or("%START_TIME(...)% ends in `%`")?;
        let part = match spec {
            '%' => {
                literal.push('%');
                continue;
            }
            'Y' => TimePart::Year,
            'm' => TimePart::Month,
            'd' => TimePart::Day,
            'H' => TimePart::Hour,
            'M' => TimePart::Minute,
            'S' => TimePart::Second,
            's' => TimePart::EpochSeconds,
            'z' => TimePart::Offset,
            'f' => TimePart::Fraction(9),
            d @ '1'..='9' if chars.peek() == Some(&'f') => {
                chars.next();
                TimePart::Fraction(d as u8 - b'0')
            }
            'F' => {
                out.extend(flush(&mut literal));
                out.extend([
                    TimePart::Year,
                    TimePart::Literal("-".into()),
                    TimePart::Month,
                    TimePart::Literal("-".into()),
                    TimePart::Day,
                ]);
                continue;
            }
            'T' => {
                out.extend(flush(&mut literal));
                out.extend([
                    TimePart::Hour,
                    TimePart::Literal(":".into()),
                    TimePart::Minute,
                    TimePart::Literal(":".into()),
                    TimePart::Second,
                ]);
                continue;
            }
            other => {
                return Err(format!(
                    "%START_TIME(...)%: `%{other}` is not supported (supported: %Y %m %d %H %M \
                     %S %s %z %f %1f..%9f %F %T %%)"
                ));
            }
        };
        out.extend(flush(&mut literal));
        out.push(part);
    }
    out.extend(flush(&mut literal));
    Ok(out)
}

fn flush(literal: &mut String) -> Option<TimePart> {
    (!literal.is_empty()).then(|| TimePart::Literal(std::mem::take(literal)))
}

/// Istio's default TEXT access log format (`meshConfig.accessLogFormat` unset).
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON access log keys (`accessLogEncoding: JSON` without a format).
pub const ISTIO_JSON_FORMAT: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_default_formats_parse() {
        let parts = parse(ISTIO_TEXT_FORMAT).expect("Istio's text format");
        assert_eq!(parts[0], Part::Literal("[".into()));
        assert!(parts.contains(&Part::Op {
            op: Operator::Req {
                name: "x-envoy-original-path".into(),
                alt: Some(":path".into())
            },
            max_len: None
        }));
        for (key, f) in ISTIO_JSON_FORMAT {
            parse(f).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn truncation_and_alternatives() {
        assert_eq!(
            parse("a %REQ(USER-AGENT):10% b").expect("parses"),
            vec![
                Part::Literal("a ".into()),
                Part::Op {
                    op: Operator::Req {
                        name: "user-agent".into(),
                        alt: None
                    },
                    max_len: Some(10)
                },
                Part::Literal(" b".into()),
            ]
        );
    }

    #[test]
    fn errors_name_the_operator_and_where() {
        let e = parse("x %NOPE% y").expect_err("unknown");
        assert_eq!(e.at, 2);
        assert!(
            e.message.contains("%NOPE% is not a command operator"),
            "{e}"
        );
        assert!(
            parse("%REQ%")
                .expect_err("no header")
                .message
                .contains("NAME")
        );
        assert!(parse("100%").is_err());
        assert!(parse("%RESPONSE_CODE").is_err());
        assert!(parse("%REQ(A%").is_err());
        assert!(parse("%PROTOCOL(x)%").is_err());
        assert!(
            parse("%START_TIME(%Q)%")
                .expect_err("bad strftime")
                .message
                .contains("%Q")
        );
    }

    #[test]
    fn start_time_formats() {
        let Part::Op {
            op: Operator::StartTime(Some(t)),
            ..
        } = &parse("%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%").expect("parses")[0]
        else {
            panic!("not a start time");
        };
        assert_eq!(t.len(), 14);
        assert_eq!(t[12], TimePart::Fraction(3));
    }
}
