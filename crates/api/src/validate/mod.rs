//! Field-level validation, following Istio's validation rules
//! (istio/istio `pkg/config/validation`) and the Kubernetes API server's.
//!
//! A validator walks a typed resource with a [`Cx`], which tracks the field path
//! (`spec.http[0].route[1].weight`) and collects every problem found: validation never stops at
//! the first error. The loader turns each [`Finding`] into a [`crate::Diagnostic`] with the
//! file, line and column of that field path.

pub mod rules;

use crate::diag::Severity;

/// One problem at one field path, before it is given a file location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// [`crate::diag::code::SCHEMA`], [`crate::diag::code::DEPRECATED`], or the code of a
    /// finding class of its own (see docs/ANALYZE.md).
    pub code: &'static str,
    /// Dotted path from the document root, e.g. `spec.http[0].timeout`.
    pub path: String,
    pub message: String,
}

/// Validation context: the current field path and everything found so far.
#[derive(Debug, Default)]
pub struct Cx {
    path: String,
    findings: Vec<Finding>,
}

impl Cx {
    /// A context rooted at `root` (usually `"spec"`).
    pub fn new(root: &str) -> Self {
        Cx {
            path: root.to_owned(),
            findings: Vec::new(),
        }
    }

    /// Runs `f` with `.name` appended to the path.
    pub fn field<R>(&mut self, name: &str, f: impl FnOnce(&mut Cx) -> R) -> R {
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(name);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Runs `f` with `[index]` appended to the path.
    pub fn index<R>(&mut self, index: usize, f: impl FnOnce(&mut Cx) -> R) -> R {
        use std::fmt::Write;
        let len = self.path.len();
        let _ = write!(self.path, "[{index}]");
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Runs `f` with `[key]` appended to the path, for map entries (`labels[app]`).
    pub fn key<R>(&mut self, key: &str, f: impl FnOnce(&mut Cx) -> R) -> R {
        let len = self.path.len();
        self.path.push('[');
        self.path.push_str(key);
        self.path.push(']');
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Validates each element of a list at `name[i]`.
    pub fn each<T>(&mut self, name: &str, items: &[T], mut f: impl FnMut(&mut Cx, &T)) {
        self.field(name, |cx| {
            for (i, item) in items.iter().enumerate() {
                cx.index(i, |cx| f(cx, item));
            }
        });
    }

    /// Validates `value` at `.name` when it is present.
    pub fn opt<T>(&mut self, name: &str, value: &Option<T>, f: impl FnOnce(&mut Cx, &T)) {
        if let Some(v) = value {
            self.field(name, |cx| f(cx, v));
        }
    }

    /// An error at the current path.
    pub fn error(&mut self, message: impl Into<String>) {
        self.push(Severity::Error, crate::diag::code::SCHEMA, message.into());
    }

    /// An error at `.name` below the current path (e.g. a required field that is missing).
    pub fn error_at(&mut self, name: &str, message: impl Into<String>) {
        let message = message.into();
        self.field(name, |cx| cx.error(message));
    }

    /// A warning at the current path: suspicious, but valid.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.push(Severity::Warning, crate::diag::code::SCHEMA, message.into());
    }

    /// A warning at the current path with its own code (a finding class of its own, such as a
    /// route that is never used).
    pub fn warn_code(&mut self, code: &'static str, message: impl Into<String>) {
        self.push(Severity::Warning, code, message.into());
    }

    /// A deprecated field at `.name`, accepted with Istio's meaning; `instead` says what to use.
    pub fn deprecated(&mut self, name: &str, instead: &str) {
        self.field(name, |cx| {
            cx.push(
                Severity::Warning,
                crate::diag::code::DEPRECATED,
                format!("`{name}` is deprecated; use {instead}"),
            )
        });
    }

    /// Reports `result`'s error, if any, at the current path.
    pub fn check(&mut self, result: Result<(), String>) {
        if let Err(e) = result {
            self.error(e);
        }
    }

    /// Reports `result`'s error, if any, at `.name`.
    pub fn check_at(&mut self, name: &str, result: Result<(), String>) {
        if let Err(e) = result {
            self.error_at(name, e);
        }
    }

    /// The current field path.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    pub fn into_findings(self) -> Vec<Finding> {
        self.findings
    }

    fn push(&mut self, severity: Severity, code: &'static str, message: String) {
        self.findings.push(Finding {
            severity,
            code,
            path: self.path.clone(),
            message,
        });
    }
}

/// A resource (or part of one) that can check itself.
pub trait Validate {
    fn validate(&self, cx: &mut Cx);
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, cx: &mut Cx) {
        if let Some(v) = self {
            v.validate(cx);
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    fn of<T: Validate>(root: &str, v: &T, severity: Severity) -> Vec<(String, String)> {
        let mut cx = Cx::new(root);
        v.validate(&mut cx);
        cx.into_findings()
            .into_iter()
            .filter(|f| f.severity == severity)
            .map(|f| (f.path, f.message))
            .collect()
    }

    /// Validates `v` rooted at `spec` and returns `(path, message)` of each error.
    pub fn errors<T: Validate>(v: &T) -> Vec<(String, String)> {
        of("spec", v, Severity::Error)
    }

    /// Like [`errors`], but for warnings (deprecations included).
    pub fn warnings<T: Validate>(v: &T) -> Vec<(String, String)> {
        of("spec", v, Severity::Warning)
    }

    /// Errors with the path rooted at the document (for Kubernetes kinds: `spec.ports[0]`).
    pub fn doc_errors<T: Validate>(v: &T) -> Vec<(String, String)> {
        of("", v, Severity::Error)
    }

    /// Like [`doc_errors`], but for warnings.
    pub fn doc_warnings<T: Validate>(v: &T) -> Vec<(String, String)> {
        of("", v, Severity::Warning)
    }

    /// Parses a YAML snippet of a test case, naming the snippet when it does not parse.
    pub fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        match yaml_serde::from_str(yaml) {
            Ok(v) => v,
            Err(e) => panic!("{yaml}\n{e}"),
        }
    }

    /// A table of cases: a YAML snippet and the `(path, message fragment)` of each finding
    /// expected, in order.
    pub type Cases<'a> = &'a [(&'a str, &'a [(&'a str, &'a str)])];

    /// Checks every case of a table against `findings` (e.g. [`errors`] or [`warnings`]).
    pub fn check_cases<T: serde::de::DeserializeOwned>(
        cases: Cases<'_>,
        findings: fn(&T) -> Vec<(String, String)>,
    ) {
        for (yaml, want) in cases {
            let got = findings(&parse(yaml));
            assert_eq!(got.len(), want.len(), "{yaml}\n{got:#?}");
            for ((path, msg), (want_path, want_msg)) in got.iter().zip(want.iter()) {
                assert_eq!(path, want_path, "{yaml}\n{got:#?}");
                assert!(msg.contains(want_msg), "{yaml}: {msg:?} lacks {want_msg:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest_and_unwind() {
        let mut cx = Cx::new("spec");
        cx.field("http", |cx| {
            cx.index(0, |cx| {
                cx.each("route", &[1, 2], |cx, w| {
                    if *w == 2 {
                        cx.error_at("weight", "bad");
                    }
                })
            })
        });
        cx.key("app", |cx| cx.warn("w"));
        let f = cx.into_findings();
        assert_eq!(f[0].path, "spec.http[0].route[1].weight");
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[1].path, "spec[app]");
    }
}
