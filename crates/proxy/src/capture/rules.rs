//! The rule set of a [`Config`], in the order istio-iptables builds it, for IPv4 and IPv6.
//!
//! Chains (all in the `nat` table unless said):
//! - `ISTIO_INBOUND` (from PREROUTING, TCP): the ports excluded return, the rest jump to
//!   `ISTIO_IN_REDIRECT`, which redirects to the inbound capture port (15006);
//! - `ISTIO_OUTPUT` (from OUTPUT): what must not loop returns (the sidecar's own traffic by
//!   uid/gid, its inbound passthrough from 127.0.0.6, an app calling itself on loopback,
//!   excluded ports and ranges), the rest jumps to `ISTIO_REDIRECT`, which redirects to the
//!   proxy port (15001);
//! - with DNS capture, `ISTIO_OUTPUT_DNS` (nat: port 53 to 15053; raw: conntrack zones that keep
//!   the app's and the sidecar's DNS flows apart) and `ISTIO_INBOUND` in raw;
//! - with `--drop-invalid`, `ISTIO_DROP` in mangle.

use std::net::IpAddr;

use super::{Cidr, Config, DNS_CAPTURE_PORT, Select};

/// An address family: iptables (IPv4) or ip6tables (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }

    /// The loopback address an app reaches itself on, as a host range.
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// The sidecar's inbound passthrough source address (Istio's InboundPassthroughBindIpv4
    /// and its IPv6 twin): connections from it to the app must not be captured again.
    fn passthrough_source(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }

    fn host_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    fn holds(self, addr: &IpAddr) -> bool {
        matches!(
            (self, addr),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }

    /// What the family is called in messages.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The iptables command of the family (`iptables` or `ip6tables`), without backend
    /// suffix.
    pub fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// The tables weft writes to, in the order iptables-restore input lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Mangle,
    Nat,
    Raw,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Mangle, Table::Nat, Table::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }
}

/// The kernel's chains and the targets that are not chains: never created nor removed.
pub fn is_builtin(chain: &str) -> bool {
    matches!(
        chain,
        "PREROUTING" | "INPUT" | "FORWARD" | "OUTPUT" | "POSTROUTING"
    )
}

/// Whether a chain is weft's (Istio's naming, so that a pod moving between Istio and weft
/// is cleaned up either way).
pub fn is_ours(chain: &str) -> bool {
    chain.starts_with("ISTIO_")
}

/// One rule: appended to its chain, or inserted first (`-I CHAIN 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: String,
    pub insert_first: bool,
    /// The match and target, as after `-A CHAIN`.
    pub spec: String,
}

impl Rule {
    /// The chain this rule jumps to (`-j X` or `-g X`), if it names one.
    pub fn target(&self) -> Option<&str> {
        target(&self.spec)
    }

    /// The rule as an iptables-restore line.
    pub fn line(&self) -> String {
        if self.insert_first {
            format!("-I {} 1 {}", self.chain, self.spec)
        } else {
            format!("-A {} {}", self.chain, self.spec)
        }
    }
}

/// The chain or target a rule spec jumps to.
pub fn target(spec: &str) -> Option<&str> {
    let mut words = spec.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-j" || w == "-g" || w == "--jump" || w == "--goto" {
            return words.next();
        }
    }
    None
}

/// The rules of both families.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    by_family: [Vec<Rule>; 2],
}

impl Rules {
    pub fn of(&self, family: Family) -> &[Rule] {
        &self.by_family[family.index()]
    }

    /// weft's chains of a table in a family, in order of first mention.
    pub fn chains(&self, family: Family, table: Table) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in self.of(family).iter().filter(|r| r.table == table) {
            for c in [Some(r.chain.as_str()), r.target()].into_iter().flatten() {
                if is_ours(c) && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// The family's rules as iptables-save text (iptables-restore input): per table, the
    /// chains declared (`:CHAIN - [0:0]`, which under `--noflush` creates or empties it),
    /// then the rules in order. Built-in chains are not declared, so their policies and
    /// other rules stay as they are.
    pub fn to_save_format(&self, family: Family) -> String {
        let mut out = String::new();
        for table in Table::ALL {
            let rules: Vec<&Rule> = self
                .of(family)
                .iter()
                .filter(|r| r.table == table)
                .collect();
            if rules.is_empty() {
                continue;
            }
            out.push_str(&format!("*{}\n", table.name()));
            for chain in self.chains(family, table) {
                out.push_str(&format!(":{chain} - [0:0]\n"));
            }
            for r in rules {
                out.push_str(&r.line());
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// What `--dry-run` prints: both families, each under a comment naming the command it is
    /// input for.
    pub fn dry_run_text(&self) -> String {
        let mut out = String::new();
        for family in Family::BOTH {
            out.push_str(&format!(
                "# {}: {}-restore --noflush\n",
                family.label(),
                family.command()
            ));
            out.push_str(&self.to_save_format(family));
        }
        out
    }
}

/// Collects rules per family.
struct Builder {
    rules: Rules,
}

impl Builder {
    fn push(&mut self, family: Family, table: Table, chain: &str, first: bool, spec: String) {
        self.rules.by_family[family.index()].push(Rule {
            table,
            chain: chain.to_string(),
            insert_first: first,
            spec,
        });
    }

    /// A rule in both families, the spec possibly differing by family.
    fn both(&mut self, table: Table, chain: &str, spec: impl Fn(Family) -> String) {
        for f in Family::BOTH {
            self.push(f, table, chain, false, spec(f));
        }
    }

    fn nat(&mut self, chain: &str, spec: &str) {
        self.both(Table::Nat, chain, |_| spec.to_string());
    }

    fn raw(&mut self, chain: &str, spec: &str) {
        self.both(Table::Raw, chain, |_| spec.to_string());
    }
}

/// The rule set of a configuration, both families. Pure.
pub fn rules(config: &Config) -> Rules {
    let mut b = Builder {
        rules: Rules::default(),
    };
    let dns = dns_capture(config);
    exclude_interfaces(&mut b, config);
    for i in &config.kube_virt_interfaces {
        for f in Family::BOTH {
            b.push(
                f,
                Table::Nat,
                "PREROUTING",
                true,
                format!("-i {i} -j RETURN"),
            );
        }
    }
    if config.drop_invalid {
        b.both(Table::Mangle, "PREROUTING", |_| {
            "-m conntrack --ctstate INVALID -j ISTIO_DROP".into()
        });
        b.both(Table::Mangle, "ISTIO_DROP", |_| "-j DROP".into());
    }
    let tunnel = config.inbound_tunnel_port;
    b.nat(
        "ISTIO_INBOUND",
        &format!("-p tcp --dport {tunnel} -j RETURN"),
    );
    b.nat(
        "ISTIO_REDIRECT",
        &format!("-p tcp -j REDIRECT --to-ports {}", config.proxy_port),
    );
    b.nat(
        "ISTIO_IN_REDIRECT",
        &format!(
            "-p tcp -j REDIRECT --to-ports {}",
            config.inbound_capture_port
        ),
    );
    inbound(&mut b, config);
    b.nat("OUTPUT", "-j ISTIO_OUTPUT");
    for p in &config.outbound_ports_exclude {
        b.nat("ISTIO_OUTPUT", &format!("-p tcp --dport {p} -j RETURN"));
        b.nat("ISTIO_OUTPUT", &format!("-p udp --dport {p} -j RETURN"));
    }
    b.both(Table::Nat, "ISTIO_OUTPUT", |f| {
        format!("-o lo -s {} -j RETURN", f.passthrough_source())
    });
    proxy_owner(&mut b, config, dns.is_some());
    if let Some(dns) = &dns {
        dns_rules(&mut b, config, dns);
    }
    b.both(Table::Nat, "ISTIO_OUTPUT", |f| {
        format!("-d {} -j RETURN", f.loopback())
    });
    for c in &config.outbound_ranges_exclude {
        b.push(
            family_of(c),
            Table::Nat,
            "ISTIO_OUTPUT",
            false,
            format!("-d {c} -j RETURN"),
        );
    }
    for p in &config.outbound_ports_include {
        b.nat(
            "ISTIO_OUTPUT",
            &format!("-p tcp --dport {p} -j ISTIO_REDIRECT"),
        );
    }
    for f in Family::BOTH {
        outbound_include(&mut b, config, f);
    }
    b.rules
}

fn family_of(c: &Cidr) -> Family {
    if c.addr.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// Interfaces never captured: RETURN at the start of nat's PREROUTING and OUTPUT.
fn exclude_interfaces(b: &mut Builder, config: &Config) {
    for i in &config.exclude_interfaces {
        b.nat("PREROUTING", &format!("-i {i} -j RETURN"));
        b.nat("OUTPUT", &format!("-o {i} -j RETURN"));
    }
}

/// Inbound: nothing without ports; with `*` every port but the excluded ones; else the
/// ports listed.
fn inbound(b: &mut Builder, config: &Config) {
    let ports = match &config.inbound_ports {
        Select::Only(p) if p.is_empty() => return,
        other => other,
    };
    b.nat("PREROUTING", "-p tcp -j ISTIO_INBOUND");
    match ports {
        Select::All => {
            for p in &config.inbound_ports_exclude {
                b.nat("ISTIO_INBOUND", &format!("-p tcp --dport {p} -j RETURN"));
            }
            b.nat("ISTIO_INBOUND", "-p tcp -j ISTIO_IN_REDIRECT");
        }
        Select::Only(list) => {
            for p in list {
                b.nat(
                    "ISTIO_INBOUND",
                    &format!("-p tcp --dport {p} -j ISTIO_IN_REDIRECT"),
                );
            }
        }
    }
}

/// The sidecar's own traffic (by uid, then by gid): to a non-loopback address on `lo` (an
/// app's own pod IP or VIP looped back) it goes to the inbound listener; otherwise it is
/// never captured. Others' traffic on `lo` is an app calling itself and is left alone,
/// unless the include ranges name loopback. With DNS capture, TCP port 53 on `lo` is kept
/// for the DNS rules (a resolver on localhost is still captured).
fn proxy_owner(b: &mut Builder, config: &Config, dns: bool) {
    let tunnel = config.inbound_tunnel_port;
    let loopback_included = match &config.outbound_ranges {
        Select::All => false,
        Select::Only(c) => c.iter().any(Cidr::is_loopback),
    };
    for (kind, ids) in [("uid", &config.proxy_uids), ("gid", &config.proxy_gids)] {
        for id in ids {
            // istio-iptables leaves port 53 out of the uid rule only; kept as it is.
            let ports = if dns && kind == "uid" {
                format!("-m multiport ! --dports 53,{tunnel}")
            } else {
                format!("! --dport {tunnel}")
            };
            b.both(Table::Nat, "ISTIO_OUTPUT", |f| {
                format!(
                    "-o lo ! -d {} -p tcp {ports} -m owner --{kind}-owner {id} -j ISTIO_IN_REDIRECT",
                    f.loopback()
                )
            });
            if !loopback_included {
                let not_dns = if dns { "-p tcp ! --dport 53 " } else { "" };
                b.nat(
                    "ISTIO_OUTPUT",
                    &format!("-o lo {not_dns}-m owner ! --{kind}-owner {id} -j RETURN"),
                );
            }
            b.nat(
                "ISTIO_OUTPUT",
                &format!("-m owner --{kind}-owner {id} -j RETURN"),
            );
        }
    }
}

/// What DNS capture covers: every address, or the resolvers listed.
struct Dns<'a> {
    all: bool,
    servers: &'a [IpAddr],
}

impl Dns<'_> {
    fn covers(&self, f: Family) -> bool {
        self.all || self.servers.iter().any(|s| f.holds(s))
    }

    fn servers(&self, f: Family) -> impl Iterator<Item = String> + '_ {
        self.servers
            .iter()
            .filter(move |s| f.holds(s))
            .map(move |s| format!("{s}/{}", f.host_len()))
    }
}

/// DNS capture when asked for and there is something to capture (istio-iptables turns it
/// off, with a warning, when no resolver is known and not all DNS is captured).
fn dns_capture(config: &Config) -> Option<Dns<'_>> {
    let dns = Dns {
        all: config.capture_all_dns,
        servers: &config.dns_servers,
    };
    (config.redirect_dns && (dns.all || !dns.servers.is_empty())).then_some(dns)
}

/// Port 53 to the sidecar's resolver (after the owner rules, so the sidecar's own queries
/// go out), and conntrack zones: the sidecar's upstream queries in zone 1, its answers to
/// the app in zone 2, so the two UDP flows with the same addresses never share an entry.
fn dns_rules(b: &mut Builder, config: &Config, dns: &Dns<'_>) {
    b.raw("OUTPUT", "-j ISTIO_OUTPUT_DNS");
    for f in Family::BOTH {
        if dns.covers(f) {
            b.push(
                f,
                Table::Nat,
                "ISTIO_OUTPUT",
                false,
                "-j ISTIO_OUTPUT_DNS".into(),
            );
        }
    }
    let redirect = format!("-j REDIRECT --to-ports {DNS_CAPTURE_PORT}");
    for proto in ["tcp", "udp"] {
        if dns.all {
            b.nat(
                "ISTIO_OUTPUT_DNS",
                &format!("-p {proto} --dport 53 {redirect}"),
            );
        } else {
            for f in Family::BOTH {
                for s in dns.servers(f) {
                    let spec = format!("-p {proto} --dport 53 -d {s} {redirect}");
                    b.push(f, Table::Nat, "ISTIO_OUTPUT_DNS", false, spec);
                }
            }
        }
    }
    for (kind, ids) in [("uid", &config.proxy_uids), ("gid", &config.proxy_gids)] {
        for id in ids {
            let owner = format!("-m owner --{kind}-owner {id}");
            b.raw(
                "ISTIO_OUTPUT_DNS",
                &format!("-p udp --dport 53 {owner} -j CT --zone 1"),
            );
            b.raw(
                "ISTIO_OUTPUT_DNS",
                &format!("-p udp --sport {DNS_CAPTURE_PORT} {owner} -j CT --zone 2"),
            );
        }
    }
    if dns.all {
        b.raw("PREROUTING", "-j ISTIO_INBOUND");
        b.raw("ISTIO_OUTPUT_DNS", "-p udp --dport 53 -j CT --zone 2");
        b.raw("ISTIO_INBOUND", "-p udp --sport 53 -j CT --zone 1");
        return;
    }
    for f in Family::BOTH {
        if !dns.covers(f) {
            continue;
        }
        b.push(
            f,
            Table::Raw,
            "PREROUTING",
            false,
            "-j ISTIO_INBOUND".into(),
        );
        for s in dns.servers(f) {
            let zone2 = format!("-p udp --dport 53 -d {s} -j CT --zone 2");
            b.push(f, Table::Raw, "ISTIO_OUTPUT_DNS", false, zone2);
            let zone1 = format!("-p udp --sport 53 -s {s} -j CT --zone 1");
            b.push(f, Table::Raw, "ISTIO_INBOUND", false, zone1);
        }
    }
}

/// The outbound destinations captured in one family: all of them, or the ranges of that
/// family. Virtual interfaces' inbound traffic to the same destinations is captured too.
fn outbound_include(b: &mut Builder, config: &Config, f: Family) {
    match &config.outbound_ranges {
        Select::All => {
            b.push(
                f,
                Table::Nat,
                "ISTIO_OUTPUT",
                false,
                "-j ISTIO_REDIRECT".into(),
            );
            for i in &config.kube_virt_interfaces {
                let spec = format!("-i {i} -j ISTIO_REDIRECT");
                b.push(f, Table::Nat, "PREROUTING", true, spec);
            }
        }
        Select::Only(ranges) => {
            for c in ranges.iter().filter(|c| family_of(c) == f) {
                for i in &config.kube_virt_interfaces {
                    let spec = format!("-i {i} -d {c} -j ISTIO_REDIRECT");
                    b.push(f, Table::Nat, "PREROUTING", true, spec);
                }
                let spec = format!("-d {c} -j ISTIO_REDIRECT");
                b.push(f, Table::Nat, "ISTIO_OUTPUT", false, spec);
            }
        }
    }
}
