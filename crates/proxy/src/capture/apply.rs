//! Applying [`Rules`] with the real iptables binaries, and removing them.
//!
//! - **Backend.** As istio-iptables picks it, per family: the legacy binaries when rules
//!   already exist there (a host or pod already programmed with iptables-legacy), else the
//!   nft ones, else the plain `iptables`; a binary is used only if its `-save` runs and a
//!   no-op rule can be added to the filter table (kernel support). IPv6 is skipped, with a
//!   note, when no ip6tables works.
//! - **Atomic and idempotent.** One `iptables-restore --noflush` per family: each table's
//!   changes commit together. The input declares weft's chains (`:ISTIO_X - [0:0]` creates or
//!   empties a chain), deletes the jumps already in the built-in chains (read back with
//!   `iptables-save`, so a re-run never duplicates them), removes the `ISTIO_*` chains the new
//!   set no longer has, then adds the rules.
//! - **Cleanup** is the same transaction without the new rules: every `ISTIO_*` chain of the
//!   mangle, nat and raw tables and every built-in rule jumping to one are removed, plus the
//!   built-in rules the given flags would add (the `-c`/`-k` interface RETURNs). Nothing else.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use super::rules::{Family, Rules, Table, is_builtin, is_ours, target};

/// Why applying or cleaning up failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `--force-iptables-binary` named something else than legacy or nft.
    #[error("--force-iptables-binary: invalid value {0:?}: it is `legacy` or `nft`")]
    BadChoice(String),
    /// No iptables binary of the family can be used.
    #[error("{family}: no usable iptables: {detail}")]
    NoBackend {
        family: &'static str,
        detail: String,
    },
    /// A command failed; `detail` has its stderr (and, for a restore, the numbered input).
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
}

/// How long legacy iptables waits for the xtables lock (as istio-iptables): a bounded wait,
/// so that an init step never hangs on a lock someone else holds.
const LOCK_WAIT: &str = "--wait=30";

/// Which iptables backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// As istio-iptables detects it.
    Detect,
    Legacy,
    Nft,
}

impl Choice {
    /// The `--force-iptables-binary` value (none: detect).
    pub fn from_flag(value: Option<&str>) -> Result<Choice, ApplyError> {
        match value {
            None => Ok(Choice::Detect),
            Some("legacy") => Ok(Choice::Legacy),
            Some("nft") => Ok(Choice::Nft),
            Some(other) => Err(ApplyError::BadChoice(other.to_string())),
        }
    }
}

/// The binaries of one family and backend: `iptables-nft`, `ip6tables-legacy`, `iptables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub binary: String,
    /// Legacy iptables takes the xtables lock; nft needs none.
    pub legacy: bool,
}

impl Backend {
    fn save(&self) -> String {
        format!("{}-save", self.binary)
    }

    fn restore(&self) -> String {
        format!("{}-restore", self.binary)
    }
}

/// Installs the rules, both families. Returns what was done, a line each, for the log.
pub fn apply(rules: &Rules, choice: Choice) -> Result<Vec<String>, ApplyError> {
    each_family(rules, choice, true)
}

/// Removes weft's chains and the jumps to them (see the module doc), both families.
pub fn cleanup(rules: &Rules, choice: Choice) -> Result<Vec<String>, ApplyError> {
    each_family(rules, choice, false)
}

fn each_family(rules: &Rules, choice: Choice, create: bool) -> Result<Vec<String>, ApplyError> {
    let mut report = Vec::new();
    for family in Family::BOTH {
        let backend = match detect(family, choice) {
            Ok(b) => b,
            Err(detail) if family == Family::V6 => {
                let what = if create {
                    "IPv6 skipped, its traffic is not captured"
                } else {
                    "IPv6 skipped"
                };
                report.push(format!("{what}: {detail}"));
                continue;
            }
            Err(detail) => {
                return Err(ApplyError::NoBackend {
                    family: family.label(),
                    detail,
                });
            }
        };
        let saved = Saved::parse(&run(&backend.save(), &[], None)?);
        let input = restore_input(rules, family, &saved, create);
        let verb = if create { "applied" } else { "cleaned up" };
        if input.is_empty() {
            report.push(format!("{}: nothing to clean up", family.label()));
            continue;
        }
        let mut args = vec!["--noflush"];
        if backend.legacy {
            args.push(LOCK_WAIT);
        }
        run(&backend.restore(), &args, Some(&input)).map_err(|e| match e {
            // IPv4 went first and stays: say so, so the state is not a guess.
            ApplyError::Command { command, detail } if family == Family::V6 => {
                ApplyError::Command {
                    command,
                    detail: format!("{detail}\n(IPv4 was {verb} before this failed)"),
                }
            }
            other => other,
        })?;
        report.push(format!(
            "{}: {verb} with {}",
            family.label(),
            backend.restore()
        ));
    }
    Ok(report)
}

/// Picks the backend of a family (see the module doc); the error says what was tried.
pub fn detect(family: Family, choice: Choice) -> Result<Backend, String> {
    let base = family.command();
    let legacy = format!("{base}-legacy");
    let nft = format!("{base}-nft");
    match choice {
        Choice::Legacy => return usable(&legacy),
        Choice::Nft => return usable(&nft),
        Choice::Detect => {}
    }
    let mut tried = Vec::new();
    // Legacy only when it already holds rules: only then is it what the host uses. It is
    // not probed otherwise, since probing creates its filter table and would make the next
    // run believe legacy is in use.
    match run(&format!("{legacy}-save"), &[], None) {
        Ok(dump) if Saved::parse(&dump).has_rules() => return usable(&legacy),
        Ok(_) => {}
        Err(e) => tried.push(e.to_string()),
    }
    match usable(&nft) {
        Ok(b) => return Ok(b),
        Err(e) => tried.push(e),
    }
    usable(base).map_err(|e| {
        tried.push(e);
        tried.join("; ")
    })
}

/// A binary set that runs and whose kernel side works: its `-save` runs and a no-op rule
/// (protocol 255, which nothing uses) can be added to the filter table and removed.
fn usable(binary: &str) -> Result<Backend, String> {
    let version = run(binary, &["--version"], None).map_err(|e| e.to_string())?;
    let backend = Backend {
        binary: binary.to_string(),
        legacy: !version.contains("nf_tables"),
    };
    run(&backend.save(), &[], None).map_err(|e| e.to_string())?;
    let probe = ["-t", "filter", "-A", "INPUT", "-p", "255", "-j", "RETURN"];
    let mut args: Vec<&str> = probe.to_vec();
    if backend.legacy {
        args.push(LOCK_WAIT);
    }
    run(binary, &args, None).map_err(|e| format!("{e} (no kernel support?)"))?;
    args[2] = "-D";
    run(binary, &args, None).map_err(|e| e.to_string())?;
    Ok(backend)
}

/// Runs a command, optionally feeding stdin; its stdout, or an error with its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ApplyError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let fail = |detail: String| ApplyError::Command {
        command: command.clone(),
        detail,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| fail(format!("writing its input: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut detail = format!(
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    if let Some(input) = stdin {
        detail.push_str("\ninput:\n");
        for (n, line) in input.lines().enumerate() {
            detail.push_str(&format!("{:>4}: {line}\n", n + 1));
        }
    }
    Err(fail(detail))
}

/// A table as `iptables-save` printed it: its chains and rules (`-A CHAIN spec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    pub chains: Vec<String>,
    pub rules: Vec<(String, String)>,
}

/// What `iptables-save` printed, by table name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub tables: BTreeMap<String, SavedTable>,
}

impl Saved {
    pub fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        let mut current: Option<&mut SavedTable> = None;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                current = Some(saved.tables.entry(name.trim().to_string()).or_default());
            } else if let Some(t) = current.as_deref_mut() {
                if let Some(decl) = line.strip_prefix(':') {
                    if let Some(chain) = decl.split_whitespace().next() {
                        t.chains.push(chain.to_string());
                    }
                } else if let Some(rule) = line.strip_prefix("-A ") {
                    let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                    t.rules.push((chain.to_string(), spec.trim().to_string()));
                }
            }
        }
        saved
    }

    /// Whether any rule or user chain exists (a backend in use).
    pub fn has_rules(&self) -> bool {
        self.tables
            .values()
            .any(|t| !t.rules.is_empty() || t.chains.iter().any(|c| !is_builtin(c)))
    }

    /// weft's chains in a table.
    pub fn ours(&self, table: Table) -> Vec<&str> {
        self.tables
            .get(table.name())
            .map(|t| {
                t.chains
                    .iter()
                    .map(String::as_str)
                    .filter(|c| is_ours(c))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The iptables-restore input that takes a family from `saved` to `rules` (`create`) or to
/// none of weft's rules (cleanup). Empty when there is nothing to do.
pub fn restore_input(rules: &Rules, family: Family, saved: &Saved, create: bool) -> String {
    let mut out = String::new();
    for table in Table::ALL {
        let wanted: Vec<_> = rules
            .of(family)
            .iter()
            .filter(|r| r.table == table)
            .collect();
        let old = saved.ours(table);
        let new: Vec<&str> = if create {
            rules.chains(family, table)
        } else {
            Vec::new()
        };
        // Built-in rules to take out: jumps to our chains, and the rules we would add
        // (so that re-running does not duplicate the interface RETURNs).
        let stale: Vec<&(String, String)> = saved
            .tables
            .get(table.name())
            .map(|t| {
                t.rules
                    .iter()
                    .filter(|(chain, spec)| {
                        is_builtin(chain)
                            && (target(spec).is_some_and(is_ours)
                                || wanted.iter().any(|r| &r.chain == chain && &r.spec == spec))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let adds = if create { wanted.len() } else { 0 };
        if old.is_empty() && stale.is_empty() && adds == 0 {
            continue;
        }
        out.push_str(&format!("*{}\n", table.name()));
        for chain in new.iter().chain(old.iter().filter(|c| !new.contains(c))) {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for (chain, spec) in stale {
            out.push_str(&format!("-D {chain} {spec}\n"));
        }
        for chain in old.iter().filter(|c| !new.contains(c)) {
            out.push_str(&format!("-X {chain}\n"));
        }
        if create {
            for r in &wanted {
                out.push_str(&r.line());
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}
