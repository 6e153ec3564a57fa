//! Re-resolving the configured cgroups of the version in force (on an inotify wake-up
//! and every second): cgroups that appeared (or were re-created under a new id) are
//! bound before anything attaches to them, cgroups that are gone are unbound.
//!
//! What changed is a plain function of the old and new resolution ([`plan`]), so it
//! is unit-tested without a kernel.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::{info, warn};

use super::Daemon;
use crate::{
    generations::binding_of,
    host::{BoundCgroup, MissingCgroup, attach_points, resolve_cgroups},
    kubernetes,
};

/// What a rescan has to do, from the bound cgroups before and after re-resolving.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Same cgroups, same ids, same missing ones, every attach point attached.
    Nothing,
    /// Bind `bind` (indexes into the new list: new cgroups, and cgroups whose policy
    /// changed, such as a relabelled pod), unbind `unbind` (cgroup ids of the old
    /// list), then reconcile the links.
    Change { bind: Vec<usize>, unbind: Vec<u64> },
}

/// Compares the resolution in force with a fresh one.
pub fn plan(
    old: &[BoundCgroup],
    old_missing: &[MissingCgroup],
    attached: &BTreeMap<u64, std::path::PathBuf>,
    new: &[BoundCgroup],
    new_missing: &[MissingCgroup],
) -> Plan {
    let same = new.len() == old.len()
        && new
            .iter()
            .zip(old)
            .all(|(a, b)| a.id == b.id && a.path == b.path && a.policy == b.policy);
    let all_attached = attach_points(new)
        .iter()
        .all(|b| attached.contains_key(&b.id));
    if same && new_missing == old_missing && all_attached {
        return Plan::Nothing;
    }
    // Indexed by id: a rescan's cost grows with the bound cgroups, not their square.
    let old_policy: HashMap<u64, usize> = old.iter().map(|o| (o.id, o.policy)).collect();
    let new_ids: HashSet<u64> = new.iter().map(|b| b.id).collect();
    Plan::Change {
        bind: (0..new.len())
            .filter(|i| old_policy.get(&new[*i].id) != Some(&new[*i].policy))
            .collect(),
        unbind: old
            .iter()
            .filter(|o| !new_ids.contains(&o.id))
            .map(|o| o.id)
            .collect(),
    }
}

impl Daemon {
    /// Whether something a rescan waits for may have happened: a missing cgroup that
    /// exists now, or an earlier bind or attach that failed and is to be retried; or
    /// always, when inotify could not watch everything. Cheap (one stat per missing
    /// cgroup), for the once-a-second tick.
    pub(super) fn awaited_changed(&self) -> bool {
        self.retry_pending
            || self.watch.incomplete.get()
            || self.missing.iter().any(|m| m.path.exists())
    }

    /// Re-resolves the configured cgroups and applies what changed.
    pub(super) fn rescan(&mut self) {
        let (config, ids) = {
            let v = self.versioned.read().expect("lock");
            (v.config.clone(), v.ids.clone())
        };
        let (mut bound, mut missing) = match resolve_cgroups(&config, &self.hierarchy) {
            Ok(r) => r,
            Err(e) => {
                warn!("re-resolving cgroups failed: {e:#}");
                return;
            }
        };
        let cluster = self.cluster_state();
        kubernetes::place(&config, &self.hierarchy, &cluster, &mut bound, &mut missing);
        let Plan::Change { bind, unbind } =
            plan(&self.bound, &self.missing, &self.attached, &bound, &missing)
        else {
            return;
        };
        let mut failed = Vec::new();
        let before: HashMap<u64, &crate::host::BoundCgroup> =
            self.bound.iter().map(|o| (o.id, o)).collect();
        for b in bind.iter().map(|i| &bound[*i]) {
            let binding = binding_of(&config, &ids, b.policy);
            let policy = &config.policies[b.policy].name;
            let was = before.get(&b.id);
            match self.generations.bind(b.id, binding) {
                Ok(()) => {
                    match was {
                        // A pod relabelled (or its namespace): one map update moved it.
                        Some(o) => info!(
                            cgroup = %b.path.display(),
                            policy = %policy,
                            was = %config.policies.get(o.policy).map_or("?", |p| p.name.as_str()),
                            "cgroup moved to another policy"
                        ),
                        None => {
                            info!(cgroup = %b.path.display(), policy = %policy, "cgroup appeared: its policy applies")
                        }
                    }
                    self.telemetry.request_verification();
                }
                Err(e) => {
                    // Left out of `bound`, so the next rescan tries again.
                    warn!(cgroup = %b.path.display(), "binding a new cgroup failed: {e}");
                    failed.push(b.id);
                }
            }
        }
        drop(before);
        let failed: HashSet<u64> = failed.into_iter().collect();
        bound.retain(|b| !failed.contains(&b.id));
        let unbind: HashSet<u64> = unbind.into_iter().collect();
        for o in self.bound.iter().filter(|o| unbind.contains(&o.id)) {
            self.generations.unbind(o.id);
            if o.path.exists() {
                // A pod no policy selects any more (or deleted from the API while its
                // cgroup lingers): the nearest bound ancestor's policy, the default.
                info!(cgroup = %o.path.display(), "cgroup unbound: the policy of its nearest bound ancestor applies");
            } else {
                info!(cgroup = %o.path.display(), "cgroup is gone; its policy applies again when it reappears");
            }
        }
        self.bound = bound;
        self.missing = missing;
        self.retry_pending = !failed.is_empty();
        if let Err(e) = self.reconcile_links() {
            self.retry_pending = true;
            warn!("attaching to a new cgroup failed: {e:#}");
        }
        self.watch_cgroups();
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn b(id: u64, path: &str) -> BoundCgroup {
        BoundCgroup {
            policy: 0,
            path: PathBuf::from(path),
            id,
        }
    }

    #[test]
    fn nothing_to_do_when_resolution_and_links_are_unchanged() {
        let old = [b(1, "/c/a"), b(2, "/c/a/b")];
        let attached = BTreeMap::from([(1, PathBuf::from("/c/a"))]);
        assert_eq!(plan(&old, &[], &attached, &old, &[]), Plan::Nothing);
    }

    #[test]
    fn recreated_cgroup_is_unbound_and_bound_again_under_its_new_id() {
        let old = [b(1, "/c/a"), b(2, "/c/x")];
        let new = [b(1, "/c/a"), b(7, "/c/x")];
        let attached = BTreeMap::from([(1, PathBuf::from("/c/a")), (2, PathBuf::from("/c/x"))]);
        assert_eq!(
            plan(&old, &[], &attached, &new, &[]),
            Plan::Change {
                bind: vec![1],
                unbind: vec![2]
            }
        );
    }

    #[test]
    fn a_missing_attach_point_or_a_new_missing_cgroup_is_a_change() {
        let old = [b(1, "/c/a")];
        let none = BTreeMap::new();
        assert_eq!(
            plan(&old, &[], &none, &old, &[]),
            Plan::Change {
                bind: vec![],
                unbind: vec![]
            },
            "an unattached attach point is retried"
        );
        let attached = BTreeMap::from([(1, PathBuf::from("/c/a"))]);
        let missing = [MissingCgroup {
            policy: 0,
            path: PathBuf::from("/c/later"),
        }];
        assert!(matches!(
            plan(&old, &[], &attached, &old, &missing),
            Plan::Change { .. }
        ));
    }
}
