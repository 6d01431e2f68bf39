//! Converting a bootstrap into a snapshot never panics, and every rejection names its resource
//! and field. The in-CI companion of the cargo-fuzz targets in `fuzz/` (`config_proto`,
//! `config_yaml`): the same two paths, protobuf bytes and YAML text, fed arbitrary input and
//! valid configs with random edits, with few enough cases to run in seconds.

use proptest::prelude::*;
use prost::Message;
use serde_json::{Value, json};
use weft_proxy::config::ConfigError;
use weft_proxy::snapshot::Snapshot;
use weft_proxy::stats::Stats;
use weft_xds::proto::Bootstrap;

const EXAMPLE: &str = include_str!("../config/example.yaml");
/// Every kind of route, match, rewrite, load balancer and listener (the fuzz seeds).
const ROUTES: &str = include_str!("../../../fuzz/seeds/config_yaml/routes.yaml");
/// A config in which almost every resource is wrong.
const EDGES: &str = include_str!("../../../fuzz/seeds/config_yaml/edges.yaml");

/// Kinds of resource an error may name, as `Snapshot::build` and its parts spell them.
const RESOURCE_KINDS: &[&str] = &["listener \"", "listeners[", "route_config \"", "cluster \""];

fn parse(yaml: &str) -> Bootstrap {
    yaml_serde::from_str(yaml).unwrap_or_else(|e| panic!("base config parses: {e}"))
}

/// The property: a build either succeeds, and then succeeds again as a reload on top of
/// itself, or fails with errors that each name a resource and a field. Returns the errors.
fn check(bootstrap: Bootstrap) -> Vec<ConfigError> {
    let stats = Stats::default();
    match Snapshot::build(bootstrap.clone(), None, &stats) {
        Ok(first) => {
            if let Err(errors) = Snapshot::build(bootstrap, Some(&first), &stats) {
                panic!("a config that built once was rejected on reload: {errors:?}");
            }
            Vec::new()
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "rejected without a reason");
            for e in &errors {
                check_error(e);
            }
            errors
        }
    }
}

/// An error names its resource (`cluster "a"`) and a field path in proto JSON names
/// (`endpoints[0].address`). The field is empty only for a missing `oneof`, where the resource
/// itself lacks it and the reason lists the choices.
fn check_error(e: &ConfigError) {
    assert!(
        RESOURCE_KINDS.iter().any(|k| e.resource.starts_with(k)),
        "error names no resource: {e:?}"
    );
    if e.field.is_empty() {
        assert!(
            e.reason.starts_with("one of "),
            "error names no field: {e:?}"
        );
    } else {
        assert!(
            e.field.starts_with(|c: char| c.is_ascii_lowercase()),
            "field is not a proto JSON path: {e:?}"
        );
    }
    assert!(!e.reason.is_empty(), "error gives no reason: {e:?}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&e.resource) && shown.contains(&e.field),
        "Display drops the resource or field: {shown:?} from {e:?}"
    );
}

fn check_proto(bytes: &[u8]) {
    if let Ok(bootstrap) = Bootstrap::decode(bytes) {
        check(bootstrap);
    }
}

fn check_yaml(text: &str) {
    if let Ok(bootstrap) = yaml_serde::from_str::<Bootstrap>(text) {
        check(bootstrap);
    }
}

/// One edit of a config's JSON form. `at` walks the tree: each step picks a child (modulo the
/// number of children) until the steps run out or a leaf is reached.
#[derive(Debug, Clone)]
enum Edit {
    /// Replaces the node reached.
    Replace(Vec<usize>, Leaf),
    /// Removes the node reached from its parent.
    Remove(Vec<usize>),
    /// Sets `field` in the object reached (or its parent object) to `Value`: reaches fields
    /// the proto JSON mapping leaves out because they hold defaults.
    Insert(Vec<usize>, &'static str, Value),
    /// Appends a copy of an array element next to it (duplicate names, repeated domains).
    Duplicate(Vec<usize>),
}

/// proto JSON names of fields the edits may add.
const FIELDS: &[&str] = &[
    "name",
    "address",
    "http",
    "tcp",
    "tlsPassthrough",
    "routeConfig",
    "tls",
    "maxRequestHeadersKb",
    "cluster",
    "domains",
    "routes",
    "matches",
    "route",
    "redirect",
    "directResponse",
    "requestHeaders",
    "responseHeaders",
    "uri",
    "scheme",
    "method",
    "authority",
    "headers",
    "withoutHeaders",
    "queryParams",
    "port",
    "regex",
    "prefix",
    "exact",
    "rewrite",
    "uriRegex",
    "pattern",
    "substitution",
    "weight",
    "code",
    "status",
    "body",
    "set",
    "add",
    "remove",
    "lbPolicy",
    "endpoints",
    "consistentHash",
    "connectTimeout",
    "idleTimeout",
    "protocol",
    "header",
    "cookie",
    "sourceIp",
    "queryParameter",
    "minimumRingSize",
    "tableSize",
    "ttl",
    "certificates",
    "certFile",
    "caFile",
];

/// Strings that config validation has opinions about, and some arbitrary ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "*",
            "*.",
            "a*b",
            "(",
            "a)|(b",
            "127.0.0.1:0",
            "127.0.0.1:1",
            "[::1]:65536",
            "a b",
            "\0",
            "\r\n",
            ":path",
            ":status",
            "Host",
            "x-ok",
            "${1",
            "$9",
            "\\9",
            "/\\1",
            "1.5s",
            "0s",
            "-1s",
            "-0.5s",
            "315576000001s",
            "ROUND_ROBIN",
            "RING_HASH",
            "MAGLEV",
            "HTTP2",
            "TCP",
            "outbound",
            "inbound",
            "é",
            "0",
            "7",
            "65537",
            "8388609",
            "18446744073709551615",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,12}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => text().prop_map(Value::from),
        3 => number(),
        1 => any::<bool>().prop_map(Value::from),
        1 => prop::sample::select(vec![json!(null), json!({}), json!([]), json!([""]), json!({"a": ""})]),
    ]
}

/// A replacement for a node, mostly of the same kind as the node (a string for a string), so
/// that the edited config still reads as a `Bootstrap` and gets as far as the conversion.
#[derive(Debug, Clone)]
struct Leaf {
    same_kind: bool,
    text: String,
    number: Value,
    flag: bool,
    any: Value,
}

impl Leaf {
    fn replacing(&self, old: &Value) -> Value {
        match old {
            _ if !self.same_kind => self.any.clone(),
            Value::String(_) => Value::from(self.text.as_str()),
            Value::Number(_) => self.number.clone(),
            Value::Bool(_) => Value::from(self.flag),
            _ => self.any.clone(),
        }
    }
}

/// Numbers at the edges of what fields accept. Large weights are left out on purpose: one
/// above 8M on a RING_HASH endpoint builds the largest ring, which takes seconds in a debug
/// build (the fuzz targets, optimized, do reach it).
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0i64,
            1,
            -1,
            7,
            301,
            599,
            600,
            65535,
            65536,
            i64::from(u32::MAX) + 1,
            i64::MAX,
            i64::MIN,
        ])
        .prop_map(Value::from),
        1 => any::<i16>().prop_map(Value::from),
        1 => prop::sample::select(vec![0.5, -1.5, 1e300]).prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Leaf> {
    (
        prop::bool::weighted(0.8),
        text(),
        number(),
        any::<bool>(),
        value(),
    )
        .prop_map(|(same_kind, text, number, flag, any)| Leaf {
            same_kind,
            text,
            number,
            flag,
            any,
        })
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = || prop::collection::vec(any::<usize>(), 1..8);
    prop_oneof![
        4 => (at(), leaf()).prop_map(|(a, v)| Edit::Replace(a, v)),
        2 => at().prop_map(Edit::Remove),
        2 => (at(), prop::sample::select(FIELDS), value()).prop_map(|(a, f, v)| Edit::Insert(a, f, v)),
        1 => at().prop_map(Edit::Duplicate),
    ]
}

/// The children of a container node, for walking.
fn child(node: &mut Value, step: usize) -> Option<&mut Value> {
    match node {
        Value::Array(items) if !items.is_empty() => {
            let n = items.len();
            items.get_mut(step % n)
        }
        Value::Object(map) if !map.is_empty() => {
            let n = map.len();
            map.values_mut().nth(step % n)
        }
        _ => None,
    }
}

/// The container reached by all but the last step of `at`, and that last step. The walk ends
/// early where the next child is a leaf.
fn parent<'v>(root: &'v mut Value, at: &[usize]) -> (&'v mut Value, usize) {
    let (&last, walk) = at.split_last().unwrap_or((&0, &[]));
    let mut node = root;
    for &step in walk {
        if !matches!(child(node, step), Some(Value::Array(_) | Value::Object(_))) {
            break;
        }
        node = child(node, step).expect("a container child");
    }
    (node, last)
}

fn apply(root: &mut Value, edit: &Edit) {
    match edit {
        Edit::Replace(at, leaf) => {
            let (node, last) = parent(root, at);
            match child(node, last) {
                Some(c) => *c = leaf.replacing(c),
                None => *node = leaf.replacing(node),
            }
        }
        Edit::Remove(at) => {
            let (node, last) = parent(root, at);
            match node {
                Value::Array(items) if !items.is_empty() => {
                    let n = items.len();
                    items.remove(last % n);
                }
                Value::Object(map) if !map.is_empty() => {
                    let n = map.len();
                    if let Some(key) = map.keys().nth(last % n).cloned() {
                        map.remove(&key);
                    }
                }
                _ => {}
            }
        }
        Edit::Insert(at, field, v) => {
            let (node, last) = parent(root, at);
            let target = match child(node, last) {
                Some(c @ Value::Object(_)) => c,
                _ => node,
            };
            if let Value::Object(map) = target {
                map.insert((*field).to_owned(), v.clone());
            }
        }
        Edit::Duplicate(at) => {
            let (node, last) = parent(root, at);
            if let Value::Array(items) = node
                && !items.is_empty()
            {
                let n = items.len();
                let copy = items[last % n].clone();
                items.insert(last % n, copy);
            }
        }
    }
}

/// `base` in its JSON form (the proto3 JSON mapping) with `edits` applied, if it still reads
/// as a `Bootstrap`.
fn edited(base: &Bootstrap, edits: &[Edit]) -> Option<Bootstrap> {
    let mut tree = serde_json::to_value(base).expect("a bootstrap serializes");
    for e in edits {
        apply(&mut tree, e);
    }
    serde_json::from_value(tree).ok()
}

/// Edits of YAML text: what a person makes by hand.
#[derive(Debug, Clone)]
enum TextEdit {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        (any::<usize>(), 1usize..16).prop_map(|(a, n)| TextEdit::Delete(a, n)),
        (any::<usize>(), "[-:\\[\\]{}#&*!|>'\" \\n0-9a-z.,/]{1,8}")
            .prop_map(|(a, s)| TextEdit::Insert(a, s)),
        any::<usize>().prop_map(TextEdit::DuplicateLine),
    ]
}

fn apply_text(text: &str, edits: &[TextEdit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match e {
            TextEdit::Delete(at, n) => {
                let start = at % len;
                let end = (start + n).min(chars.len());
                chars.drain(start.min(end)..end);
            }
            TextEdit::Insert(at, s) => {
                let at = at % (chars.len() + 1);
                chars.splice(at..at, s.chars());
            }
            TextEdit::DuplicateLine(at) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = at % lines.len();
                    lines.insert(i, lines[i]);
                }
                chars = lines.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

fn bases() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![EXAMPLE, ROUTES, EDGES])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_protobuf(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_proto(&bytes);
    }

    #[test]
    fn arbitrary_text_as_yaml(text in "\\PC{0,256}") {
        check_yaml(&text);
    }

    #[test]
    fn valid_configs_with_random_field_edits(
        base in bases(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        if let Some(bootstrap) = edited(&parse(base), &edits) {
            // Both wire forms of the same edited config.
            check_proto(&bootstrap.encode_to_vec());
            check(bootstrap);
        }
    }

    #[test]
    fn valid_protobuf_with_random_byte_edits(
        base in bases(),
        flips in prop::collection::vec((any::<usize>(), 1u8..=255), 1..6),
        keep in any::<prop::sample::Index>(),
    ) {
        let mut bytes = parse(base).encode_to_vec();
        for (at, mask) in flips {
            let n = bytes.len();
            bytes[at % n] ^= mask;
        }
        // Sometimes cut short as well: a truncated message from the wire.
        let cut = keep.index(bytes.len() * 2).max(bytes.len() / 2);
        bytes.truncate(cut);
        check_proto(&bytes);
    }

    #[test]
    fn valid_yaml_with_random_text_edits(
        base in bases(),
        edits in prop::collection::vec(text_edit(), 1..4),
    ) {
        check_yaml(&apply_text(base, &edits));
    }
}

/// The bases are what the properties claim: two that build, one rejected all over.
#[test]
fn bases_build_or_fail_as_written() {
    assert_eq!(check(parse(EXAMPLE)), []);
    assert_eq!(check(parse(ROUTES)), []);
    let errors = check(parse(EDGES));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert!(
        errors.len() >= 6 && fields.contains(&"http.tls.certificates[0].certFile"),
        "{errors:#?}"
    );
}

/// The edits reach the conversion and the check sees what they broke.
#[test]
fn an_edit_reaches_the_conversion() {
    let base = parse(EXAMPLE);
    let tree = serde_json::to_value(&base).expect("serializes");
    let position = |v: &Value, key: &str| {
        v.as_object()
            .and_then(|o| o.keys().position(|k| k == key))
            .unwrap_or_else(|| panic!("no {key} in {v}"))
    };
    // clusters -> the first cluster -> its name.
    let at = vec![
        position(&tree, "clusters"),
        0,
        position(&tree["clusters"][0], "name"),
    ];
    let empty = Leaf {
        same_kind: true,
        text: String::new(),
        number: json!(0),
        flag: false,
        any: json!(null),
    };
    let bootstrap = edited(&base, &[Edit::Replace(at, empty)]).expect("still a bootstrap");
    assert_eq!(bootstrap.clusters[0].name, "");
    let errors = check(bootstrap);
    assert!(
        errors
            .iter()
            .any(|e| e.to_string() == "cluster \"\": name: required"),
        "{errors:#?}"
    );
}

/// The random edits are not vacuous: a fair share of them still read as a `Bootstrap` and
/// reach the conversion, and of those some build and some are rejected. Deterministic: a
/// fixed seed.
#[test]
fn edits_mostly_reach_the_conversion() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let edits = (bases(), prop::collection::vec(edit(), 1..4));
    let (mut built, mut rejected, total) = (0, 0, 300);
    for _ in 0..total {
        let (base, edits) = edits.new_tree(&mut runner).expect("a value").current();
        if let Some(bootstrap) = edited(&parse(base), &edits) {
            if check(bootstrap).is_empty() {
                built += 1;
            } else {
                rejected += 1;
            }
        }
    }
    assert!(
        built * 10 >= total && rejected * 10 >= total,
        "of {total} edited configs, {built} built and {rejected} were rejected"
    );
}

/// The committed protobuf seeds of the `config_proto` fuzz target are the YAML seeds encoded,
/// and the example seed is the documented example. `WEFT_UPDATE_SEEDS=1` rewrites the
/// protobuf seeds after a YAML seed changes.
#[test]
fn fuzz_seeds_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let example_seed = std::fs::read_to_string(dir.join("config_yaml/example.yaml"))
        .expect("fuzz/seeds/config_yaml/example.yaml");
    assert_eq!(
        example_seed, EXAMPLE,
        "copy crates/proxy/config/example.yaml to fuzz/seeds/config_yaml/"
    );
    for (name, yaml) in [("example", EXAMPLE), ("routes", ROUTES), ("edges", EDGES)] {
        let path = dir.join(format!("config_proto/{name}.pb"));
        let bootstrap = parse(yaml);
        if std::env::var_os("WEFT_UPDATE_SEEDS").is_some() {
            std::fs::write(&path, bootstrap.encode_to_vec()).expect("write seed");
        }
        let committed = std::fs::read(&path).expect("protobuf seed");
        // Compared decoded: maps are encoded in hash order, so bytes differ run to run.
        assert!(
            Bootstrap::decode(committed.as_slice()).ok() == Some(bootstrap),
            "{} is stale: rerun with WEFT_UPDATE_SEEDS=1",
            path.display()
        );
    }
}
