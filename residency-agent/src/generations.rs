//! The policy in force, and how a new one replaces it atomically.
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
//!    the old version, then deletes the old slot's entries.
//!
//! Policy ids are stable by name across versions, so counters and events keep their
//! meaning when policies are added, removed or reordered.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, LpmTrie, MapData, MapError};
use residency_common::{
    BINDING_ALLOW_PACKET_SOCKETS, Binding, BindingKey, GENERATION_SLOTS, MAX_BINDINGS,
    MAX_POLICIES, PortRule, RuleKeyV4, RuleKeyV6, RuleValue, maps, slot_of,
};

use crate::{
    bpf::{BoundCgroup, BpfError},
    config::Config,
    policy::{self, KeyV4, KeyV6},
    rcu::RcuBarrier,
};

/// The maps that hold the policy, taken out of the loaded object.
pub struct PolicyMaps {
    pub rules_v4: LpmTrie<MapData, RuleKeyV4, RuleValue>,
    pub rules_v6: LpmTrie<MapData, RuleKeyV6, RuleValue>,
    pub bindings: HashMap<MapData, BindingKey, Binding>,
    pub active: Array<MapData, u32>,
    pub ports: Array<MapData, PortRule>,
    /// Capacity of each rule trie (entries, both slots together).
    pub capacity: u32,
}

/// What is written in one slot, so that it can be deleted exactly.
#[derive(Default)]
struct Written {
    v4: Vec<KeyV4>,
    v6: Vec<KeyV6>,
    bindings: Vec<BindingKey>,
}

/// Policy ids by name, stable across versions.
#[derive(Debug, Clone, Default)]
pub struct PolicyIds(BTreeMap<String, u32>);

impl PolicyIds {
    /// Ids for `config`'s policies, in config order: kept for known names, the lowest
    /// id for new ones that neither this version nor the previous one uses. An id is
    /// never handed straight from a removed policy to a new one: events still in the
    /// ring when the swap happens must not name the newcomer.
    pub fn assign(&self, config: &Config) -> (PolicyIds, Vec<u32>) {
        let mut next = BTreeMap::new();
        let mut ids = Vec::with_capacity(config.policies.len());
        for p in &config.policies {
            if let Some(id) = self.0.get(&p.name) {
                next.insert(p.name.clone(), *id);
            }
        }
        for p in &config.policies {
            let id = match next.get(&p.name) {
                Some(id) => *id,
                None => {
                    let used: std::collections::BTreeSet<u32> =
                        next.values().chain(self.0.values()).copied().collect();
                    let id = (0..MAX_POLICIES)
                        .find(|i| !used.contains(i))
                        .expect("validated count");
                    next.insert(p.name.clone(), id);
                    id
                }
            };
            ids.push(id);
        }
        (PolicyIds(next), ids)
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
    ids: PolicyIds,
    /// Versions applied by this agent (1 after start).
    pub generation: u64,
}

/// The result of applying a version.
#[derive(Debug, Clone)]
pub struct Applied {
    pub generation: u64,
    pub ids: Vec<u32>,
    pub duration: Duration,
    pub entries: usize,
}

impl Generations {
    /// Takes over the maps. Whatever the active slot holds (a policy pinned by an
    /// earlier agent) keeps enforcing until the first [`Generations::apply`]; the idle
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
        let mut w = Written::default();
        for k in self.maps.rules_v4.keys() {
            let k = k.map_err(|source| BpfError::Map {
                name: maps::RULES_V4,
                source,
            })?;
            if top(k.data().policy) == slot {
                w.v4.push(k);
            }
        }
        for k in self.maps.rules_v6.keys() {
            let k = k.map_err(|source| BpfError::Map {
                name: maps::RULES_V6,
                source,
            })?;
            if top(k.data().policy) == slot {
                w.v6.push(k);
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
        Ok(w)
    }

    fn delete(&mut self, w: &Written) {
        // A key that is already gone is fine: deletion is idempotent here.
        for k in &w.v4 {
            let _ = self.maps.rules_v4.remove(k);
        }
        for k in &w.v6 {
            let _ = self.maps.rules_v6.remove(k);
        }
        for k in &w.bindings {
            let _ = self.maps.bindings.remove(k);
        }
    }

    /// The ids [`Generations::apply`] will give `config`'s policies.
    pub fn preview_ids(&self, config: &Config) -> Vec<u32> {
        self.ids.assign(config).1
    }

    /// Binds one more cgroup in the version in force (a configured cgroup that has just
    /// appeared). The binding becomes visible to packets in one map update; the epoch
    /// then advances by two (same slot) so that verdicts cached for the cgroup under
    /// its ancestor's policy are not used again.
    pub fn bind(&mut self, cgroup_id: u64, binding: Binding) -> Result<(), BpfError> {
        let key = BindingKey {
            cgroup_id,
            slot: self.slot,
            _pad: 0,
        };
        self.maps
            .bindings
            .insert(key, binding, 0)
            .map_err(|source| BpfError::MapFull {
                name: maps::BINDINGS,
                entry: format!("cgroup id {cgroup_id}"),
                source,
            })?;
        self.written.bindings.push(key);
        let epoch = self.epoch.wrapping_add(GENERATION_SLOTS);
        self.maps
            .active
            .set(0, epoch, 0)
            .map_err(|source| BpfError::Map {
                name: maps::ACTIVE,
                source,
            })?;
        self.epoch = epoch;
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
        // Sockets can outlive their cgroup: their cached verdicts must end with the
        // binding (same slot, fresh cache).
        let epoch = self.epoch.wrapping_add(GENERATION_SLOTS);
        if self.maps.active.set(0, epoch, 0).is_ok() {
            self.epoch = epoch;
        }
    }

    /// Applies `config` (with its cgroups resolved in `bound`) as the new version.
    pub fn apply(&mut self, config: &Config, bound: &[BoundCgroup]) -> Result<Applied, BpfError> {
        let started = Instant::now();
        let (ids, id_list) = self.ids.assign(config);
        let next_epoch = self.epoch.wrapping_add(1);
        let next = slot_of(next_epoch);
        let rules = policy::compile(config, &id_list, next).map_err(BpfError::Policy)?;

        // Both versions live in the maps until the flip completes.
        let (v4_in_use, v6_in_use) = (self.written.v4.len(), self.written.v6.len());
        for (name, in_use, new) in [
            (maps::RULES_V4, v4_in_use, rules.v4.len()),
            (maps::RULES_V6, v6_in_use, rules.v6.len()),
        ] {
            if in_use + new > self.maps.capacity as usize {
                return Err(BpfError::WouldNotFit {
                    name,
                    needed: in_use + new,
                    capacity: self.maps.capacity,
                });
            }
        }
        if self.written.bindings.len() + bound.len() > (MAX_BINDINGS * GENERATION_SLOTS) as usize {
            return Err(BpfError::WouldNotFit {
                name: maps::BINDINGS,
                needed: self.written.bindings.len() + bound.len(),
                capacity: MAX_BINDINGS * GENERATION_SLOTS,
            });
        }

        let mut w = Written::default();
        let result = self.write(config, bound, &id_list, next, &rules, &mut w);
        if let Err(e) = result {
            self.delete(&w);
            return Err(e);
        }
        if let Err(source) = self.maps.active.set(0, next_epoch, 0) {
            self.delete(&w);
            return Err(BpfError::Map {
                name: maps::ACTIVE,
                source,
            });
        }
        // No packet is judged by the old slot any more once this returns. The flip has
        // happened, so a failed barrier must not abort the bookkeeping below: wait a
        // generous grace period instead (programs run for microseconds).
        if let Err(e) = self.rcu.wait() {
            tracing::warn!(
                "RCU barrier failed ({e}); waiting 100 ms before retiring the old version"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let old = std::mem::replace(&mut self.written, w);
        self.delete(&old);
        self.slot = next;
        self.epoch = next_epoch;
        self.ids = ids;
        self.generation += 1;
        Ok(Applied {
            generation: self.generation,
            ids: id_list,
            duration: started.elapsed(),
            entries: rules.v4.len() + rules.v6.len() - rules.implicit,
        })
    }

    fn write(
        &mut self,
        config: &Config,
        bound: &[BoundCgroup],
        ids: &[u32],
        slot: u32,
        rules: &policy::RuleSet,
        w: &mut Written,
    ) -> Result<(), BpfError> {
        let full = |name, entry: String| {
            move |source: MapError| BpfError::MapFull {
                name,
                entry,
                source,
            }
        };
        // Large policies (a country's GeoIP set, a cloud's ranges) take a while: say how
        // far the write has got, every 100,000 entries.
        let total = rules.v4.len() + rules.v6.len();
        let progress = |done: usize| {
            if total >= 100_000 && done.is_multiple_of(100_000) && done > 0 {
                tracing::info!(
                    done,
                    total,
                    "writing the policy's prefixes into the idle slot"
                );
            }
        };
        // Port rules first: the slot's half of the array is not read by any packet until
        // the trie entries pointing into it exist, and those are not read until the flip.
        let base = policy::ports_base(slot);
        for (i, r) in rules.ports.iter().enumerate() {
            self.maps
                .ports
                .set(base + i as u32, r, 0)
                .map_err(full(maps::PORTS, format!("port rule {i}")))?;
        }
        for (k, v) in &rules.v4 {
            self.maps
                .rules_v4
                .insert(k, v, 0)
                .map_err(|source| BpfError::MapFull {
                    name: maps::RULES_V4,
                    entry: format!("{:?}/{}", k.data().addr, k.prefix_len()),
                    source,
                })?;
            w.v4.push(*k);
            progress(w.v4.len());
        }
        for (k, v) in &rules.v6 {
            self.maps
                .rules_v6
                .insert(k, v, 0)
                .map_err(|source| BpfError::MapFull {
                    name: maps::RULES_V6,
                    entry: format!("{:?}/{}", k.data().addr, k.prefix_len()),
                    source,
                })?;
            w.v6.push(*k);
            progress(w.v4.len() + w.v6.len());
        }
        for c in bound {
            let key = BindingKey {
                cgroup_id: c.id,
                slot,
                _pad: 0,
            };
            let value = binding_of(config, ids, c.policy);
            self.maps
                .bindings
                .insert(key, value, 0)
                .map_err(full(maps::BINDINGS, c.path.display().to_string()))?;
            w.bindings.push(key);
        }
        Ok(())
    }
}

/// The kernel binding of `config.policies[index]`, whose id is `ids[index]`.
pub fn binding_of(config: &Config, ids: &[u32], index: usize) -> Binding {
    let p = &config.policies[index];
    Binding {
        policy: ids[index],
        mode: policy::mode_value(p.mode),
        flags: if p.allow_packet_sockets {
            BINDING_ALLOW_PACKET_SOCKETS
        } else {
            0
        },
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(names: &[&str]) -> Config {
        let text: String = names
            .iter()
            .map(|n| format!("[[policy]]\nname = \"{n}\"\ncgroups = [\"{n}\"]\n"))
            .collect();
        Config::parse(&text, "t").unwrap()
    }

    #[test]
    fn ids_are_stable_by_name() {
        let (ids, list) = PolicyIds::default().assign(&config(&["a", "b", "c"]));
        assert_eq!(list, vec![0, 1, 2]);
        let (ids, list) = ids.assign(&config(&["c", "d", "a"]));
        assert_eq!(
            list,
            vec![2, 3, 0],
            "c and a keep theirs; d does not take b's id at once"
        );
        let (_, list) = ids.assign(&config(&["e", "a"]));
        assert_eq!(list, vec![1, 0], "b's id is free again one version later");
    }
}
