//! Typed decoding of one resource body from a YAML value, reporting every problem.
//!
//! serde stops at the first error. To report all unknown fields (the most common mistake: a
//! misspelt or mis-indented field that would otherwise be silently dropped), the decoder
//! records the error, removes the offending key from the value and decodes again, until the
//! value decodes or an error remains that removing a key cannot get past.

use serde::de::DeserializeOwned;
use yaml_serde::Value;

use crate::suggest::did_you_mean;

/// A decoding problem at a field path relative to the decoded value's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub path: String,
    pub message: String,
}

/// More than this many distinct problems in one resource is noise; stop there.
const MAX_ERRORS: usize = 50;

/// Decodes `value` as `T`. Returns the value (when one could be decoded, possibly only after
/// removing unknown keys) and every problem found; a value with problems is not what the user
/// wrote, and the loader does not serve it, but `weft analyze` still checks it against the
/// other resources so that one bad field does not hide the rest.
pub fn decode<T: DeserializeOwned>(mut value: Value) -> (Option<T>, Vec<DecodeError>) {
    // Most resources are clean: decode without path tracking first, and pay for paths only
    // when there is an error to locate.
    if let Ok(t) = T::deserialize(&value) {
        return (Some(t), Vec::new());
    }
    let mut errors: Vec<DecodeError> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            // With errors, keys were removed to get here: not what the user wrote.
            Ok(t) => return (Some(t), errors),
            Err(e) => e,
        };
        let segments: Vec<Seg> = err.path().iter().filter_map(Seg::from_path).collect();
        let message = err.inner().to_string();
        let message = strip_location(&message);

        if let Some(field) = quoted_after(message, "unknown field `") {
            // The path points at the map that holds the field, or at the field itself.
            let mut at = segments.clone();
            if at.last() != Some(&Seg::Key(field.to_owned())) {
                at.push(Seg::Key(field.to_owned()));
            }
            let expected = expected_names(message);
            let mut text = format!("unknown field `{field}`");
            if let Some(s) = did_you_mean(field, expected.iter().map(String::as_str)) {
                text.push_str(&format!("; did you mean `{s}`?"));
            }
            if expected.is_empty() {
                text.push_str(" (this object has no fields)");
            } else {
                text.push_str(&format!(" (valid fields: {})", expected.join(", ")));
            }
            if !remove(&mut value, &at) {
                errors.push(DecodeError {
                    path: render(&at),
                    message: text,
                });
                return (None, errors);
            }
            removed.push(render(&at));
            errors.push(DecodeError {
                path: render(&at),
                message: text,
            });
        } else if let Some(field) = quoted_after(message, "missing field `") {
            let mut at = segments.clone();
            at.push(Seg::Key(field.to_owned()));
            let path = render(&at);
            // A field we removed ourselves (because it was bad) is not also "missing".
            if !removed.contains(&path) {
                errors.push(DecodeError {
                    path,
                    message: format!("missing required field `{field}`"),
                });
            }
            return (None, errors);
        } else {
            let mut text = message.to_owned();
            if let Some(variant) = quoted_after(message, "unknown variant `") {
                let expected = expected_names(message);
                text = format!("unknown value `{variant}`");
                if let Some(s) = did_you_mean(variant, expected.iter().map(String::as_str)) {
                    text.push_str(&format!("; did you mean `{s}`?"));
                }
                text.push_str(&format!(" (valid values: {})", expected.join(", ")));
            }
            let path = render(&segments);
            let removable = !segments.is_empty() && remove(&mut value, &segments);
            errors.push(DecodeError {
                path: path.clone(),
                message: text,
            });
            if !removable {
                return (None, errors);
            }
            removed.push(path);
        }
        if errors.len() >= MAX_ERRORS {
            return (None, errors);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    fn from_path(s: &serde_path_to_error::Segment) -> Option<Seg> {
        use serde_path_to_error::Segment;
        match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        }
    }
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Removes the node at `path`; false when there is none.
fn remove(value: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        let next = match (seg, node) {
            (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
            (Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i),
            (seg, Value::Tagged(t)) => return remove(&mut t.value, std::slice::from_ref(seg)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (last, node) {
        (Seg::Key(k), Value::Mapping(m)) => m.shift_remove(k.as_str()).is_some(),
        // Replacing keeps later indices (and their paths) stable.
        (Seg::Index(i), Value::Sequence(s)) if *i < s.len() => {
            s[*i] = Value::Null;
            true
        }
        _ => false,
    }
}

/// The text between `prefix` and the next backtick.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let start = message.find(prefix)? + prefix.len();
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// The names serde lists after "expected" in unknown field/variant errors.
fn expected_names(message: &str) -> Vec<String> {
    let Some(at) = message.find("expected") else {
        return Vec::new();
    };
    message[at..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// yaml_serde appends " at line L column C" to some messages; positions come from the index.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Route {
        destination: Dest,
        #[serde(default)]
        weight: Option<i32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Dest {
        host: String,
        #[serde(default)]
        subset: Option<String>,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    enum Mode {
        Simple,
        IstioMutual,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Spec {
        #[serde(default)]
        route: Vec<Route>,
    }

    fn run(yaml: &str) -> (Option<Spec>, Vec<(String, String)>) {
        let v: Value = yaml_serde::from_str(yaml).unwrap();
        let (t, errs) = decode::<Spec>(v);
        (t, errs.into_iter().map(|e| (e.path, e.message)).collect())
    }

    #[test]
    fn clean_value_decodes() {
        let (t, errs) = run("route: [{destination: {host: a}, weight: 5}]");
        assert!(errs.is_empty());
        assert_eq!(t.unwrap().route[0].weight, Some(5));
    }

    #[test]
    fn reports_every_unknown_field_with_suggestion() {
        let (t, errs) = run(
            "route:\n- destination: {host: a, subet: v1}\n  weigth: 5\n- destination: {host: b}\n  wieght: 1\n",
        );
        // Decoded without the unknown keys, for analysis only.
        assert_eq!(t.unwrap().route.len(), 2);
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0].0, "route[0].destination.subet");
        assert!(
            errs[0]
                .1
                .starts_with("unknown field `subet`; did you mean `subset`?"),
            "{}",
            errs[0].1
        );
        assert_eq!(errs[1].0, "route[0].weigth");
        assert!(errs[1].1.contains("did you mean `weight`"), "{}", errs[1].1);
        assert_eq!(errs[2].0, "route[1].wieght");
    }

    #[test]
    fn type_errors_and_bad_enum_values() {
        let (_, errs) =
            run("route:\n- destination: {host: a, mode: ISTIO_MUTAL}\n  weight: fifty\n");
        assert_eq!(errs[0].0, "route[0].destination.mode");
        assert!(
            errs[0].1.contains("did you mean `ISTIO_MUTUAL`"),
            "{}",
            errs[0].1
        );
        assert_eq!(errs[1].0, "route[0].weight");
        assert!(errs[1].1.contains("invalid type"), "{}", errs[1].1);
    }

    #[test]
    fn missing_required_field() {
        let (_, errs) = run("route: [{destination: {subset: v1}}]");
        assert_eq!(
            errs,
            vec![(
                "route[0].destination.host".to_owned(),
                "missing required field `host`".to_owned()
            )]
        );
    }

    #[test]
    fn a_removed_required_field_is_not_reported_twice() {
        let (_, errs) = run("route: [{destination: {host: [1]}}]");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "route[0].destination.host");
    }
}
