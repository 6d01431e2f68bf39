use super::*;
use crate::diag::code;

fn load(text: &str) -> Loaded {
    load_str("test.yaml", text)
}

/// `(line, column, code, field, message)` of each diagnostic, for compact assertions.
fn diags(l: &Loaded) -> Vec<(usize, usize, &'static str, String, String)> {
    l.diagnostics
        .iter()
        .map(|d| {
            let (line, col) = d.location.as_ref().map_or((0, 0), |l| (l.line, l.column));
            (
                line,
                col,
                d.code,
                d.field.clone().unwrap_or_default(),
                d.message.clone(),
            )
        })
        .collect()
}

const VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
";

#[test]
fn loads_every_istio_api_version() {
    for v in ["v1alpha3", "v1beta1", "v1"] {
        let l = load(&VS.replace(
            "networking.istio.io/v1",
            &format!("networking.istio.io/{v}"),
        ));
        assert_eq!(l.resources.len(), 1, "{v}: {:?}", l.diagnostics);
        assert_eq!(l.resources[0].kind(), "VirtualService");
        assert_eq!(l.resources[0].namespace(), "default");
    }
    let l = load(&VS.replace("networking.istio.io/v1", "networking.istio.io/v2"));
    assert!(l.resources.is_empty());
    let d = diags(&l);
    assert_eq!((d[0].0, d[0].3.as_str()), (1, "apiVersion"));
    assert!(
        d[0].4.contains("networking.istio.io/v1alpha3"),
        "{}",
        d[0].4
    );
}

#[test]
fn multi_document_with_leading_comment_and_trailing_separator() {
    let text = format!(
        "# a comment-only first document\n---\n{VS}---\n{}---\n",
        VS.replace("name: reviews", "name: ratings")
    );
    let l = load(&text);
    assert_eq!(l.resources.len(), 2, "{:?}", l.diagnostics);
    assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
    // Positions of the second resource point into its own document.
    let loc = l.resources[1].locate("metadata.name").unwrap();
    assert_eq!(loc.line, 16);
    // Comments before the first `---` are not a document of their own.
    assert_eq!(loc.document, 2);
}

#[test]
fn unknown_field_is_located_with_suggestion() {
    let text = VS.replace("subset: v1}", "subset: v1}\n      weigth: 100");
    let l = load(&text);
    assert!(l.resources.is_empty());
    let d = diags(&l);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].0, d[0].1, d[0].2), (10, 7, code::SCHEMA));
    assert_eq!(d[0].3, "spec.http[0].route[0].weigth");
    assert!(d[0].4.contains("did you mean `weight`?"), "{}", d[0].4);
    let text = l.diagnostics[0].to_string();
    assert!(text.starts_with("test.yaml:10:7: error[WA0003] VirtualService default/reviews (document 1) spec.http[0].route[0].weigth: unknown field"), "{text}");
}

#[test]
fn misspelt_top_level_field() {
    let l = load(&VS.replace("spec:", "sepc:"));
    let d = diags(&l);
    assert!(
        d.iter()
            .any(|d| d.3 == "sepc" && d.4.contains("did you mean `spec`?")),
        "{d:?}"
    );
}

#[test]
fn all_errors_are_reported_with_paths() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: banana
    route:
    - destination: {host: reviews}
      weight: -5
    - destination: {host: Bad_Host}
";
    let l = load(text);
    let fields: Vec<String> = diags(&l).into_iter().map(|d| d.3).collect();
    assert!(
        fields.contains(&"spec.http[0].timeout".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.http[0].route[0].weight".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.http[0].route[1].destination.host".to_owned()),
        "{fields:?}"
    );
}

#[test]
fn list_kind_items_are_resources() {
    let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
  spec: {ports: [{name: http, port: 80}], selector: {app: a}}
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: a}
  spec: {host: a, subsets: [{name: v1, labels: {version: v1}, bogus: 1}]}
";
    let l = load(text);
    assert_eq!(l.resources.len(), 1);
    let d = diags(&l);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].0, d[0].3.as_str()), (11, "spec.subsets[0].bogus"));
}

#[test]
fn kubernetes_kinds_are_tolerant() {
    let text = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  uid: 1234
  creationTimestamp: null
spec:
  sessionAffinity: None
  ports: [{name: http, port: 80, targetPort: 8080}]
  selector: {app: web}
status: {loadBalancer: {}}
";
    let l = load(text);
    assert_eq!(l.resources.len(), 1, "{:?}", l.diagnostics);
    assert!(l.diagnostics.is_empty());
}

#[test]
fn unknown_and_unsupported_kinds_are_skipped() {
    let text = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data: {a: b}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: f}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: VirtualServce
metadata: {name: v}
";
    let l = load(text);
    assert!(l.resources.is_empty());
    let d = diags(&l);
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(
        (d[0].2, l.diagnostics[0].severity),
        (code::SKIPPED, Severity::Info)
    );
    assert_eq!(
        (d[1].2, l.diagnostics[1].severity),
        (code::SKIPPED, Severity::Warning)
    );
    // A misspelt Istio kind is not skipped quietly.
    assert_eq!(
        (d[2].2, l.diagnostics[2].severity),
        (code::SCHEMA, Severity::Error)
    );
    assert!(
        d[2].4.contains("did you mean `VirtualService`?"),
        "{}",
        d[2].4
    );
}

#[test]
fn syntax_errors_are_located() {
    let l = load("apiVersion: v1\nkind: Service\nmetadata:\n  name: [a\n");
    assert!(l.unreadable());
    let d = diags(&l);
    assert_eq!(d[0].2, code::SYNTAX);
    assert!(d[0].0 >= 4, "{d:?}");
}

#[test]
fn duplicate_keys_are_errors() {
    let l = load("apiVersion: v1\nkind: Service\nkind: Pod\nmetadata: {name: a}\n");
    assert!(l.error_count() > 0);
}

#[test]
fn non_object_documents() {
    for text in ["- a\n- b\n", "just a string\n", "42\n"] {
        let l = load(text);
        assert_eq!(l.error_count(), 1, "{text:?}: {:?}", l.diagnostics);
    }
    let l = load("kind: Service\n");
    assert!(
        diags(&l)[0]
            .4
            .contains("missing required field `apiVersion`")
    );
}

#[test]
fn duplicates_in_one_file_are_errors() {
    let text = format!("{VS}---\n{VS}");
    let l = load(&text);
    let d: Vec<_> = l
        .diagnostics
        .iter()
        .filter(|d| d.code == code::DUPLICATE)
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].severity, Severity::Error);
    assert_eq!(d[0].location.as_ref().unwrap().line, 14);
}

#[test]
fn duplicates_across_files_replace_in_order() {
    let dir = std::env::temp_dir().join(format!("weft-load-dup-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.yaml"), VS).unwrap();
    std::fs::write(
        dir.join("sub/b.yml"),
        VS.replace("subset: v1", "subset: v2"),
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml: [").unwrap();
    let l = load_paths(&[&dir]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(l.files, 2);
    assert_eq!(l.resources.len(), 2);
    let d: Vec<_> = l
        .diagnostics
        .iter()
        .filter(|d| d.code == code::DUPLICATE)
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].severity, Severity::Info);
    let eff = l.effective();
    assert_eq!(eff.len(), 1);
    assert!(
        eff[0]
            .origin
            .as_ref()
            .unwrap()
            .source
            .path
            .ends_with("sub/b.yml")
    );
}

#[test]
fn missing_path_is_unreadable() {
    let l = load_paths(&["/nonexistent/weft/path"]);
    assert!(l.unreadable());
    assert_eq!(l.diagnostics[0].code, code::UNREADABLE);
}

#[test]
fn json_files_load() {
    let text = r#"{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
 "metadata": {"name": "r"}, "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}"#;
    let l = load_str("x.json", text);
    assert_eq!(l.resources.len(), 1, "{:?}", l.diagnostics);
}

#[test]
fn other_groups_with_known_kind_names_are_not_weft_kinds() {
    let text = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: istio}
---
apiVersion: example.com/v1
kind: Service
metadata: {name: s}
";
    let l = load(text);
    assert!(l.resources.is_empty());
    assert_eq!(l.error_count(), 0, "{:?}", l.diagnostics);
    let d = diags(&l);
    assert_eq!(l.diagnostics[0].severity, Severity::Warning);
    assert!(d[0].4.contains("Kubernetes Gateway API"), "{}", d[0].4);
    assert_eq!(l.diagnostics[1].severity, Severity::Info);
}
