//! A crashing replica costs no requests: bookinfo in `weft up` with three productpage
//! replicas behind Istio's bookinfo gateway, under load, while two of the replicas' apps are
//! SIGKILLed. Istio's default retry policy (503 retried on another endpoint) and readiness
//! that follows the app (an exited app is no endpoint until it listens again) hide the crashes.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Mesh, WEFT, children, free_port, stop, weft};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The pid of the app process of replica `pod` (its environment names it), among `weft up`'s
/// children.
fn app_pid(up: u32, pod: &str) -> Option<u32> {
    let want = format!("POD_NAME={pod}");
    children(up).into_iter().find(|p| {
        std::fs::read(format!("/proc/{p}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
    })
}

/// `Code 200 : 1234 (99.9 %)` lines of `weft load`'s report: status -> count.
fn codes(report: &str) -> BTreeMap<i32, u64> {
    report
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Code ")?;
            let (code, rest) = rest.split_once(" : ")?;
            let count = rest.split_whitespace().next()?;
            Some((code.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

#[test]
fn killing_replicas_under_load_fails_no_request() {
    let tmp = std::env::temp_dir().join(format!("weft-chaos-test-{}", std::process::id()));
    let dir = tmp.join("bookinfo");
    let state = tmp.join("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let bookinfo = std::fs::read_to_string(Path::new(REPO).join("examples/bookinfo/bookinfo.yaml"))
        .expect("bookinfo.yaml");
    let productpage = "  command: [\"weft\", \"example\", \"productpage\"]\n";
    assert!(bookinfo.contains(productpage), "bookinfo.yaml changed");
    std::fs::write(
        dir.join("bookinfo.yaml"),
        bookinfo.replace(productpage, &format!("{productpage}  replicas: 3\n")),
    )
    .expect("write bookinfo");
    let port = free_port();
    let gateway = tmp.join("bookinfo-gateway.yaml");
    std::fs::write(
        &gateway,
        std::fs::read_to_string(
            Path::new(REPO).join("examples/bookinfo/networking/bookinfo-gateway.yaml"),
        )
        .expect("gateway yaml")
        .replace("number: 80\n", &format!("number: {port}\n")),
    )
    .expect("write gateway");

    let (mut mesh, stdout) = Mesh::up(&dir, &state);
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                log.lock().expect("log").push(line);
            }
        })
    };
    let logged = |needle: &str| log.lock().expect("log").iter().any(|l| l.contains(needle));
    let start = Instant::now();
    while !logged("workloads started") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the mesh did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    weft(&state, &["apply", "-f", gateway.to_str().expect("utf-8")]);
    let url = format!("http://127.0.0.1:{port}/productpage");
    let start = Instant::now();
    loop {
        let out = Command::new(WEFT)
            .args(["load", "-c", "1", "-n", "3", &url])
            .output()
            .expect("weft load");
        if codes(&String::from_utf8_lossy(&out.stdout)).get(&200) == Some(&3) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the page never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Load through the gateway while two replicas' apps are killed, 3 s apart.
    let load = Command::new(WEFT)
        .args(["load", "-c", "8", "-t", "10s", &url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("weft load");
    let up = mesh.pid();
    for (pause, pod) in [(2, "productpage-v1-0"), (3, "productpage-v1-1")] {
        std::thread::sleep(Duration::from_secs(pause));
        let pid = app_pid(up, pod).unwrap_or_else(|| panic!("no app process for {pod}"));
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        assert!(killed.is_ok_and(|s| s.success()), "kill {pod} ({pid})");
    }
    let out = load.wait_with_output().expect("weft load output");
    let report = String::from_utf8_lossy(&out.stdout);
    let codes = codes(&report);
    let total: u64 = codes.values().sum();
    let failed: u64 = codes
        .iter()
        .filter(|(c, _)| **c != 200)
        .map(|(_, n)| n)
        .sum();
    eprintln!("{report}");
    assert!(total >= 500, "too few requests to judge: {report}");
    // At most 0.1%: a request already in flight on a killed app may be lost.
    assert!(
        failed * 1000 <= total,
        "{failed} of {total} requests failed:\n{report}"
    );

    // The crashes were seen: each replica left the endpoints and came back.
    let start = Instant::now();
    for pod in ["productpage-v1-0", "productpage-v1-1"] {
        for what in ["left the endpoints", "rejoined the endpoints"] {
            let needle = format!("{pod} {what}");
            while !logged(&needle) {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{needle:?} not in the output:\n{}",
                    log.lock().expect("log").join("\n")
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    let kids = children(up);
    stop(&mut mesh, kids);
    let _ = reader.join();
    let _ = std::fs::remove_dir_all(&tmp);
}
