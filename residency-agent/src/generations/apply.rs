//! Applying a version: check that it fits beside the one in force, write the idle
//! slot, flip the epoch, wait out the programs still on the old slot, delete it.

use std::time::{Duration, Instant};

use aya::maps::MapError;
use residency_common::{
    BINDING_ALLOW_PACKET_SOCKETS, BINDING_ALLOW_RAW_SOCKETS, BINDING_JUDGE_INBOUND,
    BINDING_NAMED_INTERFACES, Binding, BindingKey, GENERATION_SLOTS, InterfaceKey, MAX_BINDINGS,
    maps, slot_of,
};

use super::{Applied, Generations, Written};
use crate::{config::Config, host::BoundCgroup, kernel::BpfError, policy};

impl Generations {
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
        if bound.len() > MAX_BINDINGS as usize {
            return Err(BpfError::TooManyBindings {
                needed: bound.len(),
                max: MAX_BINDINGS,
            });
        }
        if self.written.bindings.len() + bound.len() > (MAX_BINDINGS * GENERATION_SLOTS) as usize {
            return Err(BpfError::WouldNotFit {
                name: maps::BINDINGS,
                needed: self.written.bindings.len() + bound.len(),
                capacity: MAX_BINDINGS * GENERATION_SLOTS,
            });
        }

        let mut w = Written::default();
        let result = self
            .write(config, bound, &id_list, next, &rules, &mut w)
            .and_then(|()| {
                let names: Vec<&str> = config.policies.iter().map(|p| p.name.as_str()).collect();
                self.maps
                    .names
                    .write(next, &id_list, &names)
                    .map_err(|source| BpfError::Names {
                        path: super::super::kernel::names::POLICY_NAMES.into(),
                        source,
                    })
            });
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
        // Interfaces before bindings, like port rules before prefixes: nothing reads
        // the slot until the flip.
        for (index, p) in config.policies.iter().enumerate() {
            for name in &p.interfaces {
                let key = interface_key(slot, ids[index], name);
                self.maps
                    .interfaces
                    .insert(key, 1, 0)
                    .map_err(full(maps::INTERFACES, format!("interface {name}")))?;
                w.interfaces.push(key);
            }
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
        } | if p.allow_raw_sockets {
            BINDING_ALLOW_RAW_SOCKETS
        } else {
            0
        } | if p.judge_inbound {
            BINDING_JUDGE_INBOUND
        } else {
            0
        } | if p.interfaces.is_empty() {
            0
        } else {
            BINDING_NAMED_INTERFACES
        },
        _pad: 0,
    }
}

/// The key of interface `name` of policy `id` in `slot`: the name NUL-padded.
pub fn interface_key(slot: u32, id: u32, name: &str) -> InterfaceKey {
    let mut key = InterfaceKey {
        scope: residency_common::scope(slot, id),
        name: [0; 16],
    };
    key.name[..name.len()].copy_from_slice(name.as_bytes());
    key
}
