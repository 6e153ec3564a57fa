//! Applying a version: check that it fits beside the one in force, write the idle
//! slot, flip the epoch, wait out the programs still on the old slot, delete it.

use std::time::{Duration, Instant};

use aya::maps::MapError;
use residency_common::{
    BINDING_ALLOW_PACKET_SOCKETS, BINDING_ALLOW_RAW_SOCKETS, BINDING_JUDGE_INBOUND,
    BINDING_NAMED_INTERFACES, Binding, BindingKey, GENERATION_SLOTS, InterfaceKey, MAX_BINDINGS,
    maps, slot_of,
};

use std::sync::Arc;

use super::{Applied, ByFamily, Generations, Written, WrittenRules, trie::write_trie};
use crate::{config::Config, host::BoundCgroup, kernel::BpfError, policy};

/// A version written into the idle slot and not yet in force
/// ([`Generations::prepare`]): [`Generations::commit`] puts it in force,
/// [`Generations::abandon`] deletes it.
#[must_use = "a prepared version is committed or abandoned"]
pub struct Prepared {
    written: Written,
    ids: super::PolicyIds,
    id_list: Vec<u32>,
    epoch: u32,
    started: Instant,
    entries: usize,
}

impl Generations {
    /// Applies `config` (with its cgroups resolved in `bound`) as the new version.
    pub fn apply(
        &mut self,
        config: &Arc<Config>,
        bound: &[BoundCgroup],
    ) -> Result<Applied, BpfError> {
        let prepared = self.prepare(config, bound)?;
        self.commit(prepared)
    }

    /// Writes `config` (with its cgroups resolved in `bound`) into the idle slot, where
    /// no program reads it yet; the version in force is untouched.
    pub fn prepare(
        &mut self,
        config: &Arc<Config>,
        bound: &[BoundCgroup],
    ) -> Result<Prepared, BpfError> {
        // The idle slot must be empty before it is written: the version retired last
        // time goes first, if the daemon has not deleted it yet.
        self.retire();
        let started = Instant::now();
        let (ids, id_list) = self.ids.assign(config);
        let next_epoch = self.epoch.wrapping_add(1);
        let next = slot_of(next_epoch);
        let rules = policy::Compiled::new(config, &id_list, next).map_err(BpfError::Policy)?;
        let (v4_count, v6_count) = rules.counts();

        // Both versions live in the maps until the flip completes.
        let (v4_in_use, v6_in_use) = self.written.counts();
        for (name, in_use, new) in [
            (maps::RULES_V4, v4_in_use, v4_count),
            (maps::RULES_V6, v6_in_use, v6_count),
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

        let mut w = Written {
            slot: Some(next),
            rules: Some(WrittenRules {
                config: config.clone(),
                ids: id_list.clone(),
                slot: next,
                v4: 0,
                v6: 0,
            }),
            ..Written::default()
        };
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
        Ok(Prepared {
            written: w,
            ids,
            id_list,
            epoch: next_epoch,
            started,
            entries: v4_count + v6_count - rules.implicit,
        })
    }

    /// Deletes a prepared version that is not to go in force.
    pub fn abandon(&mut self, prepared: Prepared) {
        self.delete(&prepared.written);
    }

    /// Puts a prepared version in force: flips the epoch, then waits out the programs
    /// still judging by the old slot.
    pub fn commit(&mut self, prepared: Prepared) -> Result<Applied, BpfError> {
        let Prepared {
            written: w,
            ids,
            id_list,
            epoch: next_epoch,
            started,
            entries,
        } = prepared;
        if let Err(e) = self.set_epoch(next_epoch) {
            self.delete(&w);
            return Err(e);
        }
        let next = slot_of(next_epoch);
        let in_force = started.elapsed();
        // No packet is judged by the old slot any more once this returns. The flip has
        // happened, so a failed barrier must not abort the bookkeeping below: wait a
        // generous grace period instead (programs run for microseconds).
        if let Err(e) = self.rcu.wait() {
            tracing::warn!(
                "RCU barrier failed ({e}); waiting 100 ms before retiring the old version"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Unreachable from here on; deleted by `retire`, once the answer is out.
        self.retiring = Some(std::mem::replace(&mut self.written, w));
        self.slot = next;
        self.epoch = next_epoch;
        self.ids = ids;
        self.generation += 1;
        Ok(Applied {
            generation: self.generation,
            ids: id_list,
            duration: in_force,
            retired: started.elapsed() - in_force,
            entries,
            tables: self.written.tables.clone(),
            table_room: self.table_room(),
        })
    }

    fn write(
        &mut self,
        config: &Config,
        bound: &[BoundCgroup],
        ids: &[u32],
        slot: u32,
        rules: &policy::Compiled<'_>,
        w: &mut Written,
    ) -> Result<(), BpfError> {
        let (mut n4, mut n6) = (0, 0);
        let full = |name, entry: String| {
            move |source: MapError| BpfError::MapFull {
                name,
                entry,
                source,
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
        // The two tries are two maps with a lock each: written side by side, a large
        // version (a country database's 100,000s of prefixes per family) takes about
        // half the time.
        // The lookup tables (array maps of their own) are laid out and written on a
        // third thread.
        let (v4, v6) = (&mut self.maps.rules_v4, &mut self.maps.rules_v6);
        let tables = &mut self.maps.tables;
        let (t4, t6) = rules.counts();
        let (r4, r6, rt) = std::thread::scope(|s| {
            let six = s.spawn(|| write_trie(v6, rules.v6(), t6, maps::RULES_V6, &mut n6));
            let tab = s.spawn(|| ByFamily {
                v4: tables.v4.write(slot, || rules.v4()),
                v6: tables.v6.write(slot, || rules.v6()),
            });
            let four = write_trie(v4, rules.v4(), t4, maps::RULES_V4, &mut n4);
            (
                four,
                six.join().expect("the IPv6 trie writer"),
                tab.join().expect("the table writer"),
            )
        });
        if let Some(r) = &mut w.rules {
            (r.v4, r.v6) = (n4, n6);
        }
        r4?;
        r6?;
        // Tables that could not be written leave the version to the trie, unless their
        // roots could not be cleared either: then the version must not go in.
        let taken = |family: &str, r: Result<super::TablesWritten, super::TableError>| match r {
            Ok(t) => Ok(t),
            Err(e @ super::TableError::Roots(..)) => Err(BpfError::Tables(e)),
            Err(e) => {
                tracing::warn!("{family} lookup tables not written ({e}); the trie judges alone");
                Ok(super::TablesWritten::default())
            }
        };
        w.tables = ByFamily {
            v4: taken("IPv4", rt.v4)?,
            v6: taken("IPv6", rt.v6)?,
        };
        for (family, written, per_slot) in [
            ("IPv4", &w.tables.v4, self.maps.tables.v4.per_slot()),
            ("IPv6", &w.tables.v6, self.maps.tables.v6.per_slot()),
        ] {
            for (id, need) in &written.skipped {
                let name = ids
                    .iter()
                    .position(|i| i == id)
                    .map_or("?", |i| config.policies[i].name.as_str());
                tracing::warn!(
                    "policy {name}: its {family} lookup tables need {need} chunks, more than \
                     were left of [agent] {} ({per_slot} per slot); its first packets are \
                     judged by the trie (as correct, slower)",
                    if family == "IPv4" {
                        "ipv4_table_chunks"
                    } else {
                        "ipv6_table_chunks"
                    }
                );
            }
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
