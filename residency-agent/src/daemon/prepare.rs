//! A validated config placed on this host, ready to apply: refused when it has no
//! policy, its cgroups resolved (bound ones, and missing ones to watch for).

use anyhow::{Context as _, bail};
use tracing::warn;

use crate::{
    config::Config,
    host::{BoundCgroup, Hierarchy, MissingCgroup, check_cgroups, resolve_cgroups},
    kubernetes::{self, ClusterState},
};

/// A validated config resolved on this host, ready to apply.
pub struct Prepared {
    pub config: Config,
    pub bound: Vec<BoundCgroup>,
    pub missing: Vec<MissingCgroup>,
}

/// What `run`, a reload and `check` all refuse of a config on this host: no policy
/// (applying it would replace enforcement with nothing), a cgroup path outside the
/// hierarchy, one that exists but is not a cgroup, one cgroup bound twice. Returns
/// the configured cgroups resolved: those that exist and those still missing.
pub fn validate_on_host(
    config: &Config,
    hierarchy: &Hierarchy,
) -> anyhow::Result<(Vec<BoundCgroup>, Vec<MissingCgroup>)> {
    if config.policies.is_empty() {
        // `detach` is the one way to remove enforcement.
        bail!(
            "{} has no [[policy]], so there is nothing to enforce \
             (`residency-agent detach` removes enforcement)",
            config.source
        );
    }
    check_cgroups(config, hierarchy)?;
    resolve_cgroups(config, hierarchy).context("a configured cgroup cannot be used")
}

/// `cluster`: the pods known so far, placed beside the config's cgroups (with
/// `[kubernetes]` enabled; see [`kubernetes::place`]).
pub fn prepare(
    config: Config,
    hierarchy: &Hierarchy,
    cluster: &ClusterState,
) -> anyhow::Result<Prepared> {
    let (mut bound, mut missing) = validate_on_host(&config, hierarchy)?;
    kubernetes::place(&config, hierarchy, cluster, &mut bound, &mut missing);
    for m in &missing {
        warn!(
            cgroup = %m.path.display(),
            policy = %config.policies[m.policy].name,
            "cgroup does not exist yet; its policy applies as soon as it appears"
        );
    }
    Ok(Prepared {
        config,
        bound,
        missing,
    })
}
