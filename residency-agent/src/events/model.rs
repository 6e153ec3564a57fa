//! One event as the sinks see it: decoded from the kernel's record and resolved to
//! names (policy, rule, cgroup path), with the field names of every output format.

use std::{net::IpAddr, time::SystemTime};

/// The name of one event field in each format: journal field and short key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub journal: &'static str,
    pub short: &'static str,
}

pub(crate) const fn field(journal: &'static str, short: &'static str) -> Field {
    Field { journal, short }
}

/// One event, decoded and resolved to names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEvent {
    pub audit: bool,
    pub policy: String,
    pub mode: &'static str,
    pub rule: String,
    pub protocol: String,
    pub dst: Option<IpAddr>,
    pub dst_port: u16,
    pub src: Option<IpAddr>,
    pub src_port: u16,
    pub icmp: Option<(u8, u8)>,
    pub cgroup: Option<String>,
    pub cgroup_id: u64,
    /// The systemd unit and Kubernetes pod of the cgroup, where known.
    pub workload: super::workload::Workload,
    pub uid: u32,
    /// Where it was judged: `packet` (cgroup/skb), `connect`, `sendmsg`, `socket`
    /// (packet or raw socket creation) or `setsockopt`.
    pub hook: &'static str,
    /// The socket option a `setsockopt` event is about (`IPV6_FREEBIND`).
    pub option: Option<&'static str>,
    pub pid: u32,
    pub comm: String,
    pub count: u32,
    /// Addresses are shown truncated (IPv4 /24, IPv6 /48).
    pub masked: bool,
    pub time: SystemTime,
    /// An aggregated summary: when its window's first event was read (its last is
    /// `time`).
    pub first_seen: Option<SystemTime>,
}
