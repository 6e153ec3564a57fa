//! Inbound connection attempts: `residency_ingress` (cgroup/skb ingress).
//!
//! A listener in an enforced cgroup answers a SYN with a SYN-ACK, and with SYN cookies
//! (under a SYN flood, or `net.ipv4.tcp_syncookies = 2`) that SYN-ACK leaves without a
//! socket, so no egress hook judges it: its TOS, TTL and MSS, chosen by the workload,
//! reach whoever sent the SYN, a covert channel of a few bytes per attempt. A policy
//! with `judge_inbound` (`BINDING_JUDGE_INBOUND`) closes it where it starts: a SYN
//! from a source the policy does not allow is dropped here, before TCP sees it, so
//! nothing answers it.
//!
//! Only connection attempts are judged (SYN without ACK): every other packet passes
//! at once, so established connections cost one parse. The source is judged by its
//! address alone (its port is the peer's own choice, not a service), so an entry with
//! port rules allows no inbound connection. Loopback sources are this host's own and
//! always pass.

use aya_ebpf::{
    helpers::generated::bpf_get_socket_cookie, macros::cgroup_skb, programs::SkBuffContext,
};
use residency_common::{
    BINDING_JUDGE_INBOUND, EVENT_AUDIT, EVENT_BLOCK, MODE_AUDIT, SOURCE_INBOUND,
    protocol::IPPROTO_TCP,
};

use crate::{
    binding, cache,
    maps::{self},
    packet::{self, Packet},
    report,
    verdict::{self, Target, verdict_of},
};

/// cgroup/skb return values.
const PASS: i32 = 1;
const DROP: i32 = 0;

/// TCP header flags (byte 13).
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

#[cgroup_skb(ingress)]
pub fn residency_ingress(ctx: SkBuffContext) -> i32 {
    let Ok(p) = packet::parse(&ctx) else {
        // A packet that cannot be read might be a SYN behind headers we do not walk.
        return unreadable(&ctx);
    };
    if !is_syn(&ctx, &p) {
        return PASS;
    }
    let epoch = maps::epoch();
    let cgroup_id = binding::skb_cgroup(&ctx);
    let Some(b) = binding::of_skb(ctx.skb.skb, cgroup_id, epoch) else {
        // Attached, yet no binding: the maps and attachments disagree. The egress
        // program drops this socket's packets for the same reason; a SYN-ACK made
        // without a socket would escape it, so the SYN is dropped here.
        report::no_binding(&ctx, cgroup_id);
        return DROP;
    };
    if b.flags & BINDING_JUDGE_INBOUND == 0 || loopback(&p) {
        return PASS;
    }
    let v4 = (p.family == 4).then_some([p.src[0], p.src[1], p.src[2], p.src[3]]);
    let target = Target {
        v4,
        v6: p.src,
        protocol: IPPROTO_TCP,
        port: 0,
        port_known: false,
    };
    let d = verdict::decide(epoch, b.policy, &target);
    if d.allowed {
        return PASS;
    }
    // Refusals are counted with the policy's packets; allowed SYNs are not, so that
    // `allowed` stays a count of what the workload sent.
    let audit = b.mode == MODE_AUDIT;
    report::count(b.policy, verdict_of(false, audit), p.family);
    // A SYN and its retransmissions from one peer port are one attempt, one event.
    // SAFETY: the context pointer is the skb the kernel handed us.
    let socket = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let key = cache::flow_key(
        socket,
        epoch,
        IPPROTO_TCP,
        Some(p.src_port),
        v4.is_some(),
        packet::as_judged(&p.src, v4),
    );
    if report::first_report(&key) {
        report::emit(|e| {
            e.cgroup_id = cgroup_id;
            e.policy = b.policy;
            e.rule = d.rule;
            e.uid = ctx.get_socket_uid();
            e.kind = if audit { EVENT_AUDIT } else { EVENT_BLOCK };
            e.family = p.family;
            e.protocol = IPPROTO_TCP;
            e.source = SOURCE_INBOUND;
            e.src_addr = p.src;
            e.src_port = p.src_port;
            e.dst_addr = p.dst;
            e.dst_port = p.dst_port;
        });
    }
    if audit { PASS } else { DROP }
}

/// A TCP segment with SYN set and ACK clear: a connection attempt.
#[inline(always)]
fn is_syn(ctx: &SkBuffContext, p: &Packet) -> bool {
    if p.protocol != IPPROTO_TCP || !p.ports_known {
        return false;
    }
    ctx.load::<u8>(p.transport as usize + 13)
        .is_ok_and(|flags| flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
}

/// 127.0.0.0/8 or ::1: a connection from this host itself.
#[inline(always)]
fn loopback(p: &Packet) -> bool {
    if p.family == 4 {
        p.src[0] == 127
    } else {
        p.src[..15].iter().all(|b| *b == 0) && p.src[15] == 1
    }
}

/// A packet the parser could not read: dropped when its policy judges inbound
/// connections and enforces, since it may be a SYN; passed otherwise.
#[inline(always)]
fn unreadable(ctx: &SkBuffContext) -> i32 {
    let cgroup_id = binding::skb_cgroup(ctx);
    match binding::of_skb(ctx.skb.skb, cgroup_id, maps::epoch()) {
        Some(b) if b.flags & BINDING_JUDGE_INBOUND != 0 && b.mode != MODE_AUDIT => DROP,
        _ => PASS,
    }
}
