//! Events: decoding what the kernel put on the ring buffer, aggregating repeats, and
//! handing each event to the sinks.
//!
//! An event's readable form is one line that starts with `RESIDENCY_EGRESS_BLOCK`
//! (audit mode: `RESIDENCY_EGRESS_AUDIT`) followed by `key=value` fields (logfmt); the
//! same fields exist as journal fields, syslog structured data and JSON keys.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, RwLock, atomic::Ordering},
    time::SystemTime,
};

use aya::maps::{MapData, RingBuf};
use residency_common::{
    EVENT_AUDIT, Event, SOURCE_CONNECT, SOURCE_SENDMSG, SOURCE_SKB, SOURCE_SOCKET,
};
use tokio::io::unix::AsyncFd;

use crate::{
    aggregate::Aggregator,
    cgroup::PathCache,
    config::EventsConfig,
    metrics::Telemetry,
    policy::{self, Versioned},
    sinks::{self, Sink},
};

/// The name of one event field in each format: journal field and short key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub journal: &'static str,
    pub short: &'static str,
}

const fn field(journal: &'static str, short: &'static str) -> Field {
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
    pub uid: u32,
    /// Where it was judged: `packet` (cgroup/skb), `connect`, `sendmsg` or `socket`
    /// (packet socket creation).
    pub hook: &'static str,
    pub pid: u32,
    pub comm: String,
    pub count: u32,
    /// Addresses are shown truncated (IPv4 /24, IPv6 /48).
    pub masked: bool,
    pub time: SystemTime,
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

    /// An address as sinks show it: exact, or its /24 (IPv4) or /48 (IPv6) when
    /// `mask_addresses` is set. Verdicts and metrics never see the mask.
    pub fn show(&self, addr: Option<IpAddr>) -> String {
        match (addr, self.masked) {
            (None, _) => "unknown".into(),
            (Some(a), false) => a.to_string(),
            (Some(IpAddr::V4(a)), true) => {
                let o = a.octets();
                format!("{}/24", Ipv4Addr::new(o[0], o[1], o[2], 0))
            }
            (Some(IpAddr::V6(a)), true) => {
                let s = a.segments();
                format!("{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
            }
        }
    }

    /// Every field, named for the journal and for the short formats, in a fixed order.
    pub fn fields(&self) -> Vec<(Field, String)> {
        let mut f = vec![
            (field("RESIDENCY_EVENT", "event"), self.tag().to_owned()),
            (field("RESIDENCY_POLICY", "policy"), self.policy.clone()),
            (field("RESIDENCY_MODE", "mode"), self.mode.to_owned()),
            (field("RESIDENCY_PROTO", "proto"), self.protocol.clone()),
            (field("RESIDENCY_DST_ADDR", "dst"), self.show(self.dst)),
            (
                field("RESIDENCY_DST_PORT", "dport"),
                self.dst_port.to_string(),
            ),
            (field("RESIDENCY_SRC_ADDR", "src"), self.show(self.src)),
            (
                field("RESIDENCY_SRC_PORT", "sport"),
                self.src_port.to_string(),
            ),
        ];
        if let Some((t, c)) = self.icmp {
            f.push((field("RESIDENCY_ICMP_TYPE", "icmp_type"), t.to_string()));
            f.push((field("RESIDENCY_ICMP_CODE", "icmp_code"), c.to_string()));
        }
        f.push((
            field("RESIDENCY_CGROUP", "cgroup"),
            self.cgroup.clone().unwrap_or_else(|| "unknown".into()),
        ));
        f.push((
            field("RESIDENCY_CGROUP_ID", "cgroup_id"),
            self.cgroup_id.to_string(),
        ));
        f.push((field("RESIDENCY_UID", "uid"), self.uid.to_string()));
        f.push((field("RESIDENCY_HOOK", "hook"), self.hook.to_owned()));
        if self.pid != 0 {
            f.push((field("RESIDENCY_PID", "pid"), self.pid.to_string()));
            f.push((field("RESIDENCY_COMM", "comm"), self.comm.clone()));
        }
        f.push((field("RESIDENCY_RULE", "rule"), self.rule.clone()));
        f.push((field("RESIDENCY_COUNT", "count"), self.count.to_string()));
        f
    }

    /// The JSON-lines form: every field (numbers as numbers) plus an RFC 3339 time.
    pub fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert(
            "time".into(),
            humantime::format_rfc3339_micros(self.time)
                .to_string()
                .into(),
        );
        for (k, v) in self.fields() {
            let numeric = matches!(
                k.short,
                "dport"
                    | "sport"
                    | "icmp_type"
                    | "icmp_code"
                    | "cgroup_id"
                    | "uid"
                    | "pid"
                    | "count"
            );
            let value = match v.parse::<u64>() {
                Ok(n) if numeric => serde_json::Value::from(n),
                _ => serde_json::Value::from(v),
            };
            m.insert(k.short.into(), value);
        }
        serde_json::Value::Object(m)
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
        let mut s = format!(
            "{} policy={} mode={} proto={} dst={} dport={} src={} sport={}",
            self.tag(),
            self.policy,
            self.mode,
            self.protocol,
            self.show(self.dst),
            self.dst_port,
            self.show(self.src),
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
            " cgroup_id={} uid={} hook={}",
            self.cgroup_id, self.uid, self.hook
        ));
        if self.pid != 0 {
            s.push_str(&format!(" pid={} comm={:?}", self.pid, self.comm));
        }
        s.push_str(&format!(" rule={}", self.rule));
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

/// The event pipeline: reads the ring buffer until the task is cancelled, aggregates
/// repeats and writes every event to every sink.
pub async fn run(
    ring: RingBuf<MapData>,
    version: Arc<RwLock<Versioned>>,
    mut paths: PathCache,
    mut sinks: Vec<Box<dyn Sink>>,
    telemetry: Arc<Telemetry>,
    events: EventsConfig,
) -> std::io::Result<()> {
    let mut fd = readable(ring)?;
    let mut aggregator = Aggregator::new(events.aggregate_window, events.aggregate_max_keys);
    let tick = events
        .aggregate_window
        .max(std::time::Duration::from_millis(100))
        / 2;
    let mut flush = tokio::time::interval(tick);
    telemetry.reader_alive.store(true, Ordering::Relaxed);
    let _alive = AliveGuard(telemetry.clone());
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                let now = std::time::Instant::now();
                while let Some(item) = ring.next() {
                    if item.len() < size_of::<Event>() {
                        tracing::warn!(len = item.len(), "short event on the ring buffer; skipped");
                        continue;
                    }
                    // SAFETY: the kernel wrote a whole `Event` (checked length); read unaligned.
                    let raw: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    telemetry.received.fetch_add(1, Ordering::Relaxed);
                    // Decoded against the version in force when read: ids are stable
                    // by name across reloads, so an event a moment older still names
                    // its policy.
                    let event = BlockEvent::decode(&raw, &version.read().expect("policy lock"), &mut paths);
                    for e in aggregator.offer(event, now) {
                        telemetry.aggregated.fetch_add(u64::from(e.count.saturating_sub(1)), Ordering::Relaxed);
                        sinks::dispatch(&mut sinks, &e, &telemetry);
                    }
                }
                sinks::flush(&mut sinks, &telemetry);
                guard.clear_ready();
            }
            _ = flush.tick() => {
                for e in aggregator.flush(std::time::Instant::now()) {
                    telemetry.aggregated.fetch_add(u64::from(e.count.saturating_sub(1)), Ordering::Relaxed);
                    sinks::dispatch(&mut sinks, &e, &telemetry);
                }
                sinks::flush(&mut sinks, &telemetry);
            }
        }
    }
}

/// Clears `reader_alive` however the reader ends (error, cancel, panic).
struct AliveGuard(Arc<Telemetry>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.reader_alive.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cgroup::Hierarchy;
    use crate::config::Config;
    use residency_common::{EVENT_BLOCK, RULE_NONE, SOURCE_SKB};

    /// A blocked TCP packet to 203.0.113.9:443 from cgroup 42, policy 0.
    pub(crate) fn event() -> Event {
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

    /// Cgroup 42 is `/sys/fs/cgroup/x`, as in [`event`].
    fn paths() -> PathCache {
        PathCache::new(
            Hierarchy {
                mount: "/sys/fs/cgroup".into(),
            },
            [(42, "/sys/fs/cgroup/x".into())],
        )
    }

    #[test]
    fn formats_a_block_line() {
        let config = Config::parse(
            "[[policy]]\nname = \"eu-central\"\ncgroups = [\"x\"]\ndeny = [\"203.0.113.0/24\"]\n",
            "t",
        )
        .unwrap();
        let mut paths = paths();
        let line =
            BlockEvent::decode(&event(), &Versioned::initial(config.clone()), &mut paths).line();
        assert_eq!(
            line,
            "RESIDENCY_EGRESS_BLOCK policy=eu-central mode=enforce proto=tcp dst=203.0.113.9 \
             dport=443 src=198.51.100.7 sport=40000 cgroup=/sys/fs/cgroup/x cgroup_id=42 uid=1000 \
             hook=packet rule=default-deny"
        );
        let mut e = event();
        e.kind = EVENT_AUDIT;
        e.rule = 0;
        e.protocol = 58;
        e.family = 6;
        e.dst_addr = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
        e.icmp_type = 128;
        let line = BlockEvent::decode(&e, &Versioned::initial(config.clone()), &mut paths).line();
        assert!(
            line.starts_with(
                "RESIDENCY_EGRESS_AUDIT policy=eu-central mode=audit proto=icmpv6 dst=2001:db8::7"
            ),
            "{line}"
        );
        assert!(line.contains("icmp_type=128 icmp_code=0"), "{line}");
        assert!(line.ends_with("rule=deny:203.0.113.0/24"), "{line}");
    }

    #[test]
    fn socket_call_events_name_the_process_and_no_packet_fields() {
        use residency_common::{SOURCE_CONNECT, SOURCE_SOCKET};
        let config = Config::parse(
            "[[policy]]\nname = \"eu\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8\"]\n",
            "t",
        )
        .unwrap();
        let v = Versioned::initial(config);
        let mut paths = paths();
        // connect() on a ping socket: an ICMP "port" is the echo id, not a port.
        let mut e = event();
        e.source = SOURCE_CONNECT;
        e.protocol = 1;
        e.dst_port = 5432;
        e.pid = 4711;
        e.comm[..4].copy_from_slice(b"ping");
        let line = BlockEvent::decode(&e, &v, &mut paths).line();
        assert!(
            line.contains("proto=icmp dst=203.0.113.9 dport=0 src=unknown sport=0 cgroup="),
            "{line}"
        );
        assert!(!line.contains("icmp_type"), "{line}");
        assert!(
            line.contains(r#"hook=connect pid=4711 comm="ping""#),
            "{line}"
        );
        let mut e = event();
        e.source = SOURCE_SOCKET;
        e.protocol = 17;
        e.pid = 1;
        let line = BlockEvent::decode(&e, &v, &mut paths).line();
        assert!(line.contains("proto=packet-socket"), "{line}");
        assert!(line.contains("hook=socket"), "{line}");
    }

    #[test]
    fn masks_addresses_and_renders_every_format() {
        let config = Config::parse(
            "[events]\nmask_addresses = true\n[[policy]]\nname = \"eu-central\"\ncgroups = [\"x\"]\n",
            "t",
        )
        .unwrap();
        let mut paths = paths();
        let mut e = event();
        e.family = 6;
        e.dst_addr = "2001:db8:1:2::7".parse::<Ipv6Addr>().unwrap().octets();
        e.src_addr = "2001:db8:ffff:1::1".parse::<Ipv6Addr>().unwrap().octets();
        let ev = BlockEvent::decode(&e, &Versioned::initial(config.clone()), &mut paths);
        assert!(
            ev.line()
                .contains("dst=2001:db8:1::/48 dport=443 src=2001:db8:ffff::/48"),
            "{}",
            ev.line()
        );
        let json = ev.json();
        assert_eq!(json["event"], "RESIDENCY_EGRESS_BLOCK");
        assert_eq!(json["dst"], "2001:db8:1::/48");
        assert_eq!(json["dport"], 443);
        assert_eq!(json["cgroup"], "/sys/fs/cgroup/x");
        assert_eq!(json["count"], 1);
        let fields = ev.fields();
        assert!(
            fields
                .iter()
                .any(|(k, v)| k.journal == "RESIDENCY_POLICY" && v == "eu-central")
        );
        assert!(
            fields
                .iter()
                .all(|(k, _)| k.journal.starts_with("RESIDENCY_"))
        );
        let mut v4 = event();
        v4.dst_addr[..4].copy_from_slice(&[203, 0, 113, 9]);
        let ev = BlockEvent::decode(&v4, &Versioned::initial(config.clone()), &mut paths);
        assert!(ev.line().contains("dst=203.0.113.0/24 "), "{}", ev.line());
        let msg = crate::sinks::syslog_format_for_test(&ev);
        assert!(
            msg.starts_with("<28>1 1970-01-01T00:00:00.000000Z host residency-agent 1 BLOCK "),
            "{msg}"
        );
        assert!(
            msg.contains(
                " BLOCK [residency@32473 event=\"RESIDENCY_EGRESS_BLOCK\" policy=\"eu-central\""
            ),
            "{msg}"
        );
        assert!(msg.ends_with(&ev.line()), "{msg}");
    }
}
