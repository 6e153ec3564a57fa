//! Placing a config on this host — the one place config cgroup paths become cgroup
//! directories and ids: bound cgroups (they exist: bind them), missing ones (watch for
//! them), and the attach points (the topmost bound cgroups).

use std::path::PathBuf;

use super::cgroup::{CgroupError, Hierarchy, id_of};
use crate::config::{Config, ConfigError};

/// A configured cgroup that cannot be used, located in the config.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{file}:{line}")]
    CgroupAt {
        file: String,
        line: usize,
        #[source]
        source: CgroupError,
    },
    #[error(
        "cgroup {path} is bound by policy \"{first}\" and again by policy \"{second}\"; a cgroup has one policy"
    )]
    BoundTwice {
        path: PathBuf,
        first: String,
        second: String,
    },
}

/// Checks every cgroup path against this host's cgroup v2 hierarchy. Paths outside
/// it are errors; cgroups that do not exist (yet) are returned as notes.
pub fn check_cgroups(config: &Config, hierarchy: &Hierarchy) -> Result<Vec<String>, ConfigError> {
    let mut notes = Vec::new();
    for p in &config.policies {
        for c in &p.cgroups {
            let invalid = |reason: String| ConfigError::Invalid {
                file: config.source.clone(),
                line: c.line,
                column: c.column,
                key: format!("policy \"{}\".cgroups", p.name),
                reason,
            };
            let path = hierarchy
                .resolve(&c.path)
                .map_err(|e| invalid(e.to_string()))?;
            // The kernel program finds a binding for the cgroups below it by climbing
            // their ancestors from the root, at most MAX_CGROUP_DEPTH levels: a deeper
            // binding would judge its own processes but not those of its children.
            let depth = path
                .strip_prefix(&hierarchy.mount)
                .map_or(0, |rel| rel.components().count());
            let max = residency_common::MAX_CGROUP_DEPTH as usize - 1;
            if depth > max {
                return Err(invalid(format!(
                    "{} is {depth} levels below the cgroup root; a policy can bind cgroups down to \
                     level {max} (the kernel program's ancestor walk): bind a higher cgroup",
                    path.display()
                )));
            }
            if let Err(e) = id_of(&path) {
                notes.push(format!("{}:{}: {e}", config.source, c.line));
            }
        }
    }
    Ok(notes)
}

/// A configured cgroup, resolved on this host.
#[derive(Debug, Clone)]
pub struct BoundCgroup {
    pub policy: usize,
    pub path: PathBuf,
    pub id: u64,
}

/// A configured cgroup that does not exist (yet): its policy applies when it appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingCgroup {
    pub policy: usize,
    pub path: PathBuf,
}

/// Resolves every configured cgroup to a path and id on this host; cgroups that do not
/// exist are returned apart, to be watched for.
pub fn resolve_cgroups(
    config: &Config,
    hierarchy: &Hierarchy,
) -> Result<(Vec<BoundCgroup>, Vec<MissingCgroup>), ResolveError> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    let mut by_id = std::collections::HashMap::new();
    for (policy, p) in config.policies.iter().enumerate() {
        for c in &p.cgroups {
            let at = |source| ResolveError::CgroupAt {
                file: config.source.clone(),
                line: c.line,
                source,
            };
            let path = hierarchy.resolve(&c.path).map_err(at)?;
            let id = match id_of(&path) {
                Ok(id) => id,
                Err(CgroupError::Stat { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    missing.push(MissingCgroup { policy, path });
                    continue;
                }
                Err(e) => return Err(at(e)),
            };
            // The same directory written two ways ("x" and "<mount>/x") would bind one
            // cgroup twice, the second silently winning.
            if let Some(other) = by_id.insert(id, policy) {
                return Err(ResolveError::BoundTwice {
                    path,
                    first: config.policies[other].name.clone(),
                    second: p.name.clone(),
                });
            }
            out.push(BoundCgroup { policy, path, id });
        }
    }
    Ok((out, missing))
}

/// The cgroups to attach to: configured cgroups with no configured ancestor. A packet
/// from any cgroup below runs the program once, and the program finds the nearest
/// bound ancestor itself (`find_binding` in the kernel program).
pub fn attach_points(bound: &[BoundCgroup]) -> Vec<&BoundCgroup> {
    // Ancestors looked up in a set: linear in the bound cgroups (times their depth),
    // so thousands of bound siblings cost no more per rescan than they must.
    let paths: std::collections::HashSet<&std::path::Path> =
        bound.iter().map(|b| b.path.as_path()).collect();
    bound
        .iter()
        .filter(|c| !c.path.ancestors().skip(1).any(|a| paths.contains(a)))
        .collect()
}
