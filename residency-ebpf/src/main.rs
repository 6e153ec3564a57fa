//! The residency kernel programs.
//!
//! - `residency_egress` (cgroup/skb egress), the backstop: for every packet a socket in
//!   an attached cgroup sends, it
//!   1. reads the destination, protocol and port from the packet (`packet`);
//!   2. answers from the verdict cache when this socket sent to this destination and
//!      port under the same policy epoch before (`cache`);
//!   3. else finds the policy bound to the socket's cgroup or its nearest bound
//!      ancestor (`binding`) and judges the destination (`verdict`): the most specific
//!      matching prefix and its port rules decide, no match means not allowed;
//!   4. counts the verdict and reports every packet that is not allowed (`event`);
//!   5. drops the packet in enforce mode, passes it in audit mode.
//! - `residency_connect4/6` and `residency_sendmsg4/6` (cgroup sock_addr): the same
//!   verdict when an application calls `connect()` or `sendto()`, so a forbidden call
//!   fails at once with EPERM instead of timing out, and its event names the process.
//! - `residency_socket_create` (lsm_cgroup/socket_create): packet sockets (AF_PACKET)
//!   write below the IP layer, where no egress hook sees them; enforce policies deny
//!   creating them unless they allow it.
//!
//! Errors fail closed: a packet or call the programs cannot judge is refused unless its
//! policy is known to be in audit mode.
#![no_std]
#![no_main]
// `atomic_xadd`: core has no read-modify-write atomics for the BPF target, and the
// per-CPU counters must not lose an increment when a softirq's program nests inside a
// process's on the same CPU (BPF_ATOMIC add, available since the first BPF ISA).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod binding;
mod cache;
mod event;
mod maps;
mod packet;
mod verdict;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_socket_cookie, bpf_skb_cgroup_id},
    },
    macros::{cgroup_skb, cgroup_sock_addr, lsm_cgroup},
    programs::{LsmContext, SkBuffContext, SockAddrContext},
};
use aya_log_ebpf::error;
use residency_common::{
    BINDING_ALLOW_PACKET_SOCKETS, Binding, EVENT_AUDIT, EVENT_BLOCK, Event, MODE_AUDIT, RULE_ERROR,
    RULE_NONE, SETTINGS_NO_VERDICT_CACHE, SOURCE_CONNECT, SOURCE_SENDMSG, SOURCE_SKB,
    SOURCE_SOCKET, Stat, Verdict, VerdictKey, VerdictValue, slot_of,
};

use maps::{ACTIVE, SETTINGS, STATS, bump, bump_first};
use packet::Packet;
use verdict::{Decision, Target};

/// cgroup/skb return values.
const PASS: i32 = 1;
const DROP: i32 = 0;
/// cgroup sock_addr and lsm_cgroup return values: 0 makes the call fail with EPERM.
const ALLOW_CALL: i32 = 1;
const DENY_CALL: i32 = 0;

const AF_PACKET: i32 = 17;
const AF_XDP: i32 = 44;

/// The policy epoch: read once, so that every lookup of one packet or call uses one
/// version even when a reload flips it meanwhile.
#[inline(always)]
fn epoch() -> u32 {
    ACTIVE.get(0).copied().unwrap_or(0)
}

#[inline(always)]
fn verdict_of(allowed: bool, audit: bool) -> Verdict {
    match (allowed, audit) {
        (true, _) => Verdict::Allowed,
        (false, true) => Verdict::Audited,
        (false, false) => Verdict::Blocked,
    }
}

#[cgroup_skb(egress)]
pub fn residency_egress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the context pointer is the skb the kernel handed us.
    let socket = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let epoch = epoch();
    let slot = slot_of(epoch);
    let Ok(p) = packet::parse(&ctx) else {
        return unparsable(&ctx, slot);
    };
    let v4 = p.dst_v4();
    let mut addr = p.dst;
    if let Some(a) = v4 {
        addr = [0; 16];
        addr[..4].copy_from_slice(&a);
    }
    let key = VerdictKey {
        socket,
        epoch,
        dst_port: if p.ports_known { p.dst_port } else { 0 },
        protocol: p.protocol,
        family: if v4.is_some() { 4 } else { 6 } | if p.ports_known { 0x80 } else { 0 },
        addr,
    };
    // The hot path reads as little as it can: with the cache off nothing is ever put,
    // so the lookup simply misses, and the setting is read on the slow path only.
    let (policy, mode, d) = match cache::get(&key) {
        Some(v) => (
            v.policy,
            v.mode,
            Decision {
                allowed: v.allowed != 0,
                rule: v.rule,
            },
        ),
        None => {
            bump(&STATS, Stat::TrieLookups as u32);
            let cgroup_id = cgroup_of(&ctx);
            let Some(b) = binding::of_skb(ctx.skb.skb, cgroup_id, slot) else {
                no_binding(&ctx, cgroup_id);
                return DROP;
            };
            let target = Target {
                v4,
                v6: p.dst,
                protocol: p.protocol,
                port: p.dst_port,
                port_known: p.ports_known,
            };
            let d = verdict::decide(slot, b.policy, &target);
            let value = VerdictValue {
                policy: b.policy,
                rule: d.rule,
                mode: b.mode,
                allowed: d.allowed as u8,
                _pad: 0,
            };
            let cache_on = SETTINGS
                .get(0)
                .is_none_or(|s| s.flags & SETTINGS_NO_VERDICT_CACHE == 0);
            if cache_on {
                cache::put(&key, value);
            }
            (b.policy, b.mode, d)
        }
    };
    let audit = mode == MODE_AUDIT;
    event::count(policy, verdict_of(d.allowed, audit), p.family);
    if d.allowed {
        return PASS;
    }
    report_packet(&ctx, policy, d.rule, audit, &p);
    if audit { PASS } else { DROP }
}

/// The cgroup v2 id of the socket that sent the packet. Read off the hot path only: a
/// cached verdict needs the socket's cookie, not its cgroup.
#[inline(always)]
fn cgroup_of(ctx: &SkBuffContext) -> u64 {
    // SAFETY: helper call on the program's own skb.
    unsafe { bpf_skb_cgroup_id(ctx.skb.skb) }
}

/// Attached, but no policy found for this socket's cgroup: the agent's maps and
/// attachments disagree. Fail closed.
#[inline(always)]
fn no_binding<C: aya_ebpf::EbpfContext>(ctx: &C, cgroup_id: u64) {
    if bump_first(&STATS, Stat::NoBinding as u32) {
        error!(
            ctx,
            "residency: no policy binding for cgroup {}; refusing", cgroup_id
        );
    }
}

/// A packet the parser could not read far enough: dropped unless its policy audits.
#[inline(always)]
fn unparsable(ctx: &SkBuffContext, slot: u32) -> i32 {
    let cgroup_id = cgroup_of(ctx);
    let Some(b) = binding::of_skb(ctx.skb.skb, cgroup_id, slot) else {
        no_binding(ctx, cgroup_id);
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
    event::emit(|e| {
        e.cgroup_id = cgroup_id;
        e.policy = b.policy;
        e.rule = RULE_ERROR;
        e.uid = uid;
        e.kind = if audit { EVENT_AUDIT } else { EVENT_BLOCK };
        e.source = SOURCE_SKB;
    });
    if audit { PASS } else { DROP }
}

#[inline(always)]
fn report_packet(ctx: &SkBuffContext, policy: u32, rule: u32, audit: bool, p: &Packet) {
    event::emit(|e| {
        e.uid = ctx.get_socket_uid();
        e.cgroup_id = cgroup_of(ctx);
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

/// Fills the calling process's identity into an event.
#[inline(always)]
fn caller(e: &mut Event) {
    e.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    e.uid = bpf_get_current_uid_gid() as u32;
    e.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// `connect()` or `sendto()`: the destination the application asked for, judged by the
/// calling task's policy.
#[inline(always)]
fn socket_call(ctx: &SockAddrContext, v6: bool, source: u8) -> i32 {
    // SAFETY: the context pointer is the bpf_sock_addr the kernel handed us; the
    // verifier checks each field access.
    let sa = unsafe { &*ctx.sock_addr };
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
    let v4 = packet::judged_as_v4(!v6, &dst);
    // Events show the address as judged: IPv4 for an IPv4-mapped destination.
    let mut shown = dst;
    if let Some(a) = v4 {
        shown = [0; 16];
        shown[..4].copy_from_slice(&a);
    }
    let family = if v4.is_some() { 4 } else { 6 };
    let cgroup_id = binding::current_cgroup();
    let slot = slot_of(epoch());
    let Some(b) = binding::of_current_task(cgroup_id, slot) else {
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
    // Audit mode lets the call through silently: its packets will be judged, counted
    // and reported one by one by the packet program, and reporting the call as well
    // would count the same traffic twice.
    if b.mode == MODE_AUDIT {
        return ALLOW_CALL;
    }
    let d = verdict::decide(slot, b.policy, &target);
    if d.allowed {
        return ALLOW_CALL;
    }
    // Refused before any packet exists: counted here, once.
    event::count(b.policy, Verdict::Blocked, family);
    bump(&STATS, Stat::SocketDenials as u32);
    event::emit(|e| {
        e.cgroup_id = cgroup_id;
        e.policy = b.policy;
        e.rule = d.rule;
        caller(e);
        e.dst_port = port;
        e.kind = EVENT_BLOCK;
        e.family = family;
        e.protocol = protocol;
        e.source = source;
        e.dst_addr = shown;
    });
    DENY_CALL
}

/// `socket_create(family, type, protocol, kern)`: packet and XDP sockets are refused to
/// workloads of enforce policies that do not allow them. Sockets the kernel creates for
/// itself (`kern`) are never judged.
#[lsm_cgroup(hook = "socket_create")]
pub fn residency_socket_create(ctx: LsmContext) -> i32 {
    let family: i32 = ctx.arg(0);
    let kern: i32 = ctx.arg(3);
    if (family != AF_PACKET && family != AF_XDP) || kern != 0 {
        return ALLOW_CALL;
    }
    let cgroup_id = binding::current_cgroup();
    let slot = slot_of(epoch());
    let Some(b): Option<Binding> = binding::of_current_task(cgroup_id, slot) else {
        no_binding(&ctx, cgroup_id);
        return DENY_CALL;
    };
    if b.flags & BINDING_ALLOW_PACKET_SOCKETS != 0 {
        return ALLOW_CALL;
    }
    let audit = b.mode == MODE_AUDIT;
    bump(&STATS, Stat::SocketDenials as u32);
    event::emit(|e| {
        e.cgroup_id = cgroup_id;
        e.policy = b.policy;
        e.rule = RULE_NONE;
        caller(e);
        e.kind = if audit { EVENT_AUDIT } else { EVENT_BLOCK };
        e.protocol = family as u8;
        e.source = SOURCE_SOCKET;
    });
    if audit { ALLOW_CALL } else { DENY_CALL }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
