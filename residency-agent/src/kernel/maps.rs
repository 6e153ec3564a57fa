//! The loaded object's maps, taken out for their owners: the policy maps for
//! `generations`, the ring buffer for the event reader, the counters for metrics; and
//! the program settings written once at start.

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf},
};
use residency_common::{
    Binding, BindingKey, InterfaceKey, PortRule, RuleKeyV4, RuleKeyV6, RuleValue,
    SETTINGS_NO_VERDICT_CACHE, Settings, maps,
};

use super::{BpfError, KernelCounters, Loaded, names::PolicyNames};
use crate::{
    config::Config,
    generations::{ByFamily, TableMaps},
};

/// The maps that hold the policy, taken out of the loaded object.
pub struct PolicyMaps {
    pub rules_v4: LpmTrie<MapData, RuleKeyV4, RuleValue>,
    pub rules_v6: LpmTrie<MapData, RuleKeyV6, RuleValue>,
    pub bindings: HashMap<MapData, BindingKey, Binding>,
    pub active: Array<MapData, u32>,
    /// The epoch the lookup tables were written for (written before `active`).
    pub table_epoch: Array<MapData, u32>,
    pub ports: Array<MapData, PortRule>,
    pub interfaces: HashMap<MapData, InterfaceKey, u8>,
    /// The policy names of each slot, for readers without the agent (`verify`).
    pub names: PolicyNames,
    /// Capacity of each rule trie (entries, both slots together).
    pub capacity: u32,
    /// The lookup tables.
    pub tables: ByFamily<TableMaps>,
}

impl Loaded {
    /// Takes the maps that hold the policy out of the object (call after pinning).
    pub fn take_policy_maps(&mut self) -> Result<PolicyMaps, BpfError> {
        fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, BpfError> {
            let map = ebpf.take_map(name).ok_or(BpfError::MissingMap { name })?;
            T::try_from(map).map_err(|source| BpfError::Map { name, source })
        }
        /// One family's lookup tables: its chunks' and roots' maps, `per_slot` chunks.
        fn tables(
            ebpf: &mut Ebpf,
            (chunks, roots): (&'static str, &'static str),
            per_slot: u32,
        ) -> Result<TableMaps, BpfError> {
            TableMaps::new(
                take(ebpf, chunks)?,
                take(ebpf, roots)?,
                per_slot,
                (chunks, roots),
            )
            .map_err(|source| BpfError::Map {
                name: roots,
                source,
            })
        }
        let chunks = self.table_chunks;
        Ok(PolicyMaps {
            rules_v4: take(&mut self.ebpf, maps::RULES_V4)?,
            rules_v6: take(&mut self.ebpf, maps::RULES_V6)?,
            bindings: take(&mut self.ebpf, maps::BINDINGS)?,
            active: take(&mut self.ebpf, maps::ACTIVE)?,
            table_epoch: take(&mut self.ebpf, maps::TABLE_EPOCH)?,
            ports: take(&mut self.ebpf, maps::PORTS)?,
            interfaces: take(&mut self.ebpf, maps::INTERFACES)?,
            names: self.names.take().ok_or(BpfError::MissingMap {
                name: super::names::POLICY_NAMES,
            })?,
            capacity: self.capacity,
            tables: ByFamily {
                v4: tables(
                    &mut self.ebpf,
                    (maps::TABLE_V4, maps::TABLE_ROOTS),
                    chunks.v4,
                )?,
                v6: tables(
                    &mut self.ebpf,
                    (maps::TABLE_V6, maps::TABLE_ROOTS_V6),
                    chunks.v6,
                )?,
            },
        })
    }

    /// Takes the event ring buffer out of the object, for the event reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, BpfError> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or(BpfError::MissingMap { name: maps::EVENTS })?;
        RingBuf::try_from(map).map_err(|source| BpfError::Map {
            name: maps::EVENTS,
            source,
        })
    }

    /// The local address trie and the ring of namespace asks, for the task that keeps
    /// them (`crate::netns`).
    pub fn take_local_maps(
        &mut self,
    ) -> Result<(crate::netns::LocalMaps, RingBuf<MapData>), BpfError> {
        let mut take = |name: &'static str| {
            self.ebpf
                .take_map(name)
                .ok_or(BpfError::MissingMap { name })
        };
        let addrs = take(maps::LOCAL_ADDRS)?;
        let asks = take(maps::NETNS_ASKS)?;
        Ok((
            crate::netns::LocalMaps::new(aya::maps::LpmTrie::try_from(addrs).map_err(
                |source| BpfError::Map {
                    name: maps::LOCAL_ADDRS,
                    source,
                },
            )?),
            RingBuf::try_from(asks).map_err(|source| BpfError::Map {
                name: maps::NETNS_ASKS,
                source,
            })?,
        ))
    }

    fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, BpfError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(BpfError::MissingMap { name })?;
        T::try_from(map).map_err(|source| BpfError::Map { name, source })
    }

    /// Takes the packet and health counters out of the object, for the metrics
    /// endpoint and the shutdown report (call after pinning).
    pub fn take_counters(&mut self) -> Result<KernelCounters, BpfError> {
        let take =
            |ebpf: &mut Ebpf, name: &'static str| -> Result<PerCpuArray<MapData, u64>, BpfError> {
                let map = ebpf.take_map(name).ok_or(BpfError::MissingMap { name })?;
                PerCpuArray::try_from(map).map_err(|source| BpfError::Map { name, source })
            };
        Ok(KernelCounters {
            counters: take(&mut self.ebpf, maps::COUNTERS)?,
            stats: take(&mut self.ebpf, maps::STATS)?,
        })
    }

    /// Writes the program settings (the event rate limit, the verdict cache).
    pub fn configure(&mut self, config: &Config) -> Result<(), BpfError> {
        let mut settings: Array<_, Settings> = self.map_mut(maps::SETTINGS)?;
        let value = Settings {
            events_per_second: config.events.rate_limit_per_cpu,
            events_burst: config.events.rate_limit_burst,
            flags: if config.agent.verdict_cache {
                0
            } else {
                SETTINGS_NO_VERDICT_CACHE
            },
            _pad: 0,
        };
        settings.set(0, value, 0).map_err(|source| BpfError::Map {
            name: maps::SETTINGS,
            source,
        })
    }
}
