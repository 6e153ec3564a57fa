//! Packet sockets: `residency_socket_create` (lsm_cgroup/socket_create).
//!
//! AF_PACKET and AF_XDP sockets write frames below the IP layer, where neither the
//! packet program nor the socket call programs see them, so the only place to hold
//! them to a policy is their creation: enforce policies refuse it unless they allow
//! packet sockets (`BINDING_ALLOW_PACKET_SOCKETS`), audit policies report it.
//!
//! # Minimum kernel version
//! lsm_cgroup programs need Linux 6.0 with the BPF LSM active (`bpf` in
//! `/sys/kernel/security/lsm`); without it they load and attach but never run, which
//! the agent reports.

use aya_ebpf::{macros::lsm_cgroup, programs::LsmContext};
use residency_common::{
    BINDING_ALLOW_PACKET_SOCKETS, EVENT_AUDIT, EVENT_BLOCK, MODE_AUDIT, RULE_NONE, SOURCE_SOCKET,
    Stat,
    source::{AF_PACKET, AF_XDP},
};

use super::{ALLOW_CALL, DENY_CALL};
use crate::{
    binding,
    maps::{self, STATS, bump},
    report,
};

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
    let Some(b) = binding::of_current_task(cgroup_id, maps::epoch()) else {
        report::no_binding(&ctx, cgroup_id);
        return DENY_CALL;
    };
    if b.flags & BINDING_ALLOW_PACKET_SOCKETS != 0 {
        return ALLOW_CALL;
    }
    let audit = b.mode == MODE_AUDIT;
    bump(&STATS, Stat::SocketDenials as u32);
    report::emit(|e| {
        e.cgroup_id = cgroup_id;
        e.policy = b.policy;
        e.rule = RULE_NONE;
        report::caller(e);
        e.kind = if audit { EVENT_AUDIT } else { EVENT_BLOCK };
        e.protocol = family as u8;
        e.source = SOURCE_SOCKET;
    });
    if audit { ALLOW_CALL } else { DENY_CALL }
}
