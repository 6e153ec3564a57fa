//! `[agent]`: where the agent keeps its pinned state and listens, and the kernel-side
//! settings that are not policy (trie capacity, lookup tables, the verdict cache).

use std::{net::SocketAddr, path::PathBuf};

use super::{ConfigError, locate::Locator, raw::RawAgent};

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
    /// 1 KiB chunks of IPv4 lookup tables per generation slot (the kernel allocates
    /// both slots' at start): a first packet's IPv4 verdict in four array reads
    /// instead of a trie walk. A policy whose tables do not fit is judged by the trie
    /// alone; 0 turns the tables off. Sizes new maps only: adopted maps keep theirs.
    pub ipv4_table_chunks: u32,
    /// The same for IPv6 (eight array reads, the first 64 bits of the address).
    pub ipv6_table_chunks: u32,
    /// Reload by itself when the config file changes (an edit saved, a Kubernetes
    /// ConfigMap update). Off by default: on a host, `reload` is the explicit step.
    pub watch_config: bool,
    /// Re-read a policy's IP-range source files when they change (a GeoIP database
    /// updated by a timer, a volume refreshed) and apply them like a reload, with the
    /// config text in force. On by default.
    pub watch_sources: bool,
    /// Refuse to start (or reload) when an enforce policy denies packet sockets and
    /// the kernel cannot enforce that (no usable BPF LSM). Off by default: the agent
    /// then enforces everything else and reports the gap loudly.
    pub require_packet_socket_guard: bool,
    /// Let the kernel program remember verdicts per flow (per CPU), so that a flow's
    /// later packets skip the trie. On by default; off judges every packet from the
    /// trie (for measuring, or to rule the cache out when debugging).
    pub verdict_cache: bool,
    /// Mount a bpffs on the pin path when it is not on one. On by default (hosts
    /// without systemd as PID 1 have none); off in a Kubernetes pod, where a bpffs the
    /// agent mounted would live in the pod's mount namespace and its pins — the
    /// enforcement — would vanish with the pod. Off, a missing bpffs refuses start.
    pub mount_bpffs: bool,
    /// After every change of what the kernel enforces (start, reload, a cgroup bound),
    /// run `verify` on a sample in the background and report the result (metrics,
    /// journal). On by default.
    pub self_verify: bool,
}

impl AgentConfig {
    /// The lookup tables' room per slot, by family.
    pub fn table_chunks(&self) -> crate::generations::ByFamily<u32> {
        crate::generations::ByFamily {
            v4: self.ipv4_table_chunks,
            v6: self.ipv6_table_chunks,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            pin_path: PathBuf::from("/sys/fs/bpf/residency"),
            control_socket: PathBuf::from("/run/residency/agent.sock"),
            metrics_address: SocketAddr::from(([127, 0, 0, 1], 9477)),
            control_group: None,
            rule_capacity: residency_common::DEFAULT_RULE_CAPACITY,
            ipv4_table_chunks: residency_common::DEFAULT_TABLE_CHUNKS,
            ipv6_table_chunks: residency_common::DEFAULT_TABLE_CHUNKS,
            watch_config: false,
            watch_sources: true,
            require_packet_socket_guard: false,
            verdict_cache: true,
            mount_bpffs: true,
            self_verify: true,
        }
    }
}

/// Largest `ipv4_table_chunks` and `ipv6_table_chunks`: 512 MiB a slot, 1 GiB a family
/// (a random spread of 1M IPv4 prefixes needs 166,000 chunks; a country's set of either
/// family 1,500 to 30,000).
pub const MAX_TABLE_CHUNKS: u64 = 512 * 1024;

pub(crate) fn parse_agent(at: &Locator<'_>, raw: RawAgent) -> Result<AgentConfig, ConfigError> {
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
    if let Some(m) = raw.mount_bpffs {
        agent.mount_bpffs = m;
    }
    if let Some(r) = raw.require_packet_socket_guard {
        agent.require_packet_socket_guard = r;
    }
    if let Some(w) = raw.watch_sources {
        agent.watch_sources = w;
    }
    if let Some(w) = raw.watch_config {
        agent.watch_config = w;
    }
    if let Some(v) = raw.self_verify {
        agent.self_verify = v;
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
    for (raw, key, field) in [
        (
            raw.ipv4_table_chunks,
            "agent.ipv4_table_chunks",
            &mut agent.ipv4_table_chunks,
        ),
        (
            raw.ipv6_table_chunks,
            "agent.ipv6_table_chunks",
            &mut agent.ipv6_table_chunks,
        ),
    ] {
        if let Some(c) = raw {
            let n = *c.get_ref();
            if n > MAX_TABLE_CHUNKS {
                return Err(at.error(
                    c.span(),
                    key,
                    &format!("must be between 0 (off) and {MAX_TABLE_CHUNKS}"),
                ));
            }
            *field = n as u32;
        }
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
