//! From the kernel's [`Event`] record to a [`BlockEvent`]: policy and rule named
//! against the version in force, the cgroup id resolved to a path, and the fields
//! that do not apply to the hook left out (a refused socket call has no packet).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use residency_common::{
    EVENT_AUDIT, Event, SOURCE_CONNECT, SOURCE_SENDMSG, SOURCE_SKB, SOURCE_SOCKET,
};

use super::model::BlockEvent;
use crate::{
    host::PathCache,
    policy::{self, Versioned},
};

/// Names an IP protocol number the way operators write it.
pub fn protocol_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
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
        BlockEvent {
            audit: e.kind == EVENT_AUDIT,
            policy: p
                .map(|p| p.name.clone())
                .unwrap_or_else(|| format!("policy-{}", e.policy)),
            mode: if e.kind == EVENT_AUDIT {
                "audit"
            } else {
                "enforce"
            },
            rule: policy::describe_rule(p, e.rule),
            protocol: if e.source == SOURCE_SOCKET {
                if e.protocol == 44 {
                    "xdp-socket".to_owned()
                } else {
                    "packet-socket".to_owned()
                }
            } else {
                protocol_name(e.protocol)
            },
            dst: addr(e.family, &e.dst_addr),
            dst_port: if matches!(e.protocol, 1 | 58) || e.source == SOURCE_SOCKET {
                0
            } else {
                e.dst_port
            },
            // A refused socket call has no packet, so no source address yet.
            src: if e.source == SOURCE_SKB {
                addr(e.family, &e.src_addr)
            } else {
                None
            },
            src_port: if e.source == SOURCE_SKB {
                e.src_port
            } else {
                0
            },
            // Only packets have an ICMP type; a socket call on an ICMP socket has
            // neither type nor port.
            icmp: (matches!(e.protocol, 1 | 58) && e.source == SOURCE_SKB)
                .then_some((e.icmp_type, e.icmp_code)),
            cgroup: paths.path(e.cgroup_id),
            cgroup_id: e.cgroup_id,
            uid: e.uid,
            hook: match e.source {
                SOURCE_SKB => "packet",
                SOURCE_CONNECT => "connect",
                SOURCE_SENDMSG => "sendmsg",
                SOURCE_SOCKET => "socket",
                _ => "unknown",
            },
            pid: e.pid,
            comm: String::from_utf8_lossy(&e.comm[..comm_len]).into_owned(),
            count: e.count,
            masked: version.config.events.mask_addresses,
            time: SystemTime::now(),
        }
    }
}
