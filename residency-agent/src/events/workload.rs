//! Who sent it: the workload an event's cgroup belongs to — the systemd unit (the
//! last `.service` or `.scope` of the path, so `journalctl -u payments.service` finds
//! the unit's blocks through `OBJECT_SYSTEMD_UNIT`) and, on a Kubernetes node, the pod
//! (namespace, name, container) that the API watch knows for the cgroup's pod uid.

use std::sync::Arc;

use crate::kubernetes::{Layout, Node};

/// A pod, as events name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
    pub container: Option<String>,
}

/// The workload of one event; empty when the cgroup is unknown or names none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub unit: Option<String>,
    pub pod: Option<PodName>,
}

/// The systemd unit of a cgroup path: its last `.service` or `.scope` component.
pub fn unit_of(path: &str) -> Option<String> {
    path.rsplit('/')
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_owned)
}

/// Names workloads; knows pods when the agent watches a Kubernetes node.
#[derive(Clone, Default)]
pub struct Namer {
    pods: Option<(Arc<Node>, Layout)>,
}

impl Namer {
    /// A namer that also looks pods up in `node`, whose cgroups follow `layout`.
    pub fn with_pods(node: Arc<Node>, layout: Layout) -> Namer {
        Namer {
            pods: Some((node, layout)),
        }
    }

    /// Counts an event of a pod towards its namespace's
    /// `residency_kubernetes_events_total`.
    pub fn count(&self, event: &super::model::BlockEvent) {
        if let (Some((node, _)), Some(pod)) = (&self.pods, &event.workload.pod) {
            node.count_event(&pod.namespace, &event.policy, event.audit, 1);
        }
    }

    pub fn name(&self, cgroup: Option<&str>) -> Workload {
        let Some(path) = cgroup else {
            return Workload::default();
        };
        let pod = self.pods.as_ref().and_then(|(node, layout)| {
            let (uid, container_id) = layout.workload_of(path)?;
            let state = node.state.read().expect("lock");
            let pod = state.pods.get(&uid)?;
            Some(PodName {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                container: container_id.and_then(|id| pod.containers.get(&id).cloned()),
            })
        });
        Workload {
            unit: unit_of(path),
            pod,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kubernetes::{PodInfo, Qos};

    #[test]
    fn units_and_pods_are_named() {
        assert_eq!(
            unit_of("/sys/fs/cgroup/system.slice/payments.service").as_deref(),
            Some("payments.service")
        );
        assert_eq!(unit_of("/sys/fs/cgroup/user.slice"), None);
        let node = Node::new();
        let uid = "0d3f8a2e-7b1c-4e5f-9a6b-1c2d3e4f5a6b";
        let cid = "ab".repeat(32);
        node.state.write().unwrap().pods.insert(
            uid.into(),
            PodInfo {
                namespace: "payments".into(),
                name: "api-0".into(),
                uid: uid.into(),
                qos: Some(Qos::Burstable),
                labels: BTreeMap::new(),
                containers: BTreeMap::from([(cid.clone(), "app".to_owned())]),
            },
        );
        let layout = Layout {
            root: "kubepods.slice".into(),
            systemd: true,
        };
        let path = format!(
            "/sys/fs/cgroup/{}/cri-containerd-{cid}.scope",
            layout.pod_cgroup(Qos::Burstable, uid)
        );
        let w = Namer::with_pods(node, layout).name(Some(&path));
        assert_eq!(
            w.pod,
            Some(PodName {
                namespace: "payments".into(),
                name: "api-0".into(),
                container: Some("app".into())
            })
        );
        assert_eq!(w.unit, Some(format!("cri-containerd-{cid}.scope")));
        assert_eq!(Namer::default().name(None), Workload::default());
    }
}
