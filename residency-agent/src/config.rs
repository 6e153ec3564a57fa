//! The TOML configuration: parsing, defaults and validation.
//!
//! Every error names the file, the line and column, the key and the reason, because a
//! residency config is edited by hand under pressure and "invalid config" helps nobody.
//! Unknown keys are errors (a misspelt `deny` must not silently allow everything).
//! Validation here is purely syntactic and local; `policy.rs` turns a valid config into
//! the entries the kernel maps hold, and `cgroup.rs` resolves cgroup paths on the host.

use std::{
    collections::HashMap,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use ipnetwork::IpNetwork;
use serde::Deserialize;
use toml::Spanned;

/// Default config path of `run`, `check` and `detach`.
pub const DEFAULT_PATH: &str = "/etc/residency/residency.toml";

/// The config used when [`DEFAULT_PATH`] does not exist: audit only, never drops.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");
/// How the embedded default is named in messages.
pub const EMBEDDED_NAME: &str = "<embedded default config>";

/// Longest policy name; names appear in logs, journal fields and metric labels.
const MAX_NAME_LEN: usize = 64;

/// A configuration error, located in its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {key}: {reason}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        key: String,
        reason: String,
    },
}

/// Enforcement mode of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop what the policy does not allow.
    Enforce,
    /// Pass everything; report what enforce mode would drop.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    policy: Vec<RawPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    sinks: Option<Spanned<Vec<Spanned<String>>>>,
    mask_addresses: Option<bool>,
    aggregate_window_ms: Option<u64>,
    aggregate_max_keys: Option<Spanned<u64>>,
    rate_limit_per_cpu: Option<Spanned<u32>>,
    rate_limit_burst: Option<Spanned<u32>>,
    syslog_target: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    pin_path: Option<Spanned<String>>,
    control_socket: Option<Spanned<String>>,
    metrics_address: Option<Spanned<String>>,
    control_group: Option<Spanned<String>>,
    rule_capacity: Option<Spanned<u64>>,
    watch_config: Option<bool>,
    require_packet_socket_guard: Option<bool>,
    verdict_cache: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    #[serde(default)]
    mode: Option<Spanned<Mode>>,
    cgroups: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    allow_sources: Vec<Spanned<crate::sources::SourceSpec>>,
    #[serde(default)]
    deny_sources: Vec<Spanned<crate::sources::SourceSpec>>,
    #[serde(default)]
    allow_packet_sockets: bool,
}

/// `[agent]`: where the agent keeps its state and listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Directory on a BPF filesystem for pinned links and maps.
    pub pin_path: PathBuf,
    /// Unix socket of the control CLI.
    pub control_socket: PathBuf,
    /// Address of the Prometheus endpoint.
    pub metrics_address: SocketAddr,
    /// Group whose members may use the control socket besides root.
    pub control_group: Option<String>,
    /// Entries each rule trie (IPv4, IPv6) holds; a reload needs room for the old and
    /// the new version together.
    pub rule_capacity: u32,
    /// Reload by itself when the config file changes (an edit saved, a Kubernetes
    /// ConfigMap update). Off by default: on a host, `reload` is the explicit step.
    pub watch_config: bool,
    /// Refuse to start (or reload) when an enforce policy denies packet sockets and
    /// the kernel cannot enforce that (no usable BPF LSM). Off by default: the agent
    /// then enforces everything else and reports the gap loudly.
    pub require_packet_socket_guard: bool,
    /// Let the kernel program remember verdicts per flow (per CPU), so that a flow's
    /// later packets skip the trie. On by default; off judges every packet from the
    /// trie (for measuring, or to rule the cache out when debugging).
    pub verdict_cache: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            pin_path: PathBuf::from("/sys/fs/bpf/residency"),
            control_socket: PathBuf::from("/run/residency/agent.sock"),
            metrics_address: SocketAddr::from(([127, 0, 0, 1], 9477)),
            control_group: None,
            rule_capacity: residency_common::DEFAULT_RULE_CAPACITY,
            watch_config: false,
            require_packet_socket_guard: false,
            verdict_cache: true,
        }
    }
}

/// Where events go (`[events] sinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SinkKind {
    /// The systemd journal, native protocol, with structured `RESIDENCY_*` fields.
    Journal,
    /// RFC 5424 syslog, to the local socket or a UDP/TCP target.
    Syslog,
    /// JSON lines on stdout (Kubernetes log collectors).
    Json,
    /// The kernel log (`dmesg`, `journalctl -k`), like an iptables `LOG` target.
    Kmsg,
    /// logfmt lines on stdout.
    Text,
}

impl SinkKind {
    pub const ALL: [SinkKind; 5] = [
        SinkKind::Journal,
        SinkKind::Syslog,
        SinkKind::Json,
        SinkKind::Kmsg,
        SinkKind::Text,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Journal => "journal",
            SinkKind::Syslog => "syslog",
            SinkKind::Json => "json",
            SinkKind::Kmsg => "kmsg",
            SinkKind::Text => "text",
        }
    }
}

/// Where syslog lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A local datagram socket, `/dev/log` by default.
    Unix(PathBuf),
    /// RFC 5426: one message per datagram.
    Udp(SocketAddr),
    /// RFC 6587 octet counting over TCP.
    Tcp(SocketAddr),
}

/// `[events]`: how blocks are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// `None`: the default (journal when its socket exists, otherwise JSON).
    pub sinks: Option<Vec<SinkKind>>,
    /// Truncate logged addresses (IPv4 to /24, IPv6 to /48).
    pub mask_addresses: bool,
    /// Repeats of one policy + destination + port + protocol within this window are
    /// reported once, with a count. Zero disables aggregation.
    pub aggregate_window: std::time::Duration,
    /// Most distinct keys held for aggregation; beyond, events pass unaggregated.
    pub aggregate_max_keys: usize,
    /// Events each CPU may emit per second (kernel rate limit); 0 = unlimited.
    pub rate_limit_per_cpu: u32,
    /// Burst above that rate.
    pub rate_limit_burst: u32,
    pub syslog_target: SyslogTarget,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            sinks: None,
            mask_addresses: false,
            aggregate_window: std::time::Duration::from_secs(1),
            aggregate_max_keys: 10_000,
            rate_limit_per_cpu: 1000,
            rate_limit_burst: 200,
            syslog_target: SyslogTarget::Unix(PathBuf::from("/dev/log")),
        }
    }
}

/// Whether an entry allows or denies its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// The protocol and destination ports an entry is limited to (`tcp/5432`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// IP protocol number.
    pub protocol: u8,
    /// First and last destination port; `0..=65535` for every port (or a protocol
    /// without ports).
    pub lo: u16,
    pub hi: u16,
}

impl PortSpec {
    /// Whether the spec covers every port of its protocol.
    pub fn every_port(&self) -> bool {
        self.lo == 0 && self.hi == u16::MAX
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = PROTOCOLS
            .iter()
            .find(|(_, n, _)| *n == self.protocol)
            .map(|(s, _, _)| *s)
            .unwrap_or("?");
        if self.every_port() {
            write!(f, "{name}")
        } else if self.lo == self.hi {
            write!(f, "{name}/{}", self.lo)
        } else {
            write!(f, "{name}/{}-{}", self.lo, self.hi)
        }
    }
}

/// Protocols an entry may name: (name, number, has ports).
pub const PROTOCOLS: &[(&str, u8, bool)] = &[
    ("tcp", 6, true),
    ("udp", 17, true),
    ("sctp", 132, true),
    ("icmp", 1, false),
    ("icmpv6", 58, false),
];

/// One `allow` or `deny` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub action: Action,
    pub network: IpNetwork,
    /// `None`: every protocol and port.
    pub ports: Option<PortSpec>,
    /// Line of the entry in its file, so that verdicts can cite it.
    pub line: usize,
    /// The IP-range file it came from (`aws ip-ranges.json`), for entries of
    /// `allow_sources` / `deny_sources`.
    pub origin: Option<String>,
}

/// One `[[policy]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub name: String,
    pub mode: Mode,
    /// As written: absolute paths under the cgroup v2 mount, or paths relative to it.
    pub cgroups: Vec<CgroupRef>,
    /// Allow entries first, then deny entries, each in file order, then the entries of
    /// the IP-range sources.
    pub entries: Vec<Entry>,
    /// What each source contributed: `(description, prefixes read, after aggregation)`.
    pub sources: Vec<(String, usize, usize)>,
    /// Workloads may create packet sockets (AF_PACKET), which no IP egress hook sees.
    /// Off by default; only enforce policies deny them, audit policies report them.
    pub allow_packet_sockets: bool,
}

/// A cgroup named in a policy, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRef {
    pub path: String,
    pub line: usize,
    pub column: usize,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Path of the file, or [`EMBEDDED_NAME`].
    pub source: String,
    pub agent: AgentConfig,
    pub events: EventsConfig,
    pub policies: Vec<PolicyConfig>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&text, &file)
    }

    /// The embedded default config.
    pub fn embedded_default() -> Config {
        Config::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME)
            .expect("the embedded default config is valid")
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let at = Locator::new(text, file);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            at.error(span, "config", e.message().trim_end())
        })?;

        let agent = parse_agent(&at, raw.agent)?;
        let events = parse_events(&at, raw.events)?;
        if raw.policy.len() > residency_common::MAX_POLICIES as usize {
            return Err(at.error(
                0..0,
                "policy",
                &format!(
                    "{} policies; at most {} are supported",
                    raw.policy.len(),
                    residency_common::MAX_POLICIES
                ),
            ));
        }

        let mut names: HashMap<String, usize> = HashMap::new();
        let mut cgroup_owner: HashMap<String, String> = HashMap::new();
        let mut policies = Vec::with_capacity(raw.policy.len());
        for p in raw.policy {
            let name = p.name.get_ref().clone();
            let key = format!("policy \"{name}\"");
            validate_name(&at, &p.name)?;
            if let Some(first) = names.insert(name.clone(), at.line(p.name.span().start)) {
                return Err(at.error(
                    p.name.span(),
                    "policy.name",
                    &format!("duplicate policy name \"{name}\" (first defined on line {first})"),
                ));
            }
            let mode = p.mode.map(|m| *m.get_ref()).unwrap_or(Mode::Enforce);

            if p.cgroups.get_ref().is_empty() {
                return Err(at.error(
                    p.cgroups.span(),
                    &format!("{key}.cgroups"),
                    "binds no cgroup; name at least one",
                ));
            }
            let mut cgroups = Vec::new();
            for c in p.cgroups.into_inner() {
                let path = c.get_ref().trim_end_matches('/').to_owned();
                let path = if path.is_empty() && c.get_ref().starts_with('/') {
                    "/".to_owned()
                } else {
                    path
                };
                if path.is_empty() || path.contains('\0') || path.split('/').any(|s| s == "..") {
                    return Err(at.error(
                        c.span(),
                        &format!("{key}.cgroups"),
                        &format!("\"{}\" is not a usable cgroup path", c.get_ref()),
                    ));
                }
                if let Some(other) = cgroup_owner.insert(path.clone(), name.clone()) {
                    return Err(at.error(
                        c.span(),
                        &format!("{key}.cgroups"),
                        &format!("cgroup \"{path}\" is already bound to policy \"{other}\"; a cgroup has one policy"),
                    ));
                }
                let line = at.line(c.span().start);
                let column = at.column(c.span().start);
                cgroups.push(CgroupRef { path, line, column });
            }

            let mut entries = Vec::new();
            let mut seen: HashMap<(IpNetwork, Option<PortSpec>), (Action, usize)> = HashMap::new();
            // Protocol/port entries per prefix, bounded by what the kernel walks.
            let mut port_entries: HashMap<IpNetwork, usize> = HashMap::new();
            for (action, list) in [(Action::Allow, p.allow), (Action::Deny, p.deny)] {
                let entry_key = format!("{key}.{}", action.as_str());
                for item in list {
                    let (network, ports) = parse_entry(item.get_ref())
                        .map_err(|reason| at.error(item.span(), &entry_key, &reason))?;
                    let line = at.line(item.span().start);
                    let shown = display_entry(network, ports);
                    if let Some((prev, prev_line)) = seen.insert((network, ports), (action, line)) {
                        let reason = if prev == action {
                            format!("{shown} is listed twice (also on line {prev_line})")
                        } else {
                            format!(
                                "{shown} is both allowed and denied (the {} entry is on line {prev_line})",
                                prev.as_str()
                            )
                        };
                        return Err(at.error(item.span(), &entry_key, &reason));
                    }
                    let same_prefix = match ports {
                        Some(_) => {
                            let n = port_entries.entry(network).or_insert(0usize);
                            *n += 1;
                            *n
                        }
                        None => 0,
                    };
                    if same_prefix > residency_common::MAX_PORT_RULES_PER_PREFIX as usize {
                        return Err(at.error(
                            item.span(),
                            &entry_key,
                            &format!(
                                "{network} has more than {} protocol/port entries; merge ranges",
                                residency_common::MAX_PORT_RULES_PER_PREFIX
                            ),
                        ));
                    }
                    entries.push(Entry {
                        action,
                        network,
                        ports,
                        line,
                        origin: None,
                    });
                }
            }
            // IP-range sources: aggregated, and never overriding an entry written by
            // hand (nor an earlier source) for the same prefix.
            let mut sources = Vec::new();
            let base = Path::new(file)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            for (action, list) in [
                (Action::Allow, p.allow_sources),
                (Action::Deny, p.deny_sources),
            ] {
                let entry_key = format!("{key}.{}_sources", action.as_str());
                for item in list {
                    let spec = item.get_ref();
                    let loaded = crate::sources::load(spec, base)
                        .map_err(|reason| at.error(item.span(), &entry_key, &reason))?;
                    let line = at.line(item.span().start);
                    let origin = format!("{:?} {}", spec.format, spec.path).to_lowercase();
                    sources.push((origin.clone(), loaded.read, loaded.prefixes.len()));
                    for network in loaded.prefixes {
                        if seen.contains_key(&(network, None)) {
                            continue;
                        }
                        seen.insert((network, None), (action, line));
                        entries.push(Entry {
                            action,
                            network,
                            ports: None,
                            line,
                            origin: Some(origin.clone()),
                        });
                    }
                }
            }
            policies.push(PolicyConfig {
                name,
                mode,
                cgroups,
                entries,
                sources,
                allow_packet_sockets: p.allow_packet_sockets,
            });
        }
        Ok(Config {
            source: file.to_owned(),
            agent,
            events,
            policies,
        })
    }
}

impl Config {
    /// Checks every cgroup path against this host's cgroup v2 hierarchy. Paths outside
    /// it are errors; cgroups that do not exist (yet) are returned as notes.
    pub fn check_cgroups(
        &self,
        hierarchy: &crate::cgroup::Hierarchy,
    ) -> Result<Vec<String>, ConfigError> {
        let mut notes = Vec::new();
        for p in &self.policies {
            for c in &p.cgroups {
                let invalid = |reason: String| ConfigError::Invalid {
                    file: self.source.clone(),
                    line: c.line,
                    column: c.column,
                    key: format!("policy \"{}\".cgroups", p.name),
                    reason,
                };
                let path = hierarchy
                    .resolve(&c.path)
                    .map_err(|e| invalid(e.to_string()))?;
                if let Err(e) = crate::cgroup::id_of(&path) {
                    notes.push(format!("{}:{}: {e}", self.source, c.line));
                }
            }
        }
        Ok(notes)
    }
}

fn parse_agent(at: &Locator<'_>, raw: RawAgent) -> Result<AgentConfig, ConfigError> {
    let mut agent = AgentConfig::default();
    if let Some(p) = raw.pin_path {
        if !p.get_ref().starts_with('/') {
            return Err(at.error(p.span(), "agent.pin_path", "must be an absolute path"));
        }
        agent.pin_path = PathBuf::from(p.into_inner());
    }
    if let Some(p) = raw.control_socket {
        if !p.get_ref().starts_with('/') {
            return Err(at.error(p.span(), "agent.control_socket", "must be an absolute path"));
        }
        agent.control_socket = PathBuf::from(p.into_inner());
    }
    if let Some(v) = raw.verdict_cache {
        agent.verdict_cache = v;
    }
    if let Some(r) = raw.require_packet_socket_guard {
        agent.require_packet_socket_guard = r;
    }
    if let Some(w) = raw.watch_config {
        agent.watch_config = w;
    }
    if let Some(g) = raw.control_group {
        let ok = !g.get_ref().is_empty()
            && g.get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(at.error(
                g.span(),
                "agent.control_group",
                &format!("\"{}\" is not a group name", g.get_ref()),
            ));
        }
        agent.control_group = Some(g.into_inner());
    }
    if let Some(c) = raw.rule_capacity {
        let n = *c.get_ref();
        if !(16..=16 * 1024 * 1024).contains(&n) {
            return Err(at.error(
                c.span(),
                "agent.rule_capacity",
                "must be between 16 and 16777216",
            ));
        }
        agent.rule_capacity = n as u32;
    }
    if let Some(a) = raw.metrics_address {
        agent.metrics_address = a.get_ref().parse().map_err(|_| {
            at.error(
                a.span(),
                "agent.metrics_address",
                &format!(
                    "\"{}\" is not an address:port (e.g. 127.0.0.1:9477)",
                    a.get_ref()
                ),
            )
        })?;
    }
    Ok(agent)
}

fn parse_events(at: &Locator<'_>, raw: RawEvents) -> Result<EventsConfig, ConfigError> {
    let mut ev = EventsConfig::default();
    if let Some(list) = raw.sinks {
        let mut sinks = Vec::new();
        for item in list.get_ref() {
            let kind = SinkKind::ALL
                .into_iter()
                .find(|k| k.as_str() == item.get_ref())
                .ok_or_else(|| {
                    at.error(
                        item.span(),
                        "events.sinks",
                        &format!(
                            "unknown sink \"{}\"; use journal, syslog, json, kmsg or text",
                            item.get_ref()
                        ),
                    )
                })?;
            if sinks.contains(&kind) {
                return Err(at.error(
                    item.span(),
                    "events.sinks",
                    &format!("\"{}\" is listed twice", kind.as_str()),
                ));
            }
            sinks.push(kind);
        }
        if sinks.is_empty() {
            return Err(at.error(
                list.span(),
                "events.sinks",
                "is empty: name at least one sink",
            ));
        }
        ev.sinks = Some(sinks);
    }
    if let Some(m) = raw.mask_addresses {
        ev.mask_addresses = m;
    }
    if let Some(ms) = raw.aggregate_window_ms {
        ev.aggregate_window = std::time::Duration::from_millis(ms);
    }
    if let Some(n) = raw.aggregate_max_keys {
        if *n.get_ref() == 0 || *n.get_ref() > 1_000_000 {
            return Err(at.error(
                n.span(),
                "events.aggregate_max_keys",
                "must be between 1 and 1000000",
            ));
        }
        ev.aggregate_max_keys = *n.get_ref() as usize;
    }
    if let Some(r) = raw.rate_limit_per_cpu {
        // The kernel's token bucket multiplies elapsed nanoseconds by the rate; a
        // million events per second and CPU keeps that far from overflowing.
        if *r.get_ref() > 1_000_000 {
            return Err(at.error(
                r.span(),
                "events.rate_limit_per_cpu",
                "must be at most 1000000 (0 = unlimited)",
            ));
        }
        ev.rate_limit_per_cpu = *r.get_ref();
    }
    if let Some(b) = raw.rate_limit_burst {
        if *b.get_ref() == 0 {
            return Err(at.error(b.span(), "events.rate_limit_burst", "must be at least 1"));
        }
        ev.rate_limit_burst = *b.get_ref();
    }
    if let Some(t) = raw.syslog_target {
        ev.syslog_target = parse_syslog_target(t.get_ref())
            .map_err(|reason| at.error(t.span(), "events.syslog_target", &reason))?;
    }
    Ok(ev)
}

/// `unix:/dev/log`, `udp://127.0.0.1:514` or `tcp://127.0.0.1:601`.
fn parse_syslog_target(text: &str) -> Result<SyslogTarget, String> {
    let addr = |a: &str| {
        a.parse::<SocketAddr>()
            .map_err(|_| format!("\"{a}\" is not an address:port (e.g. 127.0.0.1:514)"))
    };
    if let Some(p) = text.strip_prefix("unix:") {
        if !p.starts_with('/') {
            return Err(format!(
                "\"{text}\": the socket path must be absolute (unix:/dev/log)"
            ));
        }
        Ok(SyslogTarget::Unix(PathBuf::from(p)))
    } else if let Some(a) = text.strip_prefix("udp://") {
        Ok(SyslogTarget::Udp(addr(a)?))
    } else if let Some(a) = text.strip_prefix("tcp://") {
        Ok(SyslogTarget::Tcp(addr(a)?))
    } else {
        Err(format!(
            "\"{text}\" is not a syslog target: use unix:/PATH, udp://ADDR:PORT or tcp://ADDR:PORT"
        ))
    }
}

fn validate_name(at: &Locator<'_>, name: &Spanned<String>) -> Result<(), ConfigError> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(at.error(
            name.span(),
            "policy.name",
            &format!("\"{n}\" is not a valid name: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 - _ ."),
        ))
    }
}

/// An entry as written back: `10.0.0.0/16` or `10.0.0.0/16 tcp/5432`.
pub fn display_entry(network: IpNetwork, ports: Option<PortSpec>) -> String {
    match ports {
        Some(p) => format!("{network} {p}"),
        None => network.to_string(),
    }
}

/// Parses one `allow`/`deny` entry: a prefix, optionally followed by a protocol and
/// ports: `10.0.0.0/16`, `10.0.0.0/16 tcp/5432`, `203.0.113.0/24 tcp/8000-8100`,
/// `192.0.2.0/24 udp`, `198.51.100.0/24 icmp`.
pub fn parse_entry(text: &str) -> Result<(IpNetwork, Option<PortSpec>), String> {
    let mut words = text.split_whitespace();
    let prefix = words.next().unwrap_or("");
    let network = parse_prefix(prefix)?;
    let Some(spec) = words.next() else {
        return Ok((network, None));
    };
    if words.next().is_some() {
        return Err(format!(
            "\"{}\" has more than a prefix and one protocol/ports word (write \"PREFIX\" or \"PREFIX tcp/PORT[-PORT]\")",
            text.trim()
        ));
    }
    let (name, ports) = match spec.split_once('/') {
        Some((n, p)) => (n, Some(p)),
        None => (spec, None),
    };
    let name = name.to_ascii_lowercase();
    let Some((_, protocol, has_ports)) = PROTOCOLS.iter().find(|(n, _, _)| *n == name) else {
        let known: Vec<&str> = PROTOCOLS.iter().map(|(n, _, _)| *n).collect();
        return Err(format!(
            "\"{spec}\" does not name a protocol ({} [/PORT or /FIRST-LAST])",
            known.join(", ")
        ));
    };
    match (network.is_ipv4(), *protocol) {
        (true, 58) => {
            return Err(format!(
                "icmpv6 does not go to the IPv4 prefix {network}; write icmp"
            ));
        }
        (false, 1) => return Err(format!("ICMP to the IPv6 prefix {network} is icmpv6")),
        _ => {}
    }
    let (lo, hi) = match ports {
        None => (0, u16::MAX),
        Some(_) if !has_ports => {
            return Err(format!("{name} has no ports; write \"{network} {name}\""));
        }
        Some(p) => {
            let port = |s: &str| {
                s.parse::<u16>()
                    .map_err(|_| format!("\"{s}\" in \"{spec}\" is not a port (0-65535)"))
            };
            let (lo, hi) = match p.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => (port(p)?, port(p)?),
            };
            if lo > hi {
                return Err(format!(
                    "port range {lo}-{hi} in \"{spec}\" is empty (first > last)"
                ));
            }
            (lo, hi)
        }
    };
    Ok((
        network,
        Some(PortSpec {
            protocol: *protocol,
            lo,
            hi,
        }),
    ))
}

/// Parses one prefix: `198.51.100.0/24`, `2001:db8::/32`, or a bare address (a host
/// route). Host bits set below the prefix are an error, not silently cleared: in
/// `10.0.0.1/8` the writer meant either `10.0.0.1/32` or `10.0.0.0/8`, and guessing
/// wrong would allow a whole /8.
pub fn parse_prefix(text: &str) -> Result<IpNetwork, String> {
    let text = text.trim();
    let network: IpNetwork = text
        .parse()
        .map_err(|e| format!("\"{text}\" is not an IP prefix ({e})"))?;
    if network.network() != network.ip() {
        return Err(format!(
            "\"{text}\" has host bits set below its /{} prefix; did you mean {}/{} or {}/{}?",
            network.prefix(),
            network.network(),
            network.prefix(),
            network.ip(),
            if network.is_ipv4() { 32 } else { 128 },
        ));
    }
    if let IpNetwork::V6(v6) = network {
        let s = v6.network().segments();
        if s[..5] == [0; 5] && s[5] == 0xffff && v6.prefix() >= 96 {
            let v4 = v6.network().to_ipv4_mapped().expect("checked mapped");
            return Err(format!(
                "\"{text}\" is an IPv4-mapped prefix; write it as {v4}/{} (mapped destinations are judged as IPv4)",
                v6.prefix() - 96
            ));
        }
    }
    Ok(network)
}

/// Turns byte offsets into `file:line:column` errors.
struct Locator<'a> {
    text: &'a str,
    file: &'a str,
    /// Byte offset where each line starts: every entry's line is looked up, and a
    /// 100,000-prefix policy must not cost a scan of the text per entry.
    line_starts: Vec<usize>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str, file: &'a str) -> Locator<'a> {
        let line_starts = std::iter::once(0)
            .chain(
                text.bytes()
                    .enumerate()
                    .filter(|(_, b)| *b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        Locator {
            text,
            file,
            line_starts,
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|start| *start <= offset)
            .max(1)
    }

    fn column(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        let start = self.line_starts[self.line(offset) - 1].min(offset);
        self.text[start..offset].chars().count() + 1
    }

    fn error(&self, span: Range<usize>, key: &str, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: self.line(span.start),
            column: self.column(span.start),
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[agent]
pin_path = "/sys/fs/bpf/residency"
control_socket = "/run/residency/agent.sock"
metrics_address = "127.0.0.1:9477"

[[policy]]
name = "eu-central"
mode = "enforce"
cgroups = ["/sys/fs/cgroup/system.slice/payments.service"]
allow = ["10.0.0.0/16", "2001:db8:100::/48", "127.0.0.0/8", "::1/128"]
deny = ["10.0.99.0/24"]

[[policy]]
name = "eu-west"
mode = "audit"
cgroups = ["system.slice/reports.service"]
allow = ["198.51.100.7"]
"#;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(GOOD, "test.toml").unwrap();
        assert_eq!(c.agent, AgentConfig::default());
        assert_eq!(c.policies.len(), 2);
        let p = &c.policies[0];
        assert_eq!(p.name, "eu-central");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.entries.len(), 5);
        assert_eq!(p.entries[4].action, Action::Deny);
        assert_eq!(p.entries[4].network.to_string(), "10.0.99.0/24");
        assert_eq!(p.entries[4].line, 12);
        assert_eq!(c.policies[1].mode, Mode::Audit);
        assert_eq!(
            c.policies[1].entries[0].network.to_string(),
            "198.51.100.7/32"
        );
    }

    #[test]
    fn mode_defaults_to_enforce_and_lists_to_empty() {
        let c = Config::parse("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n", "t").unwrap();
        assert_eq!(c.policies[0].mode, Mode::Enforce);
        assert!(c.policies[0].entries.is_empty());
    }

    #[test]
    fn embedded_default_is_audit_only() {
        let c = Config::embedded_default();
        assert!(!c.policies.is_empty());
        assert!(c.policies.iter().all(|p| p.mode == Mode::Audit));
    }

    #[test]
    fn rejects_prefix_too_long_with_line() {
        let e = err("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"198.51.100.0/33\"]\n");
        assert!(e.starts_with("test.toml:4:10: policy \"a\".allow:"), "{e}");
        assert!(e.contains("198.51.100.0/33"), "{e}");
    }

    #[test]
    fn rejects_host_bits() {
        let e = err("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.1/8\"]\n");
        assert!(e.contains("test.toml:4:"), "{e}");
        assert!(e.contains("host bits"), "{e}");
        assert!(e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn rejects_unknown_key_with_line() {
        let e = err("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallwo = [\"10.0.0.0/8\"]\n");
        assert!(e.starts_with("test.toml:4:"), "{e}");
        assert!(e.contains("allwo"), "{e}");
    }

    #[test]
    fn rejects_unknown_agent_key() {
        let e = err("[agent]\npin_dir = \"/x\"\n");
        assert!(e.starts_with("test.toml:2:"), "{e}");
        assert!(e.contains("pin_dir"), "{e}");
    }

    #[test]
    fn rejects_duplicate_policy_name() {
        let e = err(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n[[policy]]\nname = \"a\"\ncgroups = [\"y\"]\n",
        );
        assert!(e.starts_with("test.toml:5:"), "{e}");
        assert!(e.contains("duplicate policy name"), "{e}");
    }

    #[test]
    fn rejects_bad_mode() {
        let e = err("[[policy]]\nname = \"a\"\nmode = \"block\"\ncgroups = [\"x\"]\n");
        assert!(e.starts_with("test.toml:3:"), "{e}");
    }

    #[test]
    fn rejects_conflicting_and_duplicate_entries() {
        let e = err(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.0.0.0/8\"]\n",
        );
        assert!(e.contains("both allowed and denied"), "{e}");
        assert!(e.starts_with("test.toml:5:"), "{e}");
        let e = err(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n",
        );
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn rejects_cgroup_in_two_policies_and_empty_cgroups() {
        let e = err(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n[[policy]]\nname = \"b\"\ncgroups = [\"x/\"]\n",
        );
        assert!(e.contains("already bound to policy \"a\""), "{e}");
        let e = err("[[policy]]\nname = \"a\"\ncgroups = []\n");
        assert!(e.contains("binds no cgroup"), "{e}");
        let e = err("[[policy]]\nname = \"a\"\ncgroups = [\"../etc\"]\n");
        assert!(e.contains("not a usable cgroup path"), "{e}");
    }

    #[test]
    fn rejects_bad_names_and_addresses() {
        assert!(
            err("[[policy]]\nname = \"a b\"\ncgroups = [\"x\"]\n").contains("not a valid name")
        );
        assert!(err("[agent]\nmetrics_address = \"localhost\"\n").contains("not an address:port"));
        assert!(err("[agent]\npin_path = \"bpf\"\n").contains("absolute"));
    }

    #[test]
    fn parses_events_section() {
        let c = Config::parse(
            "[events]\nsinks = [\"journal\", \"json\"]\nmask_addresses = true\naggregate_window_ms = 250\n\
             rate_limit_per_cpu = 0\nsyslog_target = \"udp://127.0.0.1:5514\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.events.sinks,
            Some(vec![SinkKind::Journal, SinkKind::Json])
        );
        assert!(c.events.mask_addresses);
        assert_eq!(
            c.events.aggregate_window,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(c.events.rate_limit_per_cpu, 0);
        assert_eq!(
            c.events.syslog_target,
            SyslogTarget::Udp("127.0.0.1:5514".parse().unwrap())
        );
        assert_eq!(
            Config::parse("", "t").unwrap().events,
            EventsConfig::default()
        );
        let e = err("[events]\nsinks = [\"journal\", \"splunk\"]\n");
        assert!(
            e.starts_with("test.toml:2:21: events.sinks: unknown sink \"splunk\""),
            "{e}"
        );
        assert!(err("[events]\nsinks = []\n").contains("is empty"));
        assert!(
            err("[events]\nsyslog_target = \"10.0.0.1:514\"\n").contains("not a syslog target")
        );
        assert!(
            err("[events]\nsyslog_target = \"tcp://host:601\"\n").contains("not an address:port")
        );
    }

    #[test]
    fn protocol_and_port_entries_are_parsed_and_checked() {
        let c = Config::parse(
            "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n\
             allow = [\"10.0.0.0/16 tcp/5432\", \"10.0.0.0/16 UDP/53\", \"203.0.113.0/24 tcp/8000-8100\", \"198.51.100.0/24 icmp\", \"10.0.0.0/16\"]\n",
            "t.toml",
        )
        .unwrap();
        let e = &c.policies[0].entries;
        assert_eq!(
            e[0].ports,
            Some(PortSpec {
                protocol: 6,
                lo: 5432,
                hi: 5432
            })
        );
        assert_eq!(e[1].ports.unwrap().to_string(), "udp/53");
        assert_eq!(e[2].ports.unwrap().to_string(), "tcp/8000-8100");
        assert_eq!(e[3].ports.unwrap().to_string(), "icmp");
        assert_eq!(e[4].ports, None, "the same prefix bare is its own entry");
        for (entry, reason) in [
            ("10.0.0.0/16 tcp/99999", "is not a port"),
            ("10.0.0.0/16 gre", "does not name a protocol"),
            ("10.0.0.0/16 icmp/8", "icmp has no ports"),
            ("2001:db8::/32 icmp", "is icmpv6"),
            ("10.0.0.0/8 icmpv6", "write icmp"),
            ("10.0.0.0/16 tcp/10-5", "is empty"),
            ("10.0.0.0/16 tcp/1 tcp/2", "more than a prefix and one"),
        ] {
            let e = err(&format!(
                "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [\"{entry}\"]\n"
            ));
            assert!(e.contains(reason) && e.contains("t.toml:4"), "{entry}: {e}");
        }
        let e = err(
            "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8 tcp/22\"]\ndeny = [\"10.0.0.0/8 tcp/22\"]\n",
        );
        assert!(
            e.contains("10.0.0.0/8 tcp/22 is both allowed and denied"),
            "{e}"
        );
        let many: Vec<String> = (1..=17)
            .map(|p| format!("\"10.0.0.0/8 tcp/{p}\""))
            .collect();
        let e = err(&format!(
            "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [{}]\n",
            many.join(", ")
        ));
        assert!(e.contains("more than 16 protocol/port entries"), "{e}");
    }

    #[test]
    fn prefixes_normalise_and_reject_mapped() {
        assert_eq!(
            parse_prefix("2001:db8::").unwrap().to_string(),
            "2001:db8::/128"
        );
        assert_eq!(
            parse_prefix(" 10.0.0.0/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(
            parse_prefix("::ffff:10.0.0.0/104")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert!(
            parse_prefix("2001:db8::1/64")
                .unwrap_err()
                .contains("host bits")
        );
        assert!(parse_prefix("eu-central-1").is_err());
    }
}
