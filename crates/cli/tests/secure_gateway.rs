//! Istio's "Secure Gateways" task, step by step, in `weft up`: certificates made with the
//! openssl CLI as the task makes them, Secrets as `kubectl create secret ... --dry-run=client
//! -o yaml` writes them, the task's Gateway (port 443) and VirtualService applied with
//! `weft apply`, and curl as the task's client (`--resolve`, `--cacert`, `--cert`). SIMPLE for
//! one host, two hosts with their own credentials on one port (SNI), rotation by applying the
//! Secret again under load with no failed request, MUTUAL (no client certificate: refused;
//! with one: 418), and a Gateway naming a Secret that does not exist.
//!
//! Needs `openssl` and `curl` (CI installs them, see .ci/run); elsewhere the test says it is
//! skipped when they are missing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Mesh, children, free_port, stop, weft};

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(tool)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Runs a command that must succeed; its stdout.
fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The task's certificates: a CA per directory, and a certificate for `name` signed by it.
fn make_ca(dir: &Path, certs: &str, subject: &str) {
    std::fs::create_dir_all(dir.join(certs)).expect("mkdir");
    run(
        dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-sha256",
            "-nodes",
            "-days",
            "365",
            "-newkey",
            "rsa:2048",
            "-subj",
            subject,
            "-keyout",
            &format!("{certs}/example.com.key"),
            "-out",
            &format!("{certs}/example.com.crt"),
        ],
    );
}

fn make_cert(dir: &Path, certs: &str, name: &str, org: &str, serial: &str) {
    run(
        dir,
        "openssl",
        &[
            "req",
            "-out",
            &format!("{certs}/{name}.csr"),
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{certs}/{name}.key"),
            "-subj",
            &format!("/CN={name}/O={org}"),
        ],
    );
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "365",
            "-CA",
            &format!("{certs}/example.com.crt"),
            "-CAkey",
            &format!("{certs}/example.com.key"),
            "-set_serial",
            serial,
            "-in",
            &format!("{certs}/{name}.csr"),
            "-out",
            &format!("{certs}/{name}.crt"),
        ],
    );
}

fn base64_of(dir: &Path, file: &str) -> String {
    run(dir, "openssl", &["base64", "-A", "-in", file])
        .trim()
        .to_owned()
}

/// The Secret `kubectl create -n istio-system secret tls|generic NAME --from-file ...
/// --dry-run=client -o yaml` prints: `(key, file)` pairs; `tls` sets the TLS type.
fn secret_yaml(dir: &Path, name: &str, tls: bool, files: &[(&str, &str)]) -> String {
    let mut data: Vec<(&str, String)> =
        files.iter().map(|(k, f)| (*k, base64_of(dir, f))).collect();
    data.sort();
    let mut out = String::from("apiVersion: v1\ndata:\n");
    for (k, v) in data {
        out.push_str(&format!("  {k}: {v}\n"));
    }
    out.push_str(&format!(
        "kind: Secret\nmetadata:\n  creationTimestamp: null\n  name: {name}\n  namespace: istio-system\n"
    ));
    if tls {
        out.push_str("type: kubernetes.io/tls\n");
    }
    out
}

/// The task's Gateway: one HTTPS server per `(host, credential, mode)`, all on port 443.
fn gateway_yaml(servers: &[(&str, &str, &str)]) -> String {
    let mut out = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: mygateway\n\
         spec:\n  selector:\n    istio: ingressgateway # use istio default ingress gateway\n  servers:\n",
    );
    for (i, (host, credential, mode)) in servers.iter().enumerate() {
        out.push_str(&format!(
            "  - port:\n      number: 443\n      name: https-{i}\n      protocol: HTTPS\n    tls:\n\
             \x20     mode: {mode}\n      credentialName: {credential}\n    hosts:\n    - {host}\n"
        ));
    }
    out
}

/// The task's VirtualService for `host`, to httpbin.
fn virtual_service_yaml(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n\
         spec:\n  hosts:\n  - \"{host}\"\n  gateways:\n  - mygateway\n  http:\n  - match:\n\
         \x20   - uri:\n        prefix: /status\n    - uri:\n        prefix: /delay\n    route:\n\
         \x20   - destination:\n        port:\n          number: 8000\n        host: httpbin\n"
    )
}

/// curl as the task runs it; `(HTTP status or 0, verbose output)`.
fn curl(dir: &Path, port: u16, host: &str, cacert: &str, client: Option<&str>) -> (u16, String) {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}/status/418");
    let host_header = format!("-HHost:{host}");
    let mut args = vec![
        "-v",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        &host_header,
        "--resolve",
        &resolve,
        "--cacert",
        cacert,
    ];
    let (cert, key);
    if let Some(c) = client {
        cert = format!("{c}.crt");
        key = format!("{c}.key");
        args.extend(["--cert", &cert, "--key", &key]);
    }
    args.push(&url);
    let out = Command::new("curl")
        .args(&args)
        .current_dir(dir)
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Repeats `curl` until it answers `want` (the gateway takes config within a second).
fn until_status(
    dir: &Path,
    port: u16,
    host: &str,
    cacert: &str,
    client: Option<&str>,
    want: u16,
) -> String {
    let start = Instant::now();
    loop {
        let (code, text) = curl(dir, port, host, cacert, client);
        if code == want {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{host} never answered {want}; last {code}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn apply(state: &Path, file: &Path) -> String {
    let out = Command::new(common::WEFT)
        .args(["apply", "-f"])
        .arg(file)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("weft apply");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "weft apply {}: {text}",
        file.display()
    );
    text
}

#[test]
fn istios_secure_gateways_task() {
    if !have("openssl") || !have("curl") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have openssl and curl (.ci/run installs them)"
        );
        eprintln!("skipped: the task needs the openssl and curl commands");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("weft-secure-gw-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let dir = tmp.join("mesh");
    let state = tmp.join("state");
    let work = tmp.join("work");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::create_dir_all(&work).expect("mkdir");

    // httpbin, and the ingress gateway's Service with 443 published on a free port (the
    // built-in one publishes it on 8443; a test cannot count on that port being free).
    let port = free_port();
    std::fs::write(
        dir.join("httpbin.yaml"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: httpbin, labels: {{app: httpbin}}}}\n\
             spec: {{selector: {{app: httpbin}}, ports: [{{name: http, port: 8000}}]}}\n---\n\
             apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {{name: httpbin-v1, labels: {{app: httpbin, version: v1}}}}\n\
             spec: {{command: [weft, example, httpbin], ports: [{{name: http, port: 8000}}]}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: istio-ingressgateway, namespace: istio-system, \
             labels: {{app: istio-ingressgateway, istio: ingressgateway}}}}\n\
             spec:\n  selector: {{app: istio-ingressgateway, istio: ingressgateway}}\n  ports:\n\
             \x20 - {{name: https, port: 443, targetPort: {port}, protocol: TCP}}\n"
        ),
    )
    .expect("write mesh");
    let (mut mesh, stdout) = Mesh::up(&dir, &state);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });

    // The task's certificates (while the mesh starts).
    make_ca(&work, "example_certs1", "/O=example Inc./CN=example.com");
    make_cert(
        &work,
        "example_certs1",
        "httpbin.example.com",
        "httpbin organization",
        "0",
    );
    make_cert(
        &work,
        "example_certs1",
        "helloworld.example.com",
        "helloworld organization",
        "1",
    );
    make_cert(
        &work,
        "example_certs1",
        "client.example.com",
        "client organization",
        "1",
    );
    // The task names the second CA as the first; here it has a name of its own, so that the
    // rotation's client can trust both at once (OpenSSL picks a CA by name from a bundle).
    make_ca(&work, "example_certs2", "/O=example Inc. 2/CN=example.com");
    make_cert(
        &work,
        "example_certs2",
        "httpbin.example.com",
        "httpbin organization",
        "0",
    );

    let start = Instant::now();
    while !lines
        .lock()
        .expect("lines")
        .iter()
        .any(|l| l.contains("workloads started"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "weft up did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // 1. A TLS ingress gateway for a single host.
    let secret1 = write(
        &work,
        "httpbin-credential.yaml",
        &secret_yaml(
            &work,
            "httpbin-credential",
            true,
            &[
                ("tls.crt", "example_certs1/httpbin.example.com.crt"),
                ("tls.key", "example_certs1/httpbin.example.com.key"),
            ],
        ),
    );
    let out = apply(&state, &secret1);
    assert!(out.contains("secret/httpbin-credential created"), "{out}");
    let gw_simple = write(
        &work,
        "gateway.yaml",
        &gateway_yaml(&[("httpbin.example.com", "httpbin-credential", "SIMPLE")]),
    );
    let out = apply(&state, &gw_simple);
    assert!(!out.contains("warning"), "{out}");
    apply(
        &state,
        &write(
            &work,
            "vs-httpbin.yaml",
            &virtual_service_yaml("httpbin", "httpbin.example.com"),
        ),
    );
    let ca1 = "example_certs1/example.com.crt";
    let text = until_status(&work, port, "httpbin.example.com", ca1, None, 418);
    assert!(text.contains("CN=httpbin.example.com"), "{text}");

    // Key material is never printed.
    let key_b64 = base64_of(&work, "example_certs1/httpbin.example.com.key");
    let got = weft(&state, &["get", "secrets", "-o", "yaml"]);
    assert!(
        got.contains("httpbin-credential") && !got.contains(&key_b64[..40]),
        "{got}"
    );
    let dump = weft(
        &state,
        &["proxy-config", "all", "istio-ingressgateway", "-o", "json"],
    );
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    let applied = state.join("applied/secret.istio-system.httpbin-credential.yaml");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&applied)
            .expect("applied secret")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "{mode:o}");

    // 2. Several hosts, each with its own credential, on port 443 (SNI).
    apply(
        &state,
        &write(
            &work,
            "helloworld-credential.yaml",
            &secret_yaml(
                &work,
                "helloworld-credential",
                true,
                &[
                    ("tls.crt", "example_certs1/helloworld.example.com.crt"),
                    ("tls.key", "example_certs1/helloworld.example.com.key"),
                ],
            ),
        ),
    );
    apply(
        &state,
        &write(
            &work,
            "gateway-two.yaml",
            &gateway_yaml(&[
                ("httpbin.example.com", "httpbin-credential", "SIMPLE"),
                ("helloworld.example.com", "helloworld-credential", "SIMPLE"),
            ]),
        ),
    );
    apply(
        &state,
        &write(
            &work,
            "vs-helloworld.yaml",
            &virtual_service_yaml("helloworld", "helloworld.example.com"),
        ),
    );
    let text = until_status(&work, port, "helloworld.example.com", ca1, None, 418);
    assert!(text.contains("CN=helloworld.example.com"), "{text}");
    let (code, text) = curl(&work, port, "httpbin.example.com", ca1, None);
    assert_eq!(code, 418, "{text}");
    assert!(text.contains("CN=httpbin.example.com"), "{text}");

    // 3. Rotation: the Secret applied again with a certificate from another CA, while a
    // client that trusts both sends request after request. None fails; new handshakes get
    // the new certificate.
    let both = work.join("both-cas.crt");
    let bundle = [
        std::fs::read_to_string(work.join(ca1)).expect("ca1"),
        std::fs::read_to_string(work.join("example_certs2/example.com.crt")).expect("ca2"),
    ]
    .concat();
    std::fs::write(&both, bundle).expect("bundle");
    let rotated = write(
        &work,
        "httpbin-credential-2.yaml",
        &secret_yaml(
            &work,
            "httpbin-credential",
            true,
            &[
                ("tls.crt", "example_certs2/httpbin.example.com.crt"),
                ("tls.key", "example_certs2/httpbin.example.com.key"),
            ],
        ),
    );
    let done = Arc::new(AtomicBool::new(false));
    let load = {
        let (work, both, done) = (work.clone(), both.clone(), done.clone());
        std::thread::spawn(move || {
            let both = both.to_str().expect("utf-8").to_owned();
            let mut results = Vec::new();
            let start = Instant::now();
            // Bounded: until told to stop (after the rotation has been seen), at most 30 s.
            while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                results.push(curl(&work, port, "httpbin.example.com", &both, None));
            }
            results
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let out = apply(&state, &rotated);
    assert!(
        out.contains("secret/httpbin-credential configured"),
        "{out}"
    );
    let ca2 = "example_certs2/example.com.crt";
    until_status(&work, port, "httpbin.example.com", ca2, None, 418);
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::Relaxed);
    let results = load.join().expect("load");
    let failed: Vec<&(u16, String)> = results.iter().filter(|(c, _)| *c != 418).collect();
    eprintln!(
        "rotation under load: {} requests, {} failed",
        results.len(),
        failed.len()
    );
    assert!(results.len() >= 50, "too few requests: {}", results.len());
    assert!(
        failed.is_empty(),
        "failed during rotation: {:?}",
        failed.first()
    );
    // The old CA no longer verifies what new handshakes get.
    let (code, _) = curl(&work, port, "httpbin.example.com", ca1, None);
    assert_eq!(code, 0, "the old certificate is still served");

    // 4. A Gateway naming a Secret that does not exist: `weft apply` says so, the server is
    // left out, the rest keeps serving.
    let out = apply(
        &state,
        &write(
            &work,
            "gateway-missing.yaml",
            &gateway_yaml(&[
                ("httpbin.example.com", "httpbin-credential", "SIMPLE"),
                ("helloworld.example.com", "no-such-credential", "SIMPLE"),
            ]),
        ),
    );
    assert!(
        out.contains("warning")
            && out.contains("Gateway default/mygateway")
            && out.contains("Secret istio-system/no-such-credential not found"),
        "{out}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let (code, text) = curl(&work, port, "httpbin.example.com", ca2, None);
    assert_eq!(code, 418, "{text}");
    let (code, _) = curl(&work, port, "helloworld.example.com", ca1, None);
    assert_ne!(code, 418, "helloworld served without its credential");

    // 5. Mutual TLS: the task's generic Secret with the CA, a MUTUAL server. curl sends its
    // version 1 client certificate with the CA it found it under.
    apply(
        &state,
        &write(
            &work,
            "httpbin-credential-mutual.yaml",
            &secret_yaml(
                &work,
                "httpbin-credential",
                false,
                &[
                    ("tls.key", "example_certs1/httpbin.example.com.key"),
                    ("tls.crt", "example_certs1/httpbin.example.com.crt"),
                    ("ca.crt", "example_certs1/example.com.crt"),
                ],
            ),
        ),
    );
    apply(
        &state,
        &write(
            &work,
            "gateway-mutual.yaml",
            &gateway_yaml(&[("httpbin.example.com", "httpbin-credential", "MUTUAL")]),
        ),
    );
    let client = "example_certs1/client.example.com";
    until_status(&work, port, "httpbin.example.com", ca1, Some(client), 418);
    let (code, text) = curl(&work, port, "httpbin.example.com", ca1, None);
    assert_eq!(code, 0, "served without a client certificate:\n{text}");
    // TLS 1.3: the client finishes its side first, then the gateway's alert ends the
    // connection; curl reports the alert, or the closed connection if it was writing.
    assert!(
        [
            "alert",
            "certificate required",
            "Broken pipe",
            "reset by peer"
        ]
        .iter()
        .any(|said| text.contains(said)),
        "{text}"
    );

    let kids = children(mesh.pid());
    stop(&mut mesh, kids);
    reader.join().expect("reader");
    let _ = std::fs::remove_dir_all(&tmp);
}
