//! Laying a version's lookup tables out (`residency_common::table`): per policy, its
//! trie entries of one family again as leaf-pushed tables of 8 bits a level, chunk by
//! chunk, for `tables.rs` to write into the kernel's array and for `verify` to compare
//! with it.
//!
//! The tables are laid out as the entries come, in address order ([`lay_out`]): a
//! prefix comes before the prefixes it contains, so it is painted first and they
//! overwrite their part of it, and once the entries have moved past a block of a level
//! (an IPv4 /8, /16 or /24) its chunk is complete and is handed on at once. At most one
//! chunk per level is open, so a version's tables take a few KiB of the agent's memory
//! whatever their size, and a country's 16,000 chunks are 16,000 map updates (tens of
//! ms). IPv6 tables stop at 64 bits: a longer prefix makes its /64 "ask the trie".

use std::collections::BTreeMap;

use residency_common::{
    ACTION_ALLOW, ACTION_NONE, POLICY_KEY_BITS, RULE_NONE, RuleValue, TABLE_ASK_TRIE, TABLE_CHUNK,
    TABLE_CHUNK_LEN, TABLE_LEVELS_V4, TABLE_LEVELS_V6, TableChunk, TableEntry,
};

use crate::policy::{KeyV4, KeyV6};

/// A trie key the tables are laid out from: IPv4 or IPv6.
pub trait TableKey {
    /// Levels of 8 bits the tables go down.
    const LEVELS: usize;
    /// Bits of an address.
    const BITS: u32;
    /// "IPv4" or "IPv6", for messages.
    const FAMILY: &'static str;
    /// Policy id, address (its first bit the u128's highest) and prefix length.
    fn parts(&self) -> (u32, u128, u8);
}

/// The prefix length of a trie key, beyond its policy bits. A length beyond the
/// family's (never compiled) is refused by `needs`.
fn len_of(prefix_len: u32) -> u8 {
    prefix_len
        .saturating_sub(POLICY_KEY_BITS)
        .min(u32::from(u8::MAX)) as u8
}

impl TableKey for KeyV4 {
    const LEVELS: usize = TABLE_LEVELS_V4;
    const BITS: u32 = 32;
    const FAMILY: &'static str = "IPv4";
    fn parts(&self) -> (u32, u128, u8) {
        let data = self.data();
        (
            u32::from_be_bytes(data.policy) & 0x00ff_ffff,
            u128::from(u32::from_be_bytes(data.addr)) << 96,
            len_of(self.prefix_len()),
        )
    }
}

impl TableKey for KeyV6 {
    const LEVELS: usize = TABLE_LEVELS_V6;
    const BITS: u32 = 128;
    const FAMILY: &'static str = "IPv6";
    fn parts(&self) -> (u32, u128, u8) {
        let data = self.data();
        (
            u32::from_be_bytes(data.policy) & 0x00ff_ffff,
            u128::from_be_bytes(data.addr),
            len_of(self.prefix_len()),
        )
    }
}

/// The deepest level of any family's tables.
const MAX_LEVELS: usize = TABLE_LEVELS_V6;

/// The block of `addr` a chunk of level `level` covers: its first `8 * level` bits.
fn block(addr: u128, level: usize) -> u128 {
    addr.checked_shr(128 - 8 * level as u32).unwrap_or(0)
}

/// What one version's tables hold.
#[derive(Debug, Default, Clone)]
pub struct TablesWritten {
    /// Chunks written (1 KiB each).
    pub chunks: u32,
    /// Policy ids with tables (their roots written), in order.
    pub policies: Vec<u32>,
    /// Policy ids left to the trie, with the chunks their tables would have needed.
    pub skipped: Vec<(u32, u32)>,
}

/// Lays out the tables of the entries `entries` gives (each policy's together, in
/// address order, as [`crate::policy::RuleSet::v4`] and `v6` give them) in the chunks
/// `base..base + per_slot`, policy after policy, and hands each chunk to `put` once it
/// is complete. A policy whose tables would not fit in what is left gets none
/// (counted first, in a pass of its own). Returns the policies' roots (id -> first
/// chunk + 1) and what was written. The agent puts the chunks into the map; `verify`
/// keeps them, to compare.
pub fn lay_out<K: TableKey, I: Iterator<Item = (K, RuleValue)>, E>(
    entries: impl Fn() -> I,
    per_slot: u32,
    base: u32,
    mut put: impl FnMut(u32, &TableChunk) -> Result<(), E>,
) -> Result<(BTreeMap<u32, u32>, TablesWritten), E> {
    let mut written = TablesWritten::default();
    // Which policies fit, in order.
    let mut fits = BTreeMap::new();
    let mut used = 0;
    for (id, need) in needs(entries()) {
        if need > per_slot - used {
            written.skipped.push((id, need));
        } else {
            used += need;
            fits.insert(id, need);
        }
    }
    let mut roots = BTreeMap::new();
    let mut builder: Option<(u32, Builder)> = None;
    let mut next = base;
    for (key, value) in entries() {
        let (id, addr, len) = key.parts();
        if !fits.contains_key(&id) {
            continue;
        }
        if builder.as_ref().is_some_and(|(b, _)| *b != id) {
            let (done, b) = builder.take().expect("checked");
            next = finish(done, b, &mut roots, &mut put)?;
        }
        let (_, b) = builder.get_or_insert_with(|| (id, Builder::new(next, K::LEVELS)));
        b.add(addr, len, leaf_of(&value), &mut put)?;
    }
    if let Some((done, b)) = builder {
        next = finish(done, b, &mut roots, &mut put)?;
    }
    written.chunks = next - base;
    written.policies = roots.keys().copied().collect();
    Ok((roots, written))
}

/// Closes a policy's builder: its root recorded, the next free chunk returned.
fn finish<E>(
    id: u32,
    b: Builder,
    roots: &mut BTreeMap<u32, u32>,
    put: &mut impl FnMut(u32, &TableChunk) -> Result<(), E>,
) -> Result<u32, E> {
    let root = b.root();
    let next = b.close(put)?;
    roots.insert(id, root + 1);
    Ok(next)
}

/// The chunks each policy's tables take, in the order the policies come: its root, and
/// one per distinct block of each level below it holding a longer prefix (an IPv4 /8,
/// /16 or /24; counted as the entries come in address order, so each block's prefixes
/// are together).
///
/// The layout relies on that order and on prefixes without host bits; a policy whose
/// entries break either (which `compile` never gives) is reported as needing
/// [`u32::MAX`] chunks, so it gets no tables.
fn needs<K: TableKey>(entries: impl Iterator<Item = (K, RuleValue)>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut last: [Option<u128>; MAX_LEVELS] = [None; MAX_LEVELS];
    let mut previous: Option<(u128, u8)> = None;
    for (key, _) in entries {
        let (id, addr, len) = key.parts();
        if out.last().is_none_or(|(i, _)| *i != id) {
            out.push((id, 1));
            last = [None; MAX_LEVELS];
            previous = None;
        }
        let need = &mut out.last_mut().expect("pushed").1;
        // Masked to its length (no host bits), and after the entry before it.
        let masked = u32::from(len) <= K::BITS
            && addr & u128::MAX.checked_shr(u32::from(len)).unwrap_or(0) == 0;
        let ordered = masked && previous.is_none_or(|p| p < (addr, len));
        previous = Some((addr, len));
        if !ordered || *need == u32::MAX {
            *need = u32::MAX;
            continue;
        }
        for (level, seen) in last.iter_mut().enumerate().take(K::LEVELS).skip(1) {
            if u32::from(len) > 8 * level as u32 {
                let b = block(addr, level);
                if *seen != Some(b) {
                    *seen = Some(b);
                    *need += 1;
                }
            }
        }
    }
    out
}

/// The chunks every policy's tables need together (saturating): the room per slot
/// that fits them all, for `check` to suggest.
pub fn room_needed<K: TableKey>(entries: impl Iterator<Item = (K, RuleValue)>) -> u32 {
    needs(entries)
        .iter()
        .fold(0u32, |sum, (_, need)| sum.saturating_add(*need))
}

/// The policies (by id) whose tables would not fit in `per_slot` chunks, with the
/// chunks each needs, as [`lay_out`] would skip them: for `check`.
pub fn without_room<K: TableKey>(
    entries: impl Iterator<Item = (K, RuleValue)>,
    per_slot: u32,
) -> Vec<(u32, u32)> {
    let mut used = 0;
    needs(entries)
        .into_iter()
        .filter(|&(_, need)| {
            let fits = need <= per_slot - used;
            if fits {
                used += need;
            }
            !fits
        })
        .collect()
}

/// One policy's tables, built from its prefixes in address order with one chunk open
/// per level: `open[k]` covers the block of the address's first `8 * k` bits.
struct Builder {
    open: [Option<(u32, u128, TableChunk)>; MAX_LEVELS],
    levels: usize,
    next: u32,
}

impl Builder {
    /// A builder of `levels` levels whose chunks are numbered from `first` on (its
    /// root first).
    fn new(first: u32, levels: usize) -> Builder {
        let mut open = [None; MAX_LEVELS];
        open[0] = Some((first, 0, [0; TABLE_CHUNK_LEN]));
        Builder {
            open,
            levels,
            next: first + 1,
        }
    }

    fn root(&self) -> u32 {
        self.open[0]
            .as_ref()
            .expect("the root is open until closed")
            .0
    }

    fn add<E>(
        &mut self,
        addr: u128,
        len: u8,
        leaf: u32,
        put: &mut impl FnMut(u32, &TableChunk) -> Result<(), E>,
    ) -> Result<(), E> {
        // Blocks the entries have moved past are complete: deepest first.
        for level in (1..self.levels).rev() {
            if let Some((index, b, chunk)) = &self.open[level]
                && *b != block(addr, level)
            {
                put(*index, chunk)?;
                self.open[level] = None;
            }
        }
        let len = u32::from(len);
        for level in 0..self.levels {
            let end = 8 * (level as u32 + 1);
            let at = (block(addr, level + 1) & 0xff) as usize;
            let (_, _, chunk) = self.open[level].as_mut().expect("open on the way down");
            if len <= end {
                // A range no chunk hangs in yet: only a longer prefix, later, makes one.
                chunk[at..at + (1usize << (end - len))].fill(leaf);
                return Ok(());
            }
            if level + 1 == self.levels {
                // Longer than the tables go (an IPv6 prefix beyond /64): its block
                // asks the trie, which holds it and what it is inside of.
                chunk[at] = TABLE_ASK_TRIE;
                return Ok(());
            }
            let entry = chunk[at];
            if let TableEntry::Chunk(_) = TableEntry::from_raw(entry) {
                // The open chunk of the next level is this entry's (address order).
                continue;
            }
            let index = self.next;
            self.next += 1;
            chunk[at] = TABLE_CHUNK | index;
            // Leaf pushing: the new chunk starts as the leaf it replaces.
            self.open[level + 1] = Some((index, block(addr, level + 1), [entry; TABLE_CHUNK_LEN]));
        }
        unreachable!("the last level ends every prefix")
    }

    /// Puts every chunk still open, deepest first; returns the next free chunk.
    fn close<E>(
        mut self,
        put: &mut impl FnMut(u32, &TableChunk) -> Result<(), E>,
    ) -> Result<u32, E> {
        for level in (0..self.levels).rev() {
            if let Some((index, _, chunk)) = self.open[level].take() {
                put(index, &chunk)?;
            }
        }
        Ok(self.next)
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

#[cfg(test)]
mod tests {
    use super::*;
    use residency_common::{RuleKeyV4, RuleKeyV6};

    /// The tables' answer for `a` (its first bit the highest), as the kernel walks them.
    fn walk(chunks: &BTreeMap<u32, TableChunk>, root: u32, a: u128, levels: usize) -> u32 {
        let mut entry = TABLE_CHUNK | root;
        for level in 0..levels {
            let TableEntry::Chunk(c) = TableEntry::from_raw(entry) else {
                break;
            };
            entry = chunks[&c][(block(a, level + 1) & 0xff) as usize];
        }
        entry
    }

    /// The longest prefix's leaf, the slow way; "ask the trie" for an address in the
    /// block of the tables' last level of a prefix longer than they go.
    fn longest(prefixes: &[(u128, u8, RuleValue)], a: u128, levels: usize) -> u32 {
        let covers = |p: u128, len: u32| {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            a & mask == p & mask
        };
        let deepest = 8 * levels as u32;
        if prefixes
            .iter()
            .any(|&(p, len, _)| u32::from(len) > deepest && covers(p, deepest))
        {
            return TABLE_ASK_TRIE;
        }
        prefixes
            .iter()
            .filter(|&&(p, len, _)| covers(p, u32::from(len)))
            .max_by_key(|(_, len, _)| *len)
            .map_or(0, |(_, _, v)| leaf_of(v))
    }

    fn key_v4(id: u32, addr: u128, len: u8) -> KeyV4 {
        KeyV4::new(
            POLICY_KEY_BITS + u32::from(len),
            RuleKeyV4 {
                policy: residency_common::scope(1, id),
                addr: ((addr >> 96) as u32).to_be_bytes(),
            },
        )
    }

    fn key_v6(id: u32, addr: u128, len: u8) -> KeyV6 {
        KeyV6::new(
            POLICY_KEY_BITS + u32::from(len),
            RuleKeyV6 {
                policy: residency_common::scope(1, id),
                addr: addr.to_be_bytes(),
            },
        )
    }

    #[test]
    fn ipv4_tables_give_the_longest_prefixs_leaf() {
        // Clustered in four /8s, so that prefixes nest.
        tables_give_the_longest_prefixs_leaf(key_v4, 32, 0xff << 120, 0x03 << 120);
    }

    #[test]
    fn ipv6_tables_give_the_longest_prefixs_leaf() {
        // Prefixes down to /128, beyond the tables' 64 bits, in 64 /64s (so that
        // those deeper than the tables nest in theirs), spread over levels 1, 5 and 8.
        tables_give_the_longest_prefixs_leaf(
            key_v6,
            128,
            u128::MAX << 64,
            0x3 << 126 | 0x3 << 100 | 0x3 << 64,
        );
    }

    /// Random prefixes of two policies, the `fixed` bits of their addresses 0 but for
    /// those of `few`, laid out, then every answer checked against the slow way.
    fn tables_give_the_longest_prefixs_leaf<K: TableKey + Copy>(
        key: fn(u32, u128, u8) -> K,
        bits: u32,
        fixed: u128,
        few: u128,
    ) {
        let mut next = crate::testing::xorshift();
        let width = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
        let address = |next: &mut dyn FnMut() -> u64| {
            let random = (u128::from(next()) << 64 | u128::from(next())) & width;
            let spread = (u128::from(next()) << 64 | u128::from(next())) & few;
            (random & !fixed) | spread
        };
        for round in 0..20 {
            let mut policies: Vec<Vec<(u128, u8, RuleValue)>> = Vec::new();
            for _ in 0..2 {
                let mut prefixes = Vec::new();
                for i in 0..200 {
                    let len = (next() % u64::from(bits + 1)) as u8;
                    let addr = address(&mut next);
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    let value = RuleValue {
                        action: [ACTION_ALLOW, 2, ACTION_NONE][i % 3],
                        rule: i as u32,
                        ports_start: 0,
                        ports_len: u32::from(i % 7 == 0),
                    };
                    prefixes.push((addr & mask, len, value));
                }
                // One entry per prefix, in address order, as the trie holds them.
                prefixes.sort_by_key(|&(a, l, _)| (a, l));
                prefixes.dedup_by_key(|&mut (a, l, _)| (a, l));
                policies.push(prefixes);
            }
            let entries = || {
                policies.iter().enumerate().flat_map(|(id, p)| {
                    p.iter()
                        .map(move |&(a, l, v)| (key(id as u32 + 3, a, l), v))
                })
            };
            let needed: u32 = needs(entries()).iter().map(|(_, n)| n).sum();
            let mut chunks = BTreeMap::new();
            let (roots, written) = lay_out(entries, needed, 100, |i, c| {
                assert!(chunks.insert(i, *c).is_none(), "chunk {i} put twice");
                Ok::<(), ()>(())
            })
            .unwrap();
            assert_eq!(
                written.chunks, needed,
                "round {round}: chunks counted and put"
            );
            assert_eq!(chunks.len() as u32, needed);
            assert_eq!(written.policies.len(), 2);
            for (id, prefixes) in policies.iter().enumerate() {
                let root = roots[&(id as u32 + 3)] - 1;
                for _ in 0..2000 {
                    let a = address(&mut next);
                    assert_eq!(
                        walk(&chunks, root, a, K::LEVELS),
                        longest(prefixes, a, K::LEVELS),
                        "round {round}, {a:#x}"
                    );
                }
                for &(p, len, _) in prefixes {
                    let last = p | (u128::MAX.checked_shr(u32::from(len)).unwrap_or(0) & width);
                    let one = 1u128 << (128 - bits);
                    for a in [p, last, p.wrapping_sub(one), last.wrapping_add(one)] {
                        let a = a & width;
                        assert_eq!(
                            walk(&chunks, root, a, K::LEVELS),
                            longest(prefixes, a, K::LEVELS),
                            "round {round}, {a:#x}"
                        );
                    }
                }
            }
            // One chunk short: the second policy no longer fits, the first still does.
            let (roots, written) =
                lay_out(entries, needed - 1, 0, |_, _| Ok::<(), ()>(())).unwrap();
            assert_eq!(roots.keys().copied().collect::<Vec<_>>(), vec![3]);
            assert_eq!(written.skipped.len(), 1);
            assert_eq!(without_room(entries(), needed - 1), written.skipped);
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
