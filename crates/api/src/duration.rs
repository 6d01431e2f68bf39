//! Durations as Istio's YAML writes them: `1.5s`, `100ms`, `3m`, `1h30m`.
//!
//! Istio's fields are `google.protobuf.Duration`, which Istio accepts in Go's duration syntax
//! (a sequence of decimal numbers with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`). A
//! `Duration` keeps the text it was written as, so a bad value is reported by validation with
//! its field path (together with every other error) instead of aborting deserialization.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq)]
pub struct Duration {
    raw: String,
    parsed: Result<StdDuration, String>,
}

impl Duration {
    /// Parses `raw`; a parse failure is kept and reported by [`Duration::get`].
    pub fn new(raw: impl Into<String>) -> Self {
        let raw = raw.into();
        let parsed = parse(&raw);
        Duration { raw, parsed }
    }

    /// The value, or why the text is not a duration.
    pub fn get(&self) -> Result<StdDuration, String> {
        self.parsed.clone()
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Istio's `ValidateDuration`: at least 1ms and a whole number of milliseconds.
    pub fn check(&self) -> Result<(), String> {
        let d = self.get()?;
        if d < StdDuration::from_millis(1) {
            return Err(format!("duration {:?} must be at least 1ms", self.raw));
        }
        if d.subsec_nanos() % 1_000_000 != 0 {
            return Err(format!(
                "duration {:?}: only durations to ms precision are supported",
                self.raw
            ));
        }
        Ok(())
    }

    /// Like [`Duration::check`], but zero is allowed (fields where zero means "disabled").
    pub fn check_allow_zero(&self) -> Result<(), String> {
        match self.get()? {
            d if d.is_zero() => Ok(()),
            _ => self.check(),
        }
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({:?})", self.raw)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl From<StdDuration> for Duration {
    fn from(d: StdDuration) -> Self {
        let raw = if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else {
            format!("{}ms", d.as_millis())
        };
        Duration { raw, parsed: Ok(d) }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"1.5s\", \"100ms\" or \"3m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Ok(Duration::new(v))
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

/// Parses Go's duration syntax (what `time.ParseDuration` accepts), without a sign.
pub fn parse(s: &str) -> Result<StdDuration, String> {
    let bad = |why: &str| Err(format!("invalid duration {s:?}: {why}"));
    if s.is_empty() {
        return bad("empty");
    }
    if s == "0" {
        return Ok(StdDuration::ZERO);
    }
    if s.starts_with('-') {
        return bad("negative durations are not allowed");
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return bad("expected a number");
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return bad("missing unit (use ns, us, ms, s, m or h)"),
            _ => {
                return bad(&format!(
                    "unknown unit {unit:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| format!("invalid duration {s:?}: number too large"))?
        };
        let mut value = int.checked_mul(nanos_per);
        // Fractional part: scale digit by digit so that "1.5s" is exact.
        let mut scale = nanos_per;
        for digit in frac.bytes() {
            scale /= 10;
            value = value.and_then(|v| v.checked_add(u128::from(digit - b'0') * scale));
        }
        total = value
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("invalid duration {s:?}: too large"))?;
    // The remainder is below 1e9, so it always fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(StdDuration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = StdDuration::from_millis;
        let cases: &[(&str, StdDuration)] = &[
            ("0", StdDuration::ZERO),
            ("0s", StdDuration::ZERO),
            ("1s", ms(1000)),
            ("1.5s", ms(1500)),
            ("0.5s", ms(500)),
            (".5s", ms(500)),
            ("100ms", ms(100)),
            ("3m", ms(180_000)),
            ("1h30m", ms(5_400_000)),
            ("1m0.25s", ms(60_250)),
            ("250us", StdDuration::from_micros(250)),
            ("10ns", StdDuration::from_nanos(10)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for text in ["", "s", "10", "1.2.3s", "-1s", "1x", "1 s", "1d", "ms"] {
            assert!(parse(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn istio_precision_rules() {
        assert!(Duration::new("1ms").check().is_ok());
        assert!(Duration::new("0s").check().is_err());
        assert!(Duration::new("0s").check_allow_zero().is_ok());
        assert!(Duration::new("1500us").check().is_err());
        assert!(Duration::new("100us").check().is_err());
        assert!(Duration::new("banana").check().is_err());
    }
}
