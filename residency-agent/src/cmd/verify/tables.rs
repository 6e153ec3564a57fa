//! The lookup tables of the version in force against the config's (IPv4, then IPv6):
//! the agent lays a version's tables out deterministically (policy after policy, each
//! in address order: `generations::lay_out`), so laying the config's entries out again
//! in memory gives the kernel's chunks exactly, and every root of the slot. A
//! difference names the policy whose tables it is in. And the tables are read at all
//! only while `RES_TABLE_EPOCH` is the epoch in force ([`compare_epoch`]).

use std::collections::BTreeMap;

use aya::maps::{Array, Map, MapData};
use residency_common::{MAX_POLICIES, TABLE_CHUNK_LEN, TableChunk, maps};

use super::Report;
use crate::generations::{TableKey, lay_out};

/// Whether the programs read the tables of the version in force: they do only while
/// `RES_TABLE_EPOCH` holds its epoch (`active`, as read from `RES_ACTIVE`), which an
/// agent without lookup tables does not write when it changes the version. The tries
/// then judge alone: exactly, but a first packet costs two to three times as much,
/// which is a note, not a difference from the config. (A reload racing the check is
/// caught by `verify`'s final re-read of `RES_ACTIVE`.)
pub fn compare_epoch(
    open: &dyn Fn(&str) -> anyhow::Result<MapData>,
    active: u32,
    report: &mut Report,
) -> anyhow::Result<()> {
    let epochs: Array<MapData, u32> = match open(maps::TABLE_EPOCH) {
        Ok(map) => Array::try_from(Map::from_map_data(map)?)?,
        Err(e) => {
            report.unchecked.push(format!(
                "whether the lookup tables are read: {e:#} (pinned by agents since they have them)"
            ));
            return Ok(());
        }
    };
    let tables = epochs.get(&0, 0)?;
    if tables != active {
        report.notes.push(format!(
            "lookup tables: not read by the programs: RES_TABLE_EPOCH holds {tables}, the \
             version in force is epoch {active} (an agent without lookup tables changed the \
             version, or a failed write left it so, which the agent logs; the tries judge \
             alone, exactly but slower, until an agent with lookup tables applies a version \
             or binds a cgroup)"
        ));
    }
    Ok(())
}

/// One family's pinned tables (`names`: the chunks' map and the roots') against
/// `entries`, the config's trie entries of that family, in generation slot `slot`
/// (`name_of` names a policy by id); maps that are not pinned are reported unchecked.
pub fn compare_pinned<K: TableKey, I: Iterator<Item = (K, residency_common::RuleValue)>>(
    open: &dyn Fn(&str) -> anyhow::Result<MapData>,
    (chunks, roots): (&str, &str),
    entries: impl Fn() -> I,
    (slot, name_of): (u32, &dyn Fn(u32) -> String),
    report: &mut Report,
) -> anyhow::Result<()> {
    match (open(chunks), open(roots)) {
        (Ok(chunks), Ok(roots)) => compare(
            &Array::try_from(Map::from_map_data(chunks)?)?,
            &Array::try_from(Map::from_map_data(roots)?)?,
            entries,
            slot,
            name_of,
            report,
        ),
        (Err(e), _) | (_, Err(e)) => {
            report.unchecked.push(format!(
                "{} lookup tables: {e:#} (pinned by agents since they have them)",
                K::FAMILY
            ));
            Ok(())
        }
    }
}

/// One family's tables against `entries`, the config's trie entries of that family.
fn compare<K: TableKey, I: Iterator<Item = (K, residency_common::RuleValue)>>(
    chunks: &Array<MapData, TableChunk>,
    roots: &Array<MapData, u32>,
    entries: impl Fn() -> I,
    slot: u32,
    name_of: &dyn Fn(u32) -> String,
    report: &mut Report,
) -> anyhow::Result<()> {
    let per_slot = chunks.len() / residency_common::GENERATION_SLOTS;
    let base = slot * per_slot;
    // Compared as they are laid out, so that only the differences are kept.
    let mut differing: Vec<(u32, usize, u32, u32)> = Vec::new();
    let (want, written) = lay_out(entries, per_slot, base, |i, config: &TableChunk| {
        let kernel = chunks.get(&i, 0)?;
        if let Some(at) = (0..TABLE_CHUNK_LEN).find(|&e| kernel[e] != config[e]) {
            differing.push((i, at, kernel[at], config[at]));
        }
        anyhow::Ok(())
    })?;
    let mut have = BTreeMap::new();
    for id in 0..MAX_POLICIES {
        let root = roots.get(&(slot * MAX_POLICIES + id), 0)?;
        if root != 0 {
            have.insert(id, root);
        }
    }
    // Policies the kernel has no root for: their chunks are not read.
    let mut unread = Vec::new();
    for id in want
        .keys()
        .chain(have.keys())
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (w, h) = (want.get(&id).copied(), have.get(&id).copied());
        if w.is_some() && h.is_none() {
            // No root: the policy's trie judges its first packets alone, exactly. Not
            // a difference in any verdict, so a note: an adopting agent clears the
            // roots it cannot trust until its own first version is in force (a start
            // that failed leaves them so), and a failed write clears them too.
            unread.push(id);
            report.notes.push(format!(
                "policy \"{}\": {} lookup tables: not in the kernel (the config's start at \
                 chunk {}); its trie judges alone, exactly but slower (an agent that \
                 adopted the maps and has not applied a version since, or a failed write, \
                 which the agent logs)",
                name_of(id),
                K::FAMILY,
                w.map_or(0, |r| r - 1)
            ));
        } else if w != h {
            let show = |r: Option<u32>| r.map_or("none".to_owned(), |r| format!("chunk {}", r - 1));
            report.mismatches.push(format!(
                "policy \"{}\": {} lookup tables: the kernel's start at {}, the config's at {}",
                name_of(id),
                K::FAMILY,
                show(h),
                show(w)
            ));
        }
    }
    // Each policy's chunks run from its root to the next policy's.
    let mut starts: Vec<(u32, u32)> = want.iter().map(|(id, r)| (r - 1, *id)).collect();
    starts.sort_unstable();
    for (i, &(start, id)) in starts.iter().enumerate() {
        if unread.contains(&id) {
            continue;
        }
        let end = starts.get(i + 1).map_or(base + written.chunks, |(s, _)| *s);
        let mine: Vec<_> = differing
            .iter()
            .filter(|(c, ..)| (start..end).contains(c))
            .collect();
        if let Some((c, at, k, w)) = mine.first() {
            report.mismatches.push(format!(
                "policy \"{}\": {} lookup tables: {} of {} chunks differ from the \
                 config's (first: chunk {c}, entry {at}: kernel {k:#010x}, config {w:#010x})",
                name_of(id),
                K::FAMILY,
                mine.len(),
                end - start,
            ));
        }
    }
    report.table_chunks += written.chunks as usize;
    Ok(())
}
