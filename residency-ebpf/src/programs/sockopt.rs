//! Socket options that get around the destination check: `residency_setsockopt`
//! (cgroup/setsockopt).
//!
//! Which options, and why each is a way out, is `residency_common::sockopt`: a source
//! address that is not the host's own (`IP_FREEBIND`, `IPV6_FREEBIND`, the
//! `*_TRANSPARENT` options), an outgoing interface chosen by hand (`SO_BINDTODEVICE`,
//! `SO_BINDTOIFINDEX`, `IP_UNICAST_IF`, `IPV6_UNICAST_IF`, a sticky `IPV6_PKTINFO`
//! interface), a hand-written header (`IP_HDRINCL`, `IPV6_HDRINCL`). Enforce policies
//! refuse setting them (EPERM); turning one off is always allowed. Audit policies
//! report them and let them pass. Every other option passes untouched.
//!
//! The kernel runs this program for the socket's cgroup, so a socket created in an
//! enforced cgroup is guarded whoever calls: a caller outside every configured cgroup
//! (the socket was passed out, or its process moved) is refused too, since the packet
//! program cannot undo what these options do.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use aya_ebpf::{macros::cgroup_sockopt, programs::SockoptContext};
use residency_common::{
    BINDING_NAMED_INTERFACES, InterfaceKey, SOURCE_SOCKOPT, scope, slot_of,
    sockopt::{self, Value},
};

use super::{ALLOW_CALL, DENY_CALL, family_of, refused_call};
use crate::{
    binding,
    maps::{self, INTERFACES},
};

#[cgroup_sockopt(setsockopt)]
pub fn residency_setsockopt(ctx: SockoptContext) -> i32 {
    // SAFETY: the context pointer is the bpf_sockopt the kernel handed us; the verifier
    // checks each field access.
    let so = unsafe { &*ctx.sockopt };
    let (level, optname) = (so.level, so.optname);
    let Some((rule, value)) = sockopt::guarded(level, optname) else {
        return ALLOW_CALL;
    };
    // SAFETY: reads of the context's optval bounds, which the verifier tracks.
    let (start, end) = unsafe {
        (
            so.__bindgen_anon_2.optval as usize,
            so.__bindgen_anon_3.optval_end as usize,
        )
    };
    if !sets(value, start, end) {
        return ALLOW_CALL;
    }
    let cgroup_id = binding::current_cgroup();
    let epoch = maps::epoch();
    let slot = slot_of(epoch);
    let binding = binding::of_current_task(cgroup_id, epoch);
    // An interface the policy names may be bound to by name.
    if value == Value::Name
        && let Some(b) = binding
        && b.flags & BINDING_NAMED_INTERFACES != 0
        && named(slot, b.policy, start, end)
    {
        return ALLOW_CALL;
    }
    // SAFETY: `sk` is always set for setsockopt; the verifier checks the reads.
    let (family, protocol) = unsafe {
        let sk = &*so.__bindgen_anon_1.sk;
        (family_of(sk.family), sk.protocol as u8)
    };
    // The kernel gives this program type no coarse clock.
    let audit = refused_call((cgroup_id, binding), rule, SOURCE_SOCKOPT, true, |e| {
        e.family = family;
        e.protocol = protocol;
        e.icmp_type = level as u8;
        e.icmp_code = optname as u8;
    });
    if audit { ALLOW_CALL } else { DENY_CALL }
}

/// Whether the value in `start..end` turns the option on: a non-zero int (IPv4
/// options also take a single byte), a non-empty interface name, an `in6_pktinfo`
/// with an interface. A value too short for the kernel to accept passes, and the
/// kernel refuses it.
///
/// Bounds are checked as `start + n <= end`, the form the verifier turns into a known
/// readable range; `start < end` proves nothing to it.
#[inline(always)]
#[allow(clippy::int_plus_one)]
fn sets(value: Value, start: usize, end: usize) -> bool {
    match value {
        Value::Int => {
            if start + 4 <= end {
                // SAFETY: four bytes inside the option buffer, checked just above.
                unsafe { core::ptr::read_unaligned(start as *const i32) != 0 }
            } else if start + 1 <= end {
                // SAFETY: one byte inside the option buffer.
                unsafe { *(start as *const u8) != 0 }
            } else {
                false
            }
        }
        Value::Name => {
            // SAFETY: one byte inside the option buffer, checked first.
            start + 1 <= end && unsafe { *(start as *const u8) != 0 }
        }
        Value::Pktinfo6 => {
            // SAFETY: `struct in6_pktinfo` is 20 bytes, the interface index last.
            start + 20 <= end
                && unsafe { core::ptr::read_unaligned((start + 16) as *const u32) != 0 }
        }
    }
}

/// Whether the interface name in `start..end` (as `SO_BINDTODEVICE` takes it: up to 15
/// characters, NUL-terminated or not) is one `policy` names.
#[inline(always)]
fn named(slot: u32, policy: u32, start: usize, end: usize) -> bool {
    let mut key = InterfaceKey {
        scope: scope(slot, policy),
        name: [0; 16],
    };
    let len = end.saturating_sub(start).min(15) as u32;
    // SAFETY: at most 15 bytes of the option buffer into the key's name; the helper
    // checks the read.
    let read = unsafe {
        bpf_probe_read_kernel(
            key.name.as_mut_ptr().cast(),
            len,
            start as *const core::ffi::c_void,
        )
    };
    if read != 0 {
        return false;
    }
    // The kernel takes the name up to its first NUL: compare that much.
    let mut nul = false;
    for b in key.name.iter_mut() {
        if *b == 0 {
            nul = true;
        }
        if nul {
            *b = 0;
        }
    }
    // SAFETY: a lookup in a hash map of plain values.
    unsafe { INTERFACES.get(key).is_some() }
}
