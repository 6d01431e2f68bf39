//! Path rewrites of a forwarded request: Istio's `rewrite.uri` (Envoy's `prefix_rewrite`) and
//! `rewrite.uriRegexRewrite` (Envoy's `regex_rewrite`).

use regex::Regex;
use weft_xds::proto;

use super::Cx;
use super::matcher::regex_error;
use crate::config::ConfigError;

#[derive(Debug)]
pub(super) enum PathRewrite {
    /// Replaces what the route's match matched at the start of the path.
    Prefix(Box<str>),
    Regex(RegexRewrite),
}

/// A pattern whose every match in the path is replaced by a substitution with group references.
#[derive(Debug)]
pub(super) struct RegexRewrite {
    regex: Regex,
    substitution: Vec<Piece>,
}

#[derive(Debug, PartialEq)]
enum Piece {
    Literal(String),
    Group(usize),
}

impl PathRewrite {
    /// The path rewrite of `rewrite` (at field path `at`), if it has one.
    pub(super) fn build(
        rewrite: &proto::Rewrite,
        cx: &Cx<'_>,
        at: &str,
    ) -> Result<Option<PathRewrite>, ConfigError> {
        match (&*rewrite.uri, &rewrite.uri_regex) {
            ("", None) => Ok(None),
            (_, Some(_)) if !rewrite.uri.is_empty() => Err(cx.error(
                format!("{at}.uriRegex"),
                "only one of uri or uriRegex may be set",
            )),
            (uri, None) => {
                if !is_path(uri) {
                    return Err(
                        cx.error(format!("{at}.uri"), format!("{uri:?} is not a valid path"))
                    );
                }
                Ok(Some(PathRewrite::Prefix(uri.into())))
            }
            (_, Some(rr)) => {
                let at = format!("{at}.uriRegex");
                if rr.pattern.is_empty() {
                    return Err(cx.error(format!("{at}.pattern"), "pattern is required"));
                }
                let regex = Regex::new(&rr.pattern)
                    .map_err(|e| cx.error(format!("{at}.pattern"), regex_error(&rr.pattern, &e)))?;
                let substitution =
                    parse_substitution(&rr.substitution, regex.captures_len().saturating_sub(1))
                        .map_err(|reason| cx.error(format!("{at}.substitution"), reason))?;
                Ok(Some(PathRewrite::Regex(RegexRewrite {
                    regex,
                    substitution,
                })))
            }
        }
    }

    /// The rewritten path and query. `replaced` is how many leading bytes of `path_and_query`
    /// the route's match matched (used by the prefix form).
    pub(super) fn apply(&self, path_and_query: &str, replaced: usize) -> String {
        match self {
            PathRewrite::Prefix(prefix) => {
                let rest = path_and_query.get(replaced..).unwrap_or_default();
                let mut out = String::with_capacity(prefix.len() + rest.len());
                out.push_str(prefix);
                out.push_str(rest);
                out
            }
            PathRewrite::Regex(rr) => {
                // Only the path is rewritten; the query (and any fragment) follows unchanged.
                let end = path_and_query
                    .find(['?', '#'])
                    .unwrap_or(path_and_query.len());
                let (path, rest) = path_and_query.split_at(end);
                let mut out = rr.replace_all(path);
                out.push_str(rest);
                out
            }
        }
    }
}

impl RegexRewrite {
    /// Every non-overlapping match replaced, as RE2's GlobalReplace (what Envoy runs).
    fn replace_all(&self, path: &str) -> String {
        let mut out = String::with_capacity(path.len() + 16);
        let mut last = 0;
        for caps in self.regex.captures_iter(path) {
            let Some(whole) = caps.get(0) else { continue };
            out.push_str(&path[last..whole.start()]);
            for piece in &self.substitution {
                match piece {
                    Piece::Literal(s) => out.push_str(s),
                    Piece::Group(g) => out.push_str(caps.get(*g).map_or("", |m| m.as_str())),
                }
            }
            last = whole.end();
        }
        out.push_str(&path[last..]);
        out
    }
}

/// Whether `s` can be a request path (and query), with the leading `/` Envoy would add.
pub(super) fn is_path(s: &str) -> bool {
    if s.starts_with('/') {
        http::uri::PathAndQuery::try_from(s).is_ok()
    } else {
        http::uri::PathAndQuery::try_from(format!("/{s}")).is_ok()
    }
}

/// Parses a substitution: RE2's `\0`..`\9` and `\\`, plus `$1`, `${1}` and `$$` for those used to
/// Rust's or Go's syntax. A `$` not followed by a digit, `{` or `$` is literal. References to
/// groups the pattern does not have are errors, as in RE2.
fn parse_substitution(s: &str, groups: usize) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let group = |pieces: &mut Vec<Piece>, literal: &mut String, n: usize, written: &str| {
        if n > groups {
            return Err(format!(
                "{written} refers to group {n}, but the pattern has {groups} group(s)"
            ));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(literal)));
        }
        pieces.push(Piece::Group(n));
        Ok(())
    };
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => {
                    let n = d as usize - '0' as usize;
                    group(&mut pieces, &mut literal, n, &format!("\\{d}"))?;
                }
                Some('\\') => literal.push('\\'),
                Some(other) => {
                    return Err(format!(
                        "`\\{other}` is not a valid escape; use \\0 to \\9 for groups and \\\\ for a backslash"
                    ));
                }
                None => return Err("a substitution cannot end with a lone `\\`".into()),
            },
            '$' => match chars.peek() {
                Some('$') => {
                    chars.next();
                    literal.push('$');
                }
                Some(d) if d.is_ascii_digit() => {
                    let mut digits = String::new();
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        digits.push(d);
                    }
                    let n = digits
                        .parse()
                        .map_err(|_| format!("group ${digits} is too large"))?;
                    group(&mut pieces, &mut literal, n, &format!("${digits}"))?;
                }
                Some('{') => {
                    chars.next();
                    let mut digits = String::new();
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        digits.push(d);
                    }
                    if digits.is_empty() || chars.next() != Some('}') {
                        return Err("`${` must be followed by a group number and `}`".into());
                    }
                    let n = digits
                        .parse()
                        .map_err(|_| format!("group ${{{digits}}} is too large"))?;
                    group(&mut pieces, &mut literal, n, &format!("${{{digits}}}"))?;
                }
                _ => literal.push('$'),
            },
            _ => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Piece {
        Piece::Literal(s.into())
    }

    #[test]
    fn substitutions_parse_re2_and_dollar_forms() {
        use Piece::Group;
        let cases: Vec<(&str, Vec<Piece>)> = vec![
            ("/new", vec![lit("/new")]),
            (r"/x/\2/\1", vec![lit("/x/"), Group(2), lit("/"), Group(1)]),
            (r"\0", vec![Group(0)]),
            (r"a\\b", vec![lit(r"a\b")]),
            ("$1-${2}x", vec![Group(1), lit("-"), Group(2), lit("x")]),
            ("$$1 $x $", vec![lit("$1 $x $")]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_substitution(input, 2), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn bad_substitutions_say_why() {
        let cases = [
            (r"\3", "refers to group 3, but the pattern has 2"),
            ("$3", "refers to group 3"),
            (r"\n", "not a valid escape"),
            ("a\\", "lone"),
            ("${x}", "group number"),
            ("${1", "group number"),
            ("$99999999999999999999999", "too large"),
        ];
        for (input, want) in cases {
            let err = parse_substitution(input, 2).expect_err(input);
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }
}
