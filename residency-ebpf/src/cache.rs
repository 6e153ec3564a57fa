//! The verdict cache: a flow's packets after its first are judged without the trie.
//!
//! A key holds everything a verdict depends on (the sending socket, whose cgroup is
//! fixed for its life; the policy epoch; the destination as judged; protocol, port and
//! whether it was read), so a hit is exactly the verdict the
//! trie would give: a reload or a new binding changes the epoch and with it every key.
//! Slots are per CPU and direct-mapped by a hash of the key; a colliding flow simply
//! overwrites the slot. Programs on one CPU can interrupt each other (a softirq sending
//! in the middle of a process's send; a preempted program on a preemptible kernel), and
//! a half-written slot must read as a miss, never as a verdict. There are no
//! compare-and-swap instructions in the base BPF instruction set, so three guards do
//! it: a slot's `seq` is odd while it is written, and a writer that finds it odd leaves
//! the slot alone; a reader accepts a slot only when `seq` is even and unchanged
//! around the read; and the slot's `tag`, a hash of key and value together, must match
//! what was read, so a mix of two writers' fields fails too.

use core::ptr::{addr_of, addr_of_mut};

use residency_common::{VERDICT_CACHE_SLOTS, VerdictKey, VerdictValue};

use crate::{
    maps::VERDICTS,
    packet::{self, Packet},
    seqlock,
};

/// [`VerdictKey::family`]: bit 7 set when the destination port was read.
const PORT_KNOWN: u8 = 0x80;

/// The cache key of a packet sent by socket `socket` under `epoch`; `v4` is its
/// destination as judged ([`Packet::dst_v4`]). An unknown port is keyed as 0, apart
/// from a known port 0 by the family bit.
#[inline(always)]
pub fn key(socket: u64, epoch: u32, p: &Packet, v4: Option<[u8; 4]>) -> VerdictKey {
    let port = if p.ports_known {
        Some(p.dst_port)
    } else {
        None
    };
    flow_key(
        socket,
        epoch,
        p.protocol,
        port,
        v4.is_some(),
        packet::as_judged(&p.dst, v4),
    )
}

/// The key of a flow given field by field: `addr` as judged (IPv4 in its first 4 bytes
/// when `v4`), `port` when known. A socket call builds the same key as its packets will,
/// so that what the call reported is not reported again per packet.
#[inline(always)]
pub fn flow_key(
    socket: u64,
    epoch: u32,
    protocol: u8,
    port: Option<u16>,
    v4: bool,
    addr: [u8; 16],
) -> VerdictKey {
    VerdictKey {
        socket,
        epoch,
        dst_port: port.unwrap_or(0),
        protocol,
        family: if v4 { 4 } else { 6 } | if port.is_some() { PORT_KNOWN } else { 0 },
        addr,
    }
}

/// A 32-bit mix of every key field.
#[inline(always)]
fn mix(k: &VerdictKey) -> u32 {
    let a = &k.addr;
    let word = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let mut h = (k.socket as u32) ^ ((k.socket >> 32) as u32).rotate_left(7);
    h ^= k.epoch.rotate_left(13);
    h ^= (u32::from(k.dst_port) << 16) | (u32::from(k.protocol) << 8) | u32::from(k.family);
    h ^= word(0).rotate_left(3) ^ word(4).rotate_left(11) ^ word(8).rotate_left(19);
    h ^ word(12)
}

/// The slot of a key: Fibonacci hashing, whose top bits mix every input bit.
#[inline(always)]
fn index(mixed: u32) -> u32 {
    mixed.wrapping_mul(0x9E37_79B1) >> (32 - VERDICT_CACHE_SLOTS.trailing_zeros())
}

/// Binds a value to its key ([`CacheSlot::tag`]).
#[inline(always)]
fn tag(mixed: u32, v: &VerdictValue) -> u32 {
    let h = mixed
        ^ v.policy.rotate_left(5)
        ^ v.rule.rotate_left(17)
        ^ (v.cgroup as u32).rotate_left(23)
        ^ ((v.cgroup >> 32) as u32).rotate_left(29)
        ^ ((u32::from(v.mode) << 8) | u32::from(v.allowed));
    h.wrapping_mul(0x85EB_CA6B) ^ (h >> 13)
}

/// The cached verdict for `key`, if any.
#[inline(always)]
pub fn get(key: &VerdictKey) -> Option<VerdictValue> {
    let mixed = mix(key);
    let slot = VERDICTS.get_ptr_mut(index(mixed))?;
    // SAFETY: a per-CPU slot of plain values, its sequence word bracketing the reads.
    let (v, stored) = unsafe {
        seqlock::read(addr_of!((*slot).seq), || {
            let s = &*slot;
            (s.key == *key).then_some((s.value, s.tag))
        })
    }?;
    (stored == tag(mixed, &v)).then_some(v)
}

/// Remembers the verdict for `key`, replacing whatever shared its slot, unless
/// another write to the slot is under way on this CPU (it is then left to finish).
#[inline(always)]
pub fn put(key: &VerdictKey, value: VerdictValue) {
    let mixed = mix(key);
    let Some(slot) = VERDICTS.get_ptr_mut(index(mixed)) else {
        return;
    };
    // SAFETY: as in `get`.
    unsafe {
        seqlock::write(addr_of_mut!((*slot).seq), || {
            // Copied as one non-overlapping block: a plain assignment became a call
            // to `memmove`, a byte loop in BPF, on every flow's first packet.
            core::ptr::copy_nonoverlapping(key, addr_of_mut!((*slot).key), 1);
            (*slot).value = value;
            (*slot).tag = tag(mixed, &value);
        });
    }
}
