//! Events: decoding what the kernel put on the ring buffer and writing it for operators.
//!
//! Each blocked packet becomes one line on standard output that starts with
//! `RESIDENCY_EGRESS_BLOCK` (audit mode: `RESIDENCY_EGRESS_AUDIT`) followed by
//! `key=value` fields (logfmt), so `grep` and log shippers both read it.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{MapData, RingBuf};
use residency_common::{EVENT_AUDIT, Event};
use tokio::io::unix::AsyncFd;

use crate::{cgroup::PathCache, config::Config, policy};

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
    pub uid: u32,
    pub count: u32,
}

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
    pub fn decode(e: &Event, config: &Config, paths: &mut PathCache) -> BlockEvent {
        let p = config.policies.get(e.policy as usize);
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
            protocol: protocol_name(e.protocol),
            dst: addr(e.family, &e.dst_addr),
            dst_port: e.dst_port,
            src: addr(e.family, &e.src_addr),
            src_port: e.src_port,
            icmp: matches!(e.protocol, 1 | 58).then_some((e.icmp_type, e.icmp_code)),
            cgroup: paths.path(e.cgroup_id),
            cgroup_id: e.cgroup_id,
            uid: e.uid,
            count: e.count,
        }
    }

    /// `RESIDENCY_EGRESS_BLOCK` or `RESIDENCY_EGRESS_AUDIT`.
    pub fn tag(&self) -> &'static str {
        if self.audit {
            "RESIDENCY_EGRESS_AUDIT"
        } else {
            "RESIDENCY_EGRESS_BLOCK"
        }
    }

    /// The one-line, logfmt form.
    pub fn line(&self) -> String {
        let opt = |a: &Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
        let mut s = format!(
            "{} policy={} mode={} proto={} dst={} dport={} src={} sport={}",
            self.tag(),
            self.policy,
            self.mode,
            self.protocol,
            opt(&self.dst),
            self.dst_port,
            opt(&self.src),
            self.src_port,
        );
        if let Some((t, c)) = self.icmp {
            s.push_str(&format!(" icmp_type={t} icmp_code={c}"));
        }
        match &self.cgroup {
            // Paths may hold spaces; quote them so the line stays parseable.
            Some(p) if p.contains(' ') || p.contains('"') => s.push_str(&format!(" cgroup={p:?}")),
            Some(p) => s.push_str(&format!(" cgroup={p}")),
            None => s.push_str(" cgroup=unknown"),
        }
        s.push_str(&format!(
            " cgroup_id={} uid={} rule={}",
            self.cgroup_id, self.uid, self.rule
        ));
        if self.count != 1 {
            s.push_str(&format!(" count={}", self.count));
        }
        s
    }
}

/// Registers a ring buffer (events, or aya-log's) with the tokio reactor for reads.
pub fn readable<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its map fd for its whole life and never swaps it, which is what
    // `register` asks of its caller.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Reads the ring buffer until the task is cancelled, writing one line per event.
pub async fn run(
    ring: RingBuf<MapData>,
    config: Config,
    mut paths: PathCache,
) -> std::io::Result<()> {
    let mut fd = readable(ring)?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut out = std::io::stdout().lock();
        while let Some(item) = ring.next() {
            if item.len() < size_of::<Event>() {
                tracing::warn!(len = item.len(), "short event on the ring buffer; skipped");
                continue;
            }
            // SAFETY: the kernel wrote a whole `Event` (checked length); read unaligned.
            let raw: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let event = BlockEvent::decode(&raw, &config, &mut paths);
            writeln!(out, "{}", event.line())?;
        }
        out.flush()?;
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Hierarchy;
    use residency_common::{EVENT_BLOCK, RULE_NONE, SOURCE_SKB};

    fn event() -> Event {
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[203, 0, 113, 9]);
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[198, 51, 100, 7]);
        Event {
            timestamp_ns: 1,
            cgroup_id: 42,
            policy: 0,
            rule: RULE_NONE,
            uid: 1000,
            pid: 0,
            dst_port: 443,
            src_port: 40000,
            kind: EVENT_BLOCK,
            family: 4,
            protocol: 6,
            source: SOURCE_SKB,
            icmp_type: 0,
            icmp_code: 0,
            _pad: [0; 2],
            count: 1,
            dst_addr: dst,
            src_addr: src,
            comm: [0; 16],
        }
    }

    #[test]
    fn formats_a_block_line() {
        let config = Config::parse(
            "[[policy]]\nname = \"eu-central\"\ncgroups = [\"x\"]\ndeny = [\"203.0.113.0/24\"]\n",
            "t",
        )
        .unwrap();
        let mut paths = PathCache::new(
            Hierarchy {
                mount: "/sys/fs/cgroup".into(),
            },
            [(42, "/sys/fs/cgroup/x".into())],
        );
        let line = BlockEvent::decode(&event(), &config, &mut paths).line();
        assert_eq!(
            line,
            "RESIDENCY_EGRESS_BLOCK policy=eu-central mode=enforce proto=tcp dst=203.0.113.9 \
             dport=443 src=198.51.100.7 sport=40000 cgroup=/sys/fs/cgroup/x cgroup_id=42 uid=1000 \
             rule=default-deny"
        );
        let mut e = event();
        e.kind = EVENT_AUDIT;
        e.rule = 0;
        e.protocol = 58;
        e.family = 6;
        e.dst_addr = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
        e.icmp_type = 128;
        let line = BlockEvent::decode(&e, &config, &mut paths).line();
        assert!(
            line.starts_with(
                "RESIDENCY_EGRESS_AUDIT policy=eu-central mode=audit proto=icmpv6 dst=2001:db8::7"
            ),
            "{line}"
        );
        assert!(line.contains("icmp_type=128 icmp_code=0"), "{line}");
        assert!(line.ends_with("rule=deny:203.0.113.0/24"), "{line}");
    }
}
