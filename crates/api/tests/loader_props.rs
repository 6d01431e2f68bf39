//! The loader never panics, whatever it is given, and every diagnostic it reports points at a
//! real place in the input. Three sources of input: arbitrary text, valid bookinfo YAML with
//! random edits, and random YAML trees in the envelope of every kind weft reads.

use proptest::prelude::*;
use weft_api::load_str;

const BOOKINFO: &str = include_str!("../../../examples/bookinfo/bookinfo.yaml");
const GATEWAY: &str = include_str!("../../../examples/bookinfo/networking/bookinfo-gateway.yaml");
const RULES: &str = include_str!("../../../examples/bookinfo/networking/destination-rule-all.yaml");
const DELAY: &str =
    include_str!("../../../examples/bookinfo/networking/virtual-service-ratings-test-delay.yaml");

const KINDS: &[(&str, &str)] = &[
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1beta1", "DestinationRule"),
    ("networking.istio.io/v1alpha3", "Gateway"),
    ("networking.istio.io/v1", "ServiceEntry"),
    ("networking.istio.io/v1", "Sidecar"),
    ("networking.istio.io/v1", "WorkloadEntry"),
    ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("security.istio.io/v1beta1", "RequestAuthentication"),
    ("v1", "Service"),
    ("v1", "Pod"),
    ("v1", "Namespace"),
    ("apps/v1", "Deployment"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("weft.dev/v1alpha1", "Workload"),
    ("v1", "List"),
];

fn check(text: &str) {
    let loaded = load_str("input.yaml", text);
    // Lines as YAML counts them: `\r\n`, `\n`, a lone `\r`, and (YAML 1.1, as libyaml does)
    // U+0085, U+2028 and U+2029 each end a line.
    let lines = text
        .replace("\r\n", "\n")
        .matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .count()
        + 1;
    for d in &loaded.diagnostics {
        if let Some(loc) = &d.location {
            assert!(
                loc.line >= 1 && loc.line <= lines + 1,
                "line {} of {lines}: {d}",
                loc.line
            );
            assert!(loc.column >= 1, "{d}");
        }
        assert!(!d.message.is_empty());
    }
    // Whatever loaded is valid: analysis must not panic on it either.
    let _ = weft_api::analyze::analyze(&loaded.resources);
}

/// Random edits that YAML is sensitive to.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    Indent(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), "[-:\\[\\]{}#&*!|>'\" \\n\\ta-z0-9.,]{1,8}")
            .prop_map(|(a, s)| Edit::Insert(a, s)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), 0usize..6).prop_map(|(a, n)| Edit::Indent(a, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut s: Vec<char> = text.chars().collect();
    for e in edits {
        let len = s.len().max(1);
        match e {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(s.len());
                if at < end {
                    s.drain(at..end);
                }
            }
            Edit::Insert(at, ins) => {
                let at = at % (s.len() + 1);
                s.splice(at..at, ins.chars());
            }
            Edit::DuplicateLine(n) | Edit::Indent(n, _) => {
                let text: String = s.iter().collect();
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                if lines.is_empty() {
                    continue;
                }
                let i = n % lines.len();
                match e {
                    Edit::DuplicateLine(_) => lines.insert(i, lines[i].clone()),
                    Edit::Indent(_, k) => {
                        lines[i] = format!("{}{}", " ".repeat(*k), lines[i].trim_start())
                    }
                    _ => {}
                }
                s = lines.join("\n").chars().collect();
            }
        }
    }
    s.into_iter().collect()
}

const WORDS: &[&str] = &[
    "hosts",
    "http",
    "route",
    "destination",
    "host",
    "subset",
    "weight",
    "match",
    "uri",
    "prefix",
    "exact",
    "regex",
    "timeout",
    "retries",
    "fault",
    "delay",
    "abort",
    "ports",
    "port",
    "number",
    "name",
    "selector",
    "servers",
    "trafficPolicy",
    "loadBalancer",
    "simple",
    "subsets",
    "labels",
    "tls",
    "mode",
    "spec",
    "metadata",
    "items",
    "rules",
    "from",
    "to",
    "source",
    "containers",
    "template",
    "endpoints",
    "command",
    "kind",
    "apiVersion",
    "bogus",
];

fn yaml_tree() -> impl Strategy<Value = yaml_serde::Value> {
    let leaf = prop_oneof![
        Just(yaml_serde::Value::Null),
        any::<bool>().prop_map(yaml_serde::Value::Bool),
        any::<i64>().prop_map(|n| yaml_serde::Value::Number(n.into())),
        any::<f64>().prop_map(|n| yaml_serde::Value::Number(n.into())),
        "[a-zA-Z0-9*./_:-]{0,12}".prop_map(yaml_serde::Value::String),
        // Field names weft knows, so trees reach deep into typed decoding.
        prop::sample::select(WORDS).prop_map(|s| yaml_serde::Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(yaml_serde::Value::Sequence),
            prop::collection::vec((prop::sample::select(WORDS), inner), 0..6).prop_map(|kv| {
                let mut m = yaml_serde::Mapping::new();
                for (k, v) in kv {
                    m.insert(yaml_serde::Value::String(k.to_owned()), v);
                }
                yaml_serde::Value::Mapping(m)
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in "\\PC{0,400}") {
        check(&text);
    }

    #[test]
    fn edited_bookinfo(which in 0usize..4, edits in prop::collection::vec(edit(), 1..6)) {
        let base = [BOOKINFO, GATEWAY, RULES, DELAY][which];
        check(&apply(base, &edits));
    }

    #[test]
    fn random_trees_in_every_envelope(kind in prop::sample::select(KINDS), spec in yaml_tree(), name in "[a-z0-9-]{0,10}") {
        let mut doc = yaml_serde::Mapping::new();
        doc.insert("apiVersion".into(), kind.0.into());
        doc.insert("kind".into(), kind.1.into());
        let mut meta = yaml_serde::Mapping::new();
        meta.insert("name".into(), name.into());
        doc.insert("metadata".into(), yaml_serde::Value::Mapping(meta));
        doc.insert(if kind.1 == "List" { "items" } else { "spec" }.into(), spec);
        let text = yaml_serde::to_string(&yaml_serde::Value::Mapping(doc)).unwrap_or_default();
        check(&text);
    }
}
