//! The policy in force, and how a new one replaces it atomically — where a reload
//! happens.
//!
//! Rule keys, port rules and cgroup bindings carry a generation slot (0 or 1); the
//! kernel programs read the active epoch once per packet or call (`RES_ACTIVE`; its low
//! bit is the slot, and every change of it retires the cached verdicts). Applying a
//! policy:
//!
//! 1. checks that it fits beside the one in force (both live in the maps for a moment)
//!    — a policy that would not fit is rejected whole, before anything is written;
//! 2. writes every rule and binding into the idle slot (the program does not look
//!    there, so a half-written policy is never seen; a failure removes what was
//!    written and leaves the policy in force untouched);
//! 3. advances `RES_ACTIVE` by one, flipping the slot — from here on, new packets are judged wholly by the new
//!    version;
//! 4. waits one RCU grace period ([`RcuBarrier`]) for packets still being judged by
//!    the old version; the old slot's entries are deleted afterwards
//!    ([`Generations::retire`]: once the reload's answer is out, or first thing at the
//!    next apply).
//!
//! Steps 1–2 are [`Generations::prepare`] (the tries written in batches, `trie.rs`),
//! 3–4 [`Generations::commit`].
//!
//! Policy ids are stable by name across versions, so counters and events keep their
//! meaning when policies are added, removed or reordered.

mod apply;
mod ids;
mod layout;
mod tables;
mod trie;

use std::time::Duration;

use residency_common::{Binding, BindingKey, GENERATION_SLOTS, InterfaceKey, maps, slot_of};

pub use apply::{binding_of, interface_key};
pub use ids::PolicyIds;
pub use layout::{TableKey, TablesWritten, lay_out, room_needed, without_room};
pub use tables::{ByFamily, TableError, TableMaps};

use std::sync::Arc;

use crate::{
    config::Config,
    kernel::{BpfError, PolicyMaps},
    policy,
    policy::{KeyV4, KeyV6},
    sys::bpf::RcuBarrier,
};

/// What is written in one slot, so that it can be deleted exactly.
#[derive(Default)]
pub(crate) struct Written {
    /// The version this agent wrote: its trie keys are compiled again to delete them
    /// rather than kept (12 bytes a prefix, for the life of the version).
    rules: Option<WrittenRules>,
    /// Trie keys found in the maps (a version an earlier agent wrote).
    found_v4: Vec<KeyV4>,
    found_v6: Vec<KeyV6>,
    bindings: Vec<BindingKey>,
    interfaces: Vec<InterfaceKey>,
    /// Its lookup tables (overwritten in place by the next version of the slot).
    tables: ByFamily<TablesWritten>,
    /// The slot it is in, whose table roots go with it.
    slot: Option<u32>,
}

/// A version's trie entries as this agent wrote them: the first `v4` and `v6` entries
/// [`policy::Compiled`] gives for `config`, `ids` and `slot` (all of them once the
/// version was written whole; fewer when a write failed half way).
pub(crate) struct WrittenRules {
    config: Arc<Config>,
    ids: Vec<u32>,
    slot: u32,
    v4: usize,
    v6: usize,
}

impl Written {
    /// Trie entries per family.
    fn counts(&self) -> (usize, usize) {
        let (v4, v6) = self.rules.as_ref().map_or((0, 0), |r| (r.v4, r.v6));
        (v4 + self.found_v4.len(), v6 + self.found_v6.len())
    }
}

/// The policy version in force.
pub struct Generations {
    maps: PolicyMaps,
    rcu: RcuBarrier,
    /// The value of `RES_ACTIVE`; `slot_of(epoch)` is the slot in force.
    epoch: u32,
    slot: u32,
    written: Written,
    /// The version swapped out last, no longer read by any program (the barrier has
    /// passed) but not yet deleted: deleting a million prefixes takes half a second,
    /// which the answer to a reload need not wait for ([`Generations::retire`]).
    retiring: Option<Written>,
    ids: PolicyIds,
    /// Versions applied by this agent (1 after start).
    pub generation: u64,
}

/// The result of applying a version.
#[derive(Debug, Clone)]
pub struct Applied {
    pub generation: u64,
    pub ids: Vec<u32>,
    /// From the start of the apply to the flip: when the new version was in force.
    pub duration: Duration,
    /// After the flip, waiting out the old version's readers (its deletion follows
    /// later: [`Generations::retire`]).
    pub retired: Duration,
    pub entries: usize,
    /// The version's lookup tables.
    pub tables: ByFamily<TablesWritten>,
    /// Chunks of lookup tables each generation slot has room for.
    pub table_room: ByFamily<u32>,
}

impl Generations {
    /// Takes over the maps. Whatever the active slot holds (a policy pinned by an
    /// earlier agent) keeps enforcing until the first version is committed ([`Generations::apply`],
    /// [`Generations::commit`]); the idle
    /// slot is cleared of leftovers first.
    pub fn new(maps: PolicyMaps) -> Result<Generations, BpfError> {
        let rcu = RcuBarrier::new().map_err(|source| BpfError::Barrier { source })?;
        let epoch = maps.active.get(&0, 0).map_err(|source| BpfError::Map {
            name: maps::ACTIVE,
            source,
        })?;
        let mut g = Generations {
            maps,
            rcu,
            epoch,
            slot: slot_of(epoch),
            written: Written::default(),
            retiring: None,
            ids: PolicyIds::default(),
            generation: 0,
        };
        // Entries of the active slot were written by an earlier agent: find them so
        // that the first apply can delete them after its flip.
        g.written = g.scan(g.slot)?;
        let idle = g.scan(1 - g.slot)?;
        g.delete(&idle);
        Ok(g)
    }

    /// Every entry currently in `slot`.
    fn scan(&self, slot: u32) -> Result<Written, BpfError> {
        let top = |scope: [u8; 4]| u32::from(scope[0]);
        let mut w = Written {
            slot: Some(slot),
            ..Written::default()
        };
        for k in self.maps.rules_v4.keys() {
            let k = k.map_err(|source| BpfError::Map {
                name: maps::RULES_V4,
                source,
            })?;
            if top(k.data().policy) == slot {
                w.found_v4.push(k);
            }
        }
        for k in self.maps.rules_v6.keys() {
            let k = k.map_err(|source| BpfError::Map {
                name: maps::RULES_V6,
                source,
            })?;
            if top(k.data().policy) == slot {
                w.found_v6.push(k);
            }
        }
        for k in self.maps.bindings.keys() {
            let k = k.map_err(|source| BpfError::Map {
                name: maps::BINDINGS,
                source,
            })?;
            if k.slot == slot {
                w.bindings.push(k);
            }
        }
        for k in self.maps.interfaces.keys() {
            let k = k.map_err(|source| BpfError::Map {
                name: maps::INTERFACES,
                source,
            })?;
            if top(k.scope) == slot {
                w.interfaces.push(k);
            }
        }
        Ok(w)
    }

    fn delete(&mut self, w: &Written) {
        // Compiled as when it was written: same config, ids and slot, same entries in
        // the same order. It compiled then, so it compiles now; were it ever not to,
        // the slot is searched instead, since a leftover entry would come back into
        // force with the slot's next version.
        let compiled = match &w.rules {
            Some(r) => match policy::Compiled::new(&r.config, &r.ids, r.slot) {
                Ok(c) => Some((c, r)),
                Err(e) => {
                    tracing::warn!("retiring slot {}: {e}; searching the slot instead", r.slot);
                    if let Ok(found) = self.scan(r.slot) {
                        self.delete(&found);
                    }
                    None
                }
            },
            None => None,
        };
        // Side by side, like the writes (apply.rs).
        let (v4, v6) = (&mut self.maps.rules_v4, &mut self.maps.rules_v6);
        std::thread::scope(|s| {
            s.spawn(|| {
                trie::delete_trie(v6, w.found_v6.iter().copied());
                if let Some((c, r)) = &compiled {
                    trie::delete_trie(v6, c.v6().map(|(k, _)| k).take(r.v6));
                }
            });
            trie::delete_trie(v4, w.found_v4.iter().copied());
            if let Some((c, r)) = &compiled {
                trie::delete_trie(v4, c.v4().map(|(k, _)| k).take(r.v4));
            }
        });
        for k in &w.bindings {
            let _ = self.maps.bindings.remove(k);
        }
        for k in &w.interfaces {
            let _ = self.maps.interfaces.remove(k);
        }
        // An idle slot holds no table roots: a program of an agent that still reads
        // tables (its links not yet replaced by an older agent's, say) must never find
        // roots of a version no longer there.
        if let Some(slot) = w.slot {
            for tables in [&mut self.maps.tables.v4, &mut self.maps.tables.v6] {
                if let Err(e) = tables.clear(slot) {
                    tracing::warn!("clearing the table roots of slot {slot}: {e}");
                }
            }
        }
    }

    /// Whether a swapped-out version still waits to be deleted.
    pub fn retiring(&self) -> bool {
        self.retiring.is_some()
    }

    /// Deletes the version swapped out last, if any: its slot is then empty for the
    /// next version. [`Generations::apply`] does it first itself, so calling this is
    /// only ever early, never required.
    pub fn retire(&mut self) {
        if let Some(old) = self.retiring.take() {
            let started = std::time::Instant::now();
            self.delete(&old);
            tracing::debug!(
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "retired the previous policy version"
            );
        }
    }

    /// The ids [`Generations::apply`] will give `config`'s policies.
    pub fn preview_ids(&self, config: &Config) -> Vec<u32> {
        self.ids.assign(config).1
    }

    /// Binds one more cgroup in the version in force (a configured cgroup that has just
    /// appeared). The binding becomes visible to packets in one map update; the epoch
    /// then advances by two (same slot) so that verdicts cached for the cgroup under
    /// its ancestor's policy are not used again. When the epoch cannot advance, the
    /// binding goes back to what it was, so that the programs' cache and memo (kept
    /// under the epoch in force) never disagree with the map; the caller retries.
    pub fn bind(&mut self, cgroup_id: u64, binding: Binding) -> Result<(), BpfError> {
        let key = BindingKey {
            cgroup_id,
            slot: self.slot,
            _pad: 0,
        };
        let previous = self.maps.bindings.get(&key, 0).ok();
        self.maps
            .bindings
            .insert(key, binding, 0)
            .map_err(|source| BpfError::MapFull {
                name: maps::BINDINGS,
                entry: format!("cgroup id {cgroup_id}"),
                source,
            })?;
        let epoch = self.epoch.wrapping_add(GENERATION_SLOTS);
        if let Err(e) = self.set_epoch(epoch) {
            let _ = match previous {
                Some(b) => self.maps.bindings.insert(key, b, 0),
                None => self.maps.bindings.remove(&key),
            };
            return Err(e);
        }
        self.epoch = epoch;
        // A binding changed in place (a relabelled pod) is listed once.
        if !self.written.bindings.contains(&key) {
            self.written.bindings.push(key);
        }
        Ok(())
    }

    /// Chunks of lookup tables each generation slot has room for, per family.
    fn table_room(&self) -> ByFamily<u32> {
        ByFamily {
            v4: self.maps.tables.v4.per_slot(),
            v6: self.maps.tables.v6.per_slot(),
        }
    }

    /// Makes `epoch` the one packets are judged by (`RES_ACTIVE`), its lookup tables
    /// the slot's: `RES_TABLE_EPOCH` is written first, so that no program reads them
    /// under an epoch they were not written for. Either write failing fails the change
    /// (the epoch in force stays, its tables read again once `RES_TABLE_EPOCH` is
    /// written back, which is logged when it fails): between the two writes the epochs
    /// differ and the tries judge alone, as exactly.
    fn set_epoch(&mut self, epoch: u32) -> Result<(), BpfError> {
        self.maps
            .table_epoch
            .set(0, epoch, 0)
            .map_err(|source| BpfError::Map {
                name: maps::TABLE_EPOCH,
                source,
            })?;
        if let Err(source) = self.maps.active.set(0, epoch, 0) {
            if let Err(e) = self.maps.table_epoch.set(0, self.epoch, 0) {
                tracing::warn!(
                    "writing {} back failed ({e}): the lookup tables go unread until the \
                     next change, the tries judge alone",
                    maps::TABLE_EPOCH
                );
            }
            return Err(BpfError::Map {
                name: maps::ACTIVE,
                source,
            });
        }
        Ok(())
    }

    /// Removes the binding of a cgroup that no longer exists.
    pub fn unbind(&mut self, cgroup_id: u64) {
        let key = BindingKey {
            cgroup_id,
            slot: self.slot,
            _pad: 0,
        };
        let _ = self.maps.bindings.remove(&key);
        self.written.bindings.retain(|k| *k != key);
        // Sockets can outlive their cgroup: their cached verdicts and the bindings the
        // programs remember must end with the binding (same slot, new epoch).
        let epoch = self.epoch.wrapping_add(GENERATION_SLOTS);
        match self.set_epoch(epoch) {
            Ok(()) => self.epoch = epoch,
            Err(e) => tracing::warn!(
                cgroup_id,
                "unbound a removed cgroup but could not advance the policy epoch ({e}): \
                 what the programs remember of its binding stays until the next change"
            ),
        }
    }
}
