//! The shutdown report: what each policy counted while this agent ran, and the
//! kernel program's health counters that are not zero.

use std::sync::RwLock;

use residency_common::Stat;
use tracing::{info, warn};

use crate::{metrics::Metrics, policy::Versioned};

pub fn report(versioned: &RwLock<Versioned>, metrics: &Metrics) {
    let v = versioned.read().expect("lock");
    let kernel = metrics.kernel.lock().expect("kernel counters lock");
    for ((id, verdict, family), n) in kernel.packets(&v.ids) {
        if n > 0 {
            let name = v.by_id(id).map(|p| p.name.as_str()).unwrap_or("?");
            info!(
                policy = %name,
                verdict = verdict.as_str(),
                family = family.as_str(),
                packets = n,
                "counted"
            );
        }
    }
    for (stat, name) in [
        (Stat::EventsLost, "events_lost_ring_full"),
        (Stat::EventsRateLimited, "events_rate_limited"),
        (Stat::ParseErrors, "parse_errors"),
        (Stat::NoBinding, "no_binding"),
    ] {
        let n = kernel.stat(stat);
        if n > 0 {
            warn!(stat = name, count = n, "kernel program health");
        }
    }
}
