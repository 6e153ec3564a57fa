//! Writing a version's IPv4 lookup tables (`residency_common::table`): per policy,
//! its IPv4 trie entries again as leaf-pushed tables of 8 bits a level, in the idle
//! slot's half of `RES_TABLE_V4`, and its root in `RES_TABLE_ROOTS`.
//!
//! The array is written through a shared memory mapping (`BPF_F_MMAPABLE`): a
//! country's tables are millions of entries, which one system call each would take
//! seconds to write. The mapping lives only while a version is written, so the pages
//! do not stay in the agent's resident set.
//!
//! The tables only speed the trie up, so a policy whose tables do not fit in what is
//! left of the slot's half gets none (its packets are judged by the trie) and the
//! version is applied all the same. What must never happen is a root left pointing at
//! chunks another version overwrote: every root of the slot is written for each
//! version (0 where there are no tables), and when that fails the apply fails.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::{Array, MapData, MapError};
use residency_common::{
    ACTION_ALLOW, ACTION_NONE, MAX_POLICIES, POLICY_KEY_BITS, RULE_NONE, RuleValue, TABLE_ASK_TRIE,
    TABLE_CHUNK, TableChunk, TableEntry,
};

use crate::policy::KeyV4;

/// The maps of the IPv4 lookup tables.
pub struct TableMaps {
    /// `RES_TABLE_V4`: `per_slot` chunks for slot 0, then as many for slot 1.
    chunks: MapData,
    roots: Array<MapData, u32>,
    per_slot: u32,
    /// Policy ids that may have a root in each slot (given one by the last version
    /// written there).
    rooted: [Vec<u32>; 2],
}

/// What one version's tables hold.
#[derive(Debug, Default, Clone)]
pub struct TablesWritten {
    /// Chunks written (1 KiB each).
    pub chunks: u32,
    /// Policies with tables.
    pub policies: usize,
    /// Policy ids left to the trie, with the chunks their tables would have needed.
    pub skipped: Vec<(u32, u32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("mapping RES_TABLE_V4 failed: {0}")]
    Map(std::io::Error),
    #[error("writing RES_TABLE_ROOTS failed: {0}")]
    Roots(MapError),
}

impl TableMaps {
    pub fn new(chunks: MapData, roots: Array<MapData, u32>, per_slot: u32) -> TableMaps {
        TableMaps {
            chunks,
            roots,
            per_slot,
            // Unknown at first (maps adopted from an earlier agent hold its roots): the
            // first version written in each slot clears every other id.
            rooted: [0, 1].map(|_| (0..MAX_POLICIES).collect()),
        }
    }

    /// Chunks per generation slot.
    pub fn per_slot(&self) -> u32 {
        self.per_slot
    }

    /// Writes the tables of `entries` (a version's IPv4 trie entries for `slot`, each
    /// policy's together) into the slot's half, then every root of the slot. On an
    /// error the slot is left without tables (its roots cleared) when that can be
    /// done; [`TableError::Roots`] means it could not, and the version must not be
    /// applied.
    pub fn write(
        &mut self,
        slot: u32,
        entries: impl Iterator<Item = (KeyV4, RuleValue)>,
    ) -> Result<TablesWritten, TableError> {
        let mut written = TablesWritten::default();
        let mut roots: BTreeMap<u32, u32> = BTreeMap::new();
        if self.per_slot > 0 {
            let result = self.paint_all(slot, entries, &mut roots, &mut written);
            if let Err(e) = result {
                roots.clear();
                self.write_roots(slot, &roots)?;
                return Err(e);
            }
        }
        self.write_roots(slot, &roots)?;
        Ok(written)
    }

    fn paint_all(
        &mut self,
        slot: u32,
        entries: impl Iterator<Item = (KeyV4, RuleValue)>,
        roots: &mut BTreeMap<u32, u32>,
        written: &mut TablesWritten,
    ) -> Result<(), TableError> {
        let mut mapping = Mapping::new(&self.chunks, 2 * self.per_slot as usize)?;
        let half = mapping.half(slot, self.per_slot as usize);
        (*roots, *written) = lay_out(entries, self.per_slot, slot * self.per_slot, half);
        Ok(())
    }

    /// Every root of `slot`: `roots` (id -> first chunk + 1), 0 for the ids the last
    /// version in this slot had and this one has not.
    fn write_roots(&mut self, slot: u32, roots: &BTreeMap<u32, u32>) -> Result<(), TableError> {
        let index = |id: u32| slot * MAX_POLICIES + id;
        let stale: Vec<u32> = self.rooted[slot as usize]
            .iter()
            .copied()
            .filter(|id| !roots.contains_key(id))
            .collect();
        for id in stale {
            self.roots.set(index(id), 0, 0).map_err(TableError::Roots)?;
        }
        self.rooted[slot as usize].clear();
        for (&id, &root) in roots {
            // Recorded first: a failure part way still clears it next time.
            self.rooted[slot as usize].push(id);
            self.roots
                .set(index(id), root, 0)
                .map_err(TableError::Roots)?;
        }
        Ok(())
    }
}

/// Lays out the tables of `entries` (each policy's together) in `half`, the chunks
/// `base..base + per_slot` of the array, policy after policy in their order, skipping
/// a policy whose tables would not fit in what is left: the policies' roots (id ->
/// first chunk + 1) and what was written. The agent lays a version out in the
/// mapped array; `verify` the config in memory, to compare chunk by chunk.
pub fn lay_out(
    entries: impl Iterator<Item = (KeyV4, RuleValue)>,
    per_slot: u32,
    base: u32,
    half: &mut [TableChunk],
) -> (BTreeMap<u32, u32>, TablesWritten) {
    let mut roots = BTreeMap::new();
    let mut written = TablesWritten::default();
    let mut used = 0u32;
    by_policy(entries, |id, policy| {
        let need = chunks_needed(policy);
        if used + need > per_slot {
            written.skipped.push((id, need));
        } else {
            let root = paint(half, base, &mut used, policy);
            roots.insert(id, root + 1);
            written.policies += 1;
        }
    });
    written.chunks = used;
    (roots, written)
}

/// The policies (by id) whose tables would not fit in `per_slot` chunks, with the
/// chunks each needs, as [`TableMaps::write`] would skip them: for `check`.
pub fn without_room(
    entries: impl Iterator<Item = (KeyV4, RuleValue)>,
    per_slot: u32,
) -> Vec<(u32, u32)> {
    let mut used = 0;
    let mut out = Vec::new();
    by_policy(entries, |id, policy| {
        let need = chunks_needed(policy);
        if used + need > per_slot {
            out.push((id, need));
        } else {
            used += need;
        }
    });
    out
}

/// Calls `each` with every policy's id and IPv4 entries as (address, length, leaf);
/// `entries` holds each policy's together, as [`crate::policy::Compiled::v4`] gives them.
fn by_policy(
    entries: impl Iterator<Item = (KeyV4, RuleValue)>,
    mut each: impl FnMut(u32, &mut Vec<(u32, u8, u32)>),
) {
    let mut policy: Vec<(u32, u8, u32)> = Vec::new();
    let mut current: Option<u32> = None;
    for (key, value) in entries {
        let data = key.data();
        let id = u32::from_be_bytes(data.policy) & 0x00ff_ffff;
        if let Some(c) = current
            && c != id
        {
            each(c, &mut policy);
            policy.clear();
        }
        current = Some(id);
        let len = (key.prefix_len() - POLICY_KEY_BITS) as u8;
        policy.push((u32::from_be_bytes(data.addr), len, leaf_of(&value)));
    }
    if let Some(id) = current {
        each(id, &mut policy);
    }
}

/// The table leaf of a trie entry: its default when it has no port rules (the trie's
/// `decide` then returns just that), else "ask the trie".
fn leaf_of(v: &RuleValue) -> u32 {
    if v.ports_len > 0 {
        return TABLE_ASK_TRIE;
    }
    let rule = if v.action == ACTION_NONE {
        RULE_NONE
    } else {
        v.rule
    };
    TableEntry::leaf(v.action == ACTION_ALLOW, rule)
}

/// Chunks one policy's tables take: its root, and one per distinct /8, /16 and /24
/// holding a longer prefix.
fn chunks_needed(policy: &[(u32, u8, u32)]) -> u32 {
    let mut total = 1;
    for (level_bits, shift) in [(8u8, 24u32), (16, 16), (24, 8)] {
        let mut under: Vec<u32> = policy
            .iter()
            .filter(|(_, len, _)| *len > level_bits)
            .map(|(addr, _, _)| addr >> shift)
            .collect();
        under.sort_unstable();
        under.dedup();
        total += under.len() as u32;
    }
    total
}

/// Paints one policy's prefixes into `half` (chunk `i` of it is chunk `base + i` of
/// the array) from chunk `*used` on; returns its root's index in the array.
fn paint(half: &mut [TableChunk], base: u32, used: &mut u32, policy: &mut [(u32, u8, u32)]) -> u32 {
    let mut alloc = |half: &mut [TableChunk], fill: u32| {
        let i = *used;
        *used += 1;
        half[i as usize].fill(fill);
        base + i
    };
    let root = alloc(half, 0);
    // Shortest first: a longer prefix then overwrites the part of a shorter one it
    // covers, and a chunk made under a leaf starts as copies of it (leaf pushing). A
    // range filled at one level never holds a chunk yet: only longer prefixes make them.
    policy.sort_by_key(|&(_, len, _)| len);
    for &(addr, len, leaf) in policy.iter() {
        let mut chunk = root;
        for level in 0u32..4 {
            let end = 8 * (level + 1);
            let at = ((addr >> (24 - 8 * level)) & 0xff) as usize;
            if u32::from(len) <= end {
                let span = 1usize << (end - u32::from(len));
                half[(chunk - base) as usize][at..at + span].fill(leaf);
                break;
            }
            let entry = half[(chunk - base) as usize][at];
            chunk = match TableEntry::from_raw(entry) {
                TableEntry::Chunk(next) => next,
                _ => {
                    let next = alloc(half, entry);
                    half[(chunk - base) as usize][at] = TABLE_CHUNK | next;
                    next
                }
            };
        }
    }
    root
}

/// `RES_TABLE_V4` mapped into the agent, unmapped on drop.
struct Mapping {
    ptr: NonNull<TableChunk>,
    chunks: usize,
}

impl Mapping {
    fn new(map: &MapData, chunks: usize) -> Result<Mapping, TableError> {
        let len = chunks * size_of::<TableChunk>();
        // SAFETY: a fresh shared mapping of the map's file descriptor, `len` bytes:
        // the array's values, which the kernel lays out back to back (1 KiB each).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(TableError::Map(std::io::Error::last_os_error()));
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| {
                TableError::Map(std::io::Error::other("mmap returned a null pointer"))
            })?,
            chunks,
        })
    }

    /// The chunks of generation slot `slot`.
    fn half(&mut self, slot: u32, per_slot: usize) -> &mut [TableChunk] {
        // SAFETY: the mapping holds `chunks` = 2 * per_slot chunks; programs read only
        // the other slot's half while this one is written (the slot is idle).
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(slot as usize * per_slot),
                per_slot.min(self.chunks),
            )
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that length.
        unsafe {
            libc::munmap(
                self.ptr.as_ptr().cast(),
                self.chunks * size_of::<TableChunk>(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use residency_common::TABLE_CHUNK_LEN;

    /// The tables' answer for `a`, as the kernel walks them.
    fn walk(chunks: &[TableChunk], root: u32, a: u32) -> u32 {
        let mut entry = TABLE_CHUNK | root;
        for shift in [24, 16, 8, 0] {
            let TableEntry::Chunk(c) = TableEntry::from_raw(entry) else {
                break;
            };
            entry = chunks[c as usize][((a >> shift) & 0xff) as usize];
        }
        entry
    }

    /// The longest prefix's leaf, the slow way.
    fn longest(prefixes: &[(u32, u8, u32)], a: u32) -> u32 {
        prefixes
            .iter()
            .filter(|(p, len, _)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                a & mask == *p
            })
            .max_by_key(|(_, len, _)| *len)
            .map_or(0, |(_, _, leaf)| *leaf)
    }

    #[test]
    fn tables_give_the_longest_prefixs_leaf() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20 {
            let mut prefixes: Vec<(u32, u8, u32)> = Vec::new();
            for i in 0..200 {
                let len = (next() % 33) as u8;
                // Clustered, so prefixes nest: a few /8s only.
                let addr = ((next() % 4) as u32) << 24 | (next() as u32 & 0x00ff_ffff);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                let leaf = TableEntry::leaf(i % 3 != 0, i);
                prefixes.push((addr & mask, len, leaf));
            }
            // One entry per prefix, as the trie holds them.
            prefixes.sort_by_key(|&(a, l, _)| (a, l));
            prefixes.dedup_by_key(|&mut (a, l, _)| (a, l));
            let need = chunks_needed(&prefixes);
            let mut half = vec![[0u32; TABLE_CHUNK_LEN]; need as usize];
            let mut used = 0;
            let mut sorted = prefixes.clone();
            let root = paint(&mut half, 0, &mut used, &mut sorted);
            assert_eq!(used, need, "round {round}: chunks counted and used");
            for _ in 0..2000 {
                let a = ((next() % 5) as u32) << 24 | (next() as u32 & 0x00ff_ffff);
                assert_eq!(
                    walk(&half, root, a),
                    longest(&prefixes, a),
                    "round {round}, {a:#x}"
                );
            }
            for &(p, len, _) in &prefixes {
                let last = p | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                for a in [p, last, p.wrapping_sub(1), last.wrapping_add(1)] {
                    assert_eq!(walk(&half, root, a), longest(&prefixes, a), "round {round}");
                }
            }
        }
    }

    #[test]
    fn a_prefix_with_port_rules_asks_the_trie() {
        let v = |action, ports_len| RuleValue {
            action,
            rule: 3,
            ports_start: 0,
            ports_len,
        };
        assert_eq!(leaf_of(&v(ACTION_ALLOW, 1)), TABLE_ASK_TRIE);
        assert_eq!(
            TableEntry::from_raw(leaf_of(&v(ACTION_ALLOW, 0))),
            TableEntry::Decided {
                allowed: true,
                rule: 3
            }
        );
        assert_eq!(
            TableEntry::from_raw(leaf_of(&v(ACTION_NONE, 0))),
            TableEntry::NoPrefix
        );
    }
}
