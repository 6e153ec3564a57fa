//! The IPv4 lookup tables (`residency_common::table`): a policy's verdict for an IPv4
//! destination in at most four array reads, each inlined by the verifier, where the
//! LPM trie walks a node per branching bit. `None` leaves the verdict to the trie: no
//! tables for this policy in this slot, or a prefix with port rules.

use residency_common::{MAX_POLICIES, RULE_NONE, TABLE_CHUNK, TableEntry};

use crate::{
    maps::{TABLE_ROOTS, TABLE_V4},
    verdict::Decision,
};

#[inline(always)]
pub fn v4(slot: u32, policy: u32, addr: [u8; 4]) -> Option<Decision> {
    let root = *TABLE_ROOTS.get(slot * MAX_POLICIES + policy)?;
    if root == 0 {
        return None;
    }
    let a = u32::from_be_bytes(addr);
    let mut entry = TABLE_CHUNK | (root - 1);
    // Eight bits a level, most significant first; a leaf ends the walk.
    for shift in [24u32, 16, 8, 0] {
        let TableEntry::Chunk(chunk) = TableEntry::from_raw(entry) else {
            break;
        };
        let chunk = TABLE_V4.get(chunk)?;
        entry = *chunk.get(((a >> shift) & 0xff) as usize)?;
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
