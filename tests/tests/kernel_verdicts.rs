//! Exact verdicts of the real kernel program on synthetic packets, through
//! `BPF_PROG_TEST_RUN` (aya's `TestRun`): cases that real sockets cannot produce on
//! demand — malformed headers, IPv6 extension headers, later fragments, an IPv6 packet
//! addressed to an IPv4-mapped destination. Nothing is attached anywhere.
//!
//! The program is loaded and its maps filled through the agent library
//! (`residency_agent`), as the agent does. The kernel gives a test run a socket in the
//! calling task's cgroup, so the tests bind their own cgroup id to the policy under test
//! (`residency_tests::kernel`). Needs root (BPF).

use aya::maps::{MapData, RingBuf};
use residency_agent::{
    config::Config, generations::Generations, kernel as bpf, kernel::KernelCounters,
};
use residency_common::{Event, Family, Stat, Verdict};
use residency_tests::{kernel, require_root};
use std::sync::Arc;

const PASS: u32 = 1;
const DROP: u32 = 0;

const CONFIG: &str = r#"
[[policy]]
name = "eu-central"
cgroups = ["x"]
allow = ["198.51.100.0/24", "2001:db8:1::/48"]
deny = ["198.51.100.99/32"]

[[policy]]
name = "eu-audit"
mode = "audit"
cgroups = ["y"]
allow = ["198.51.100.0/24"]
"#;

/// The cgroup v2 id of this process.
fn own_cgroup_id() -> u64 {
    kernel::own_cgroup_id().unwrap()
}

struct Harness {
    loaded: bpf::Loaded,
    events: RingBuf<MapData>,
    counters: KernelCounters,
    _generations: Generations,
}

/// Loads the program with its maps in a private bpffs (see `residency_tests::kernel`).
fn load_private() -> bpf::Loaded {
    kernel::load_private(1 << 18).unwrap()
}

impl Harness {
    /// Loads the program, fills the rules, and binds this process's cgroup to `policy`.
    fn new(policy: u32) -> Harness {
        Self::with_events(policy, "[events]\nrate_limit_per_cpu = 0\n")
    }

    /// As [`Harness::new`], with an `[events]` section (the rate limit).
    fn with_events(policy: u32, events: &str) -> Harness {
        let config = Arc::new(Config::parse(&format!("{events}{CONFIG}"), "test").unwrap());
        let mut loaded = load_private();
        loaded.configure(&config).unwrap();
        // A test run's socket lives in this process's cgroup: bind it to `policy`.
        let bound = [residency_agent::host::BoundCgroup {
            policy: policy as usize,
            path: "/".into(),
            id: own_cgroup_id(),
        }];
        let mut generations = Generations::new(loaded.take_policy_maps().unwrap()).unwrap();
        let applied = generations.apply(&config, &bound).unwrap();
        assert_eq!(applied.ids, vec![0, 1]);
        let events = loaded.take_events().unwrap();
        let counters = loaded.take_counters().unwrap();
        Harness {
            loaded,
            events,
            counters,
            _generations: generations,
        }
    }

    fn run(&mut self, packet: &[u8]) -> u32 {
        run_on(&mut self.loaded, packet)
    }

    fn next_event(&mut self) -> Option<Event> {
        let item = self.events.next()?;
        assert!(item.len() >= size_of::<Event>());
        // SAFETY: length checked; the kernel wrote an `Event`.
        Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) })
    }
}

/// Ethernet header (the test run strips it) + an IPv4 header + 8 transport bytes.
fn ipv4(dst: [u8; 4], protocol: u8, frag_off: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 14];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&28u16.to_be_bytes());
    ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
    ip[8] = 64;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&[192, 0, 2, 1]);
    ip[16..20].copy_from_slice(&dst);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

/// Ethernet + IPv6 header (+ optional hop-by-hop header) + 8 UDP bytes.
fn ipv6(dst: [u8; 16], hop_by_hop: bool, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 14];
    p[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(if hop_by_hop { 16u16 } else { 8 }).to_be_bytes());
    ip[6] = if hop_by_hop { 0 } else { 17 };
    ip[7] = 64;
    ip[8..24].copy_from_slice(
        &"2001:db8:ffff::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    ip[24..40].copy_from_slice(&dst);
    p.extend_from_slice(&ip);
    if hop_by_hop {
        // next header UDP, length 0 (8 bytes), PadN option filling the rest.
        p.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    }
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

#[test]
fn ipv4_verdicts_follow_the_most_specific_prefix() {
    if !require_root() {
        return;
    }
    let mut h = Harness::new(0);
    assert_eq!(h.run(&ipv4([198, 51, 100, 7], 6, 0, 443)), PASS);
    assert_eq!(h.next_event(), None, "allowed packets are not reported");
    assert_eq!(
        h.run(&ipv4([198, 51, 100, 99], 6, 0, 443)),
        DROP,
        "carve-out"
    );
    let e = h.next_event().expect("event for the carve-out");
    assert_eq!(
        (e.family, e.protocol, e.dst_port, e.src_port),
        (4, 6, 443, 40000)
    );
    assert_eq!(&e.dst_addr[..4], &[198, 51, 100, 99]);
    assert_eq!(e.rule, 2, "the deny entry decided");
    assert_eq!(
        h.run(&ipv4([203, 0, 113, 9], 17, 0, 53)),
        DROP,
        "default deny"
    );
    assert_eq!(h.next_event().unwrap().rule, residency_common::RULE_NONE);
    // A later fragment has no transport header: judged by address, ports unread.
    assert_eq!(h.run(&ipv4([203, 0, 113, 9], 17, 185, 53)), DROP);
    assert_eq!(h.next_event().unwrap().dst_port, 0);
    assert_eq!(h.run(&ipv4([198, 51, 100, 7], 17, 185, 53)), PASS);
}

#[test]
fn ipv6_verdicts_walk_extension_headers_and_map_ipv4() {
    if !require_root() {
        return;
    }
    let mut h = Harness::new(0);
    assert_eq!(h.run(&ipv6(v6("2001:db8:1::7"), false, 53)), PASS);
    assert_eq!(h.run(&ipv6(v6("2001:db8:99::9"), false, 53)), DROP);
    assert_eq!(h.next_event().unwrap().dst_port, 53);
    assert_eq!(h.run(&ipv6(v6("2001:db8:99::9"), true, 5353)), DROP);
    let e = h.next_event().unwrap();
    assert_eq!(
        (e.protocol, e.dst_port),
        (17, 5353),
        "ports read past the hop-by-hop header"
    );
    // An IPv6 packet to an IPv4-mapped address is judged as IPv6: the kernel never
    // sends one for a socket call (it sends IPv4), so it was written by hand, and it
    // goes where IPv6 routes it, not to the IPv4 host the policy allows.
    assert_eq!(h.run(&ipv6(v6("::ffff:198.51.100.7"), false, 53)), DROP);
    let e = h.next_event().unwrap();
    assert_eq!(e.family, 6, "judged and reported as IPv6");
    assert_eq!(h.run(&ipv6(v6("::ffff:198.51.100.99"), false, 53)), DROP);
    assert_eq!(h.run(&ipv6(v6("::ffff:203.0.113.9"), false, 53)), DROP);
}

#[test]
fn unparsable_packets_fail_closed_in_enforce_and_pass_in_audit() {
    if !require_root() {
        return;
    }
    // The kernel's test run refuses malformed IPv4 headers itself, so the broken
    // packets here are IPv6: a bad version nibble, and a hop-by-hop header announced
    // but cut off (the destination is allowed in both).
    let mut bad_version = ipv6(v6("2001:db8:1::7"), false, 53);
    bad_version[14] = 0x70;
    let truncated = ipv6(v6("2001:db8:1::7"), true, 53)[..14 + 40].to_vec();

    let mut h = Harness::new(0);
    assert_eq!(
        h.run(&bad_version),
        DROP,
        "enforce: an allowed address in a broken header is dropped"
    );
    assert_eq!(h.run(&truncated), DROP);
    assert_eq!(h.counters.stat(Stat::ParseErrors), 2);
    assert_eq!(h.next_event().unwrap().rule, residency_common::RULE_ERROR);

    let mut h = Harness::new(1);
    assert_eq!(h.run(&bad_version), PASS, "audit never drops");
    let e = h.next_event().unwrap();
    assert_eq!(
        (e.kind, e.rule),
        (residency_common::EVENT_AUDIT, residency_common::RULE_ERROR)
    );
    assert_eq!(h.run(&ipv4([203, 0, 113, 9], 6, 0, 443)), PASS);
    let e = h.next_event().unwrap();
    assert_eq!(
        (e.kind, e.rule),
        (residency_common::EVENT_AUDIT, residency_common::RULE_NONE)
    );
}

#[test]
fn counters_are_exact_per_policy_verdict_and_family() {
    if !require_root() {
        return;
    }
    let mut h = Harness::new(0);
    for _ in 0..5 {
        h.run(&ipv4([198, 51, 100, 7], 6, 0, 443));
    }
    for _ in 0..3 {
        h.run(&ipv6(v6("2001:db8:99::9"), false, 53));
    }
    let c = h.counters.packets(&[0, 1]);
    assert_eq!(c.get(&(0, Verdict::Allowed, Family::Ipv4)), Some(&5));
    assert_eq!(c.get(&(0, Verdict::Blocked, Family::Ipv6)), Some(&3));
    assert_eq!(c.values().filter(|n| **n > 0).count(), 2, "{c:?}");
}

#[test]
fn event_rate_limit_caps_events_but_never_counts() {
    if !require_root() {
        return;
    }
    // 5 events per second and CPU, burst 5: a storm of 200 blocked packets yields at
    // most a handful of events, and every packet is still counted.
    let mut h = Harness::with_events(
        0,
        "[events]\nrate_limit_per_cpu = 5\nrate_limit_burst = 5\n",
    );
    for _ in 0..200 {
        assert_eq!(h.run(&ipv4([203, 0, 113, 9], 17, 0, 53)), DROP);
    }
    let mut events = 0;
    while h.next_event().is_some() {
        events += 1;
    }
    let limited = h.counters.stat(Stat::EventsRateLimited);
    assert!((5..=10).contains(&events), "events: {events}");
    assert_eq!(
        events + limited,
        200,
        "every event is delivered or counted as rate-limited"
    );
    assert_eq!(
        h.counters
            .packets(&[0])
            .get(&(0, Verdict::Blocked, Family::Ipv4)),
        Some(&200)
    );
}

/// IPv4 with options (`opts`, padded to a multiple of 4 bytes by the caller).
fn ipv4_with_options(dst: [u8; 4], opts: &[u8]) -> Vec<u8> {
    let mut p = ipv4(dst, 17, 0, 53);
    let ihl = 5 + opts.len() / 4;
    p[14] = 0x40 | ihl as u8;
    let total = (20 + opts.len() + 8) as u16;
    p[16..18].copy_from_slice(&total.to_be_bytes());
    let mut out = p[..14 + 20].to_vec();
    out.extend_from_slice(opts);
    out.extend_from_slice(&p[14 + 20..]);
    out
}

/// IPv6 with a routing header (type 4, segment routing) with `segments_left`.
fn ipv6_with_routing(dst: [u8; 16], segments_left: u8) -> Vec<u8> {
    let mut p = ipv6(dst, false, 53);
    p[14 + 6] = 43;
    p[14 + 4..14 + 6].copy_from_slice(&(8u16 + 24).to_be_bytes());
    let mut rh = vec![17, 2, 4, segments_left, 0, 0, 0, 0];
    rh.extend_from_slice(&v6("2001:db8:99::9"));
    let mut out = p[..14 + 40].to_vec();
    out.extend_from_slice(&rh);
    out.extend_from_slice(&p[14 + 40..]);
    out
}

#[test]
fn source_routed_packets_are_not_judged_by_their_first_hop() {
    if !require_root() {
        return;
    }
    let mut h = Harness::new(0);
    // NOP options are harmless.
    assert_eq!(
        h.run(&ipv4_with_options([198, 51, 100, 7], &[1, 1, 1, 0])),
        PASS
    );
    // Loose source route through the allowed host to a forbidden one: not judged by
    // the allowed first hop, dropped (fail closed).
    let mut lsrr = vec![131, 7, 4];
    lsrr.extend_from_slice(&[203, 0, 113, 9]);
    lsrr.push(0);
    assert_eq!(h.run(&ipv4_with_options([198, 51, 100, 7], &lsrr)), DROP);
    assert_eq!(h.next_event().unwrap().rule, residency_common::RULE_ERROR);
    // An IPv6 routing header with segments left: the same.
    assert_eq!(h.run(&ipv6_with_routing(v6("2001:db8:1::7"), 1)), DROP);
    assert_eq!(h.next_event().unwrap().rule, residency_common::RULE_ERROR);
    // One whose segments are all visited is judged by its (final) destination.
    assert_eq!(h.run(&ipv6_with_routing(v6("2001:db8:1::7"), 0)), PASS);
}

/// A policy with port rules, loaded and bound to this process's cgroup.
fn ported(config: &str) -> (bpf::Loaded, Generations) {
    let config = Arc::new(Config::parse(config, "ports").unwrap());
    let mut loaded = load_private();
    loaded.configure(&config).unwrap();
    let bound = [residency_agent::host::BoundCgroup {
        policy: 0,
        path: "/".into(),
        id: own_cgroup_id(),
    }];
    let mut generations = Generations::new(loaded.take_policy_maps().unwrap()).unwrap();
    generations.apply(&config, &bound).unwrap();
    (loaded, generations)
}

fn run_on(loaded: &mut bpf::Loaded, packet: &[u8]) -> u32 {
    kernel::run_egress(loaded, packet).unwrap()
}

const PORTS: &str = "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n\
    allow = [\"198.51.100.0/24 tcp/443\", \"198.51.100.0/24 udp/53\", \"2001:db8:1::/48 tcp/443\"]\n";

#[test]
fn port_rules_are_judged_in_the_kernel_and_never_allow_an_unread_port() {
    if !require_root() {
        return;
    }
    for cache in ["true", "false"] {
        let (mut l, _g) = ported(&format!("[agent]\nverdict_cache = {cache}\n{PORTS}"));
        for _ in 0..3 {
            // Repeated, so that cached verdicts are checked too.
            assert_eq!(run_on(&mut l, &ipv4([198, 51, 100, 7], 6, 0, 443)), PASS);
            assert_eq!(run_on(&mut l, &ipv4([198, 51, 100, 7], 6, 0, 444)), DROP);
            assert_eq!(run_on(&mut l, &ipv4([198, 51, 100, 7], 17, 0, 443)), DROP);
            assert_eq!(run_on(&mut l, &ipv4([198, 51, 100, 7], 17, 0, 53)), PASS);
            // A later fragment: its port is unknown, so no port rule allows it.
            assert_eq!(run_on(&mut l, &ipv4([198, 51, 100, 7], 17, 185, 53)), DROP);
            assert_eq!(run_on(&mut l, &ipv6(v6("2001:db8:1::7"), true, 443)), DROP);
            assert_eq!(
                run_on(&mut l, &ipv6(v6("::ffff:198.51.100.7"), false, 53)),
                DROP,
                "an IPv6 packet to an IPv4-mapped address is judged as IPv6"
            );
        }
    }
}

#[test]
fn cached_verdicts_end_with_their_policy_version() {
    if !require_root() {
        return;
    }
    let (mut l, mut g) = ported(PORTS);
    let dns = ipv4([198, 51, 100, 7], 17, 0, 53);
    assert_eq!(run_on(&mut l, &dns), PASS);
    assert_eq!(run_on(&mut l, &dns), PASS, "now from the cache");
    let bound = [residency_agent::host::BoundCgroup {
        policy: 0,
        path: "/".into(),
        id: own_cgroup_id(),
    }];
    let stricter = Arc::new(
        Config::parse(
            "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [\"198.51.100.0/24 tcp/443\"]\n",
            "v2",
        )
        .unwrap(),
    );
    g.apply(&stricter, &bound).unwrap();
    assert_eq!(
        run_on(&mut l, &dns),
        DROP,
        "the new version decides at once"
    );
    let config = Arc::new(Config::parse(PORTS, "v3").unwrap());
    g.apply(&config, &bound).unwrap();
    assert_eq!(run_on(&mut l, &dns), PASS);
}

/// IPv4 with an IPsec AH header (12-byte ICV), then UDP to `dport`.
fn ipv4_ah(dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut p = ipv4(dst, 51, 0, dport);
    let ip = 14;
    p[ip + 2..ip + 4].copy_from_slice(&(20u16 + 24 + 8).to_be_bytes());
    let udp = p.split_off(ip + 20);
    // next header UDP, length (24 / 4) - 2 = 4, reserved, SPI, sequence, ICV.
    p.extend_from_slice(&[17, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(&udp);
    p
}

/// IPv6 with `n` destination-options headers, then UDP to `dport`.
fn ipv6_dstopts(dst: [u8; 16], n: usize, dport: u16) -> Vec<u8> {
    const DSTOPTS: u8 = 60;
    let mut p = vec![0u8; 14];
    p[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((n * 8 + 8) as u16).to_be_bytes());
    ip[6] = if n > 0 { DSTOPTS } else { 17 };
    ip[7] = 64;
    ip[8..24].copy_from_slice(&v6("2001:db8:ffff::1"));
    ip[24..40].copy_from_slice(&dst);
    p.extend_from_slice(&ip);
    for i in 0..n {
        let next = if i + 1 < n { DSTOPTS } else { 17 };
        p.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

/// A later IPv6 fragment whose payload imitates a first-fragment header and UDP
/// ports to `dport`.
fn ipv6_nested_fragment(dst: [u8; 16], dport: u16) -> Vec<u8> {
    let mut p = ipv6_dstopts(dst, 0, dport);
    let ip = 14;
    p[ip + 4..ip + 6].copy_from_slice(&24u16.to_be_bytes());
    p[ip + 6] = 44;
    let udp = p.split_off(ip + 40);
    // The real fragment header: offset 1 (8 bytes), next header "fragment" again.
    p.extend_from_slice(&[44, 0, 0, 8, 0, 0, 0, 1]);
    // Its payload: a fake first-fragment header, then "ports".
    p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&udp);
    p
}

#[test]
fn ipv6_header_chains_past_the_walk_and_later_fragments_get_no_port_allow() {
    if !require_root() {
        return;
    }
    let (mut l, _g) = ported(
        "[agent]\nverdict_cache = false\n[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n\
         allow = [\"2001:db8:1::/48 udp/53\"]\n",
    );
    let dst = v6("2001:db8:1::7");
    assert_eq!(run_on(&mut l, &ipv6_dstopts(dst, 0, 53)), PASS);
    assert_eq!(
        run_on(&mut l, &ipv6_dstopts(dst, 8, 53)),
        PASS,
        "8 headers: walked"
    );
    assert_eq!(run_on(&mut l, &ipv6_dstopts(dst, 8, 54)), DROP);
    assert_eq!(
        run_on(&mut l, &ipv6_dstopts(dst, 9, 53)),
        DROP,
        "past the walk: not judged, dropped"
    );
    assert_eq!(
        run_on(&mut l, &ipv6_nested_fragment(dst, 53)),
        DROP,
        "a later fragment's payload is not parsed as headers"
    );
}

#[test]
fn ipv4_ipsec_ah_is_walked_to_the_ports() {
    if !require_root() {
        return;
    }
    let (mut l, _g) = ported(PORTS);
    assert_eq!(run_on(&mut l, &ipv4_ah([198, 51, 100, 7], 53)), PASS);
    assert_eq!(run_on(&mut l, &ipv4_ah([198, 51, 100, 7], 54)), DROP);
}

/// A version written into the idle slot and then abandoned — what an agent does when
/// its programs fail to load while its first version is written — never judges: the
/// version in force goes on, and the next version applies as if it had not been.
#[test]
fn an_abandoned_version_never_judges() {
    if !require_root() {
        return;
    }
    // Cache off: every packet is judged afresh, by the slot the epoch names.
    let (mut l, mut g) = ported(&format!("[agent]\nverdict_cache = false\n{PORTS}"));
    let other = Arc::new(
        Config::parse(
            "[agent]\nverdict_cache = false\n[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n\
             allow = [\"203.0.113.0/24\"]\n",
            "other",
        )
        .unwrap(),
    );
    let bound = [residency_agent::host::BoundCgroup {
        policy: 0,
        path: "/".into(),
        id: own_cgroup_id(),
    }];
    let in_force = |l: &mut bpf::Loaded| {
        assert_eq!(run_on(l, &ipv4([198, 51, 100, 7], 6, 0, 443)), PASS);
        assert_eq!(run_on(l, &ipv4([203, 0, 113, 9], 6, 0, 443)), DROP);
    };
    in_force(&mut l);
    let prepared = g.prepare(&other, &bound).unwrap();
    in_force(&mut l);
    g.abandon(prepared);
    in_force(&mut l);
    g.apply(&other, &bound).unwrap();
    assert_eq!(run_on(&mut l, &ipv4([203, 0, 113, 9], 6, 0, 443)), PASS);
    assert_eq!(run_on(&mut l, &ipv4([198, 51, 100, 7], 6, 0, 443)), DROP);
}
