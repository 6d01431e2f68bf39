//! A parser for the sample lines of Prometheus's text exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>): what the proxies serve
//! on `/stats/prometheus`. Comments (`# HELP`, `# TYPE`) and blank lines are skipped; every
//! sample line becomes a [`Sample`].

use std::collections::BTreeMap;

/// One sample: a metric name, its labels and its value (a timestamp, if any, is dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, empty when absent (as PromQL treats a missing label).
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// A line that is not a sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// Every sample of `text`; the first malformed line is an error.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|reason| ParseError {
            line: i + 1,
            reason,
        })?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("no metric name in {line:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("{name}: no value"))
        .and_then(parse_value)?;
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err(format!("{name}: bad timestamp {ts:?}"));
    }
    if fields.next().is_some() {
        return Err(format!("{name}: text after the timestamp"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `name="value",...}`; returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        s = s[eq + 1..].trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("label {key}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {key}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err(format!("label {key}: unterminated value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err(format!("after label {key}: expected ',' or '}}'"));
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_escapes_and_timestamps() {
        let text = "# HELP istio_requests_total Requests.\n\
                    # TYPE istio_requests_total counter\n\
                    istio_requests_total{reporter=\"source\",response_code=\"200\"} 12\n\
                    \n\
                    istio_request_duration_milliseconds_bucket{le=\"+Inf\",x=\"a\\\"b\\\\c\\nd\"} 3 1700000000000\n\
                    up 1.5e3\n\
                    weird{} NaN\n\
                    spaced{ a = \"1\" , b=\"2\", } -Inf\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].name, "istio_requests_total");
        assert_eq!(s[0].label("reporter"), "source");
        assert_eq!(s[0].label("missing"), "");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].label("le"), "+Inf");
        assert_eq!(s[1].label("x"), "a\"b\\c\nd");
        assert_eq!(s[1].value, 3.0);
        assert_eq!(s[2].value, 1500.0);
        assert!(s[3].value.is_nan() && s[3].labels.is_empty());
        assert_eq!((s[4].label("a"), s[4].label("b")), ("1", "2"));
        assert_eq!(s[4].value, f64::NEG_INFINITY);
    }

    #[test]
    fn malformed_lines_are_named() {
        for (text, want) in [
            ("ok 1\n{a=\"b\"} 1\n", "line 2: no metric name"),
            ("m{a=b} 1", "line 1: label a: value not quoted"),
            ("m{a=\"b} 1", "line 1: label a: unterminated value"),
            ("m 1 x", "line 1: m: bad timestamp"),
            ("m one", "line 1: bad value \"one\""),
            (
                "m{a=\"1\" b=\"2\"} 1",
                "line 1: after label a: expected ',' or '}'",
            ),
            ("m", "line 1: m: no value"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }
}
