//! Kubernetes pods' bindings. With `[kubernetes]` the agent binds the pod root to the
//! default policy and each selected pod's cgroup to its policy as pods come; which
//! pods it selected only the running agent knows (from its API watch), so `verify`
//! asks it over the control socket and checks each of those bindings like a
//! configured cgroup's. Without an answer, a binding below the pod root is counted as
//! not checked; one anywhere else is a mismatch all the same.

use std::path::PathBuf;

use super::Report;
use crate::{
    config::Config,
    control::{Request, client},
    host::{BoundCgroup, Hierarchy, id_of},
    kubernetes::{self, ClusterState, Layout},
};

/// Which kernel bindings the config (and the agent's pods) account for.
pub enum Scope {
    /// Exactly the cgroups compared: any other binding is a mismatch.
    Exact,
    /// Those and, unchecked, anything below this pod root (absolute).
    BelowPodRoot(PathBuf),
}

/// Adds the pod root and, when the agent answers, every pod it placed to `bound`;
/// says which other bindings may exist.
pub fn place(
    config: &Config,
    hierarchy: &Hierarchy,
    bound: &mut Vec<BoundCgroup>,
    report: &mut Report,
) -> Scope {
    if !config.kubernetes.enabled {
        return Scope::Exact;
    }
    let mut missing = Vec::new();
    kubernetes::place(
        config,
        hierarchy,
        &ClusterState::default(),
        bound,
        &mut missing,
    );
    let layout = Layout::detect(&config.kubernetes, &hierarchy.mount);
    let status = client::call(&config.agent.control_socket, &Request::Status)
        .ok()
        .filter(|r| r.ok);
    let Some(status) = status else {
        return Scope::BelowPodRoot(hierarchy.mount.join(&layout.root));
    };
    for pod in status.data["pods"].as_array().into_iter().flatten() {
        let text = |k: &str| pod[k].as_str().unwrap_or_default().to_owned();
        let (who, policy, cgroup) = (
            format!("{}/{}", text("namespace"), text("name")),
            text("policy"),
            text("cgroup"),
        );
        let Some(index) = config.policies.iter().position(|p| p.name == policy) else {
            report.mismatches.push(format!(
                "pod {who}: the agent selected it for policy \"{policy}\", which the config does not have"
            ));
            continue;
        };
        let path = hierarchy.mount.join(&cgroup);
        // A pod deleted since the agent answered has no cgroup left to check.
        if let Ok(id) = id_of(&path)
            && !bound.iter().any(|b| b.id == id)
        {
            report.pods += 1;
            bound.push(BoundCgroup {
                policy: index,
                path,
                id,
            });
        }
    }
    Scope::Exact
}
