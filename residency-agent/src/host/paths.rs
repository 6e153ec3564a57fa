//! Cgroup paths for the ids in events: configured cgroups are known up front, others
//! (children of configured cgroups) are looked up by id and cached.

use std::{collections::HashMap, path::PathBuf};

use super::cgroup::Hierarchy;

/// Finds cgroup paths from the ids in events, caching what it found. Configured cgroups
/// are known up front; other ids (children of configured cgroups) are resolved with
/// `open_by_handle_at` on the cgroup2 mount, whose file handles are the cgroup ids.
pub struct PathCache {
    hierarchy: Hierarchy,
    known: HashMap<u64, String>,
}

/// Resolved ids kept at most, so that a storm of short-lived cgroups cannot grow it.
const PATH_CACHE_MAX: usize = 4096;

impl PathCache {
    pub fn new(hierarchy: Hierarchy, configured: impl IntoIterator<Item = (u64, PathBuf)>) -> Self {
        let known = configured
            .into_iter()
            .map(|(id, p)| (id, p.display().to_string()))
            .collect();
        Self { hierarchy, known }
    }

    /// The path of cgroup `id`, or `None` when it no longer exists.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.known.get(&id) {
            return Some(p.clone());
        }
        let p = crate::sys::handle::cgroup_path(&self.hierarchy.mount, id)?;
        if self.known.len() >= PATH_CACHE_MAX {
            self.known.clear();
        }
        self.known.insert(id, p.clone());
        Some(p)
    }
}
