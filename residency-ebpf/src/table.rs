//! The lookup tables (`residency_common::table`): a policy's verdict for a destination
//! in at most four array reads (IPv4) or eight (IPv6, its first 64 bits), each inlined
//! by the verifier, where the LPM trie walks a node per branching bit. `None` leaves
//! the verdict to the trie: tables not written for this epoch (`RES_TABLE_EPOCH`), no
//! tables for this policy in this slot, a prefix with port rules, or (IPv6) one longer
//! than /64.

use aya_ebpf::maps::Array;
use residency_common::{MAX_POLICIES, RULE_NONE, TABLE_CHUNK, TableChunk, TableEntry, slot_of};

use crate::{
    maps::{TABLE_EPOCH, TABLE_ROOTS, TABLE_ROOTS_V6, TABLE_V4, TABLE_V6},
    verdict::Decision,
};

/// An IPv4 destination's verdict from the tables of `epoch`.
#[inline(always)]
pub fn v4(epoch: u32, policy: u32, addr: [u8; 4]) -> Option<Decision> {
    walk(&TABLE_ROOTS, &TABLE_V4, epoch, policy, &addr)
}

/// An IPv6 destination's verdict from the tables of `epoch` (its first 64 bits).
#[inline(always)]
pub fn v6(epoch: u32, policy: u32, addr: &[u8; 16]) -> Option<Decision> {
    let mut top = [0u8; 8];
    top.copy_from_slice(&addr[..8]);
    walk(&TABLE_ROOTS_V6, &TABLE_V6, epoch, policy, &top)
}

/// Eight bits a level, most significant first; a leaf ends the walk.
#[inline(always)]
fn walk<const N: usize>(
    roots: &Array<u32>,
    chunks: &Array<TableChunk>,
    epoch: u32,
    policy: u32,
    bytes: &[u8; N],
) -> Option<Decision> {
    // Roots another version's agent left behind are never followed: that agent changed
    // the epoch without this word.
    if *TABLE_EPOCH.get(0)? != epoch {
        return None;
    }
    let root = *roots.get(slot_of(epoch) * MAX_POLICIES + policy)?;
    if root == 0 {
        return None;
    }
    let mut entry = TABLE_CHUNK | (root - 1);
    for byte in bytes {
        let TableEntry::Chunk(chunk) = TableEntry::from_raw(entry) else {
            break;
        };
        let chunk = chunks.get(chunk)?;
        entry = *chunk.get(usize::from(*byte))?;
    }
    match TableEntry::from_raw(entry) {
        TableEntry::NoPrefix => Some(Decision {
            allowed: false,
            rule: RULE_NONE,
        }),
        TableEntry::Decided { allowed, rule } => Some(Decision { allowed, rule }),
        TableEntry::Chunk(_) | TableEntry::AskTrie => None,
    }
}
