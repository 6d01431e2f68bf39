//! Field path -> line:column, for pointing diagnostics at the exact place in a file.
//!
//! yaml_serde (the deserializer) exposes no positions for values that parsed fine, so a
//! second, safe event parser (saphyr-parser) walks the same text and records where each field
//! path starts. The index is built only when a diagnostic needs it: clean files never pay for it.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// Positions (1-based line and column) of every node in one YAML document, by field path.
#[derive(Debug, Default)]
pub struct DocIndex {
    positions: HashMap<String, (usize, usize)>,
    /// Where the document's first node starts.
    start: (usize, usize),
}

impl DocIndex {
    /// The position of `path` (`spec.http[0].route[1].weight`), or of its nearest ancestor
    /// that has one. Label-style segments (`labels[app]`) are looked up as map keys.
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let mut path = normalize(path);
        loop {
            if let Some(pos) = self.positions.get(&path) {
                return *pos;
            }
            match parent(&path) {
                Some(p) => path = p.to_owned(),
                None => return self.start,
            }
        }
    }
}

/// Indexes every document of `text`. On a syntax error the documents read so far are kept
/// (the deserializer reports the error itself).
pub fn index(text: &str) -> Vec<DocIndex> {
    let mut docs = Vec::new();
    let mut walker = Walker::default();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        // saphyr lines are 1-based, columns 0-based.
        let pos = (span.start.line(), span.start.col() + 1);
        match event {
            Event::DocumentStart(_) => walker = Walker::default(),
            Event::DocumentEnd => docs.push(std::mem::take(&mut walker.doc)),
            Event::Scalar(value, ..) => walker.node(pos, Some(&value), false),
            Event::Alias(_) => walker.node(pos, Some("*"), false),
            Event::MappingStart(..) => walker.node(pos, None, true),
            Event::SequenceStart(..) => {
                walker.node(pos, None, false);
                walker.stack.push(Frame::Seq {
                    path: walker.last_path.clone(),
                    next: 0,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                walker.stack.pop();
                walker.finish_value();
            }
            _ => {}
        }
    }
    docs
}

enum Frame {
    /// Inside a mapping; `key` is set while its value is being read.
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    doc: DocIndex,
    stack: Vec<Frame>,
    /// Path of the node just started (a sequence frame needs it).
    last_path: String,
    started: bool,
}

impl Walker {
    /// A node starts at `pos`: a scalar (with its text), a mapping, or a sequence.
    fn node(&mut self, pos: (usize, usize), scalar: Option<&str>, is_map: bool) {
        if !self.started {
            self.started = true;
            self.doc.start = pos;
        }
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key: None }) => {
                // This node is a key. Complex (non-scalar) keys get no path of their own.
                let key = scalar.unwrap_or("?").to_owned();
                let child = join(path, &key);
                self.doc.positions.entry(child).or_insert(pos);
                if let Some(Frame::Map { key: k, .. }) = self.stack.last_mut() {
                    *k = Some(key);
                }
                if is_map {
                    // A mapping used as a key: walk it under a throwaway path.
                    self.stack.push(Frame::Map {
                        path: "\u{0}".into(),
                        key: None,
                    });
                }
                return;
            }
            Some(Frame::Map { path, key: Some(k) }) => join(path, k),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                self.doc.positions.entry(p.clone()).or_insert(pos);
                p
            }
        };
        if is_map {
            self.stack.push(Frame::Map {
                path: path.clone(),
                key: None,
            });
        } else if scalar.is_some() {
            self.last_path = path;
            self.finish_value();
            return;
        }
        self.last_path = path;
    }

    /// A value (scalar, or a just-closed collection) is complete: advance the parent.
    fn finish_value(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { next, .. }) => *next += 1,
            None => {}
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `metadata.labels[app]` -> `metadata.labels.app`; numeric brackets stay (`http[0]`).
fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|c| open + c) else {
            break;
        };
        let inner = &rest[open + 1..close];
        out.push_str(&rest[..open]);
        if inner.bytes().all(|b| b.is_ascii_digit()) && !inner.is_empty() {
            out.push_str(&rest[open..=close]);
        } else {
            out.push('.');
            out.push_str(inner);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The path one segment up: `a.b[0].c` -> `a.b[0]` -> `a.b` -> `a` -> none.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']')
        && let Some(open) = path.rfind('[')
    {
        return Some(&path[..open]);
    }
    Some(path.rfind('.').map_or("", |dot| &path[..dot]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  labels:
    app: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
---
kind: Service
spec: {ports: [{port: 9080}]}
";

    #[test]
    fn locates_fields() {
        let docs = index(TEXT);
        assert_eq!(docs.len(), 2);
        let d = &docs[0];
        assert_eq!(d.locate("kind"), (2, 1));
        assert_eq!(d.locate("spec.hosts[0]"), (9, 5));
        assert_eq!(d.locate("spec.http[0].route[0].weight"), (15, 7));
        assert_eq!(
            d.locate("spec.http[0].route[1].destination.subset"),
            (16, 36)
        );
        assert_eq!(d.locate("spec.http[0].route[1].weight"), (17, 7));
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(d.locate("spec.http[0].route[1].headers.x"), (16, 7));
        assert_eq!(d.locate("metadata.labels[app]"), (6, 5));
        assert_eq!(d.locate(""), (1, 1));
        let d = &docs[1];
        assert_eq!(d.locate("kind"), (19, 1));
        assert_eq!(d.locate("spec.ports[0].port"), (20, 17));
    }

    #[test]
    fn survives_garbage() {
        for text in [
            "",
            ":",
            "a: [",
            "- - -",
            "{a: {b: }",
            "? [a]\n: b\n",
            "&x a: *x",
        ] {
            let _ = index(text);
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            normalize("metadata.labels[app.kubernetes.io/name]"),
            "metadata.labels.app.kubernetes.io/name"
        );
        assert_eq!(normalize("spec.http[0].route[1]"), "spec.http[0].route[1]");
        assert_eq!(parent("a.b[0].c"), Some("a.b[0]"));
        assert_eq!(parent("a.b[0]"), Some("a.b"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
