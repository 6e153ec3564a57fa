//! Cgroup paths for the ids in events: configured cgroups are known up front, others
//! (children of configured cgroups) are looked up by id and cached.
//!
//! Events name a cgroup by its path from the hierarchy root, as `/proc/<pid>/cgroup`
//! and systemd do (`/system.slice/payments.service`), not by where the agent sees it
//! mounted: one workload then has one name on unified hosts (`/sys/fs/cgroup`), hybrid
//! ones (`/sys/fs/cgroup/unified`) and in the agent's container.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

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
            .map(|(id, p)| (id, from_root(&hierarchy.mount, &p)))
            .collect();
        Self { hierarchy, known }
    }

    /// The path of cgroup `id`, or `None` when it no longer exists.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.known.get(&id) {
            return Some(p.clone());
        }
        let p = crate::sys::handle::cgroup_path(&self.hierarchy.mount, id)?;
        let p = from_root(&self.hierarchy.mount, Path::new(&p));
        if self.known.len() >= PATH_CACHE_MAX {
            self.known.clear();
        }
        self.known.insert(id, p.clone());
        Some(p)
    }
}

/// `path` (under `mount`) as a path from the hierarchy root: `/` for the root itself.
/// A path outside the mount, which a cgroup id never resolves to, is kept as it is.
fn from_root(mount: &Path, path: &Path) -> String {
    match path.strip_prefix(mount) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::from_root;
    use std::path::Path;

    #[test]
    fn paths_are_relative_to_the_hierarchy_root() {
        let unified = Path::new("/sys/fs/cgroup");
        let hybrid = Path::new("/sys/fs/cgroup/unified");
        let svc = "system.slice/payments.service";
        assert_eq!(
            from_root(unified, &unified.join(svc)),
            "/system.slice/payments.service"
        );
        assert_eq!(
            from_root(hybrid, &hybrid.join(svc)),
            from_root(unified, &unified.join(svc))
        );
        assert_eq!(from_root(unified, unified), "/");
    }
}
