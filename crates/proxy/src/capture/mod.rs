//! `weft-proxy capture`: the init step of a transparent sidecar, as Istio's `istio-iptables`
//! (the istio-init container). It installs the iptables rules that send an unmodified app's
//! TCP traffic through the sidecar: outbound to the proxy port (15001), inbound to the inbound
//! capture port (15006), and with `--redirect-dns` DNS to the sidecar's resolver (15053).
//!
//! The flags, their defaults and the rules are istio-iptables' (with the defaults Istio's
//! injector passes, `-i '*' -b '*' -d 15090,15021,15020`), so what an Istio user knows
//! carries over. Three steps, each usable on its own:
//!
//! - [`Config::from_args`] (and [`Config::apply_annotation`] for the pod annotations Kubernetes
//!   mode will read): parse and check every value, pure, nothing touched;
//! - [`rules()`]: the rule set of both families, pure; [`Rules::to_save_format`] prints it;
//! - [`apply::apply`] / [`apply::cleanup`]: run `iptables-restore --noflush` on the backend
//!   (legacy or nft) Istio would pick.
//!
//! Only REDIRECT interception is implemented; TPROXY is refused with an error (see
//! docs/CAPTURE.md for this and the other differences).

pub mod apply;
mod rules;

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

pub use rules::{Family, Rule, Rules, Table, rules};

/// The port of the sidecar's DNS proxy (Istio's istio-agent listens there).
pub const DNS_CAPTURE_PORT: u16 = 15053;

/// Where a bad value came from: a command-line flag or a pod annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A flag, named as `-p/--envoy-port`.
    Flag(&'static str),
    /// A pod annotation, by its full name.
    Annotation(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(name) => f.write_str(name),
            Origin::Annotation(name) => write!(f, "annotation {name}"),
        }
    }
}

/// A value that cannot be used; nothing is applied when one is found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value that does not parse or is out of range.
    #[error("{origin}: invalid value {value:?}: {reason}")]
    Invalid {
        origin: Origin,
        value: String,
        reason: String,
    },
    /// The command line itself (an unknown flag, a missing value), as clap words it.
    #[error("{0}")]
    Usage(String),
}

fn invalid(origin: &Origin, value: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        origin: origin.clone(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Which ports or addresses a direction captures: all of them (`*`) or those listed (an
/// empty list captures none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select<T> {
    All,
    Only(Vec<T>),
}

/// An IP range in CIDR form, kept as its network address (what iptables-save prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8` or `fd00::/8`; host bits are cleared, as iptables does.
    fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| "not in CIDR form (address/prefix length)".to_string())?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("prefix length {len:?} is not 0-{max}"))?;
        Ok(Cidr {
            addr: network(addr, len),
            len,
        })
    }

    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The network address of `addr/len`.
fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Everything the rules depend on, checked. Build it with [`Config::from_args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `-p`: where outbound TCP goes (the sidecar's virtual outbound listener).
    pub proxy_port: u16,
    /// `-z`: where inbound TCP goes (the sidecar's virtual inbound listener).
    pub inbound_capture_port: u16,
    /// `-e`: the HBONE tunnel port, never captured.
    pub inbound_tunnel_port: u16,
    /// `-u`: the proxy's user ids; their traffic is not captured.
    pub proxy_uids: Vec<u32>,
    /// `-g`: the proxy's group ids (default: the user ids).
    pub proxy_gids: Vec<u32>,
    /// `-b`: inbound ports captured.
    pub inbound_ports: Select<u16>,
    /// `-d`: inbound ports not captured (only with `-b '*'`).
    pub inbound_ports_exclude: Vec<u16>,
    /// `-i`: outbound destinations captured.
    pub outbound_ranges: Select<Cidr>,
    /// `-x`: outbound destinations not captured.
    pub outbound_ranges_exclude: Vec<Cidr>,
    /// `-q`: outbound ports always captured, whatever the destination.
    pub outbound_ports_include: Vec<u16>,
    /// `-o`: outbound ports never captured.
    pub outbound_ports_exclude: Vec<u16>,
    /// `-c`: interfaces whose traffic is never captured.
    pub exclude_interfaces: Vec<String>,
    /// `-k`: virtual interfaces (KubeVirt) whose inbound traffic is treated as outbound.
    pub kube_virt_interfaces: Vec<String>,
    /// `--redirect-dns`: DNS to the sidecar's resolver on 15053.
    pub redirect_dns: bool,
    /// `--capture-all-dns`: every destination on port 53, not only the resolvers of
    /// resolv.conf.
    pub capture_all_dns: bool,
    /// The resolvers whose DNS traffic is captured (from resolv.conf, unless
    /// `capture_all_dns`).
    pub dns_servers: Vec<IpAddr>,
    /// `--drop-invalid`: drop packets conntrack finds INVALID instead of resetting.
    pub drop_invalid: bool,
}

/// The command line of `weft-proxy capture`, istio-iptables' flags. Values are taken as text
/// and checked by [`Config::from_flags`], so that an error names the flag as the user wrote
/// it and so that annotations share the checks.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "weft-proxy capture",
    // A flag given twice: the last wins, as with istio-iptables (and so a caller can append
    // overrides to a base command line).
    args_override_self = true,
    about = "Install the iptables rules of a transparent sidecar (Istio's istio-iptables)",
    long_about = "Install the iptables rules that send an unmodified app's traffic through its \
                  sidecar, as Istio's istio-init container does: outbound TCP to the proxy port, \
                  inbound TCP to the inbound capture port, optionally DNS to 15053. Flags and \
                  defaults are istio-iptables' (with the values Istio's injector passes). Only \
                  the REDIRECT interception mode is supported."
)]
pub struct Flags {
    /// Port outbound TCP is redirected to.
    #[arg(
        short = 'p',
        long = "envoy-port",
        default_value = "15001",
        allow_hyphen_values = true
    )]
    pub envoy_port: String,
    /// Port inbound TCP is redirected to.
    #[arg(
        short = 'z',
        long = "inbound-capture-port",
        default_value = "15006",
        allow_hyphen_values = true
    )]
    pub inbound_capture_port: String,
    /// The tunnel (HBONE) port, never captured.
    #[arg(
        short = 'e',
        long = "inbound-tunnel-port",
        default_value = "15008",
        allow_hyphen_values = true
    )]
    pub inbound_tunnel_port: String,
    /// Comma-separated user ids whose traffic is not captured (the proxy's).
    #[arg(
        short = 'u',
        long = "proxy-uid",
        default_value = "1337",
        allow_hyphen_values = true
    )]
    pub proxy_uid: String,
    /// Comma-separated group ids whose traffic is not captured (default: the -u value).
    #[arg(short = 'g', long = "proxy-gid", allow_hyphen_values = true)]
    pub proxy_gid: Option<String>,
    /// Inbound interception mode: REDIRECT (TPROXY is not supported).
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        default_value = "REDIRECT",
        allow_hyphen_values = true
    )]
    pub interception_mode: String,
    /// Comma-separated inbound ports to capture; `*` for all, empty for none.
    #[arg(
        short = 'b',
        long = "istio-inbound-ports",
        default_value = "*",
        allow_hyphen_values = true
    )]
    pub inbound_ports: String,
    /// Comma-separated inbound ports not captured (with `-b '*'`).
    #[arg(
        short = 'd',
        long = "istio-local-exclude-ports",
        default_value = "15090,15021,15020",
        allow_hyphen_values = true
    )]
    pub inbound_ports_exclude: String,
    /// Comma-separated outbound CIDRs to capture; `*` for all, empty for none.
    #[arg(
        short = 'i',
        long = "istio-service-cidr",
        default_value = "*",
        allow_hyphen_values = true
    )]
    pub outbound_ranges: String,
    /// Comma-separated outbound CIDRs not captured.
    #[arg(
        short = 'x',
        long = "istio-service-exclude-cidr",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub outbound_ranges_exclude: String,
    /// Comma-separated outbound ports always captured.
    #[arg(
        short = 'q',
        long = "istio-outbound-ports",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub outbound_ports_include: String,
    /// Comma-separated outbound ports never captured.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub outbound_ports_exclude: String,
    /// Comma-separated interfaces whose traffic is never captured.
    #[arg(
        short = 'c',
        long = "istio-exclude-interfaces",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub exclude_interfaces: String,
    /// Comma-separated virtual interfaces whose inbound traffic is treated as outbound.
    #[arg(
        short = 'k',
        long = "kube-virt-interfaces",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub kube_virt_interfaces: String,
    /// Capture DNS (TCP and UDP port 53) to the sidecar's resolver on 15053.
    #[arg(long = "redirect-dns")]
    pub redirect_dns: bool,
    /// With --redirect-dns: capture DNS to any address, not only resolv.conf's resolvers.
    #[arg(long = "capture-all-dns")]
    pub capture_all_dns: bool,
    /// The resolv.conf naming the resolvers captured with --redirect-dns (weft's flag).
    #[arg(long = "resolv-conf", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Drop packets conntrack finds INVALID instead of letting them reset connections.
    #[arg(long = "drop-invalid")]
    pub drop_invalid: bool,
    /// Print the rules (iptables-save format, IPv4 then IPv6) and change nothing.
    #[arg(short = 'n', long = "dry-run")]
    pub dry_run: bool,
    /// Remove weft's (Istio's) chains and the jumps to them, create nothing.
    #[arg(long = "cleanup-only", visible_alias = "cleanup")]
    pub cleanup: bool,
    /// Use this iptables backend instead of detecting one: `legacy` or `nft`.
    #[arg(long = "force-iptables-binary", allow_hyphen_values = true)]
    pub force_iptables_binary: Option<String>,
}

/// The annotations of Istio's sidecar injector that shape the capture rules, and the flag
/// each one feeds.
pub const ANNOTATIONS: &[(&str, &str)] = &[
    ("sidecar.istio.io/interceptionMode", "-m"),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", "-i"),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "-x"),
    ("traffic.sidecar.istio.io/includeInboundPorts", "-b"),
    ("traffic.sidecar.istio.io/excludeInboundPorts", "-d"),
    ("traffic.sidecar.istio.io/includeOutboundPorts", "-q"),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", "-o"),
    ("traffic.sidecar.istio.io/excludeInterfaces", "-c"),
    ("traffic.sidecar.istio.io/kubevirtInterfaces", "-k"),
];

/// The inbound ports Istio's injector always excludes: Envoy's Prometheus port, the health
/// port and the agent's status port.
const ALWAYS_EXCLUDED_INBOUND: &[u16] = &[15090, 15021, 15020];

impl Config {
    /// Parses a `weft-proxy capture` command line (without the program name and `capture`
    /// word) and checks every value. Pure: nothing is read or applied, except that
    /// `--redirect-dns` without `--capture-all-dns` needs the resolvers, which
    /// [`Config::from_flags`] reads from `--resolv-conf`.
    pub fn from_args<I, T>(args: I) -> Result<Config, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let argv = std::iter::once(OsString::from("weft-proxy capture"))
            .chain(args.into_iter().map(Into::into));
        let flags = Flags::try_parse_from(argv).map_err(|e| Error::Usage(e.to_string()))?;
        Config::from_flags(&flags)
    }

    /// Checks parsed flags. The resolvers come from the `--resolv-conf` file, read only when
    /// `--redirect-dns` is on and `--capture-all-dns` off, as istio-iptables does.
    pub fn from_flags(flags: &Flags) -> Result<Config, Error> {
        let mut config = Config::check(flags)?;
        if config.redirect_dns && !config.capture_all_dns {
            let text = std::fs::read_to_string(&flags.resolv_conf).map_err(|e| {
                invalid(
                    &Origin::Flag("--resolv-conf"),
                    &flags.resolv_conf.display().to_string(),
                    format!("cannot read it: {e}"),
                )
            })?;
            config.dns_servers = nameservers(&text);
        }
        Ok(config)
    }

    /// The checks of [`Config::from_flags`] without reading any file.
    fn check(flags: &Flags) -> Result<Config, Error> {
        let proxy_uids = ids(&Origin::Flag("-u/--proxy-uid"), &flags.proxy_uid)?;
        let proxy_gids = match &flags.proxy_gid {
            Some(g) => ids(&Origin::Flag("-g/--proxy-gid"), g)?,
            None => proxy_uids.clone(),
        };
        interception_mode(
            &Origin::Flag("-m/--istio-inbound-interception-mode"),
            &flags.interception_mode,
        )?;
        Ok(Config {
            proxy_port: port(&Origin::Flag("-p/--envoy-port"), &flags.envoy_port)?,
            inbound_capture_port: port(
                &Origin::Flag("-z/--inbound-capture-port"),
                &flags.inbound_capture_port,
            )?,
            inbound_tunnel_port: port(
                &Origin::Flag("-e/--inbound-tunnel-port"),
                &flags.inbound_tunnel_port,
            )?,
            proxy_uids,
            proxy_gids,
            inbound_ports: select(
                &Origin::Flag("-b/--istio-inbound-ports"),
                &flags.inbound_ports,
                port,
            )?,
            inbound_ports_exclude: ports(
                &Origin::Flag("-d/--istio-local-exclude-ports"),
                &flags.inbound_ports_exclude,
            )?,
            outbound_ranges: select(
                &Origin::Flag("-i/--istio-service-cidr"),
                &flags.outbound_ranges,
                cidr,
            )?,
            outbound_ranges_exclude: cidrs(
                &Origin::Flag("-x/--istio-service-exclude-cidr"),
                &flags.outbound_ranges_exclude,
            )?,
            outbound_ports_include: ports(
                &Origin::Flag("-q/--istio-outbound-ports"),
                &flags.outbound_ports_include,
            )?,
            outbound_ports_exclude: ports(
                &Origin::Flag("-o/--istio-local-outbound-ports-exclude"),
                &flags.outbound_ports_exclude,
            )?,
            exclude_interfaces: interfaces(
                &Origin::Flag("-c/--istio-exclude-interfaces"),
                &flags.exclude_interfaces,
            )?,
            kube_virt_interfaces: interfaces(
                &Origin::Flag("-k/--kube-virt-interfaces"),
                &flags.kube_virt_interfaces,
            )?,
            redirect_dns: flags.redirect_dns,
            capture_all_dns: flags.capture_all_dns,
            dns_servers: Vec::new(),
            drop_invalid: flags.drop_invalid,
        })
    }

    /// Applies one of Istio's pod annotations (see [`ANNOTATIONS`]) with the checks of the
    /// flag it feeds; an error names the annotation. Annotations that do not shape capture
    /// are ignored. `excludeInboundPorts` adds to the ports Istio always excludes (15090,
    /// 15021, 15020), as the injector does.
    pub fn apply_annotation(&mut self, name: &str, value: &str) -> Result<(), Error> {
        let origin = Origin::Annotation(name.to_string());
        let o = &origin;
        match name {
            "sidecar.istio.io/interceptionMode" => interception_mode(o, value)?,
            "traffic.sidecar.istio.io/includeOutboundIPRanges" => {
                self.outbound_ranges = select(o, value, cidr)?;
            }
            "traffic.sidecar.istio.io/excludeOutboundIPRanges" => {
                self.outbound_ranges_exclude = cidrs(o, value)?;
            }
            "traffic.sidecar.istio.io/includeInboundPorts" => {
                self.inbound_ports = select(o, value, port)?;
            }
            "traffic.sidecar.istio.io/excludeInboundPorts" => {
                let mut all = ALWAYS_EXCLUDED_INBOUND.to_vec();
                all.extend(ports(o, value)?);
                self.inbound_ports_exclude = all;
            }
            "traffic.sidecar.istio.io/includeOutboundPorts" => {
                self.outbound_ports_include = ports(o, value)?;
            }
            "traffic.sidecar.istio.io/excludeOutboundPorts" => {
                self.outbound_ports_exclude = ports(o, value)?;
            }
            "traffic.sidecar.istio.io/excludeInterfaces" => {
                self.exclude_interfaces = interfaces(o, value)?;
            }
            "traffic.sidecar.istio.io/kubevirtInterfaces" => {
                self.kube_virt_interfaces = interfaces(o, value)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// istio-iptables' list syntax: comma-separated, empty items skipped, spaces trimmed.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The reason an item of a list is bad, naming the item when the list has others.
fn in_list(value: &str, item: &str, reason: &str) -> String {
    if items(value).nth(1).is_some() {
        format!("{item:?}: {reason}")
    } else {
        reason.to_string()
    }
}

fn port(origin: &Origin, value: &str) -> Result<u16, Error> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(origin, value, "a port is a number from 1 to 65535"))
}

fn ports(origin: &Origin, value: &str) -> Result<Vec<u16>, Error> {
    items(value)
        .map(|p| {
            port(origin, p).map_err(|_| {
                let reason = in_list(value, p, "a port is a number from 1 to 65535");
                invalid(origin, value, reason)
            })
        })
        .collect()
}

fn cidr(origin: &Origin, value: &str) -> Result<Cidr, Error> {
    Cidr::parse(value.trim()).map_err(|reason| invalid(origin, value, reason))
}

fn cidrs(origin: &Origin, value: &str) -> Result<Vec<Cidr>, Error> {
    items(value)
        .map(|c| {
            Cidr::parse(c).map_err(|reason| invalid(origin, value, in_list(value, c, &reason)))
        })
        .collect()
}

/// `*` (all), or a list of items each checked by `one`; `*` inside a list is an error.
fn select<T>(
    origin: &Origin,
    value: &str,
    one: fn(&Origin, &str) -> Result<T, Error>,
) -> Result<Select<T>, Error> {
    if value.trim() == "*" {
        return Ok(Select::All);
    }
    items(value)
        .map(|item| {
            if item == "*" {
                return Err(invalid(origin, value, "`*` must be the whole value"));
            }
            one(origin, item).map_err(|e| match e {
                Error::Invalid { reason, .. } => {
                    invalid(origin, value, in_list(value, item, &reason))
                }
                other => other,
            })
        })
        .collect::<Result<Vec<T>, Error>>()
        .map(Select::Only)
}

fn ids(origin: &Origin, value: &str) -> Result<Vec<u32>, Error> {
    let ids: Vec<u32> = items(value)
        .map(|id| {
            id.parse::<u32>()
                .map_err(|_| invalid(origin, value, in_list(value, id, "not a numeric id")))
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(invalid(origin, value, "at least one numeric id is needed"));
    }
    Ok(ids)
}

fn interception_mode(origin: &Origin, value: &str) -> Result<(), Error> {
    match value {
        "REDIRECT" => Ok(()),
        "TPROXY" => Err(invalid(
            origin,
            value,
            "TPROXY interception is not supported by weft; use REDIRECT (the app then sees \
             inbound connections come from the sidecar, not from the client's address)",
        )),
        _ => Err(invalid(origin, value, "the interception mode is REDIRECT")),
    }
}

/// Linux interface names: 1 to 15 bytes, no `/`, `:`, whitespace or control characters.
fn interfaces(origin: &Origin, value: &str) -> Result<Vec<String>, Error> {
    items(value)
        .map(|name| {
            let bad = name.len() > 15
                || name == "."
                || name == ".."
                || name
                    .chars()
                    .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
            if bad {
                Err(invalid(
                    origin,
                    value,
                    in_list(
                        value,
                        name,
                        "not an interface name (at most 15 characters, no '/', ':' or spaces)",
                    ),
                ))
            } else {
                Ok(name.to_string())
            }
        })
        .collect()
}

/// The `nameserver` addresses of a resolv.conf, in order (a zone suffix, `fe80::1%eth0`, is
/// dropped; unparsable lines are skipped as the resolver skips them).
fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|addr| addr.split('%').next()?.parse().ok())
        .collect()
}

/// `weft-proxy capture ...`: parse, then print (`--dry-run`), clean up or apply. `argv` starts
/// with the program name, then `capture`.
pub fn run(argv: Vec<OsString>) -> ExitCode {
    // Usage and --help name the command as it was called (`weft-proxy capture`, `weft proxy
    // capture`).
    let mut argv = argv.into_iter();
    let program = argv.next().unwrap_or_else(|| "weft-proxy".into());
    let mut name = program;
    name.push(" capture");
    let flags = match Flags::try_parse_from(std::iter::once(name).chain(argv.skip(1))) {
        Ok(f) => f,
        Err(e) => {
            // --help and --version print and succeed; usage errors fail.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let config = match Config::from_flags(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft-proxy capture: {e}; nothing was applied");
            return ExitCode::from(2);
        }
    };
    if config.redirect_dns && !config.capture_all_dns && config.dns_servers.is_empty() {
        eprintln!(
            "weft-proxy capture: --redirect-dns: {} names no nameserver and --capture-all-dns \
             is off, so DNS is not captured",
            flags.resolv_conf.display()
        );
    }
    let backend = match apply::Choice::from_flag(flags.force_iptables_binary.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("weft-proxy capture: {e}; nothing was applied");
            return ExitCode::from(2);
        }
    };
    let rules = rules(&config);
    if flags.dry_run {
        if flags.cleanup {
            println!(
                "# --cleanup-only: would remove every ISTIO_* chain of the mangle, nat and raw \
                 tables, the built-in rules jumping to them, and these rules of the built-in chains:"
            );
            for family in Family::BOTH {
                let others = rules.of(family).iter().filter(|r| {
                    rules::is_builtin(&r.chain) && !r.target().is_some_and(rules::is_ours)
                });
                for r in others {
                    println!(
                        "# {} {}: -A {} {}",
                        family.label(),
                        r.table.name(),
                        r.chain,
                        r.spec
                    );
                }
            }
        } else {
            print!("{}", rules.dry_run_text());
        }
        return ExitCode::SUCCESS;
    }
    let result = if flags.cleanup {
        apply::cleanup(&rules, backend)
    } else {
        apply::apply(&rules, backend)
    };
    match result {
        Ok(report) => {
            for line in report {
                eprintln!("weft-proxy capture: {line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-proxy capture: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
