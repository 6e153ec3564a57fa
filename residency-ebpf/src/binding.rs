//! Which policy judges: the binding of a cgroup, else of its nearest bound ancestor.
//!
//! The agent attaches the programs only to the topmost configured cgroups, so every
//! packet or socket call runs through them once; a configured cgroup below an attached
//! one is found here by climbing from the root down and keeping the deepest binding.
//!
//! That is one hash lookup for a bound cgroup and one per level for a cgroup below it
//! (a container below its pod), on every packet the verdict cache does not answer and
//! on every unconnected `sendto()`. So what a lookup found is remembered per CPU under
//! the policy epoch it read (`RES_BINDING_MEMO`, direct-mapped by cgroup id): every
//! change of a binding changes the epoch, so a remembered binding is the one the walk
//! would find. Programs on one CPU can interrupt each other; the slots are guarded as
//! the verdict cache's are (`seqlock.rs`, and a tag over the rest).

use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_skb_ancestor_cgroup_id,
        bpf_skb_cgroup_id,
    },
    programs::SkBuffContext,
};
use residency_common::{
    BINDING_MEMO_SLOTS, Binding, BindingKey, BindingMemo, MAX_CGROUP_DEPTH, MEMO_FOUND, MEMO_NONE,
    slot_of,
};

use crate::{
    maps::{BINDING_MEMO, BINDINGS},
    seqlock,
};

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

/// The walk: `cgroup_id` is the cgroup itself; `ancestor(level)` its ancestor at
/// `level` (0 the root), or 0 past the cgroup's own level.
#[inline(always)]
fn walk(cgroup_id: u64, slot: u32, ancestor: impl Fn(i32) -> u64) -> Option<Binding> {
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

/// The binding of `cgroup_id` under `epoch`: remembered, else walked and remembered.
#[inline(always)]
fn find(cgroup_id: u64, epoch: u32, ancestor: impl Fn(i32) -> u64) -> Option<Binding> {
    let index =
        (cgroup_id as u32).wrapping_mul(0x9E37_79B1) >> (32 - BINDING_MEMO_SLOTS.trailing_zeros());
    let slot = BINDING_MEMO.get_ptr_mut(index);
    if let Some(slot) = slot
        && let Some(found) = remembered(slot, cgroup_id, epoch)
    {
        return found;
    }
    let found = walk(cgroup_id, slot_of(epoch), ancestor);
    if let Some(slot) = slot {
        remember(slot, cgroup_id, epoch, found);
    }
    found
}

/// Binds a slot's fields together ([`BindingMemo::tag`]).
#[inline(always)]
fn tag(cgroup_id: u64, epoch: u32, b: &Binding, found: u32) -> u32 {
    let mut h = (cgroup_id as u32) ^ ((cgroup_id >> 32) as u32).rotate_left(7);
    h ^= epoch.rotate_left(13) ^ b.policy.rotate_left(21);
    h ^= (u32::from(b.mode) << 8) | (u32::from(b.flags) << 16) | (found << 24);
    h.wrapping_mul(0x85EB_CA6B) ^ (h >> 13)
}

/// What the slot remembers for `cgroup_id` under `epoch`: `Some(found)`, or `None`
/// when it holds something else or is being written.
#[inline(always)]
fn remembered(slot: *mut BindingMemo, cgroup_id: u64, epoch: u32) -> Option<Option<Binding>> {
    // SAFETY: a per-CPU slot of plain values, its sequence word bracketing the read.
    let m = unsafe { seqlock::read(addr_of!((*slot).seq), || Some(*slot)) }?;
    if m.cgroup_id != cgroup_id
        || m.epoch != epoch
        || m.tag != tag(cgroup_id, epoch, &m.binding, m.found)
    {
        return None;
    }
    match m.found {
        MEMO_FOUND => Some(Some(m.binding)),
        MEMO_NONE => Some(None),
        _ => None,
    }
}

/// Remembers what the walk found, unless another write to the slot is under way on
/// this CPU (it is then left to finish).
#[inline(always)]
fn remember(slot: *mut BindingMemo, cgroup_id: u64, epoch: u32, found: Option<Binding>) {
    let (binding, found) = match found {
        Some(b) => (b, MEMO_FOUND),
        None => (
            Binding {
                policy: 0,
                mode: 0,
                flags: 0,
                _pad: 0,
            },
            MEMO_NONE,
        ),
    };
    // SAFETY: as in `remembered`.
    unsafe {
        seqlock::write(addr_of_mut!((*slot).seq), || {
            (*slot).epoch = epoch;
            (*slot).cgroup_id = cgroup_id;
            (*slot).binding = binding;
            (*slot).found = found;
            (*slot).tag = tag(cgroup_id, epoch, &binding, found);
        });
    }
}

/// The cgroup v2 id of the socket that sent the packet. Read off the hot path only: a
/// cached verdict needs the socket's cookie, not its cgroup.
#[inline(always)]
pub fn skb_cgroup(ctx: &SkBuffContext) -> u64 {
    // SAFETY: helper call on the program's own skb.
    unsafe { bpf_skb_cgroup_id(ctx.skb.skb) }
}

/// The binding for a packet under `epoch`: by the cgroup of the socket that sent it.
#[inline(always)]
pub fn of_skb(
    skb: *mut aya_ebpf::bindings::__sk_buff,
    cgroup_id: u64,
    epoch: u32,
) -> Option<Binding> {
    // SAFETY: helper call on the program's own skb.
    find(cgroup_id, epoch, |level| unsafe {
        bpf_skb_ancestor_cgroup_id(skb, level)
    })
}

/// [`of_skb`] without the memo, by generation `slot`: for `verify`'s probes, whose
/// cgroup's binding changes within an epoch.
#[inline(always)]
pub fn walked_for_skb(
    skb: *mut aya_ebpf::bindings::__sk_buff,
    cgroup_id: u64,
    slot: u32,
) -> Option<Binding> {
    // SAFETY: helper call on the program's own skb.
    walk(cgroup_id, slot, |level| unsafe {
        bpf_skb_ancestor_cgroup_id(skb, level)
    })
}

/// The cgroup of the calling task (connect, sendmsg and socket creation run in it).
#[inline(always)]
pub fn current_cgroup() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_cgroup_id() }
}

/// The binding for a socket call under `epoch`: by the cgroup of the calling task.
#[inline(always)]
pub fn of_current_task(cgroup_id: u64, epoch: u32) -> Option<Binding> {
    // SAFETY: helper without pointer arguments.
    find(cgroup_id, epoch, |level| unsafe {
        bpf_get_current_ancestor_cgroup_id(level)
    })
}
