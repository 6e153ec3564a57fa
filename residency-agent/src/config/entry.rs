//! One `allow` / `deny` entry: a prefix, optionally limited to a protocol and ports
//! (`10.0.0.0/16 tcp/5432`). The one parser of `proto/port` lives here; `explain`
//! uses it too.

use std::num::{NonZeroU8, NonZeroU16};

use ipnetwork::IpNetwork;
use residency_common::protocol::Protocol;

/// Whether an entry allows or denies its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// IP protocol number (never 0: only named protocols are written, and the niche
    /// keeps `Option<PortSpec>` at 6 bytes).
    pub protocol: NonZeroU8,
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
        let name = Protocol::from_number(self.protocol.get()).map_or("?", Protocol::as_str);
        if self.every_port() {
            write!(f, "{name}")
        } else if self.lo == self.hi {
            write!(f, "{name}/{}", self.lo)
        } else {
            write!(f, "{name}/{}-{}", self.lo, self.hi)
        }
    }
}

/// Where an entry from an IP-range source came from (`mmdb GeoLite2.mmdb: DE+FI`): an
/// index into its policy's `origins` ([`PolicyConfig::origin_of`]), which the entries
/// citing one origin share. Two bytes, where a shared pointer took eight: a policy can
/// hold millions of entries, and the agent holds two versions while it swaps them.
///
/// [`PolicyConfig::origin_of`]: super::PolicyConfig::origin_of
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginId(NonZeroU16);

impl OriginId {
    /// The most origins one policy cites (its sources, and their country labels).
    pub const MAX: usize = u16::MAX as usize;

    /// The id of `origins[index]`, if `index` is below [`OriginId::MAX`].
    pub fn new(index: usize) -> Option<OriginId> {
        u16::try_from(index + 1)
            .ok()
            .and_then(NonZeroU16::new)
            .map(OriginId)
    }

    /// Its index in the policy's `origins`.
    pub fn index(self) -> usize {
        usize::from(self.0.get()) - 1
    }
}

/// One `allow` or `deny` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub action: Action,
    pub network: IpNetwork,
    /// `None`: every protocol and port.
    pub ports: Option<PortSpec>,
    /// Line of the entry in its file, so that verdicts can cite it. (32 bits: a
    /// policy holds up to millions of entries, 8 bytes each matter.)
    pub line: u32,
    /// The IP-range file it came from (`aws ip-ranges.json`), for entries of
    /// `allow_sources` / `deny_sources`.
    /// Shared: a country database's 100,000s of entries cite a few dozen origins.
    pub origin: Option<OriginId>,
}

// A policy holds up to millions of entries: every byte of one is megabytes.
const _: () = assert!(std::mem::size_of::<Entry>() <= 32);

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
    // "192.0.2.0 /24": a prefix length cut off by a space, not a protocol.
    if let Some(len) = spec.strip_prefix('/')
        && !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "\"{}\" has a space before its prefix length: write \"{prefix}/{len}\"",
            text.trim()
        ));
    }
    if words.next().is_some() {
        return Err(format!(
            "\"{}\" has more than a prefix and one protocol/ports word (write \"PREFIX\" or \"PREFIX tcp/PORT[-PORT]\")",
            text.trim()
        ));
    }
    let Some(ProtoPorts {
        name,
        protocol,
        has_ports,
        ports,
    }) = parse_proto_port(spec)
    else {
        let known: Vec<&str> = Protocol::ALL.iter().map(|p| p.as_str()).collect();
        return Err(format!(
            "\"{spec}\" does not name a protocol ({} [/PORT or /FIRST-LAST])",
            known.join(", ")
        ));
    };
    match (network.is_ipv4(), protocol) {
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
    let protocol =
        NonZeroU8::new(protocol).ok_or_else(|| format!("\"{spec}\" names protocol 0"))?;
    Ok((network, Some(PortSpec { protocol, lo, hi })))
}

/// A protocol word with its optional ports text: `tcp/443` is `tcp` (6, has ports)
/// and `Some("443")`; `icmp` is `icmp` (1, no ports) and `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoPorts<'a> {
    /// The protocol's name, lower case.
    pub name: String,
    pub protocol: u8,
    pub has_ports: bool,
    pub ports: Option<&'a str>,
}

/// The one parser of `proto[/ports]` (entries and `explain` both use it); `None` when
/// the word names no protocol. What the ports text may hold (a range, one port) is the
/// caller's to check.
pub fn parse_proto_port(spec: &str) -> Option<ProtoPorts<'_>> {
    let (name, ports) = match spec.split_once('/') {
        Some((n, p)) => (n, Some(p)),
        None => (spec, None),
    };
    let name = name.to_ascii_lowercase();
    let protocol = Protocol::from_name(&name)?;
    Some(ProtoPorts {
        name,
        protocol: protocol.number(),
        has_ports: protocol.has_ports(),
        ports,
    })
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
