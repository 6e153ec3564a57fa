//! Live refresh of IP-range sources: a policy's source files (a GeoIP database that a
//! timer updates, a cloud range file, a list on a mounted volume) are watched, and a
//! changed one is applied like a reload of the config text in force — every source
//! re-read and validated, the whole version swapped in atomically by `generations`,
//! a bad file rejected with the policy in force kept. No command is needed, and a
//! config file edited but not reloaded is not applied on the way.
//!
//! A file is known by its size, modification time and inode (following symlinks, so
//! a volume's `..data` swap counts), looked at as soon as its directory reports a
//! change, and every second. A file some process still has open for writing waits
//! for it to be closed; one missing for a moment waits until it is back. Each
//! refresh is logged and counted per source, with the prefixes it added and removed
//! ([`crate::metrics::sources`]).

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use ipnetwork::IpNetwork;
use tracing::{info, warn};

use super::Daemon;
use crate::{
    config::{Action, Config},
    host::DirWatch,
    metrics::sources::{Refresh, SourceState},
};

/// What a source file looked like: size, modification time (ns), inode.
type Fingerprint = (u64, i128, u64);

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.len(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        m.ino(),
    ))
}

/// The source files of the version in force, as last seen.
#[derive(Debug, Default)]
pub struct SourceFiles {
    seen: BTreeMap<PathBuf, Option<Fingerprint>>,
}

impl SourceFiles {
    /// Follows the sources of `config`: watches their directories and remembers how
    /// each file looks now (a file already known keeps what was seen of it).
    pub fn follow(&mut self, config: &Config, watch: &DirWatch) {
        let paths: Vec<PathBuf> = config
            .policies
            .iter()
            .flat_map(|p| p.sources.iter().map(|s| s.path.clone()))
            .collect();
        self.seen.retain(|p, _| paths.contains(p));
        for path in paths {
            if let Some(dir) = path.parent() {
                watch.watch_config_dir(dir);
            }
            self.seen
                .entry(path.clone())
                .or_insert_with(|| fingerprint(&path));
        }
    }

    /// The files that changed since last seen and are complete (no writer has them
    /// open); each is seen as it is now.
    fn take_changed(&mut self) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for (path, seen) in &mut self.seen {
            let now = fingerprint(path);
            // A file missing for a moment (a volume's symlink swap in progress) is
            // looked at again when it is back; one gone for good fails the next
            // reload that reads it.
            if now.is_some() && now != *seen && !being_written(path) {
                *seen = now;
                changed.push(path.clone());
            }
        }
        changed
    }
}

/// Whether some process has `path` open for writing (a read lease is refused then).
fn being_written(path: &Path) -> bool {
    matches!(crate::sys::fs::read_when_complete_probe(path), Ok(false))
}

/// Each source of `config`, for status and metrics, keeping the refresh history of
/// sources that stay.
pub fn publish(config: &Config, previous: &[SourceState]) -> Vec<SourceState> {
    let mut out = Vec::new();
    for p in &config.policies {
        for s in &p.sources {
            let mut state = previous
                .iter()
                .find(|o| o.policy == p.name && o.source == s.description)
                .cloned()
                .unwrap_or_default();
            state.policy = p.name.clone();
            state.source = s.description.clone();
            state.path = s.path.clone();
            state.prefixes = s.kept;
            state.max_age_seconds = s.max_age.map(|d| d.as_secs());
            out.push(state);
        }
    }
    out
}

/// The entries a source put in a policy, with their action (a country's set is
/// hundreds of thousands: hashed with foldhash, not SipHash).
fn entries_of(
    config: &Config,
    policy: &str,
    source: &str,
) -> foldhash::HashSet<(IpNetwork, Action)> {
    let labelled = format!("{source}: ");
    config
        .policies
        .iter()
        .filter(|p| p.name == policy)
        .flat_map(|p| p.entries.iter().map(move |e| (p, e)))
        .filter(|(p, e)| {
            p.origin_of(e)
                .is_some_and(|o| o == source || o.starts_with(&labelled))
        })
        .map(|(_, e)| (e.network, e.action))
        .collect()
}

impl Daemon {
    /// Applies the config in force again when one of its source files changed.
    pub(super) fn check_sources_changed(&mut self) {
        let changed = self.source_files.take_changed();
        if changed.is_empty() {
            return;
        }
        let old = self.versioned.read().expect("lock").config.clone();
        // Kept by every config that has sources, the only ones watched.
        let Some(text) = old.text.clone() else {
            return;
        };
        let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
        info!(sources = %names.join(", "), "source file changed: re-reading and applying");
        let result = self.reload_from(
            false,
            // The text in force, not the file's: nothing is known of the file.
            Some((text.into_bytes(), None)),
            format!("source watch: {}", names.join(", ")),
        );
        let new = self.versioned.read().expect("lock").config.clone();
        let applied = result.ok || result.data["applied"] == true;
        let time = super::unix_now();
        let mut states = self.telemetry.sources.lock().expect("lock");
        for p in &old.policies {
            for s in p.sources.iter().filter(|s| changed.contains(&s.path)) {
                let Some(state) = states
                    .iter_mut()
                    .find(|o| o.policy == p.name && o.source == s.description)
                else {
                    continue;
                };
                let mut refresh = Refresh {
                    time,
                    applied,
                    ..Refresh::default()
                };
                if applied {
                    let before = entries_of(&old, &p.name, &s.description);
                    let after = entries_of(&new, &p.name, &s.description);
                    refresh.added = after.difference(&before).count();
                    refresh.removed = before.difference(&after).count();
                    state.refreshes_applied += 1;
                    info!(
                        policy = %p.name, source = %s.description, added = refresh.added,
                        removed = refresh.removed, prefixes = state.prefixes,
                        "source refreshed: +{} -{} prefixes", refresh.added, refresh.removed
                    );
                } else {
                    refresh.error = result.text.trim().to_owned();
                    state.refreshes_rejected += 1;
                    warn!(
                        policy = %p.name, source = %s.description,
                        "source change rejected; the policy in force keeps the previous version: {}",
                        refresh.error
                    );
                }
                state.last_refresh = Some(refresh);
            }
        }
    }
}
