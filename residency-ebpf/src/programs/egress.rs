//! Where a packet is judged: `residency_egress`, the cgroup/skb egress program.
//!
//! Every packet a socket in an attached cgroup sends comes through here, whatever
//! called `connect()` or `sendto()` decided: this program is the backstop. A packet is
//! read (`packet`), answered from the verdict cache when its flow was judged under the
//! same epoch (`cache`), else judged from its policy's trie (`binding`, `verdict`) and
//! the verdict cached; then counted, reported when not allowed and its flow not yet
//! reported (`report`), and dropped unless its policy audits.

use aya_ebpf::{
    bindings::bpf_sock,
    helpers::generated::{bpf_get_socket_cookie, bpf_sk_fullsock},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use aya_log_ebpf::error;
use residency_common::{
    BINDING_NAMED_INTERFACES, Binding, EVENT_AUDIT, EVENT_BLOCK, InterfaceKey, MODE_AUDIT,
    PROBE_MARK, RULE_DEVICE_BINDING, RULE_ERROR, RULE_RAW_SOCKET, RULE_SPOOFED_SOURCE,
    SETTINGS_NO_VERDICT_CACHE, SOURCE_SKB, Stat, Verdict, VerdictKey, VerdictValue, scope, slot_of,
};

use crate::{
    binding, cache, local,
    maps::{self, INTERFACES, SETTINGS, STATS, bump, bump_first},
    packet::{self, Packet},
    report,
    verdict::{self, Decision, Target, verdict_of},
};

/// `AF_INET` and `AF_INET6`.
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// `SOCK_RAW`, and `IPPROTO_ICMP`/`IPPROTO_ICMPV6` (with `SOCK_DGRAM`: a ping socket).
const SOCK_RAW: u32 = 3;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;

/// cgroup/skb return values.
const PASS: i32 = 1;
const DROP: i32 = 0;

#[cgroup_skb(egress)]
pub fn residency_egress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the context pointer is the skb the kernel handed us.
    let socket = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let epoch = maps::epoch();
    let Ok(p) = packet::parse(&ctx) else {
        return unparsable(&ctx, epoch);
    };
    let v4 = p.dst_v4();
    let key = cache::key(socket, epoch, &p, v4);
    // The hot path reads as little as it can: with the cache off nothing is ever put,
    // so the lookup simply misses, and the setting is read on the slow path only.
    let (policy, mode, d) = match cache::get(&key) {
        // The steady state of an allowed flow, returned at once: nothing else stays
        // live on this path, so the slow path's size costs it nothing.
        Some(v) if v.allowed != 0 => {
            report::count(v.policy, Verdict::Allowed, p.family);
            return PASS;
        }
        Some(v) => (
            v.policy,
            v.mode,
            Decision {
                allowed: false,
                rule: v.rule,
            },
        ),
        None => {
            let Some((cgroup_id, b, d, judged)) = judge(&ctx, epoch, &p, v4) else {
                return DROP;
            };
            if judged == Judged::Probe {
                // `verify` driving this program: the decision itself, whatever the
                // mode, and nothing counted, cached or reported.
                return if d.allowed { PASS } else { DROP };
            }
            // A socket that may send from any source is judged packet by packet: the
            // cache key has no source, and its next packet's may differ.
            if judged == Judged::Flow {
                remember(&key, cgroup_id, &b, d);
            }
            (b.policy, b.mode, d)
        }
    };
    let audit = mode == MODE_AUDIT;
    report::count(policy, verdict_of(d.allowed, audit), p.family);
    if d.allowed {
        return PASS;
    }
    // One event per flow: its socket call, or its first packet, reported it.
    if report::first_report(&key) {
        report_packet(&ctx, policy, d.rule, audit, &p);
    }
    if audit { PASS } else { DROP }
}

/// What a judgement holds for: the flow (cacheable), this packet only (its socket may
/// send from any source), or nothing (a probe of `verify`, below).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Judged {
    Flow,
    Packet,
    Probe,
}

/// A cache miss: the packet judged from its policy's trie, and what the judgement
/// holds for, with the socket's cgroup. `None` when no policy binds the socket's
/// cgroup (reported; the caller fails closed).
#[inline(always)]
fn judge(
    ctx: &SkBuffContext,
    epoch: u32,
    p: &Packet,
    v4: Option<[u8; 4]>,
) -> Option<(u64, Binding, Decision, Judged)> {
    let cgroup_id = binding::skb_cgroup(ctx);
    let sk = full_socket(ctx);
    // `verify` drives the live program through BPF_PROG_TEST_RUN, which gives it a
    // socket of its own making, of type 0 (no socket a process can create has it), and
    // marks its packets; both must hold, so other test runs judge as packets do.
    // SAFETY: a read of the context's mark.
    let probe = sk.is_some_and(|sk| sk.type_ == 0) && unsafe { (*ctx.skb.skb).mark } == PROBE_MARK;
    if !probe {
        bump(&STATS, Stat::TrieLookups as u32);
    }
    let slot = slot_of(epoch);
    // A probe's binding is looked up afresh: `verify` binds its own cgroup to one
    // policy after another within one epoch, which a remembered binding would miss.
    let found = if probe {
        binding::walked_for_skb(ctx.skb.skb, cgroup_id, slot)
    } else {
        binding::of_skb(ctx.skb.skb, cgroup_id, epoch)
    };
    let Some(b) = found else {
        // A probe that raced a reload (its binding in the retired slot) says nothing
        // about the agent's maps.
        if !probe {
            report::no_binding(ctx, cgroup_id);
        }
        return None;
    };
    let mut judged = if probe { Judged::Probe } else { Judged::Flow };
    if let Some(rule) =
        sk.and_then(|sk| socket_refused(sk, p, b.flags & BINDING_NAMED_INTERFACES != 0))
    {
        return Some((
            cgroup_id,
            b,
            Decision {
                allowed: false,
                rule,
            },
            judged,
        ));
    }
    // Only an inet socket has the fields read (a test run's socket is of no family).
    if let Some(sk) = sk
        && !probe
        && (sk.family == AF_INET || sk.family == AF_INET6)
    {
        // Ping and raw sockets: their bind() and sendmsg() reach no cgroup hook (their
        // own protocol's bind runs instead), so their packets are judged one by one,
        // never cached (`ping_or_raw`). A TCP or UDP flow's source is checked at its
        // first packet (a socket bound to a foreign address before the guards were
        // attached); later ones keep it, or were judged at sendmsg().
        let refused = if is_ping_or_raw(sk) {
            judged = Judged::Packet;
            ping_or_raw(ctx, sk, p, &b, slot)
        } else {
            let sk = local::address_of((sk as *const bpf_sock).cast());
            (local::foreign(sk, || local::netns_of(sk), &source_of(p)) == Some(true))
                .then_some(RULE_SPOOFED_SOURCE)
        };
        if let Some(rule) = refused {
            let d = Decision {
                allowed: false,
                rule,
            };
            return Some((cgroup_id, b, d, Judged::Packet));
        }
    }
    let target = Target {
        v4,
        v6: p.dst,
        protocol: p.protocol,
        port: p.dst_port,
        port_known: p.ports_known,
    };
    Some((
        cgroup_id,
        b,
        verdict::decide(epoch, b.policy, &target),
        judged,
    ))
}

/// The full socket that sent the packet, if the helper finds one.
#[inline(always)]
fn full_socket(ctx: &SkBuffContext) -> Option<&bpf_sock> {
    // SAFETY: the skb's socket pointer, checked for null, then turned into a full
    // socket (or null) by the helper, as the verifier requires before reading it.
    unsafe {
        let sk = (*ctx.skb.skb).__bindgen_anon_2.sk;
        if sk.is_null() {
            return None;
        }
        let full = bpf_sk_fullsock(sk);
        if full.is_null() { None } else { Some(&*full) }
    }
}

/// A socket whose packets no destination check can vouch for, whatever the header
/// says: an `IPPROTO_RAW` socket writes its own header, which the kernel does not
/// route by, and a socket bound to an interface sends an allowed address out of a link
/// that may face another network. The socket guards refuse both; this catches sockets
/// that got there before the guards were attached, or by a way they do not see. An
/// IPv6 link-local destination needs its interface (the kernel binds the socket to it
/// on connect), so it is judged by its address alone. A policy that names interfaces
/// leaves device binding to the setsockopt guard, which knows names; this program
/// knows only indexes, which differ between network namespaces.
#[inline(always)]
fn socket_refused(sk: &bpf_sock, p: &Packet, named_interfaces: bool) -> Option<u32> {
    const IPPROTO_RAW: u32 = 255;
    if sk.type_ == SOCK_RAW && sk.protocol == IPPROTO_RAW {
        return Some(RULE_RAW_SOCKET);
    }
    let link_local = p.family == 6 && p.dst[0] == 0xfe && p.dst[1] & 0xc0 == 0x80;
    if sk.bound_dev_if != 0 && !link_local && !named_interfaces {
        return Some(RULE_DEVICE_BINDING);
    }
    None
}

/// The packet's source in the local table's form (IPv4 mapped).
#[inline(always)]
fn source_of(p: &Packet) -> [u8; 16] {
    if p.family == 4 {
        local::mapped([p.src[0], p.src[1], p.src[2], p.src[3]])
    } else {
        p.src
    }
}

/// A raw IP socket, or a ping socket (`SOCK_DGRAM` with `IPPROTO_ICMP`/`ICMPV6`).
#[inline(always)]
fn is_ping_or_raw(sk: &bpf_sock) -> bool {
    sk.type_ == SOCK_RAW || sk.protocol == IPPROTO_ICMP || sk.protocol == IPPROTO_ICMPV6
}

/// What refuses a ping or raw socket's packet, if anything:
/// - its source, where the socket may send from any (`local.rs`), is not one of the
///   namespace's own (`RULE_SPOOFED_SOURCE`): a bound source included, since no bind
///   hook saw it, and a source named per message (`IPV6_PKTINFO` on raw sockets);
/// - it leaves by another interface than the one the socket is bound to, or (IPv4)
///   by the route the kernel makes for an interface forced onto a destination no route
///   there knows (`IP_PKTINFO`, `local::forced_on_link`): `RULE_DEVICE_BINDING`.
#[inline(always)]
fn ping_or_raw(
    ctx: &SkBuffContext,
    sk: &bpf_sock,
    p: &Packet,
    b: &Binding,
    slot: u32,
) -> Option<u32> {
    let bound = sk.bound_dev_if;
    let sk = local::address_of((sk as *const bpf_sock).cast());
    if local::foreign(sk, || local::netns_of(sk), &source_of(p)) == Some(true) {
        return Some(RULE_SPOOFED_SOURCE);
    }
    // SAFETY: a read of the context's output interface.
    let out = unsafe { (*ctx.skb.skb).ifindex };
    let forced = if bound != 0 {
        out != bound
    } else {
        p.family == 4 && local::forced_on_link(local::address_of(ctx.skb.skb.cast()))
    };
    // An interface the policy names may be chosen, as by `SO_BINDTODEVICE`.
    let named = || {
        b.flags & BINDING_NAMED_INTERFACES != 0
            && local::interface_name(sk, out).is_some_and(|name| {
                let key = InterfaceKey {
                    scope: scope(slot, b.policy),
                    name,
                };
                // SAFETY: a lookup in a hash map of plain values.
                unsafe { INTERFACES.get(key).is_some() }
            })
    };
    (forced && !named()).then_some(RULE_DEVICE_BINDING)
}

/// Caches a verdict for the flow's later packets (judged by the binding of socket
/// cgroup `cgroup_id`), unless the agent turned the cache off (`[agent] verdict_cache
/// = false`).
#[inline(always)]
fn remember(key: &VerdictKey, cgroup_id: u64, b: &Binding, d: Decision) {
    let value = VerdictValue {
        cgroup: cgroup_id,
        policy: b.policy,
        rule: d.rule,
        mode: b.mode,
        allowed: d.allowed as u8,
        _pad: [0; 6],
    };
    let cache_on = SETTINGS
        .get(0)
        .is_none_or(|s| s.flags & SETTINGS_NO_VERDICT_CACHE == 0);
    if cache_on {
        cache::put(key, value);
    }
}

/// A packet the parser could not read far enough: dropped unless its policy audits.
#[inline(always)]
fn unparsable(ctx: &SkBuffContext, epoch: u32) -> i32 {
    let cgroup_id = binding::skb_cgroup(ctx);
    let Some(b) = binding::of_skb(ctx.skb.skb, cgroup_id, epoch) else {
        report::no_binding(ctx, cgroup_id);
        return DROP;
    };
    if bump_first(&STATS, Stat::ParseErrors as u32) {
        error!(
            ctx,
            "residency: unparsable egress packet (cgroup {})", cgroup_id
        );
    }
    let audit = b.mode == MODE_AUDIT;
    let uid = ctx.get_socket_uid();
    report::emit(|e| {
        e.cgroup_id = cgroup_id;
        e.policy = b.policy;
        e.rule = RULE_ERROR;
        e.uid = uid;
        e.kind = if audit { EVENT_AUDIT } else { EVENT_BLOCK };
        e.source = SOURCE_SKB;
    });
    if audit { PASS } else { DROP }
}

/// The event of a packet that is not allowed: addresses, ports and ICMP type as read.
#[inline(always)]
fn report_packet(ctx: &SkBuffContext, policy: u32, rule: u32, audit: bool, p: &Packet) {
    report::emit(|e| {
        e.uid = ctx.get_socket_uid();
        e.cgroup_id = binding::skb_cgroup(ctx);
        e.policy = policy;
        e.rule = rule;
        e.dst_port = p.dst_port;
        e.src_port = p.src_port;
        e.kind = if audit { EVENT_AUDIT } else { EVENT_BLOCK };
        e.family = p.family;
        e.protocol = p.protocol;
        e.source = SOURCE_SKB;
        e.icmp_type = p.icmp_type;
        e.icmp_code = p.icmp_code;
        e.dst_addr = p.dst;
        e.src_addr = p.src;
    });
}
