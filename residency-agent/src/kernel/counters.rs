//! The kernel program's packet and health counters (per-CPU arrays), read at scrape
//! time and summed over CPUs, so counts are exact and cost nothing between scrapes.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray};
use residency_common::{Family, Stat, Verdict, counter_index};

/// Packets per `(policy id, verdict, family)`, as [`KernelCounters::packets`] reads them.
pub type PacketCounts = BTreeMap<(u32, Verdict, Family), u64>;

/// The kernel program's counters, taken out of the loaded object.
pub struct KernelCounters {
    pub counters: PerCpuArray<MapData, u64>,
    pub stats: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    /// Zeroes the packet counters of policy ids that now stand for another policy (a
    /// new policy taking a freed id, or counts adopted from an earlier agent whose ids
    /// differ), so that no series starts from someone else's count.
    pub fn reset(&mut self, ids: &[u32]) -> Result<(), aya::maps::MapError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| {
            aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: e,
            })
        })?;
        for &policy in ids {
            for verdict in Verdict::ALL {
                for family in Family::ALL {
                    let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; cpus])?;
                    self.counters
                        .set(counter_index(policy, verdict, family.index()), zeros, 0)?;
                }
            }
        }
        Ok(())
    }

    /// Packets per `(policy id, verdict, family)` for the given policy ids, summed over
    /// CPUs; zeros included.
    pub fn packets(&self, ids: &[u32]) -> PacketCounts {
        let mut out = BTreeMap::new();
        for &policy in ids {
            for verdict in Verdict::ALL {
                for family in Family::ALL {
                    let index = counter_index(policy, verdict, family.index());
                    let sum = self
                        .counters
                        .get(&index, 0)
                        .map(|v| v.iter().sum())
                        .unwrap_or(0);
                    out.insert((policy, verdict, family), sum);
                }
            }
        }
        out
    }

    /// One health counter, summed over CPUs.
    pub fn stat(&self, stat: Stat) -> u64 {
        self.stats
            .get(&(stat as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}
