//! bookinfo through `weft up`, as Istio's traffic-management tasks describe it: reached
//! through the ingress gateway, with each task's YAML applied by `weft apply` while it runs.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Mesh, children, free_port, stop, weft};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// One HTTP/1.1 exchange through the gateway: status, headers (lower-case names), body.
fn http(port: u16, request: &str) -> Option<(u16, BTreeMap<String, String>, String)> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((status, headers, body.to_owned()))
}

/// The product page, as `user` (a session cookie) or anonymous: status and HTML.
fn page(port: u16, session: Option<&str>) -> (u16, String) {
    let cookie = session.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    let req = format!(
        "GET /productpage HTTP/1.1\r\nHost: bookinfo.local\r\n{cookie}Connection: close\r\n\r\n"
    );
    http(port, &req).map_or((0, String::new()), |(s, _, b)| (s, b))
}

/// Which reviews instance served the page (`reviews-v2-0`), if the page says.
fn served_by(html: &str) -> Option<String> {
    let at = html.find("Reviews served by:")? + "Reviews served by:".len();
    let mut rest = html[at..].trim_start();
    // Past any markup between the label and the name.
    while let Some(tag) = rest.strip_prefix('<') {
        rest = tag.split_once('>')?.1.trim_start();
    }
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Logs in as `user`; returns the session cookie (`name=value`).
fn login(port: u16, user: &str) -> String {
    let body = format!("username={user}");
    let req = format!(
        "POST /login HTTP/1.1\r\nHost: bookinfo.local\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (_, headers, _) = http(port, &req).expect("login answered");
    let cookie = headers.get("set-cookie").expect("login sets a cookie");
    cookie.split(';').next().unwrap_or_default().to_owned()
}

/// Polls the page until `want` holds (every 50 ms, at most `limit`).
fn until(
    port: u16,
    session: Option<&str>,
    limit: Duration,
    what: &str,
    want: impl Fn(&str) -> bool,
) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        let (status, html) = page(port, session);
        if status == 200 && want(&html) {
            return;
        }
        last = format!(
            "{status}: {}",
            served_by(&html).unwrap_or_else(|| html.chars().take(200).collect())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {limit:?}; last page {last}");
}

fn apply(state: &Path, file: &Path) {
    weft(state, &["apply", "-f", file.to_str().expect("utf-8 path")]);
}

fn task(name: &str) -> PathBuf {
    Path::new(REPO)
        .join("examples/bookinfo/networking")
        .join(name)
}

#[test]
fn bookinfo_traffic_management_tasks_through_the_gateway() {
    let tmp = std::env::temp_dir().join(format!("weft-bookinfo-test-{}", std::process::id()));
    let dir = tmp.join("bookinfo");
    let state = tmp.join("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(
        Path::new(REPO).join("examples/bookinfo/bookinfo.yaml"),
        dir.join("bookinfo.yaml"),
    )
    .expect("copy bookinfo.yaml");
    // The docs' gateway, on a free port instead of 8080; and its two halves apart.
    let port = free_port();
    let gateway_yaml = std::fs::read_to_string(task("bookinfo-gateway.yaml"))
        .expect("gateway yaml")
        .replace("number: 80\n", &format!("number: {port}\n"));
    let (gateway_only, vs_only) = gateway_yaml.split_once("\n---\n").expect("two documents");
    let gateway = tmp.join("bookinfo-gateway.yaml");
    let gateway_vs = tmp.join("bookinfo-vs.yaml");
    std::fs::write(&gateway, &gateway_yaml).expect("write gateway");
    std::fs::write(&gateway_vs, vs_only).expect("write vs");
    let _ = gateway_only;

    let (mut mesh, stdout) = Mesh::up(&dir, &state);
    // Drain the logs so that the pipe never fills.
    let reader =
        std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).count());

    apply(&state, &gateway);
    let started = Instant::now();
    until(port, None, Duration::from_secs(60), "product page", |h| {
        h.contains("Simple Bookstore App")
    });
    eprintln!(
        "product page through the gateway {:?} after the gateway was applied",
        started.elapsed()
    );

    // No routing rules: every reviews version answers.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        if let Some(v) = served_by(&page(port, None).1) {
            seen.insert(v);
        }
    }
    for v in ["reviews-v1-0", "reviews-v2-0", "reviews-v3-0"] {
        assert!(seen.contains(v), "{v} never answered: {seen:?}");
    }

    // Request routing: all to v1, then jason to v2.
    apply(&state, &task("destination-rule-all.yaml"));
    apply(&state, &task("virtual-service-all-v1.yaml"));
    // Until 10 pages in a row come from v1 (one could by chance before the rules land).
    let start = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "all-v1 never took effect"
        );
        if served_by(&page(port, None).1).as_deref() == Some("reviews-v1-0") {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
    }
    for _ in 0..20 {
        assert_eq!(
            served_by(&page(port, None).1).as_deref(),
            Some("reviews-v1-0")
        );
    }
    apply(&state, &task("virtual-service-reviews-test-v2.yaml"));
    let jason = login(port, "jason");
    until(
        port,
        Some(&jason),
        Duration::from_secs(10),
        "jason on v2",
        |h| served_by(h).as_deref() == Some("reviews-v2-0"),
    );
    for _ in 0..10 {
        assert_eq!(
            served_by(&page(port, Some(&jason)).1).as_deref(),
            Some("reviews-v2-0")
        );
        assert_eq!(
            served_by(&page(port, None).1).as_deref(),
            Some("reviews-v1-0")
        );
    }

    // Traffic shifting: 50% v1, 50% v3 over 200 requests (mean 100, sd 7.1; 6 sd either side).
    apply(&state, &task("virtual-service-reviews-50-v3.yaml"));
    until(port, None, Duration::from_secs(10), "v3 appears", |h| {
        served_by(h).as_deref() == Some("reviews-v3-0")
    });
    let mut v3 = 0;
    for _ in 0..200 {
        match served_by(&page(port, None).1).as_deref() {
            Some("reviews-v3-0") => v3 += 1,
            Some("reviews-v1-0") => {}
            other => panic!("50/50 v1/v3 served by {other:?}"),
        }
    }
    assert!((58..=142).contains(&v3), "v3 answered {v3} of 200");

    // Fault injection, with the task's prerequisites (all v1, jason on v2): an abort for
    // jason, then a 7 s delay productpage gives up on (its 3 s timeout, one retry).
    apply(&state, &task("virtual-service-all-v1.yaml"));
    apply(&state, &task("virtual-service-reviews-test-v2.yaml"));
    until(
        port,
        Some(&jason),
        Duration::from_secs(10),
        "jason on v2 again",
        |h| served_by(h).as_deref() == Some("reviews-v2-0"),
    );
    apply(&state, &task("virtual-service-ratings-test-abort.yaml"));
    until(
        port,
        Some(&jason),
        Duration::from_secs(10),
        "ratings abort",
        |h| h.contains("Ratings service is currently unavailable"),
    );
    apply(&state, &task("virtual-service-ratings-test-delay.yaml"));
    until(
        port,
        Some(&jason),
        Duration::from_secs(40),
        "ratings delay",
        |h| h.contains("Sorry, product reviews are currently unavailable for this book."),
    );

    // Request timeouts: reviews times out after 0.5 s waiting for a 2 s ratings delay.
    apply(&state, &task("virtual-service-reviews-timeout.yaml"));
    until(
        port,
        None,
        Duration::from_secs(20),
        "reviews timeout",
        |h| h.contains("Sorry, product reviews are currently unavailable for this book."),
    );

    // A Gateway with no VirtualService bound answers 404.
    weft(
        &state,
        &["delete", "-f", gateway_vs.to_str().expect("utf-8")],
    );
    let start = Instant::now();
    loop {
        if page(port, None).0 == 404 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no 404 after the VirtualService went"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let kids = children(mesh.0.id());
    stop(&mut mesh, kids);
    let _ = reader.join();
    let _ = std::fs::remove_dir_all(&tmp);
}
