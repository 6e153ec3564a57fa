//! Decoding and formatting: every format renders the fields a user reads.

use std::net::Ipv6Addr;

use residency_common::{EVENT_AUDIT, Event};

use super::model::BlockEvent;
use crate::{
    config::Config,
    host::{Hierarchy, PathCache},
    policy::Versioned,
};
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

/// Cgroup 42 is `/sys/fs/cgroup/x`, named `/x` in events, as in [`event`].
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
    let line = BlockEvent::decode(&event(), &Versioned::initial(config.clone()), &mut paths).line();
    assert_eq!(
        line,
        "RESIDENCY_EGRESS_BLOCK policy=eu-central mode=enforce proto=tcp dst=203.0.113.9 \
         dport=443 src=198.51.100.7 sport=40000 cgroup=/x cgroup_id=42 uid=1000 \
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
    // A packet socket: no family (the LSM program sets none), the family number in
    // `protocol`.
    let mut e = event();
    e.source = SOURCE_SOCKET;
    e.family = 0;
    e.protocol = 17;
    e.pid = 1;
    let line = BlockEvent::decode(&e, &v, &mut paths).line();
    assert!(line.contains("proto=packet-socket"), "{line}");
    assert!(line.contains("hook=socket"), "{line}");
    // A raw IP socket: its family and IP protocol, no destination.
    let mut e = event();
    e.source = SOURCE_SOCKET;
    e.family = 4;
    e.protocol = 255;
    e.rule = residency_common::RULE_RAW_SOCKET;
    e.pid = 1;
    let line = BlockEvent::decode(&e, &v, &mut paths).line();
    assert!(
        line.contains("proto=255 dst=unknown dport=0 src=unknown"),
        "{line}"
    );
    assert!(
        line.contains("hook=socket") && line.contains("rule=raw-socket"),
        "{line}"
    );
    // A socket option: named from the level and name the event carries.
    let mut e = event();
    e.source = residency_common::SOURCE_SOCKOPT;
    e.family = 6;
    e.protocol = 17;
    e.icmp_type = 41;
    e.icmp_code = 78;
    e.rule = residency_common::RULE_SPOOFED_SOURCE;
    e.pid = 1;
    let line = BlockEvent::decode(&e, &v, &mut paths).line();
    assert!(
        line.contains("proto=udp dst=unknown dport=0 src=unknown sport=0 cgroup="),
        "{line}"
    );
    assert!(
        line.contains("hook=setsockopt option=IPV6_FREEBIND pid=1")
            && line.contains("rule=spoofed-source"),
        "{line}"
    );
    assert!(!line.contains("icmp_type"), "{line}");
    // A bind to a foreign address: the address refused is the source; no destination.
    let mut e = event();
    e.source = residency_common::SOURCE_BIND;
    e.family = 4;
    e.protocol = 17;
    e.dst_addr = [0; 16];
    e.src_addr[..4].copy_from_slice(&[203, 0, 113, 2]);
    e.rule = residency_common::RULE_SPOOFED_SOURCE;
    e.pid = 1;
    let ev = BlockEvent::decode(&e, &v, &mut paths);
    let line = ev.line();
    assert!(
        line.contains("proto=udp dst=unknown dport=0 src=203.0.113.2 sport=0 cgroup="),
        "{line}"
    );
    assert!(
        line.contains("hook=bind pid=1") && line.contains("rule=spoofed-source"),
        "{line}"
    );
    assert_eq!(ev.destination(), "203.0.113.2 udp bind");
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
    let mut written = Vec::new();
    ev.write_json(&mut written).unwrap();
    assert_eq!(
        written,
        serde_json::to_vec(&json).unwrap(),
        "the sink's bytes"
    );
    assert_eq!(json["event"], "RESIDENCY_EGRESS_BLOCK");
    assert_eq!(json["dst"], "2001:db8:1::/48");
    assert_eq!(json["dport"], 443);
    assert_eq!(json["cgroup"], "/x");
    assert_eq!(json["count"], 1);
    // What a log collector files it under.
    assert_eq!(json["level"], "warning");
    assert_eq!(
        json["host"],
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
    );
    assert!(json.get("first_seen").is_none(), "not a summary");
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
    let msg = super::sinks::syslog_format_for_test(&ev);
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

#[test]
fn events_name_the_unit_and_the_pod() {
    use super::workload::{PodName, Workload};
    let config = Config::parse("[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n", "t").unwrap();
    let mut e = BlockEvent::decode(&event(), &Versioned::initial(config), &mut paths());
    e.workload = Workload {
        unit: Some("cri-containerd-ab.scope".into()),
        pod: Some(PodName {
            namespace: "payments".into(),
            name: "api-0".into(),
            container: Some("app".into()),
        }),
    };
    assert!(
        e.line().contains(
            " cgroup_id=42 unit=cri-containerd-ab.scope k8s_namespace=payments k8s_pod=api-0 k8s_container=app uid=1000 "
        ),
        "{}",
        e.line()
    );
    let j = e.json();
    let mut written = Vec::new();
    e.write_json(&mut written).unwrap();
    assert_eq!(written, serde_json::to_vec(&j).unwrap(), "the sink's bytes");
    assert_eq!(j["k8s_pod"], "api-0");
    assert_eq!(j["unit"], "cri-containerd-ab.scope");
    let journal: Vec<_> = e
        .fields()
        .into_iter()
        .map(|(k, v)| (k.journal, v))
        .collect();
    assert!(journal.contains(&("OBJECT_SYSTEMD_UNIT", "cri-containerd-ab.scope".into())));
    assert!(journal.contains(&("RESIDENCY_K8S_NAMESPACE", "payments".into())));
}
