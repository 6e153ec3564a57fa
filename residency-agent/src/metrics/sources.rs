//! The IP-range sources' metrics: each source file's age (from its modification time,
//! read at scrape time), its prefixes in force, its `max_age`, and its live refreshes
//! by result with the size of the last one. `ResidencySourceStale` compares age and
//! `max_age`.

use std::{path::PathBuf, time::SystemTime};

use prometheus_client::encoding::DescriptorEncoder;
use serde::Serialize;

use super::{
    Telemetry,
    family::{counter, gauge},
};

/// One source of one policy, as the daemon last applied or refused it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceState {
    pub policy: String,
    /// Format and path as written (`mmdb GeoLite2-Country.mmdb`).
    pub source: String,
    pub path: PathBuf,
    /// Prefixes in force from it (after aggregation).
    pub prefixes: usize,
    pub max_age_seconds: Option<u64>,
    /// Live refreshes applied and refused.
    pub refreshes_applied: u64,
    pub refreshes_rejected: u64,
    /// The last refresh: Unix time, prefixes added and removed, whether it applied.
    pub last_refresh: Option<Refresh>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Refresh {
    pub time: u64,
    pub added: usize,
    pub removed: usize,
    pub applied: bool,
    /// Why it was refused, when it was.
    pub error: String,
}

impl SourceState {
    /// Seconds since the file was last modified (`None` when it cannot be read).
    pub fn age_seconds(&self) -> Option<u64> {
        let modified = std::fs::metadata(&self.path).ok()?.modified().ok()?;
        Some(
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default()
                .as_secs(),
        )
    }
}

pub fn encode(enc: &mut DescriptorEncoder, t: &Telemetry) -> std::fmt::Result {
    let sources = t.sources.lock().expect("lock").clone();
    let labels = |s: &SourceState| vec![("policy", s.policy.clone()), ("source", s.source.clone())];
    gauge(
        enc,
        "residency_source_age_seconds",
        "Age of each IP-range source file (now minus its modification time); absent while the file cannot be read.",
        &sources
            .iter()
            .filter_map(|s| Some((labels(s), s.age_seconds()? as i64)))
            .collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "residency_source_max_age_seconds",
        "The max_age a source sets: ResidencySourceStale fires when its age passes it.",
        &sources
            .iter()
            .filter_map(|s| Some((labels(s), s.max_age_seconds? as i64)))
            .collect::<Vec<_>>(),
    )?;
    gauge(
        enc,
        "residency_source_prefixes",
        "Prefixes in force from each source (after aggregation).",
        &sources
            .iter()
            .map(|s| (labels(s), s.prefixes as i64))
            .collect::<Vec<_>>(),
    )?;
    let mut rows = Vec::new();
    for s in &sources {
        for (result, n) in [
            ("applied", s.refreshes_applied),
            ("rejected", s.refreshes_rejected),
        ] {
            let mut l = labels(s);
            l.push(("result", result.to_owned()));
            rows.push((l, n));
        }
    }
    counter(
        enc,
        "residency_source_refreshes",
        "Live refreshes of a changed source file, applied or rejected (a rejected file leaves the policy in force as it was).",
        &rows,
    )?;
    let mut rows = Vec::new();
    for s in &sources {
        if let Some(r) = &s.last_refresh {
            for (change, n) in [("added", r.added), ("removed", r.removed)] {
                let mut l = labels(s);
                l.push(("change", change.to_owned()));
                rows.push((l, n as i64));
            }
        }
    }
    gauge(
        enc,
        "residency_source_last_refresh_prefixes",
        "Prefixes the last applied refresh of each source added and removed.",
        &rows,
    )
}
