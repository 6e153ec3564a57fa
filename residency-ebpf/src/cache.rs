//! The verdict cache: a flow's packets after its first are judged without the trie.
//!
//! A key holds everything a verdict depends on (cgroup, policy epoch, destination as
//! judged, protocol, port and whether it was read), so a hit is exactly the verdict the
//! trie would give: a reload or a new binding changes the epoch and with it every key.
//! Slots are per CPU and direct-mapped by a hash of the key; a colliding flow simply
//! overwrites the slot. A slot's `seq` is odd while it is written, and a reader
//! accepts it only when `seq` is even and unchanged around the read: programs on one
//! CPU can interrupt each other (a softirq sending in the middle of a process's send),
//! and a half-written slot must read as a miss, never as a verdict.

use core::{
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
    sync::atomic::{Ordering, compiler_fence},
};

use residency_common::{VERDICT_CACHE_SLOTS, VerdictKey, VerdictValue};

use crate::maps::VERDICTS;

#[inline(always)]
fn index(k: &VerdictKey) -> u32 {
    let a = &k.addr;
    let word = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let mut h = (k.socket as u32) ^ ((k.socket >> 32) as u32).rotate_left(7);
    h ^= k.epoch.rotate_left(13);
    h ^= (u32::from(k.dst_port) << 16) | (u32::from(k.protocol) << 8) | u32::from(k.family);
    h ^= word(0).rotate_left(3) ^ word(4).rotate_left(11) ^ word(8).rotate_left(19);
    h ^= word(12);
    // Fibonacci hashing: the top bits of the product mix every input bit.
    h.wrapping_mul(0x9E37_79B1) >> (32 - VERDICT_CACHE_SLOTS.trailing_zeros())
}

/// The cached verdict for `key`, if any.
#[inline(always)]
pub fn get(key: &VerdictKey) -> Option<VerdictValue> {
    let slot = VERDICTS.get_ptr_mut(index(key))?;
    // SAFETY: a per-CPU slot of plain values; `seq` brackets the reads (module docs),
    // and the fences keep the compiler from moving them out of the bracket.
    unsafe {
        let seq = read_volatile(addr_of!((*slot).seq));
        if seq & 1 != 0 {
            return None;
        }
        compiler_fence(Ordering::SeqCst);
        let s = &*slot;
        if s.key != *key {
            return None;
        }
        let v = s.value;
        compiler_fence(Ordering::SeqCst);
        if read_volatile(addr_of!((*slot).seq)) != seq {
            return None;
        }
        Some(v)
    }
}

/// Remembers the verdict for `key`, replacing whatever shared its slot.
#[inline(always)]
pub fn put(key: &VerdictKey, value: VerdictValue) {
    let Some(slot) = VERDICTS.get_ptr_mut(index(key)) else {
        return;
    };
    // SAFETY: as in `get`; odd `seq` marks the slot as being written.
    unsafe {
        let seq = read_volatile(addr_of!((*slot).seq)) | 1;
        write_volatile(addr_of_mut!((*slot).seq), seq);
        compiler_fence(Ordering::SeqCst);
        (*slot).key = *key;
        (*slot).value = value;
        compiler_fence(Ordering::SeqCst);
        write_volatile(addr_of_mut!((*slot).seq), seq.wrapping_add(1));
    }
}
