//! What the agent knows of the cluster: this node's pods and every namespace's labels,
//! as the watch keeps them, and which policy each pod gets ([`ClusterState::assign`]):
//! the first policy in config order that selects it. A pod no policy selects, or
//! whose QoS class is not known yet, keeps the default policy its cgroup inherits
//! from the pod root.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};

use super::layout::Qos;
use crate::config::Config;

/// A pod on this node, as far as residency needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub qos: Option<Qos>,
    pub labels: BTreeMap<String, String>,
    /// Container id (without the runtime's `containerd://` prefix) → container name.
    pub containers: BTreeMap<String, String>,
}

impl PodInfo {
    /// From the API object; `None` without a uid (never the case for a stored pod).
    pub fn from_api(pod: &Pod) -> Option<PodInfo> {
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let mut containers = BTreeMap::new();
        for c in status.into_iter().flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        }) {
            if let Some(id) = &c.container_id {
                let id = id.split_once("://").map_or(id.as_str(), |(_, id)| id);
                containers.insert(id.to_owned(), c.name.clone());
            }
        }
        Some(PodInfo {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone()?,
            qos: status
                .and_then(|s| s.qos_class.as_deref())
                .and_then(Qos::from_api),
            labels: meta.labels.clone().unwrap_or_default(),
            containers,
        })
    }
}

/// The labels of a namespace object.
pub fn namespace_labels(ns: &Namespace) -> (String, BTreeMap<String, String>) {
    (
        ns.metadata.name.clone().unwrap_or_default(),
        ns.metadata.labels.clone().unwrap_or_default(),
    )
}

/// This node's pods by uid and the namespaces' labels by name.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub pods: BTreeMap<String, PodInfo>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

/// A pod's policy: the index of the first policy that selects it, and any later
/// ones that select it too (reported: only the first applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub uid: String,
    pub policy: usize,
    pub also: Vec<usize>,
}

impl ClusterState {
    /// The policy of every pod some policy selects, in uid order.
    pub fn assign(&self, config: &Config) -> Vec<Assignment> {
        let empty = BTreeMap::new();
        self.pods
            .values()
            .filter_map(|pod| {
                let ns_labels = self.namespaces.get(&pod.namespace).unwrap_or(&empty);
                let mut selecting = config.policies.iter().enumerate().filter(|(_, p)| {
                    p.pods
                        .as_ref()
                        .is_some_and(|s| s.selects(&pod.namespace, ns_labels, &pod.labels))
                });
                let (policy, _) = selecting.next()?;
                Some(Assignment {
                    uid: pod.uid.clone(),
                    policy,
                    also: selecting.map(|(i, _)| i).collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, uid: &str, labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
            qos: Some(Qos::Burstable),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            containers: BTreeMap::new(),
        }
    }

    #[test]
    fn the_first_selecting_policy_wins_and_the_others_are_reported() {
        let config = Config::parse(
            "[[policy]]\nname = \"api\"\nnamespaces = [\"pay\"]\npod_selector = { match_labels = { app = \"api\" } }\n\
             [[policy]]\nname = \"pay\"\nnamespaces = [\"pay\"]\n\
             [[policy]]\nname = \"eu\"\nnamespace_selector = { match_labels = { region = \"eu\" } }\n\
             [[policy]]\nname = \"host\"\ncgroups = [\"system.slice\"]\n",
            "t.toml",
        )
        .unwrap();
        let mut state = ClusterState::default();
        state
            .pods
            .insert("1".into(), pod("pay", "a", "1", &[("app", "api")]));
        state
            .pods
            .insert("2".into(), pod("pay", "b", "2", &[("app", "db")]));
        state.pods.insert("3".into(), pod("web", "c", "3", &[]));
        state.pods.insert("4".into(), pod("other", "d", "4", &[]));
        state.namespaces.insert(
            "web".into(),
            [("region".to_owned(), "eu".to_owned())].into(),
        );
        state.namespaces.insert(
            "pay".into(),
            [("region".to_owned(), "eu".to_owned())].into(),
        );
        let a = state.assign(&config);
        assert_eq!(
            a,
            vec![
                Assignment {
                    uid: "1".into(),
                    policy: 0,
                    also: vec![1, 2]
                },
                Assignment {
                    uid: "2".into(),
                    policy: 1,
                    also: vec![2]
                },
                Assignment {
                    uid: "3".into(),
                    policy: 2,
                    also: vec![]
                },
            ],
            "pod 4 is selected by none and keeps the default"
        );
        // Relabelling the namespace moves its pods.
        state.namespaces.insert("web".into(), BTreeMap::new());
        assert!(state.assign(&config).iter().all(|a| a.uid != "3"));
    }
}
