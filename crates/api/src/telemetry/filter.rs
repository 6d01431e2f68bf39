//! The access log filter expressions weft evaluates: a small subset of CEL (Istio's
//! `accessLogging.filter.expression`), parsed into alternatives of conditions so that a proxy
//! checks them with a few comparisons per request. Anything outside the subset is refused
//! with a message saying what is supported, never accepted and ignored.
//!
//! ```text
//! expr      := all ( "||" all )*
//! all       := condition ( "&&" condition )*
//! condition := "response.code" cmp INTEGER
//!            | string-attr ("==" | "!=") STRING
//!            | string-attr ".startsWith(" STRING ")"
//! string-attr := "request.method" | "request.url_path" | "request.host"
//!              | "request.headers['name']"
//! cmp       := "==" | "!=" | "<" | "<=" | ">" | ">="
//! ```
//!
//! Parentheses, `!`, `has()` and other attributes are not supported. `&&` binds tighter than
//! `||`, as in CEL. A header that is absent equals no string (CEL would raise an error, and an
//! erroring filter logs nothing).

use std::fmt;

/// A parsed expression: true when any alternative has all its conditions true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub any_of: Vec<Vec<Condition>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub attribute: Attribute,
    pub op: CmpOp,
    pub value: Literal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    ResponseCode,
    RequestMethod,
    /// Lower-case name.
    RequestHeader(String),
    RequestPath,
    RequestHost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    StartsWith,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Int(i64),
    Str(String),
}

/// Why an expression is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; weft supports comparisons of response.code with an integer, and ==, != or \
             .startsWith() of request.method, request.url_path, request.host or \
             request.headers['name'] with a string, joined by && and ||",
            self.0
        )
    }
}

impl std::error::Error for FilterError {}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Str(String),
    Op(&'static str),
    LBracket,
    RBracket,
    LParen,
    RParen,
    Dot,
}

fn tokens(s: &str) -> Result<Vec<Token>, FilterError> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Token::Ident(s[start..i].to_owned()));
            continue;
        }
        if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let n = s[start..i]
                .parse()
                .map_err(|_| FilterError(format!("{:?} is not an integer", &s[start..i])))?;
            out.push(Token::Int(n));
            continue;
        }
        if c == b'\'' || c == b'"' {
            let end = s[i + 1..]
                .find(c as char)
                .ok_or_else(|| FilterError("a string is not closed".into()))?;
            let text = &s[i + 1..i + 1 + end];
            if text.contains('\\') {
                return Err(FilterError("escapes in strings are not supported".into()));
            }
            out.push(Token::Str(text.to_owned()));
            i += end + 2;
            continue;
        }
        let two = s.get(i..i + 2).unwrap_or("");
        let op = ["==", "!=", "<=", ">=", "&&", "||"]
            .into_iter()
            .find(|o| *o == two);
        if let Some(op) = op {
            out.push(Token::Op(op));
            i += 2;
            continue;
        }
        out.push(match c {
            b'<' => Token::Op("<"),
            b'>' => Token::Op(">"),
            b'[' => Token::LBracket,
            b']' => Token::RBracket,
            b'(' => Token::LParen,
            b')' => Token::RParen,
            b'.' => Token::Dot,
            _ => {
                return Err(FilterError(format!(
                    "`{}` is not supported",
                    &s[i..].chars().next().map(String::from).unwrap_or_default()
                )));
            }
        });
        i += 1;
    }
    Ok(out)
}

/// Parses an expression of the supported subset.
pub fn parse(expression: &str) -> Result<Filter, FilterError> {
    let toks = tokens(expression)?;
    if toks.is_empty() {
        return Err(FilterError("the expression is empty".into()));
    }
    let mut p = Parser { toks, at: 0 };
    let mut any_of = vec![vec![p.condition()?]];
    while let Some(t) = p.next() {
        match t {
            Token::Op("&&") => {
                let c = p.condition()?;
                if let Some(all) = any_of.last_mut() {
                    all.push(c);
                }
            }
            Token::Op("||") => any_of.push(vec![p.condition()?]),
            Token::LParen | Token::RParen => {
                return Err(FilterError("parentheses are not supported".into()));
            }
            other => return Err(FilterError(format!("unexpected {other:?}"))),
        }
    }
    Ok(Filter { any_of })
}

struct Parser {
    toks: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn ident(&mut self) -> Result<String, FilterError> {
        match self.next() {
            Some(Token::Ident(s)) => Ok(s),
            Some(Token::LParen) => Err(FilterError("parentheses are not supported".into())),
            Some(Token::Op("!=" | "==")) | None => {
                Err(FilterError("a condition is incomplete".into()))
            }
            Some(t) => Err(FilterError(format!("unexpected {t:?}"))),
        }
    }

    fn attribute(&mut self) -> Result<Attribute, FilterError> {
        let root = self.ident()?;
        if self.next() != Some(Token::Dot) {
            return Err(FilterError(format!(
                "`{root}` is not a supported attribute"
            )));
        }
        let field = self.ident()?;
        Ok(match (root.as_str(), field.as_str()) {
            ("response", "code") => Attribute::ResponseCode,
            ("request", "method") => Attribute::RequestMethod,
            ("request", "url_path") => Attribute::RequestPath,
            ("request", "host") => Attribute::RequestHost,
            ("request", "headers") => {
                let (Some(Token::LBracket), Some(Token::Str(name)), Some(Token::RBracket)) =
                    (self.next(), self.next(), self.next())
                else {
                    return Err(FilterError(
                        "a header is read as request.headers['name']".into(),
                    ));
                };
                Attribute::RequestHeader(name.to_ascii_lowercase())
            }
            _ => {
                return Err(FilterError(format!(
                    "`{root}.{field}` is not a supported attribute"
                )));
            }
        })
    }

    fn condition(&mut self) -> Result<Condition, FilterError> {
        let attribute = self.attribute()?;
        let numeric = attribute == Attribute::ResponseCode;
        let op = match self.next() {
            Some(Token::Op(o)) => match o {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                other => {
                    return Err(FilterError(format!(
                        "`{other}` needs a condition before it"
                    )));
                }
            },
            Some(Token::Dot) if !numeric => {
                let m = self.ident()?;
                if m != "startsWith" {
                    return Err(FilterError(format!("`.{m}()` is not supported")));
                }
                let (Some(Token::LParen), Some(Token::Str(prefix)), Some(Token::RParen)) =
                    (self.next(), self.next(), self.next())
                else {
                    return Err(FilterError(".startsWith takes one string".into()));
                };
                return Ok(Condition {
                    attribute,
                    op: CmpOp::StartsWith,
                    value: Literal::Str(prefix),
                });
            }
            _ => return Err(FilterError("a comparison is missing its operator".into())),
        };
        let value = match self.next() {
            Some(Token::Int(n)) if numeric => Literal::Int(n),
            Some(Token::Str(s)) if !numeric && matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                Literal::Str(s)
            }
            Some(Token::Str(_)) if !numeric => {
                return Err(FilterError(
                    "strings are compared with == and != only".into(),
                ));
            }
            _ if numeric => {
                return Err(FilterError(
                    "response.code is compared with an integer".into(),
                ));
            }
            _ => {
                return Err(FilterError(
                    "this attribute is compared with a string".into(),
                ));
            }
        };
        Ok(Condition {
            attribute,
            op,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subset_parses() {
        let f = parse("response.code >= 400").expect("parses");
        assert_eq!(
            f.any_of,
            vec![vec![Condition {
                attribute: Attribute::ResponseCode,
                op: CmpOp::Ge,
                value: Literal::Int(400)
            }]]
        );
        let f = parse(
            "request.method == 'POST' && request.headers[\"X-Debug\"] == \"1\" || \
             request.url_path.startsWith('/api/') || response.code != 200",
        )
        .expect("parses");
        assert_eq!(f.any_of.len(), 3);
        assert_eq!(f.any_of[0].len(), 2);
        assert_eq!(
            f.any_of[0][1].attribute,
            Attribute::RequestHeader("x-debug".into())
        );
        assert_eq!(f.any_of[1][0].op, CmpOp::StartsWith);
    }

    #[test]
    fn everything_else_is_refused_with_a_reason() {
        for (expr, why) in [
            ("", "empty"),
            ("has(request.headers.x)", "not a supported attribute"),
            ("(response.code >= 400)", "parentheses"),
            ("response.code >= '400'", "integer"),
            ("request.method > 'GET'", "== and !="),
            ("request.method == 3", "string"),
            ("connection.mtls == true", "not a supported"),
            ("response.code >= 400 &&", "incomplete"),
            ("!(response.code == 200)", "`!`"),
            ("request.url_path.matches('x')", ".matches()"),
        ] {
            let e = parse(expr).expect_err(expr).to_string();
            assert!(e.contains(why), "{expr}: {e}");
            assert!(e.contains("weft supports"), "{e}");
        }
    }
}
