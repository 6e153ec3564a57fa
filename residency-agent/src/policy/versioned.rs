//! A config together with the policy ids its version carries in the kernel: what the
//! event reader, the metrics endpoint and `status` read to name a policy id; and its
//! lookup tables, which the metrics report.

use crate::{
    config::{Config, PolicyConfig},
    generations::{Applied, ByFamily, TablesWritten},
};

/// A config together with the policy ids its version carries in the kernel.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// Shared: readers (metrics, status, rescans, the source watch) take a reference,
    /// not a copy of 100,000s of entries.
    pub config: std::sync::Arc<Config>,
    /// `ids[i]` is the id of `config.policies[i]`.
    pub ids: Vec<u32>,
    /// Versions applied by this agent.
    pub generation: u64,
    /// The version's lookup tables, and the room each slot has for them.
    pub tables: ByFamily<TablesWritten>,
    pub table_room: ByFamily<u32>,
}

impl Versioned {
    /// A config as a first version: ids in config order, generation 1.
    #[cfg(test)]
    pub fn initial(config: Config) -> Versioned {
        let ids = (0..config.policies.len() as u32).collect();
        Versioned {
            config: config.into(),
            ids,
            generation: 1,
            tables: ByFamily::default(),
            table_room: ByFamily::default(),
        }
    }

    /// `config` as the version `applied` put in force.
    pub fn applied(config: std::sync::Arc<Config>, applied: &Applied) -> Versioned {
        Versioned {
            config,
            ids: applied.ids.clone(),
            generation: applied.generation,
            tables: applied.tables.clone(),
            table_room: applied.table_room,
        }
    }

    /// The policy carrying kernel id `id`.
    pub fn by_id(&self, id: u32) -> Option<&PolicyConfig> {
        self.ids
            .iter()
            .position(|i| *i == id)
            .map(|i| &self.config.policies[i])
    }
}
