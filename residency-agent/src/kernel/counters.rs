//! The kernel program's packet and health counters (per-CPU arrays), read at scrape
//! time and summed over CPUs, so counts are exact and cost nothing between scrapes.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray};
use residency_common::{FAMILIES, Stat, Verdict, counter_index};

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
            for verdict in [Verdict::Allowed, Verdict::Blocked, Verdict::Audited] {
                for family in 0..FAMILIES {
                    let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; cpus])?;
                    self.counters
                        .set(counter_index(policy, verdict, family), zeros, 0)?;
                }
            }
        }
        Ok(())
    }

    /// Packets per `(policy id, verdict, family)` for the given policy ids, summed over
    /// CPUs; zeros included.
    pub fn packets(&self, ids: &[u32]) -> BTreeMap<(u32, &'static str, &'static str), u64> {
        let mut out = BTreeMap::new();
        for &policy in ids {
            for (verdict, name) in [
                (Verdict::Allowed, "allowed"),
                (Verdict::Blocked, "blocked"),
                (Verdict::Audited, "audited"),
            ] {
                for family in 0..FAMILIES {
                    let index = counter_index(policy, verdict, family);
                    let sum = self
                        .counters
                        .get(&index, 0)
                        .map(|v| v.iter().sum())
                        .unwrap_or(0);
                    out.insert(
                        (policy, name, if family == 0 { "ipv4" } else { "ipv6" }),
                        sum,
                    );
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
