//! Writing a version's lookup tables (`residency_common::table`): per policy and
//! family, its trie entries again as leaf-pushed tables of 8 bits a level (laid out by
//! `layout.rs`), in the idle slot's half of `RES_TABLE_V4` (or `RES_TABLE_V6`), and its
//! root in `RES_TABLE_ROOTS` (or `RES_TABLE_ROOTS_V6`).
//!
//! The tables only speed the trie up, so a policy whose tables do not fit in what is
//! left of the slot's half gets none (its packets are judged by the trie) and the
//! version is applied all the same. What must never happen is a root left pointing at
//! chunks another version overwrote: every root of the slot is written for each
//! version (0 where there are no tables), and when that fails the apply fails.

use std::collections::BTreeMap;

use aya::maps::{Array, MapData, MapError};
use residency_common::{MAX_POLICIES, RuleValue, TABLE_ROOTS_LEN, TableChunk};

use super::layout::{TableKey, TablesWritten, lay_out};

/// One thing per address family: the lookup tables' maps, room, or what was written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ByFamily<T> {
    pub v4: T,
    pub v6: T,
}

/// The maps of one family's lookup tables.
pub struct TableMaps {
    /// `RES_TABLE_V4` or `_V6`: `per_slot` chunks for slot 0, then as many for slot 1.
    chunks: Array<MapData, TableChunk>,
    roots: Array<MapData, u32>,
    per_slot: u32,
    /// The two maps' names, for errors.
    names: (&'static str, &'static str),
    /// Policy ids that may have a root in each slot (given one by the last version
    /// written there).
    rooted: [Vec<u32>; 2],
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("writing {0} failed: {1}")]
    Chunks(&'static str, MapError),
    #[error("writing {0} failed: {1}")]
    Roots(&'static str, MapError),
}

impl TableMaps {
    /// Takes over the maps and clears every root: tables adopted from an earlier
    /// agent are never trusted (an older agent in between, one without tables, may
    /// have swapped other versions in under them), so until this agent's first
    /// version the trie judges alone.
    pub fn new(
        chunks: Array<MapData, TableChunk>,
        mut roots: Array<MapData, u32>,
        per_slot: u32,
        names: (&'static str, &'static str),
    ) -> Result<TableMaps, MapError> {
        for i in 0..TABLE_ROOTS_LEN {
            roots.set(i, 0, 0)?;
        }
        Ok(TableMaps {
            chunks,
            roots,
            per_slot,
            names,
            rooted: [Vec::new(), Vec::new()],
        })
    }

    /// Chunks per generation slot.
    pub fn per_slot(&self) -> u32 {
        self.per_slot
    }

    /// Writes the tables of a version's trie entries of this family for `slot`
    /// (`entries` gives them afresh each call, each policy's together, in address
    /// order) into the slot's half, then every root of the slot. On an error the slot
    /// is left without tables (its roots cleared) when that can be done;
    /// [`TableError::Roots`] means it could not, and the version must not be applied.
    pub fn write<K: TableKey, I: Iterator<Item = (K, RuleValue)>>(
        &mut self,
        slot: u32,
        entries: impl Fn() -> I,
    ) -> Result<TablesWritten, TableError> {
        if self.per_slot == 0 {
            // Turned off: no policy is left without tables it was meant to have.
            self.write_roots(slot, &BTreeMap::new())?;
            return Ok(TablesWritten::default());
        }
        let (chunks, name) = (&mut self.chunks, self.names.0);
        let laid = lay_out(
            entries,
            self.per_slot,
            slot * self.per_slot,
            |index, chunk| {
                chunks
                    .set(index, chunk, 0)
                    .map_err(|e| TableError::Chunks(name, e))
            },
        );
        match laid {
            Ok((roots, written)) => {
                self.write_roots(slot, &roots)?;
                Ok(written)
            }
            Err(e) => {
                self.write_roots(slot, &BTreeMap::new())?;
                Err(e)
            }
        }
    }

    /// Clears every root of `slot` (its version deleted).
    pub fn clear(&mut self, slot: u32) -> Result<(), TableError> {
        self.write_roots(slot, &BTreeMap::new())
    }

    /// Every root of `slot`: `roots` (id -> first chunk + 1), 0 for the ids the last
    /// version in this slot had and this one has not.
    fn write_roots(&mut self, slot: u32, roots: &BTreeMap<u32, u32>) -> Result<(), TableError> {
        let index = |id: u32| slot * MAX_POLICIES + id;
        let rooted = &mut self.rooted[slot as usize];
        // Until every write below has succeeded, an id of either version may hold a
        // root: a failure part way leaves them all to be cleared next time.
        let stale: Vec<u32> = rooted
            .iter()
            .copied()
            .filter(|id| !roots.contains_key(id))
            .collect();
        for &id in roots.keys() {
            if !rooted.contains(&id) {
                rooted.push(id);
            }
        }
        let name = self.names.1;
        for id in stale {
            self.roots
                .set(index(id), 0, 0)
                .map_err(|e| TableError::Roots(name, e))?;
        }
        for (&id, &root) in roots {
            self.roots
                .set(index(id), root, 0)
                .map_err(|e| TableError::Roots(name, e))?;
        }
        self.rooted[slot as usize] = roots.keys().copied().collect();
        Ok(())
    }
}
