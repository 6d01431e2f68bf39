//! Kubernetes `Deployment` (apps/v1) and `Pod` (core/v1): the workloads a mesh routes to. The
//! mesh reads their labels (which Services and policies select them), service account (their
//! identity), container ports and, for a Pod, its IPs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::common::ObjectMeta;
use crate::kube::service::{port_name, protocol};
use crate::validate::{Cx, Validate, rules};

/// A Deployment document (`metadata` is read by the loader).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    #[serde(default)]
    pub spec: DeploymentSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// How many Pods to run; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Which Pods the Deployment owns; must select the template's labels.
    #[serde(default)]
    pub selector: LabelSelector,
    /// The Pods it creates.
    #[serde(default)]
    pub template: PodTemplateSpec,
}

impl DeploymentSpec {
    /// `replicas`, defaulted.
    pub fn replicas(&self) -> i32 {
        self.replicas.unwrap_or(1)
    }
}

/// Kubernetes' `LabelSelector`: all `matchLabels` and all `matchExpressions` must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based requirement: `key` `In`/`NotIn` `values`, or `key` `Exists`/`DoesNotExist`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// True when the selector has no requirements (and so, in a Deployment, is invalid).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// True when `labels` satisfy every requirement. An unknown operator matches nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        crate::common::selector_matches(&self.match_labels, labels)
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl LabelSelectorRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.contains(v)),
            "NotIn" => value.is_none_or(|v| !self.values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    }
}

/// A Pod template: the labels and spec each created Pod gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

/// The parts of a Pod's spec a mesh reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The service account the Pod runs as: its mesh identity
    /// (`spiffe://<trust domain>/ns/<namespace>/sa/<name>`). Default `default`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// Deprecated alias of `serviceAccountName`, used when that is unset.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    /// The Pod uses the node's network namespace; the mesh does not capture its traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
}

impl PodSpec {
    /// The service account in effect, as Kubernetes resolves it.
    pub fn service_account(&self) -> &str {
        [&self.service_account_name, &self.service_account]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("default", String::as_str)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Ports the container listens on. Informational in Kubernetes, but a Service's named
    /// `targetPort` refers to these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// The name a Service's `targetPort` may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: u32,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A Pod document (`metadata` is read by the loader).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

/// Where a running Pod is reachable (set by Kubernetes; present in `kubectl get -o yaml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// All of the Pod's IPs (one per IP family); the first equals `podIP`.
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodIp {
    #[serde(default)]
    pub ip: String,
}

impl Validate for Deployment {
    fn validate(&self, cx: &mut Cx) {
        cx.field("spec", |cx| self.spec.validate(cx));
    }
}

impl Validate for DeploymentSpec {
    fn validate(&self, cx: &mut Cx) {
        if let Some(n) = self.replicas
            && n < 0
        {
            cx.error_at("replicas", format!("replicas {n} must not be negative"));
        }
        cx.field("selector", |cx| {
            if self.selector.is_empty() {
                cx.error("a Deployment needs a selector that matches its template's labels");
            }
            self.selector.validate(cx);
        });
        cx.field("template", |cx| {
            cx.field("metadata", |cx| {
                cx.field("labels", |cx| {
                    rules::labels(cx, &self.template.metadata.labels);
                    if !self.selector.is_empty()
                        && !self.selector.matches(&self.template.metadata.labels)
                    {
                        cx.error(
                            "the template's labels do not match `spec.selector`: the Deployment \
                             would not own the Pods it creates",
                        );
                    }
                });
            });
            cx.field("spec", |cx| self.template.spec.validate(cx));
        });
    }
}

impl Validate for LabelSelector {
    fn validate(&self, cx: &mut Cx) {
        cx.field("matchLabels", |cx| rules::labels(cx, &self.match_labels));
        cx.each("matchExpressions", &self.match_expressions, |cx, r| {
            cx.check_at("key", rules::label_key(&r.key));
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => {
                    cx.error_at(
                        "values",
                        format!("operator {} needs at least one value", r.operator),
                    );
                }
                "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                    cx.error_at("values", format!("operator {} takes no values", r.operator));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                op => cx.error_at(
                    "operator",
                    format!("unknown operator {op:?}; expected In, NotIn, Exists or DoesNotExist"),
                ),
            }
            cx.field("values", |cx| {
                for (i, v) in r.values.iter().enumerate() {
                    cx.index(i, |cx| cx.check(rules::label_value(v)));
                }
            });
        });
    }
}

impl Validate for PodSpec {
    fn validate(&self, cx: &mut Cx) {
        if !self.service_account_name.is_empty()
            && !rules::is_dns1123_subdomain(&self.service_account_name)
        {
            cx.error_at(
                "serviceAccountName",
                format!(
                    "{:?} is not a valid service account name: lower-case alphanumerics, '-' \
                     and '.'",
                    self.service_account_name
                ),
            );
        }
        if !self.service_account.is_empty() {
            cx.deprecated("serviceAccount", "`serviceAccountName`");
            if !self.service_account_name.is_empty()
                && self.service_account != self.service_account_name
            {
                cx.field("serviceAccount", |cx| {
                    cx.warn(format!(
                        "ignored: serviceAccountName {:?} takes precedence",
                        self.service_account_name
                    ))
                });
            }
        }
        if self.containers.is_empty() {
            cx.error_at("containers", "a Pod needs at least one container");
        }
        cx.each("containers", &self.containers, |cx, c| c.validate(cx));
        cx.each("initContainers", &self.init_containers, |cx, c| {
            c.validate(cx)
        });
    }
}

impl Validate for Container {
    fn validate(&self, cx: &mut Cx) {
        let mut names = BTreeSet::new();
        cx.each("ports", &self.ports, |cx, p| {
            cx.check_at("containerPort", rules::port(p.container_port));
            if let Some(name) = &p.name {
                cx.check_at("name", port_name(name));
                if !names.insert(name.clone()) {
                    cx.error_at("name", format!("duplicate port name {name:?}"));
                }
            }
            if let Some(proto) = &p.protocol {
                cx.check_at("protocol", protocol(proto));
            }
        });
    }
}

impl Validate for Pod {
    fn validate(&self, cx: &mut Cx) {
        cx.field("spec", |cx| self.spec.validate(cx));
        cx.field("status", |cx| {
            if let Some(ip) = &self.status.pod_ip {
                cx.check_at("podIP", rules::ip(ip));
            }
            cx.each("podIPs", &self.status.pod_ips, |cx, p| {
                cx.check_at("ip", rules::ip(&p.ip))
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{doc_errors, doc_warnings};

    fn deployment(yaml: &str) -> Deployment {
        match yaml_serde::from_str(yaml) {
            Ok(d) => d,
            Err(e) => panic!("{yaml}\n{e}"),
        }
    }

    fn pod(yaml: &str) -> Pod {
        match yaml_serde::from_str(yaml) {
            Ok(p) => p,
            Err(e) => panic!("{yaml}\n{e}"),
        }
    }

    // As in Istio's samples/bookinfo/platform/kube/bookinfo.yaml.
    const REVIEWS_V1: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
  labels: {app: reviews, version: v1}
spec:
  replicas: 1
  selector:
    matchLabels: {app: reviews, version: v1}
  template:
    metadata:
      labels: {app: reviews, version: v1}
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - name: reviews
        image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.3
        imagePullPolicy: IfNotPresent
        env:
        - name: LOG_DIR
          value: "/tmp/logs"
        ports:
        - containerPort: 9080
        volumeMounts:
        - name: tmp
          mountPath: /tmp
      volumes:
      - name: tmp
        emptyDir: {}
"#;

    // A manifest as `kubectl get -o yaml` prints it, full of fields the mesh does not read.
    const FULL: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: productpage-v1
  namespace: default
  annotations: {deployment.kubernetes.io/revision: "1"}
  generation: 1
  uid: 0b7c0a5e-5f53-4b8b-9d0c-3a0f4bd9e0a1
spec:
  progressDeadlineSeconds: 600
  replicas: 2
  revisionHistoryLimit: 10
  selector:
    matchLabels: {app: productpage}
    matchExpressions:
    - {key: version, operator: In, values: [v1, v2]}
    - {key: canary, operator: DoesNotExist}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}
  template:
    metadata:
      creationTimestamp: null
      labels: {app: productpage, version: v1}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9080"}
    spec:
      serviceAccountName: bookinfo-productpage
      securityContext: {runAsUser: 1000, fsGroup: 2000}
      terminationGracePeriodSeconds: 30
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      nodeSelector: {kubernetes.io/os: linux}
      tolerations:
      - {key: node-role, operator: Exists, effect: NoSchedule}
      initContainers:
      - name: setup
        image: busybox:1.36
        command: ["sh", "-c", "mkdir -p /tmp/logs"]
      containers:
      - name: productpage
        image: docker.io/istio/examples-bookinfo-productpage-v1:1.20.3
        imagePullPolicy: IfNotPresent
        args: ["--port", "9080"]
        ports:
        - {name: http, containerPort: 9080, protocol: TCP}
        - {name: metrics, containerPort: 15090}
        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {cpu: "1", memory: 512Mi}
        readinessProbe:
          httpGet: {path: /health, port: http, scheme: HTTP}
          initialDelaySeconds: 5
          periodSeconds: 10
        livenessProbe:
          tcpSocket: {port: 9080}
        securityContext:
          runAsUser: 1000
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
        terminationMessagePath: /dev/termination-log
        volumeMounts:
        - {name: tmp, mountPath: /tmp}
      volumes:
      - name: tmp
        emptyDir: {medium: Memory}
      - name: config
        configMap: {name: productpage-config, defaultMode: 420}
status:
  availableReplicas: 2
  observedGeneration: 1
  readyReplicas: 2
  replicas: 2
  conditions:
  - {type: Available, status: "True", reason: MinimumReplicasAvailable}
"#;

    #[test]
    fn valid_deployments() {
        for yaml in [REVIEWS_V1, FULL] {
            assert_eq!(doc_errors(&deployment(yaml)), [], "{yaml}");
        }
        let full = deployment(FULL);
        assert_eq!(full.spec.replicas(), 2);
        assert_eq!(
            full.spec.template.spec.service_account(),
            "bookinfo-productpage"
        );
        assert_eq!(
            full.spec.template.spec.containers[0].ports[0]
                .name
                .as_deref(),
            Some("http")
        );
        assert_eq!(full.spec.template.spec.init_containers.len(), 1);
        assert_eq!(
            full.spec
                .template
                .metadata
                .labels
                .get("version")
                .map(String::as_str),
            Some("v1")
        );
    }

    #[test]
    fn valid_pods() {
        let p = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1-abc, labels: {app: ratings, version: v1}}
spec:
  serviceAccount: bookinfo-ratings
  hostNetwork: false
  containers:
  - name: ratings
    image: docker.io/istio/examples-bookinfo-ratings-v1:1.20.3
    ports: [{containerPort: 9080}]
status:
  phase: Running
  hostIP: 172.18.0.2
  podIP: 10.244.0.7
  podIPs: [{ip: 10.244.0.7}, {ip: "fd00::7"}]
  containerStatuses: [{name: ratings, ready: true, restartCount: 0}]
"#);
        assert_eq!(doc_errors(&p), []);
        assert_eq!(p.spec.service_account(), "bookinfo-ratings");
        assert_eq!(p.status.pod_ip.as_deref(), Some("10.244.0.7"));
        assert_eq!(doc_warnings(&p).len(), 1, "serviceAccount is deprecated");
        assert_eq!(
            pod("spec: {containers: [{name: a}]}")
                .spec
                .service_account(),
            "default"
        );
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [("app", "reviews"), ("version", "v2")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let cases = [
            ("matchLabels: {app: reviews}", true),
            ("matchLabels: {app: ratings}", false),
            (
                "matchExpressions: [{key: version, operator: In, values: [v1, v2]}]",
                true,
            ),
            (
                "matchExpressions: [{key: version, operator: NotIn, values: [v2]}]",
                false,
            ),
            (
                "matchExpressions: [{key: tier, operator: NotIn, values: [x]}]",
                true,
            ),
            ("matchExpressions: [{key: app, operator: Exists}]", true),
            (
                "matchExpressions: [{key: app, operator: DoesNotExist}]",
                false,
            ),
            ("matchExpressions: [{key: app, operator: Equals}]", false),
        ];
        for (yaml, want) in cases {
            let s: LabelSelector = match yaml_serde::from_str(yaml) {
                Ok(s) => s,
                Err(e) => panic!("{yaml}: {e}"),
            };
            assert_eq!(s.matches(&labels), want, "{yaml}");
        }
    }

    #[test]
    fn invalid_deployments() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "spec:\n  selector: {matchLabels: {app: reviews}}\n  template:\n    metadata: {labels: {app: ratings}}\n    spec: {containers: [{name: a}]}",
                &[(
                    "spec.template.metadata.labels",
                    "do not match `spec.selector`",
                )],
            ),
            (
                "spec:\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: a}]}",
                &[("spec.selector", "needs a selector")],
            ),
            (
                "spec:\n  replicas: -1\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: a}]}",
                &[("spec.replicas", "negative")],
            ),
            (
                "spec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {}",
                &[("spec.template.spec.containers", "at least one container")],
            ),
            (
                "spec:\n  selector:\n    matchLabels: {app: a}\n    matchExpressions: [{key: v, operator: In}, {key: v, operator: Exists, values: [x]}, {key: v, operator: Equals}]\n  template:\n    metadata: {labels: {app: a, v: x}}\n    spec: {containers: [{name: a}]}",
                &[
                    (
                        "spec.selector.matchExpressions[0].values",
                        "at least one value",
                    ),
                    (
                        "spec.selector.matchExpressions[1].values",
                        "takes no values",
                    ),
                    (
                        "spec.selector.matchExpressions[2].operator",
                        "unknown operator",
                    ),
                    ("spec.template.metadata.labels", "do not match"),
                ],
            ),
            (
                r#"
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      serviceAccountName: Bad_Name
      containers:
      - name: a
        ports:
        - {containerPort: 0}
        - {containerPort: 70000, name: http, protocol: HTTP}
        - {containerPort: 8080, name: http}
        - {containerPort: 8081, name: web_port}
      initContainers:
      - name: init
        ports: [{containerPort: 65536}]
"#,
                &[
                    (
                        "spec.template.spec.serviceAccountName",
                        "not a valid service account name",
                    ),
                    (
                        "spec.template.spec.containers[0].ports[0].containerPort",
                        "1..65535",
                    ),
                    (
                        "spec.template.spec.containers[0].ports[1].containerPort",
                        "1..65535",
                    ),
                    (
                        "spec.template.spec.containers[0].ports[1].protocol",
                        "expected TCP, UDP or SCTP",
                    ),
                    (
                        "spec.template.spec.containers[0].ports[2].name",
                        "duplicate port name",
                    ),
                    (
                        "spec.template.spec.containers[0].ports[3].name",
                        "is invalid",
                    ),
                    (
                        "spec.template.spec.initContainers[0].ports[0].containerPort",
                        "1..65535",
                    ),
                ],
            ),
        ];
        for (yaml, want) in cases {
            let got = doc_errors(&deployment(yaml));
            assert_eq!(got.len(), want.len(), "{yaml}: {got:?}");
            for ((path, msg), (want_path, want_msg)) in got.iter().zip(want.iter()) {
                assert_eq!(path, want_path, "{yaml}: {msg}");
                assert!(msg.contains(want_msg), "{yaml}: {msg}");
            }
        }
    }

    #[test]
    fn invalid_pods() {
        let got = doc_errors(&pod(
            "spec: {containers: [{name: a}]}\nstatus: {podIP: 10.0.0, podIPs: [{ip: x}]}",
        ));
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["status.podIP", "status.podIPs[0].ip"]);
        let got = doc_warnings(&pod(
            "spec: {serviceAccountName: a, serviceAccount: b, containers: [{name: a}]}",
        ));
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["spec.serviceAccount", "spec.serviceAccount"]);
    }
}
