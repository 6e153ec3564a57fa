//! The programs, one file per hook family. Each entry point is thin: it reads what its
//! hook gives (a packet, a `sockaddr`, socket arguments) and runs the shared steps
//! (`binding`, `verdict`, `cache`, `report`) in its own order.

pub mod bind;
pub mod egress;
pub mod ingress;
pub mod message;
pub mod raw_socket;
pub mod sock_addr;
pub mod socket_create;
pub mod sockopt;

use residency_common::{Binding, EVENT_AUDIT, EVENT_BLOCK, Event, MODE_AUDIT, Stat};

use crate::{
    binding,
    maps::{self, STATS, bump},
    report,
};

/// cgroup sock_addr and lsm_cgroup return values: 0 makes the call fail with EPERM.
pub const ALLOW_CALL: i32 = 1;
pub const DENY_CALL: i32 = 0;

/// `AF_INET` and `AF_INET6` (include/linux/socket.h) as an event's family, 4 or 6 (0
/// for any other family).
#[inline(always)]
pub fn family_of(af: u32) -> u8 {
    match af {
        2 => 4,
        10 => 6,
        _ => 0,
    }
}

/// The calling task's binding, for a guard about to refuse a call: its cgroup id, and
/// the binding found there (none: the socket's cgroup is guarded, the caller has moved
/// out of every configured one).
#[inline(always)]
pub fn caller_binding() -> (u64, Option<Binding>) {
    let cgroup_id = binding::current_cgroup();
    (
        cgroup_id,
        binding::of_current_task(cgroup_id, maps::epoch()),
    )
}

/// A socket call a guard refuses (or, when the caller's policy audits, reports and lets
/// pass): counted, and reported with the caller, its policy and `rule`, `fill` adding
/// what the call was about. `precise`: the program type has no coarse clock
/// (`report::emit_precise`). Whether the policy audits.
#[inline(always)]
pub fn refused_call(
    (cgroup_id, binding): (u64, Option<Binding>),
    rule: u32,
    source: u8,
    precise: bool,
    fill: impl FnOnce(&mut Event),
) -> bool {
    let audit = binding.is_some_and(|b| b.mode == MODE_AUDIT);
    if !audit {
        bump(&STATS, Stat::SocketDenials as u32);
    }
    let event = |e: &mut Event| {
        e.cgroup_id = cgroup_id;
        e.policy = binding.map_or(u32::MAX, |b| b.policy);
        e.rule = rule;
        report::caller(e);
        e.kind = if audit { EVENT_AUDIT } else { EVENT_BLOCK };
        e.source = source;
        fill(e);
    };
    if precise {
        report::emit_precise(event);
    } else {
        report::emit(event);
    }
    audit
}
