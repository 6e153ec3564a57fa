//! Raw IP sockets: `residency_sock_create` (cgroup/sock_create).
//!
//! A raw IP socket (`SOCK_RAW` in AF_INET or AF_INET6, which needs `CAP_NET_RAW`) sends
//! without `connect()` or `sendto()` being judged, and with `IPPROTO_RAW` (or
//! `IP_HDRINCL`, refused in `sockopt.rs`) it writes the IP header itself: the kernel
//! routes the packet by the address given to `sendto()`, while the packet program can
//! only judge the address written in the header, and the two can differ. So enforce
//! policies refuse raw IP sockets unless they allow them (`allow_raw_sockets`), and
//! refuse `IPPROTO_RAW` even then. Audit policies report the creation and let it pass.
//!
//! This hook runs for every AF_INET/AF_INET6 socket a task creates in an attached
//! cgroup (never for the kernel's own); everything but `SOCK_RAW` passes at once. It is
//! also where the agent first hears of a namespace whose sockets may bind anywhere.

use aya_ebpf::{
    helpers::generated::bpf_get_netns_cookie, macros::cgroup_sock, programs::SockContext,
};
use residency_common::{
    BINDING_ALLOW_RAW_SOCKETS, EVENT_AUDIT, EVENT_BLOCK, MODE_AUDIT, RULE_RAW_SOCKET,
    SOURCE_SOCKET, Stat,
};

use super::{ALLOW_CALL, DENY_CALL, family_of};
use crate::{
    binding, local,
    maps::{self, STATS, bump},
    report,
};

/// `SOCK_RAW` (include/linux/net.h).
const SOCK_RAW: u32 = 3;
/// `IPPROTO_RAW`: the socket writes the whole IP header, always.
const IPPROTO_RAW: u32 = 255;

#[cgroup_sock(sock_create)]
pub fn residency_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the context pointer is the bpf_sock the kernel handed us; the verifier
    // checks each field access.
    let sk = unsafe { &*ctx.sock };
    learn_namespace(&ctx);
    if sk.type_ != SOCK_RAW {
        return ALLOW_CALL;
    }
    let protocol = sk.protocol;
    let family = family_of(sk.family);
    let cgroup_id = binding::current_cgroup();
    let Some(b) = binding::of_current_task(cgroup_id, maps::epoch()) else {
        // The hook runs for the creating task's own cgroup, which is attached: no
        // binding means the agent's maps and attachments disagree. Fail closed.
        report::no_binding(&ctx, cgroup_id);
        return DENY_CALL;
    };
    if protocol != IPPROTO_RAW && b.flags & BINDING_ALLOW_RAW_SOCKETS != 0 {
        return ALLOW_CALL;
    }
    let audit = b.mode == MODE_AUDIT;
    if !audit {
        bump(&STATS, Stat::SocketDenials as u32);
    }
    report::emit(|e| {
        e.cgroup_id = cgroup_id;
        e.policy = b.policy;
        e.rule = RULE_RAW_SOCKET;
        report::caller(e);
        e.kind = if audit { EVENT_AUDIT } else { EVENT_BLOCK };
        e.family = family;
        e.protocol = protocol as u8;
        e.source = SOURCE_SOCKET;
    });
    if audit { ALLOW_CALL } else { DENY_CALL }
}

/// A socket made where sockets may bind anywhere (`ip_nonlocal_bind`): the agent is
/// asked for the namespace's addresses now, so that they are known by the time the
/// socket binds or sends (until then its sources are refused, `local.rs`).
#[inline(always)]
fn learn_namespace(ctx: &SockContext) {
    let sk = local::address_of(ctx.sock.cast());
    if local::unchecked_sources(sk, false) || local::unchecked_sources(sk, true) {
        // SAFETY: the context pointer, as the helper takes it.
        local::ask(sk, unsafe { bpf_get_netns_cookie(ctx.sock.cast()) });
    }
}
