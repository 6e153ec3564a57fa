//! What a `sendmsg()` chooses besides its destination, with an `IP_PKTINFO` or
//! `IPV6_PKTINFO` control message the socket options never see: a source address
//! (refused when it is not the namespace's own where the kernel would take it,
//! `local.rs`) and an outgoing interface. Given an interface, the kernel sends even an
//! address no route leads there out of it, as if on that link: an allowed address
//! reaches whoever answers for it on a forbidden network. So enforce policies refuse a
//! per-message interface other than the socket's own bound one (`rule=device-binding`),
//! except to an IPv6 link-local destination, which needs its interface; an index names
//! no interface a policy can check, as for `IP_UNICAST_IF`.
//!
//! The sendmsg programs are not given the interface: it is read where the kernel keeps
//! it for the call, through the context (`local::sendmsg_oif`).

use aya_ebpf::{
    bindings::bpf_sock_addr, helpers::generated::bpf_get_netns_cookie, programs::SockAddrContext,
};
use residency_common::{
    BINDING_NAMED_INTERFACES, EVENT_AUDIT, EVENT_BLOCK, InterfaceKey, MODE_AUDIT,
    RULE_DEVICE_BINDING, RULE_SPOOFED_SOURCE, SOURCE_SENDMSG, Stat, scope, slot_of,
};

use super::DENY_CALL;
use crate::{
    binding, local,
    maps::{self, INTERFACES, STATS, bump},
    packet, report,
};

/// Whether interface `ifindex` of socket `sk`'s namespace is one the calling task's
/// policy names (`interfaces`), by its name: an index alone names nothing a policy
/// can check, but the kernel knows the name behind it.
#[inline(always)]
fn named(sk: u64, ifindex: u32) -> bool {
    let epoch = maps::epoch();
    let slot = slot_of(epoch);
    let Some(b) = binding::of_current_task(binding::current_cgroup(), epoch) else {
        return false;
    };
    if b.flags & BINDING_NAMED_INTERFACES == 0 {
        return false;
    }
    let Some(name) = local::interface_name(sk, ifindex) else {
        return false;
    };
    let key = InterfaceKey {
        scope: scope(slot, b.policy),
        name,
    };
    // SAFETY: a lookup in a hash map of plain values.
    unsafe { INTERFACES.get(key).is_some() }
}

/// The answer to a `sendmsg()` whose source or interface is refused (enforce; audit
/// policies report it and return `None`, like a call refusing neither). `dst` is the
/// destination as given.
#[inline(always)]
pub fn refused(
    ctx: &SockAddrContext,
    sa: &bpf_sock_addr,
    v6: bool,
    dst: &[u8; 16],
    port: u16,
    protocol: u8,
) -> Option<i32> {
    let mut src = [0u8; 16];
    if v6 {
        for (i, word) in sa.msg_src_ip6.iter().enumerate() {
            src[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    } else {
        src = local::mapped(sa.msg_src_ip4.to_ne_bytes());
    }
    // SAFETY: `sk` is always set in sock_addr programs; the verifier checks the reads.
    let (sk, bound, own) = unsafe {
        let sk = sa.__bindgen_anon_1.sk;
        let mut own = [0u8; 16];
        if v6 {
            for (i, word) in (*sk).src_ip6.iter().enumerate() {
                own[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
        } else {
            own = local::mapped((*sk).src_ip4.to_ne_bytes());
        }
        (sk, (*sk).bound_dev_if, own)
    };
    // A message that names no source of its own sends from the socket's: kernel-chosen
    // (the namespace's) or bound, which the bind program judged.
    let named_source = src != own;
    // SAFETY: the context pointer, as the helper takes it.
    let netns = || unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    let rule = if named_source
        && local::foreign(local::address_of(sk.cast()), netns, &src) == Some(true)
    {
        RULE_SPOOFED_SOURCE
    } else {
        // A link-local destination needs its interface, and a multicast group is sent
        // on the link chosen for it (`IP_MULTICAST_IF` chooses as well); the group
        // itself is judged as any destination.
        let link_local = v6 && dst[0] == 0xfe && dst[1] & 0xc0 == 0x80;
        let multicast = if v6 {
            dst[0] == 0xff
        } else {
            dst[0] & 0xf0 == 0xe0
        };
        match local::sendmsg_oif(ctx.sock_addr.cast(), v6) {
            Some(oif) if oif != 0 && oif != bound && !link_local && !multicast => {
                if named(local::address_of(sk.cast()), oif) {
                    return None;
                }
                RULE_DEVICE_BINDING
            }
            _ => return None,
        }
    };
    // Written out rather than through `super::refused_call`: in this program the
    // compiler packed the binding it returns into masked words, which the verifier
    // refuses (math on a map value pointer).
    let cgroup_id = binding::current_cgroup();
    let binding = binding::of_current_task(cgroup_id, maps::epoch());
    let audit = binding.is_some_and(|b| b.mode == MODE_AUDIT);
    if !audit {
        bump(&STATS, Stat::SocketDenials as u32);
    }
    let src_v4 = local::is_mapped(&src);
    report::emit(|e| {
        e.cgroup_id = cgroup_id;
        e.policy = binding.map_or(u32::MAX, |b| b.policy);
        e.rule = rule;
        report::caller(e);
        e.kind = if audit { EVENT_AUDIT } else { EVENT_BLOCK };
        e.dst_port = port;
        e.dst_addr = *dst;
        e.family = if v6 && !src_v4 { 6 } else { 4 };
        e.protocol = protocol;
        e.source = SOURCE_SENDMSG;
        if rule == RULE_SPOOFED_SOURCE {
            e.src_addr =
                packet::as_judged(&src, src_v4.then(|| [src[12], src[13], src[14], src[15]]));
        }
    });
    // In audit mode the call goes on to have its destination judged.
    (!audit).then_some(DENY_CALL)
}
