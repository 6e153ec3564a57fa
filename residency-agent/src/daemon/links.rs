//! Keeping the attachments in step with the bound cgroups: attach (and pin) where a
//! topmost bound cgroup has no link yet, unpin where one is no longer wanted, and
//! watch where configured cgroups live or will live.

use std::{collections::BTreeMap, path::PathBuf, sync::atomic::Ordering};

use super::Daemon;
use crate::{host::attach_points, kernel::pins};

impl Daemon {
    /// Attaches the program where `bound` needs it and detaches it where it no longer
    /// does. Called after a flip, so new cgroups are judged by the new policy from their
    /// first packet and removed ones keep the policy until their link goes.
    pub(super) fn reconcile_links(&mut self) -> anyhow::Result<()> {
        let wanted: BTreeMap<u64, PathBuf> = attach_points(&self.bound)
            .into_iter()
            .map(|b| (b.id, b.path.clone()))
            .collect();
        // Every attach point is tried, and a failed one is tried again at the next
        // rescan; the first error is reported.
        let mut first_error = None;
        for (id, path) in &wanted {
            if !self.attached.contains_key(id) {
                let attached = self
                    .loaded
                    .attach(path)
                    .map_err(anyhow::Error::from)
                    .and_then(|links| {
                        pins::pin_cgroup_links(&self.instance, *id, links)
                            .map_err(anyhow::Error::from)
                    });
                match attached {
                    Ok(()) => {
                        self.attached.insert(*id, path.clone());
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        let stale: Vec<u64> = self
            .attached
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in stale {
            pins::unpin_cgroup_links(&self.instance, id);
            self.attached.remove(&id);
        }
        self.record_coverage();
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(())
    }

    /// Counts the configured cgroups actually judged (attached themselves, or below an
    /// attached one), in all and per policy, for the metrics.
    pub(super) fn record_coverage(&self) {
        let attached: std::collections::HashSet<&std::path::Path> =
            self.attached.values().map(PathBuf::as_path).collect();
        let judged =
            |b: &&crate::host::BoundCgroup| b.path.ancestors().any(|a| attached.contains(a));
        self.telemetry
            .attached_cgroups
            .store(self.bound.iter().filter(judged).count(), Ordering::Relaxed);
        // Per policy: configured against judged, so that a partial attach shows.
        let config = &self.versioned.read().expect("lock").config;
        let per_policy = config
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                // What the policy should judge: its cgroups from the config, existing
                // or not, and the pods placed in it.
                let configured = self.bound.iter().filter(|b| b.policy == i).count()
                    + self.missing.iter().filter(|m| m.policy == i).count();
                let n = self
                    .bound
                    .iter()
                    .filter(|b| b.policy == i)
                    .filter(judged)
                    .count();
                (p.name.clone(), configured as u64, n as u64)
            })
            .collect();
        *self.telemetry.policy_cgroups.lock().expect("lock") = per_policy;
    }

    /// Watches where configured cgroups live or will live: the parent of each bound
    /// one (re-creation) and the nearest existing ancestor of each missing one.
    pub(super) fn watch_cgroups(&self) {
        // Each directory once: a thousand bound siblings share one parent (and one
        // inotify_add_watch per rescan, not a thousand).
        let mut dirs = std::collections::HashSet::new();
        for b in &self.bound {
            if let Some(parent) = b.path.parent() {
                dirs.insert(parent);
            }
        }
        for m in &self.missing {
            if let Some(dir) = m.path.ancestors().skip(1).find(|p| p.exists()) {
                dirs.insert(dir);
            }
        }
        for dir in dirs {
            self.watch.watch(dir);
        }
    }
}
