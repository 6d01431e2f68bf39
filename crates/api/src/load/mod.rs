//! Reading resources from files and directories: YAML (multi-document) and JSON, `kind: List`,
//! with every problem reported as a located [`Diagnostic`].
//!
//! Rules (see docs/ANALYZE.md): directories are read recursively, taking `.yaml`, `.yml` and
//! `.json` files in name order; a file named explicitly is read whatever its extension. A
//! document of a kind weft does not read is skipped with an `info` (or a `warning` for an Istio
//! kind weft does not implement). A resource with errors is dropped from `resources`; the
//! others load.

pub mod decode;
pub mod position;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use yaml_serde::{Mapping, Value};

use crate::common::ObjectMeta;
use crate::diag::{Diagnostic, ResourceRef, Severity, code};
use crate::resource::{KindId, KindMatch, Origin, Resource, Source, Spec, known_kinds, match_kind};
use crate::suggest::did_you_mean;
use crate::validate::Cx;
use crate::validate::Validate;

/// What a load produced: the resources that are valid, and every diagnostic.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Files read (whether or not they held resources).
    pub files: usize,
    pub resources: Vec<Resource>,
    /// Resources that broke their schema or a field rule (WA0003) but could still be decoded
    /// (unknown keys removed): not served, but analyzed against the others by `weft analyze`,
    /// so that one bad field does not hide every other finding about them.
    pub rejected: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Number of error-level diagnostics.
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// True when some input could not be read or parsed at all.
    pub fn unreadable(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.code == code::UNREADABLE || d.code == code::SYNTAX)
    }
}

const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Loads every file under `paths` (files, or directories read recursively).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Loaded {
    let mut out = Loaded::default();
    let mut files = Vec::new();
    for p in paths {
        collect_files(p.as_ref(), true, &mut files, &mut out);
    }
    out.files = files.len();
    for file in files {
        match std::fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => load_source(Arc::new(Source::new(file, text)), &mut out),
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    let before = &e.as_bytes()[..at];
                    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                    let column = at
                        - before
                            .iter()
                            .rposition(|b| *b == b'\n')
                            .map_or(0, |i| i + 1)
                        + 1;
                    let mut d = unreadable(&file, &format!("not UTF-8 text (byte {at})"));
                    d.location = Some(crate::Location {
                        file: file.clone(),
                        line,
                        column,
                        document: 1,
                    });
                    out.diagnostics.push(d);
                }
            },
            Err(e) => out.diagnostics.push(unreadable(&file, &e.to_string())),
        }
    }
    check_duplicates(&mut out);
    out
}

/// Loads one file's content; `path` is used in diagnostics.
pub fn load_str(path: impl Into<PathBuf>, text: &str) -> Loaded {
    let mut out = Loaded {
        files: 1,
        ..Loaded::default()
    };
    load_source(
        Arc::new(Source::new(path.into(), text.to_owned())),
        &mut out,
    );
    check_duplicates(&mut out);
    out
}

fn unreadable(path: &Path, why: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code: code::UNREADABLE,
        message: format!("cannot read {}: {why}", path.display()),
        location: None,
        resource: None,
        field: None,
    }
}

fn collect_files(path: &Path, explicit: bool, files: &mut Vec<PathBuf>, out: &mut Loaded) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.diagnostics.push(unreadable(path, &e.to_string()));
            return;
        }
    };
    if meta.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                out.diagnostics.push(unreadable(path, &e.to_string()));
                return;
            }
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            let hidden = child
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden {
                collect_files(&child, false, files, out);
            }
        }
    } else if explicit
        || path
            .extension()
            .is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().as_ref()))
    {
        files.push(path.to_owned());
    }
}

/// Reads every document of one file.
fn load_source(source: Arc<Source>, out: &mut Loaded) {
    let text = source.text();
    for (document, de) in yaml_serde::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(de) {
            Ok(value) => load_document(&source, document, value, out),
            Err(e) => {
                let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
                let message = e.to_string();
                let message = match message.rfind(" at line ") {
                    Some(i) => message[..i].to_owned(),
                    None => message,
                };
                out.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    code: code::SYNTAX,
                    message: format!("not valid YAML: {message}"),
                    location: Some(crate::Location {
                        file: source.path.clone(),
                        line,
                        column,
                        document: document + 1,
                    }),
                    resource: None,
                    field: None,
                });
                // The parser cannot resynchronise after a syntax error.
                return;
            }
        }
    }
}

fn load_document(source: &Arc<Source>, document: usize, value: Value, out: &mut Loaded) {
    let origin = Origin {
        source: source.clone(),
        document,
        prefix: String::new(),
    };
    match value {
        // An empty document (`---` at the end of a file, or only comments).
        Value::Null => {}
        Value::Mapping(map) => {
            let is_list = matches!(map.get("kind"), Some(Value::String(k)) if k == "List" || k.ends_with("List"))
                && map.get("items").is_some();
            if !is_list {
                load_object(origin, map, out);
                return;
            }
            let mut map = map;
            match map.remove("items") {
                Some(Value::Sequence(items)) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let origin = Origin {
                            prefix: format!("items[{i}]"),
                            ..origin.clone()
                        };
                        match item {
                            Value::Mapping(m) => load_object(origin, m, out),
                            _ => out.diagnostics.push(located(
                                &origin,
                                "",
                                Severity::Error,
                                code::SCHEMA,
                                None,
                                "a list item must be an object with apiVersion, kind and metadata"
                                    .into(),
                            )),
                        }
                    }
                }
                Some(Value::Null) => {}
                _ => out.diagnostics.push(located(
                    &origin,
                    "items",
                    Severity::Error,
                    code::SCHEMA,
                    None,
                    "`items` of a List must be a sequence of objects".into(),
                )),
            }
        }
        other => out.diagnostics.push(located(
            &origin,
            "",
            Severity::Error,
            code::SCHEMA,
            None,
            format!(
                "a document must be an object with apiVersion, kind and metadata, not {}",
                describe(&other)
            ),
        )),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "an object",
        Value::Tagged(_) => "a tagged value",
    }
}

fn located(
    origin: &Origin,
    path: &str,
    severity: Severity,
    code: &'static str,
    resource: Option<ResourceRef>,
    message: String,
) -> Diagnostic {
    Diagnostic {
        severity,
        code,
        message,
        location: Some(origin.locate(path)),
        resource,
        field: (!path.is_empty()).then(|| path.to_owned()),
    }
}

/// Top-level fields of a strict kind besides `spec`.
const ENVELOPE: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

fn load_object(origin: Origin, map: Mapping, out: &mut Loaded) {
    let text_field = |name: &str| match map.get(name) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(other) => Err(format!(
            "`{name}` must be a string, not {}",
            describe(other)
        )),
    };
    let mut missing = false;
    let mut fields = [("apiVersion", None::<String>), ("kind", None)];
    for (name, slot) in fields.iter_mut() {
        match text_field(name) {
            Ok(Some(s)) => *slot = Some(s),
            Ok(None) => {
                missing = true;
                out.diagnostics.push(located(
                    &origin,
                    "",
                    Severity::Error,
                    code::SCHEMA,
                    None,
                    format!("missing required field `{name}`"),
                ));
            }
            Err(e) => {
                missing = true;
                out.diagnostics.push(located(
                    &origin,
                    name,
                    Severity::Error,
                    code::SCHEMA,
                    None,
                    e,
                ));
            }
        }
    }
    let [(_, Some(api_version)), (_, Some(kind))] = fields else {
        return;
    };
    if missing {
        return;
    }

    // Metadata first: every later diagnostic names the resource.
    let mut map = map;
    let meta_value = map.remove("metadata").unwrap_or(Value::Null);
    let (metadata, meta_errors) = if meta_value.is_null() {
        (Some(ObjectMeta::default()), Vec::new())
    } else {
        decode::decode::<ObjectMeta>(meta_value)
    };
    let metadata = metadata.unwrap_or_default();
    let reference = ResourceRef {
        kind: kind.clone(),
        namespace: metadata.namespace().to_owned(),
        name: metadata.name.clone(),
    };
    let id = match match_kind(&api_version, &kind) {
        KindMatch::Known(id) => id,
        KindMatch::WrongVersion { supported } => {
            out.diagnostics.push(located(
                &origin,
                "apiVersion",
                Severity::Error,
                code::SCHEMA,
                Some(reference),
                format!(
                    "{kind} is not served at apiVersion `{api_version}`; use one of: {}",
                    supported.join(", ")
                ),
            ));
            return;
        }
        KindMatch::Unsupported { what } => {
            out.diagnostics.push(located(
                &origin,
                "kind",
                Severity::Warning,
                code::SKIPPED,
                Some(reference),
                format!("weft does not implement {what} ({kind}, {api_version}); skipped"),
            ));
            return;
        }
        KindMatch::UnknownIstio => {
            let hint = kind_hint(&kind);
            out.diagnostics.push(located(
                &origin,
                "kind",
                Severity::Error,
                code::SCHEMA,
                Some(reference),
                format!("{api_version} has no kind {kind}{hint}"),
            ));
            return;
        }
        KindMatch::Unknown => {
            let hint = kind_hint(&kind);
            out.diagnostics.push(located(
                &origin,
                "kind",
                Severity::Info,
                code::SKIPPED,
                Some(reference),
                format!("kind {kind} ({api_version}) is not read by weft; skipped{hint}"),
            ));
            return;
        }
    };

    let mut problems = 0;
    let mut report = |path: String,
                      severity: Severity,
                      code: &'static str,
                      message: String,
                      out: &mut Loaded| {
        if severity == Severity::Error {
            problems += 1;
        }
        out.diagnostics.push(located(
            &origin,
            &path,
            severity,
            code,
            Some(reference.clone()),
            message,
        ));
    };
    for e in meta_errors {
        report(
            prefixed("metadata", &e.path),
            Severity::Error,
            code::SCHEMA,
            e.message,
            out,
        );
    }

    let spec = if id.strict() {
        for key in map.keys() {
            let key = match key {
                Value::String(s) => s.as_str(),
                _ => "?",
            };
            if !ENVELOPE.contains(&key) {
                let hint = did_you_mean(key, ENVELOPE.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                report(
                    key.to_owned(),
                    Severity::Error,
                    code::SCHEMA,
                    format!(
                        "unknown field `{key}`{hint} (valid fields: {})",
                        ENVELOPE.join(", ")
                    ),
                    out,
                );
            }
        }
        let spec_value = match map.remove("spec") {
            None | Some(Value::Null) => Value::Mapping(Mapping::new()),
            Some(v) => v,
        };
        let mut spec = decode_spec(
            id,
            spec_value,
            "spec",
            &mut |path, msg, out| report(path, Severity::Error, code::SCHEMA, msg, out),
            out,
        );
        if let Some(Spec::ServiceEntry(se)) = &mut spec {
            se.allocated_addresses = status_addresses(map.get("status"));
        }
        spec
    } else {
        decode_spec(
            id,
            Value::Mapping(map),
            "",
            &mut |path, msg, out| report(path, Severity::Error, code::SCHEMA, msg, out),
            out,
        )
    };

    let Some(spec) = spec else { return };
    let mut cx = Cx::new("");
    cx.field("metadata", |cx| metadata.validate(cx));
    spec.validate(&mut cx);
    for f in cx.into_findings() {
        report(f.path, f.severity, f.code, f.message, out);
    }
    let resource = Resource {
        api_version,
        metadata,
        spec,
        origin: Some(origin),
    };
    if problems == 0 {
        out.resources.push(resource);
    } else {
        out.rejected.push(resource);
    }
}

/// `status.addresses[].value`: where Istio records the addresses it allocated to a
/// ServiceEntry. Anything else in `status` is ignored.
fn status_addresses(status: Option<&Value>) -> Vec<String> {
    let Some(Value::Sequence(list)) = status.and_then(|s| s.get("addresses")) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|a| a.get("value").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// "; did you mean `VirtualService`?" for a kind close to one weft reads.
fn kind_hint(kind: &str) -> String {
    did_you_mean(kind, known_kinds())
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

fn prefixed(root: &str, path: &str) -> String {
    match (root.is_empty(), path.is_empty(), path.starts_with('[')) {
        (true, _, _) => path.to_owned(),
        (false, true, _) => root.to_owned(),
        (false, false, true) => format!("{root}{path}"),
        (false, false, false) => format!("{root}.{path}"),
    }
}

type Report<'a> = dyn FnMut(String, String, &mut Loaded) + 'a;

fn decode_spec(
    id: KindId,
    value: Value,
    root: &str,
    report: &mut Report<'_>,
    out: &mut Loaded,
) -> Option<Spec> {
    fn typed<T: DeserializeOwned>(
        value: Value,
        root: &str,
        report: &mut Report<'_>,
        out: &mut Loaded,
    ) -> Option<T> {
        let (t, errors) = decode::decode::<T>(value);
        for e in errors {
            report(prefixed(root, &e.path), e.message, out);
        }
        t
    }
    Some(match id {
        KindId::Gateway => Spec::Gateway(typed(value, root, report, out)?),
        KindId::VirtualService => Spec::VirtualService(typed(value, root, report, out)?),
        KindId::DestinationRule => {
            Spec::DestinationRule(Box::new(typed(value, root, report, out)?))
        }
        KindId::ServiceEntry => Spec::ServiceEntry(typed(value, root, report, out)?),
        KindId::Sidecar => Spec::Sidecar(Box::new(typed(value, root, report, out)?)),
        KindId::WorkloadEntry => Spec::WorkloadEntry(typed(value, root, report, out)?),
        KindId::PeerAuthentication => Spec::PeerAuthentication(typed(value, root, report, out)?),
        KindId::AuthorizationPolicy => Spec::AuthorizationPolicy(typed(value, root, report, out)?),
        KindId::RequestAuthentication => {
            Spec::RequestAuthentication(typed(value, root, report, out)?)
        }
        KindId::Telemetry => Spec::Telemetry(Box::new(typed(value, root, report, out)?)),
        KindId::Namespace => Spec::Namespace(typed(value, root, report, out)?),
        KindId::ServiceAccount => Spec::ServiceAccount(typed(value, root, report, out)?),
        KindId::Secret => Spec::Secret(typed(value, root, report, out)?),
        KindId::Service => Spec::Service(typed(value, root, report, out)?),
        KindId::Deployment => Spec::Deployment(Box::new(typed(value, root, report, out)?)),
        KindId::Pod => Spec::Pod(Box::new(typed(value, root, report, out)?)),
        KindId::EndpointSlice => Spec::EndpointSlice(typed(value, root, report, out)?),
        KindId::Workload => Spec::Workload(typed(value, root, report, out)?),
    })
}

/// The same kind/namespace/name twice. In one file that is a mistake (error). Across files
/// it is what applying the files in order (`kubectl apply -f DIR`) does: the later definition
/// replaces the earlier (info). Bookinfo's task files rely on this: each defines
/// `VirtualService reviews` differently. Both definitions stay in `resources` so each is
/// validated and analyzed; [`Loaded::effective`] gives the set as applied.
fn check_duplicates(out: &mut Loaded) {
    let mut seen: HashMap<(&'static str, String, String), usize> = HashMap::new();
    let mut dups = Vec::new();
    for (i, r) in out.resources.iter().enumerate() {
        let key = (r.kind(), r.namespace().to_owned(), r.name().to_owned());
        if let Some(first) = seen.insert(key, i) {
            dups.push((first, i));
        }
    }
    for (first, dup) in dups {
        let (earlier, later) = (&out.resources[first], &out.resources[dup]);
        let at = earlier
            .locate("metadata.name")
            .map_or_else(|| "elsewhere".to_owned(), |l| format!("at {l}"));
        let same_file = match (&earlier.origin, &later.origin) {
            (Some(a), Some(b)) => a.source.path == b.source.path,
            _ => true,
        };
        let (severity, message) = if same_file {
            (
                Severity::Error,
                format!(
                    "{} is defined twice in this file; the first definition is {at}",
                    later.reference()
                ),
            )
        } else {
            (
                Severity::Info,
                format!("replaces the definition {at}, as applying the files in order would"),
            )
        };
        out.diagnostics.push(Diagnostic {
            severity,
            code: code::DUPLICATE,
            message,
            location: later.locate("metadata.name"),
            resource: Some(later.reference()),
            field: Some("metadata.name".into()),
        });
    }
}

impl Loaded {
    /// The resources as applied in order: of several definitions of one kind/namespace/name,
    /// the last.
    pub fn effective(&self) -> Vec<&Resource> {
        let mut last: HashMap<(&str, &str, &str), usize> = HashMap::new();
        for (i, r) in self.resources.iter().enumerate() {
            last.insert((r.kind(), r.namespace(), r.name()), i);
        }
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        keep.into_iter().map(|i| &self.resources[i]).collect()
    }
}

#[cfg(test)]
mod tests;
