//! From the kernel's [`Event`] record to a [`BlockEvent`]: policy and rule named
//! against the version in force, the cgroup id resolved to a path, and the fields
//! that do not apply to the hook left out (a refused socket call has no packet).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use residency_common::{
    EVENT_AUDIT, Event, RULE_SPOOFED_SOURCE, SOURCE_BIND, SOURCE_INBOUND, SOURCE_SKB,
    SOURCE_SOCKET, SOURCE_SOCKOPT,
    protocol::{Protocol, ProtocolNumber},
    sockopt,
    source::{SocketFamily, Source},
};

use super::model::BlockEvent;
use crate::{
    host::PathCache,
    policy::{self, Versioned},
};

/// Names an IP protocol number the way operators write it (`tcp`, or the number
/// for protocols without a name), from the names shared with the kernel crate.
pub fn protocol_name(p: u8) -> String {
    ProtocolNumber(p).to_string()
}

fn is_icmp(protocol: u8) -> bool {
    Protocol::from_number(protocol).is_some_and(Protocol::is_icmp)
}

fn addr(family: u8, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

impl BlockEvent {
    /// Decodes a raw event; `config` names its policy and rule, `paths` its cgroup.
    pub fn decode(e: &Event, version: &Versioned, paths: &mut PathCache) -> BlockEvent {
        let p = version.by_id(e.policy);
        let comm_len = e.comm.iter().position(|b| *b == 0).unwrap_or(e.comm.len());
        let socket_level =
            e.source == SOURCE_SOCKET || e.source == SOURCE_SOCKOPT || e.source == SOURCE_BIND;
        // Events made from a packet (sent, or an inbound SYN) have its source, and so
        // do refused sources (a bind, a per-message source).
        let has_packet = e.source == SOURCE_SKB || e.source == SOURCE_INBOUND;
        let has_source = has_packet || e.rule == RULE_SPOOFED_SOURCE && e.source != SOURCE_SOCKOPT;
        BlockEvent {
            audit: e.kind == EVENT_AUDIT,
            policy: p
                .map(|p| p.name.clone())
                // No policy: a socket option refused to a caller outside every
                // configured cgroup, on a socket from one.
                .unwrap_or_else(|| match e.policy {
                    u32::MAX => "none".to_owned(),
                    id => format!("policy-{id}"),
                }),
            mode: if e.kind == EVENT_AUDIT {
                "audit"
            } else {
                "enforce"
            },
            rule: policy::describe_rule(p, e.rule),
            protocol: if e.source == SOURCE_SOCKET && e.family == 0 {
                // A packet socket event's protocol field holds the socket family.
                match SocketFamily::from_value(e.protocol) {
                    Some(SocketFamily::Xdp) => SocketFamily::Xdp.as_str(),
                    _ => SocketFamily::Packet.as_str(),
                }
                .to_owned()
            } else {
                protocol_name(e.protocol)
            },
            // Socket creations and options have no destination yet.
            dst: if socket_level {
                None
            } else {
                addr(e.family, &e.dst_addr)
            },
            dst_port: if is_icmp(e.protocol) || socket_level {
                0
            } else {
                e.dst_port
            },
            // A refused socket call has no packet, so no source address yet.
            src: if has_source {
                addr(e.family, &e.src_addr)
            } else {
                None
            },
            src_port: if has_packet { e.src_port } else { 0 },
            // Only packets have an ICMP type; a socket call on an ICMP socket has
            // neither type nor port.
            icmp: (is_icmp(e.protocol) && e.source == SOURCE_SKB)
                .then_some((e.icmp_type, e.icmp_code)),
            cgroup: paths.path(e.cgroup_id),
            cgroup_id: e.cgroup_id,
            // Named by the reader, which knows the pods (`events::workload`).
            workload: Default::default(),
            uid: e.uid,
            hook: Source::from_value(e.source).map_or("unknown", Source::as_str),
            // A setsockopt event carries the option's level and name where a packet
            // has its ICMP type and code.
            option: (e.source == SOURCE_SOCKOPT)
                .then(|| sockopt::name(i32::from(e.icmp_type), i32::from(e.icmp_code)))
                .flatten(),
            pid: e.pid,
            comm: String::from_utf8_lossy(&e.comm[..comm_len]).into_owned(),
            count: e.count,
            masked: version.config.events.mask_addresses,
            time: SystemTime::now(),
            first_seen: None,
        }
    }
}
