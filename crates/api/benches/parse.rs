//! Loading benchmark: 10,000 resources (Services, Workloads, VirtualServices with matches,
//! retries and faults, DestinationRules with subsets and traffic policy) as one multi-document
//! YAML stream, through the whole front end: parse, decode, validate; then analyze.
//!
//! Run with `bench/parse.sh` (or `cargo bench -p weft-api --bench parse`). Prints the median
//! and best of several runs; nothing here asserts on time.

use std::fmt::Write;
use std::time::{Duration, Instant};

const SERVICES: usize = 2_500;
/// Runs to take the median of; `WEFT_BENCH_RUNS` overrides (1 for a profiler).
fn runs() -> usize {
    std::env::var("WEFT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

fn corpus() -> String {
    let mut y = String::new();
    for i in 0..SERVICES {
        let ns = format!("ns{}", i % 20);
        let _ = write!(
            y,
            "\
apiVersion: v1
kind: Service
metadata: {{name: svc{i}, namespace: {ns}, labels: {{app: svc{i}}}}}
spec:
  selector: {{app: svc{i}}}
  ports:
  - {{name: http, port: 9080, targetPort: 9080}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: svc{i}-v1, namespace: {ns}, labels: {{app: svc{i}, version: v1}}}}
spec:
  command: [\"app\", \"--port\", \"9080\"]
  serviceAccount: sa{i}
  ports: [{{name: http, port: 9080, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  hosts: [svc{i}]
  http:
  - name: canary
    match:
    - headers:
        end-user: {{exact: jason}}
      uri: {{prefix: /api/v1/}}
    - uri: {{regex: '^/items/[0-9]+$'}}
    fault:
      delay: {{percentage: {{value: 10}}, fixedDelay: 5s}}
    route:
    - destination: {{host: svc{i}, subset: v2}}
      weight: 10
    - destination: {{host: svc{i}, subset: v1}}
      weight: 90
    retries: {{attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure,refused-stream'}}
    timeout: 10s
  - route:
    - destination: {{host: svc{i}, subset: v1, port: {{number: 9080}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  host: svc{i}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 100, connectTimeout: 30ms}}
      http: {{http1MaxPendingRequests: 10, maxRequestsPerConnection: 10}}
    outlierDetection: {{consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}}
    loadBalancer: {{simple: LEAST_REQUEST}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - name: v2
    labels: {{version: v2}}
    trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}
---
"
        );
    }
    y
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let text = corpus();
    let mut load_times = Vec::new();
    let mut analyze_times = Vec::new();
    let mut count = 0;
    let runs = runs();
    for _ in 0..runs {
        let start = Instant::now();
        let loaded = weft_api::load_str("corpus.yaml", &text);
        load_times.push(start.elapsed());
        assert_eq!(
            loaded.error_count(),
            0,
            "corpus must be valid: {:?}",
            loaded.diagnostics.first()
        );
        count = loaded.resources.len();
        let start = Instant::now();
        let findings = weft_api::analyze::analyze(&loaded.resources);
        analyze_times.push(start.elapsed());
        std::hint::black_box(findings);
    }
    let mb = text.len() as f64 / 1e6;
    let (load, analyze) = (median(load_times.clone()), median(analyze_times.clone()));
    println!("resources: {count} ({mb:.1} MB of YAML), {runs} runs");
    println!(
        "load+validate: median {:.1} ms, best {:.1} ms ({:.0} resources/s)",
        load.as_secs_f64() * 1e3,
        load_times
            .iter()
            .min()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3,
        count as f64 / load.as_secs_f64()
    );
    println!(
        "analyze: median {:.1} ms, best {:.1} ms",
        analyze.as_secs_f64() * 1e3,
        analyze_times
            .iter()
            .min()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    );
    println!(
        "RESULT parse_10k_ms={:.1} analyze_10k_ms={:.1}",
        load.as_secs_f64() * 1e3,
        analyze.as_secs_f64() * 1e3
    );
}
