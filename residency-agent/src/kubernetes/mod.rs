//! Kubernetes pods as residency workloads: the kubelet's cgroup layout ([`layout`]),
//! what the agent knows of its node's pods and namespaces and which policy each pod
//! gets ([`state`]), and the API watch that keeps it current ([`watch`]).
//!
//! Pods are placed beside the config's own cgroups ([`place`]): the default policy
//! binds the kubelet's pod root, so a pod cgroup has it from the moment it exists;
//! each selected pod's cgroup is bound to its policy as soon as both the pod (from
//! the API) and its cgroup (from the kubelet) are there. Binding goes through the
//! same per-cgroup map update as any cgroup, so a pod moving between policies
//! changes in one atomic step.

pub mod layout;
pub mod lint;
pub mod state;
pub mod watch;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64},
    },
};

pub use layout::{Layout, Qos};
pub use state::{Assignment, ClusterState, PodInfo};
use tokio::sync::Notify;

use crate::{
    config::Config,
    host::{BoundCgroup, CgroupError, Hierarchy, MissingCgroup, id_of},
};

/// The agent's view of its node, shared by the watch (writer), the daemon's rescan
/// and the event sinks (readers).
#[derive(Debug, Default)]
pub struct Node {
    pub state: RwLock<ClusterState>,
    /// Both watches have listed once and none has failed since.
    pub synced: AtomicBool,
    /// Watch failures since start (API unreachable, watch dropped).
    pub watch_errors: AtomicU64,
    /// Woken on every change of the state.
    pub changed: Notify,
    /// Block events of this node's pods by (namespace, policy, audited): a bounded
    /// per-namespace view beside the kernel's exact per-policy counters.
    pub events: Mutex<BTreeMap<(String, String, bool), u64>>,
}

impl Node {
    pub fn new() -> Arc<Node> {
        Arc::new(Node::default())
    }

    /// Counts one block event (or `count` folded repeats) of a pod in `namespace`.
    pub fn count_event(&self, namespace: &str, policy: &str, audit: bool, count: u64) {
        *self
            .events
            .lock()
            .expect("lock")
            .entry((namespace.to_owned(), policy.to_owned(), audit))
            .or_default() += count;
    }
}

/// Appends the pod root (for the default policy) and every selected pod's cgroup to
/// a resolution of the config's own cgroups. A cgroup the config names itself keeps
/// the config's policy.
pub fn place(
    config: &Config,
    hierarchy: &Hierarchy,
    cluster: &ClusterState,
    bound: &mut Vec<BoundCgroup>,
    missing: &mut Vec<MissingCgroup>,
) {
    let k = &config.kubernetes;
    if !k.enabled {
        return;
    }
    let layout = Layout::detect(k, &hierarchy.mount);
    let mut ids: std::collections::HashSet<u64> = bound.iter().map(|b| b.id).collect();
    let mut absent: std::collections::HashSet<std::path::PathBuf> =
        missing.iter().map(|m| m.path.clone()).collect();
    let mut add = |policy: usize, rel: String| {
        let path = hierarchy.mount.join(rel);
        match id_of(&path) {
            Ok(id) if !ids.insert(id) => {}
            Ok(id) => bound.push(BoundCgroup { policy, path, id }),
            Err(CgroupError::Stat { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                if absent.insert(path.clone()) {
                    missing.push(MissingCgroup { policy, path });
                }
            }
            // Not a cgroup (yet): the next rescan tries again.
            Err(_) => {}
        }
    };
    if let Some(default) = &k.default_policy
        && let Some(i) = config.policies.iter().position(|p| &p.name == default)
    {
        add(i, layout.root.clone());
    }
    for pod in placed(config, &layout, cluster) {
        add(pod.policy, pod.cgroup);
    }
}

/// A selected pod and where its policy is bound.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlacedPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Index of its policy in the config.
    #[serde(skip)]
    pub policy: usize,
    /// Its cgroup, relative to the cgroup mount.
    pub cgroup: String,
}

/// Every pod some policy selects whose cgroup's place is known, in uid order.
pub fn placed(config: &Config, layout: &Layout, cluster: &ClusterState) -> Vec<PlacedPod> {
    cluster
        .assign(config)
        .into_iter()
        .filter_map(|a| {
            let pod = &cluster.pods[&a.uid];
            // Before the API server sets the QoS class the cgroup's place is unknown;
            // the pod keeps the default until then.
            let qos = pod.qos?;
            Some(PlacedPod {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                policy: a.policy,
                cgroup: layout.pod_cgroup(qos, &pod.uid),
            })
        })
        .collect()
}
