//! The README's own command blocks, run as a newcomer runs them, against a fresh state
//! directory, with the outcomes the README states checked. `cargo run -q -p weft --` and `weft`
//! in the README run the `weft` built for the tests; a block's `weft up` runs detached (the
//! README runs it in another terminal). The README can then not drift from what weft does.
//!
//! Covered: the quick start (the gateway and the product page), request routing (jason gets
//! reviews v2), and httpbin's circuit breaker from inside the mesh (`weft load --from`).
//! Not run here: `cargo test` itself, the `weft-proxy` example (a release build; its config is
//! checked by the proxy's own tests), and the benchmark scripts.
//!
//! The README's addresses are fixed (the gateway on 127.0.0.1:8080), so this is one test in a
//! binary of its own: nothing else in the suite binds those ports while it runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::WEFT;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The ```sh blocks of the README, in order.
fn sh_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in readme.lines() {
        let trimmed = line.trim_start();
        match (&mut current, trimmed) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), _) => lines.push(trimmed),
            (None, _) => {}
        }
    }
    blocks
}

/// The one block that contains every one of `needles`.
fn block<'a>(blocks: &'a [String], needles: &[&str]) -> &'a str {
    let found: Vec<&String> = blocks
        .iter()
        .filter(|b| needles.iter().all(|n| b.contains(n)))
        .collect();
    assert_eq!(found.len(), 1, "README blocks with {needles:?}: {found:?}");
    found[0]
}

/// Where the README's commands run: a directory of its own (files such as the cookie jar land
/// there) that sees the repository's `examples/`, with `weft` on PATH.
struct Shell {
    dir: PathBuf,
    state: PathBuf,
    path: String,
}

impl Shell {
    fn new() -> Shell {
        let dir = std::env::temp_dir().join(format!("weft-readme-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::os::unix::fs::symlink(WEFT, bin.join("weft")).expect("weft on PATH");
        std::os::unix::fs::symlink(Path::new(REPO).join("examples"), dir.join("examples"))
            .expect("examples");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Shell {
            state: dir.join("state"),
            dir,
            path,
        }
    }

    /// Runs one README line with `sh`: its output (stdout and stderr).
    fn run(&self, line: &str) -> String {
        let mut line = line.replace("cargo run -q -p weft --", "weft");
        // The README runs the mesh in a terminal of its own.
        if line.starts_with("weft up ") {
            let command = line.split('#').next().unwrap_or_default().trim().to_owned();
            line = format!("{command} --detach");
        }
        let out = Command::new("sh")
            .args(["-c", &line])
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .env("WEFT_STATE_DIR", &self.state)
            .env("NO_COLOR", "1")
            .output()
            .expect("sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "README line failed: {line}\n{text}");
        text
    }

    /// Runs every line of `block`; the last line's output.
    fn run_block(&self, block: &str) -> String {
        let mut last = String::new();
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            last = self.run(line);
        }
        last
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Whatever mesh is left (a failed test) is stopped.
        let _ = Command::new(WEFT)
            .args(["down", "--state-dir"])
            .arg(&self.state)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_readme_commands_do_what_the_readme_says() {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).expect("README");
    let blocks = sh_blocks(&readme);
    let sh = Shell::new();

    // The first command: bookinfo in a local mesh.
    let first = block(&blocks, &["up examples/bookinfo", "cargo test --workspace"]);
    let up = first.lines().next().expect("the first command");
    assert!(
        up.starts_with("cargo run -p weft -- up examples/bookinfo"),
        "{up}"
    );
    let started = sh.run(&up.replace("cargo run -p weft --", "weft"));
    assert!(
        started.contains("Mesh running in the background"),
        "{started}"
    );

    // Exposing it through Istio's own gateway YAML; the page names its reviews instance.
    let quick = block(&blocks, &["bookinfo-gateway.yaml", "curl"]);
    let page = sh.run_block(quick);
    assert!(
        page.contains("Reviews served by: reviews-v"),
        "the product page through 127.0.0.1:8080:\n{page}"
    );

    // Request routing: logged in as jason, reviews come from v2.
    let routing = block(&blocks, &["virtual-service-reviews-test-v2.yaml", "-b jar"]);
    let jason = sh.run_block(routing);
    assert!(
        jason
            .lines()
            .all(|l| l == "Reviews served by: reviews-v2-0"),
        "jason's page:\n{jason}"
    );
    sh.run("weft down");

    // httpbin from inside the mesh: the circuit breaker trips for three connections.
    let httpbin = block(&blocks, &["up examples/httpbin", "--from"]);
    let report = sh.run_block(httpbin);
    let count = |code: &str| -> u64 {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("Code {code} : ")))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("503") > 0 && count("200") > 0 && count("503") + count("200") == 30,
        "README: about three quarters 503:\n{report}"
    );
    sh.run("weft down");
}
