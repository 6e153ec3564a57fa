//! Which policy judges: the binding of a cgroup, else of its nearest bound ancestor.
//!
//! The agent attaches the programs only to the topmost configured cgroups, so every
//! packet or socket call runs through them once; a configured cgroup below an attached
//! one is found here by climbing from the root down and keeping the deepest binding.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_skb_ancestor_cgroup_id,
        bpf_skb_cgroup_id,
    },
    programs::SkBuffContext,
};
use residency_common::{Binding, BindingKey, MAX_CGROUP_DEPTH};

use crate::maps::BINDINGS;

#[inline(always)]
fn lookup(cgroup_id: u64, slot: u32) -> Option<Binding> {
    let key = BindingKey {
        cgroup_id,
        slot,
        _pad: 0,
    };
    // SAFETY: a lookup in a hash map of plain values, copied out at once.
    unsafe { BINDINGS.get(key).copied() }
}

/// `cgroup_id` is the cgroup itself; `ancestor(level)` its ancestor at `level` (0 the
/// root), or 0 past the cgroup's own level.
#[inline(always)]
fn find(cgroup_id: u64, slot: u32, ancestor: impl Fn(i32) -> u64) -> Option<Binding> {
    if let Some(b) = lookup(cgroup_id, slot) {
        return Some(b);
    }
    let mut found = None;
    for level in 0..MAX_CGROUP_DEPTH {
        let id = ancestor(level as i32);
        if id == 0 || id == cgroup_id {
            break;
        }
        if let Some(b) = lookup(id, slot) {
            found = Some(b);
        }
    }
    found
}

/// The cgroup v2 id of the socket that sent the packet. Read off the hot path only: a
/// cached verdict needs the socket's cookie, not its cgroup.
#[inline(always)]
pub fn skb_cgroup(ctx: &SkBuffContext) -> u64 {
    // SAFETY: helper call on the program's own skb.
    unsafe { bpf_skb_cgroup_id(ctx.skb.skb) }
}

/// The binding for a packet: by the cgroup of the socket that sent it.
#[inline(always)]
pub fn of_skb(
    skb: *mut aya_ebpf::bindings::__sk_buff,
    cgroup_id: u64,
    slot: u32,
) -> Option<Binding> {
    // SAFETY: helper call on the program's own skb.
    find(cgroup_id, slot, |level| unsafe {
        bpf_skb_ancestor_cgroup_id(skb, level)
    })
}

/// The cgroup of the calling task (connect, sendmsg and socket creation run in it).
#[inline(always)]
pub fn current_cgroup() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_cgroup_id() }
}

/// The binding for a socket call: by the cgroup of the calling task.
#[inline(always)]
pub fn of_current_task(cgroup_id: u64, slot: u32) -> Option<Binding> {
    // SAFETY: helper without pointer arguments.
    find(cgroup_id, slot, |level| unsafe {
        bpf_get_current_ancestor_cgroup_id(level)
    })
}
