//! The lookup tables: each policy's prefixes of one generation slot, also written as
//! leaf-pushed multibit tables of 8 bits per level in BPF arrays, so that a first
//! packet finds its prefix's verdict in a few array reads instead of an LPM trie walk
//! (BENCHMARKS.md, section 1b: ~5 ns against ~95 ns at 100k IPv4 prefixes). IPv4 takes
//! at most four levels; IPv6 at most eight, its first 64 bits: a prefix longer than
//! /64 (never in a country's set) makes its /64 "ask the trie".
//!
//! The trie stays the policy: every prefix is written there too, and the tables only
//! answer what needs no more than a prefix's default (an entry with port rules says
//! "ask the trie"). A policy whose tables do not fit, or a slot the agent wrote no
//! tables for, has no root, and its packets are judged by the trie alone.
//!
//! [`maps::TABLE_V4`](crate::maps::TABLE_V4) (and `TABLE_V6`) holds chunks of
//! [`TABLE_CHUNK_LEN`] entries, the first half for generation slot 0 and the second
//! for slot 1; [`maps::TABLE_ROOTS`](crate::maps::TABLE_ROOTS) (and `TABLE_ROOTS_V6`)
//! holds, per slot and policy id, the index of the policy's first-level chunk plus one
//! (0: no tables). An entry of a chunk is one `u32` ([`TableEntry`]).

use crate::{MAX_POLICIES, RULE_NONE, RULE_SPECIAL_BASE};

/// Entries per chunk: one level consumes 8 bits of the address.
pub const TABLE_CHUNK_LEN: usize = 256;
/// Default chunks per generation slot and family (`[agent] ipv4_table_chunks`,
/// `ipv6_table_chunks`): 20 MiB a slot, room for a country-sized allowlist (the
/// EU-27's IPv4 set needs about 16,300 chunks, its IPv6 set about 15,800).
pub const DEFAULT_TABLE_CHUNKS: u32 = 20 * 1024;
/// Levels of the IPv4 tables: 32 bits.
pub const TABLE_LEVELS_V4: usize = 4;
/// Levels of the IPv6 tables: the first 64 bits.
pub const TABLE_LEVELS_V6: usize = 8;
/// Entries of [`maps::TABLE_ROOTS`](crate::maps::TABLE_ROOTS).
pub const TABLE_ROOTS_LEN: u32 = crate::GENERATION_SLOTS * MAX_POLICIES;

/// An entry that points at a chunk of the next level (its index below this bit).
pub const TABLE_CHUNK: u32 = 1 << 31;
/// A leaf with a verdict (else a leaf is 0, no prefix covers the address, or another
/// value: ask the trie).
const DECIDED: u32 = 1 << 28;
const ALLOWED: u32 = 1 << 30;
const SPECIAL: u32 = 1 << 29;
/// Rule numbers a decided leaf holds (entries below it; specials as their index).
const RULE_BITS: u32 = DECIDED - 1;
/// A leaf that leaves the verdict to the trie: the prefix has port rules (or a rule
/// number too large for a leaf).
pub const TABLE_ASK_TRIE: u32 = 1;

/// One 256-entry chunk: the value type of [`maps::TABLE_V4`](crate::maps::TABLE_V4)
/// (a whole chunk per array element, so the kernel allocates no padding per entry).
pub type TableChunk = [u32; TABLE_CHUNK_LEN];

/// What a table entry means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableEntry {
    /// The chunk of the next level.
    Chunk(u32),
    /// No prefix covers the address: not allowed, [`RULE_NONE`].
    NoPrefix,
    /// The most specific prefix decides by its default: allowed or not, rule number.
    Decided { allowed: bool, rule: u32 },
    /// The trie decides.
    AskTrie,
}

impl TableEntry {
    #[inline(always)]
    pub const fn from_raw(raw: u32) -> TableEntry {
        if raw & TABLE_CHUNK != 0 {
            return TableEntry::Chunk(raw & !TABLE_CHUNK);
        }
        if raw == 0 {
            return TableEntry::NoPrefix;
        }
        if raw & DECIDED == 0 {
            return TableEntry::AskTrie;
        }
        let index = raw & RULE_BITS;
        TableEntry::Decided {
            allowed: raw & ALLOWED != 0,
            rule: if raw & SPECIAL != 0 {
                RULE_SPECIAL_BASE.wrapping_add(index)
            } else {
                index
            },
        }
    }

    /// The leaf of a prefix whose trie value has no port rules and whose default is
    /// `allowed` with rule number `rule`: decided, or ask the trie when the rule number
    /// does not fit.
    #[inline(always)]
    pub const fn leaf(allowed: bool, rule: u32) -> u32 {
        let allowed_bit = if allowed { ALLOWED } else { 0 };
        if rule == RULE_NONE {
            // A prefix with no default and no port rules: not allowed, as no prefix.
            return if allowed { TABLE_ASK_TRIE } else { 0 };
        }
        if rule >= RULE_SPECIAL_BASE {
            let k = rule - RULE_SPECIAL_BASE;
            return if k <= RULE_BITS {
                DECIDED | SPECIAL | allowed_bit | k
            } else {
                TABLE_ASK_TRIE
            };
        }
        if rule <= RULE_BITS {
            DECIDED | allowed_bit | rule
        } else {
            TABLE_ASK_TRIE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_decode_to_what_was_encoded() {
        for allowed in [false, true] {
            for rule in [0, 1, 7, RULE_BITS, RULE_SPECIAL_BASE, RULE_SPECIAL_BASE + 9] {
                assert_eq!(
                    TableEntry::from_raw(TableEntry::leaf(allowed, rule)),
                    TableEntry::Decided { allowed, rule },
                    "allowed {allowed}, rule {rule}"
                );
            }
        }
        assert_eq!(
            TableEntry::from_raw(TableEntry::leaf(true, RULE_BITS + 1)),
            TableEntry::AskTrie
        );
        assert_eq!(
            TableEntry::from_raw(TableEntry::leaf(false, RULE_NONE)),
            TableEntry::NoPrefix
        );
        assert_eq!(TableEntry::from_raw(0), TableEntry::NoPrefix);
        assert_eq!(TableEntry::from_raw(TABLE_CHUNK | 5), TableEntry::Chunk(5));
    }
}
