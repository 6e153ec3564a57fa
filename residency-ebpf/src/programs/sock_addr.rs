//! `connect()` and `sendto()`: `residency_connect4/6` and `residency_sendmsg4/6`
//! (cgroup sock_addr).
//!
//! The same verdict as the packet program, given before any packet exists: a
//! forbidden call fails at once with EPERM instead of timing out, and its event names
//! the calling process, which a packet cannot. The packet program still judges every
//! packet, so a call let through here (audit mode, a caller in an unbound cgroup) is
//! never a way around the policy.
//!
//! In audit mode a call that would be refused passes, and is reported here, with its
//! process; its packets are counted as audited but not reported again.

use aya_ebpf::{
    helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use residency_common::{
    EVENT_AUDIT, EVENT_BLOCK, Event, MODE_AUDIT, SOURCE_CONNECT, SOURCE_SENDMSG, Stat, Verdict,
};

use super::{ALLOW_CALL, DENY_CALL, message};
use crate::{
    binding, cache,
    maps::{self, STATS, bump},
    packet, report,
    verdict::{self, Decision, Target},
};

#[cgroup_sock_addr(connect4)]
pub fn residency_connect4(ctx: SockAddrContext) -> i32 {
    socket_call(&ctx, false, SOURCE_CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn residency_connect6(ctx: SockAddrContext) -> i32 {
    socket_call(&ctx, true, SOURCE_CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn residency_sendmsg4(ctx: SockAddrContext) -> i32 {
    socket_call(&ctx, false, SOURCE_SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn residency_sendmsg6(ctx: SockAddrContext) -> i32 {
    socket_call(&ctx, true, SOURCE_SENDMSG)
}

/// `connect()` or `sendto()`: the destination the application asked for, judged by the
/// calling task's policy.
#[inline(always)]
fn socket_call(ctx: &SockAddrContext, v6: bool, source: u8) -> i32 {
    // SAFETY: the context pointer is the bpf_sock_addr the kernel handed us; the
    // verifier checks each field access.
    let sa = unsafe { &*ctx.sock_addr };
    // `v6` is a constant of each entry point, so the verifier never sees a read of
    // `user_ip6` in an IPv4 program, which it would refuse.
    let mut dst = [0u8; 16];
    if v6 {
        for (i, word) in sa.user_ip6.iter().enumerate() {
            dst[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    } else {
        dst[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    }
    // The port is stored as in `sin_port`: network byte order in the low 16 bits.
    let port = u16::from_be(sa.user_port as u16);
    let protocol = sa.protocol as u8;
    // The unspecified address means this host: the kernel sends to loopback.
    if dst.iter().all(|b| *b == 0) {
        if v6 {
            dst[15] = 1;
        } else {
            dst[..4].copy_from_slice(&[127, 0, 0, 1]);
        }
    }
    if source == SOURCE_SENDMSG
        && let Some(refused) = message::refused(ctx, sa, v6, &dst, port, protocol)
    {
        return refused;
    }
    let v4 = packet::judged_as_v4(!v6, &dst);
    // Events show the address as judged: IPv4 for an IPv4-mapped destination.
    let shown = packet::as_judged(&dst, v4);
    let family = if v4.is_some() { 4 } else { 6 };
    let cgroup_id = binding::current_cgroup();
    let epoch = maps::epoch();
    // SAFETY: the context pointer is the bpf_sock_addr the kernel handed us.
    let socket = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let key = cache::flow_key(socket, epoch, protocol, Some(port), v4.is_some(), shown);
    // An unconnected socket sending to one destination again and again (a DNS client,
    // statsd, a QUIC server): its earlier packets were judged by the packet program,
    // which remembered the verdict under this very key (same socket, version,
    // destination as judged, protocol and port). A verdict is a function of the policy
    // and those, so it is this call's too when the policy is the caller's. Read only:
    // the packet program judges by the socket's cgroup, a call by the caller's, so a
    // call never writes a verdict the packets would take.
    let cached = cache::get(&key);
    // A caller in the socket's own cgroup (nearly always) has the binding that judged,
    // under the same epoch: an allowed verdict is the call's without looking it up.
    if let Some(v) = cached
        && v.allowed != 0
        && v.cgroup == cgroup_id
    {
        return ALLOW_CALL;
    }
    let Some(b) = binding::of_current_task(cgroup_id, epoch) else {
        // The socket belongs to a configured cgroup (these programs run from the
        // socket's cgroup), but the caller has moved to one no policy binds. The call
        // passes; the packet program judges every packet by the socket's cgroup.
        return ALLOW_CALL;
    };
    let target = Target {
        v4,
        v6: dst,
        protocol,
        port,
        port_known: true,
    };
    let d = match cached {
        Some(v) if v.policy == b.policy => Decision {
            allowed: v.allowed != 0,
            rule: v.rule,
        },
        _ => verdict::decide(epoch, b.policy, &target),
    };
    if d.allowed {
        return ALLOW_CALL;
    }
    if b.mode == MODE_AUDIT {
        // The call passes and its packets will be counted as audited by the packet
        // program; only the event is written here, where the process is known, and the
        // flow is marked reported so that its packets do not report it again.
        report::reported(&key);
        report::emit(|e| {
            fill(
                e, cgroup_id, b.policy, d.rule, port, family, protocol, source, &shown,
            );
            e.kind = EVENT_AUDIT;
        });
        return ALLOW_CALL;
    }
    // Refused before any packet exists: counted here, once.
    report::count(b.policy, Verdict::Blocked, family);
    bump(&STATS, Stat::SocketDenials as u32);
    report::emit(|e| {
        fill(
            e, cgroup_id, b.policy, d.rule, port, family, protocol, source, &shown,
        );
        e.kind = EVENT_BLOCK;
    });
    DENY_CALL
}

/// The event of a socket call: the destination as judged and the calling process.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill(
    e: &mut Event,
    cgroup_id: u64,
    policy: u32,
    rule: u32,
    port: u16,
    family: u8,
    protocol: u8,
    source: u8,
    shown: &[u8; 16],
) {
    e.cgroup_id = cgroup_id;
    e.policy = policy;
    e.rule = rule;
    report::caller(e);
    e.dst_port = port;
    e.family = family;
    e.protocol = protocol;
    e.source = source;
    e.dst_addr = *shown;
}
