//! Where the kubelet keeps pod cgroups, for both cgroup drivers (the kubelet's
//! `pkg/kubelet/cm/cgroup_manager_linux.go` and `qos_container_manager_linux.go`):
//!
//! | QoS class | systemd driver | cgroupfs driver |
//! | --- | --- | --- |
//! | Guaranteed | `kubepods.slice/kubepods-pod<uid>.slice` | `kubepods/pod<uid>` |
//! | Burstable | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice` | `kubepods/burstable/pod<uid>` |
//! | BestEffort | `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice` | `kubepods/besteffort/pod<uid>` |
//!
//! Under systemd a slice's name repeats its parent's (`a-b.slice` lives in
//! `a.slice`), and the uid's dashes become underscores. A kubelet `--cgroup-root`
//! moves the root (`kubepods_cgroup`); the names below it follow the same rule.
//! Container cgroups sit below the pod's (`cri-containerd-<id>.scope`, `crio-<id>.scope`,
//! `docker-<id>.scope`, or `<id>` with cgroupfs).

use std::path::Path;

use crate::config::{CgroupDriver, KubernetesConfig};

/// A pod's QoS class (`status.qosClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    /// From `status.qosClass`; `None` before the API server has set it.
    pub fn from_api(class: &str) -> Option<Qos> {
        match class {
            "Guaranteed" => Some(Qos::Guaranteed),
            "Burstable" => Some(Qos::Burstable),
            "BestEffort" => Some(Qos::BestEffort),
            _ => None,
        }
    }

    fn dir(self) -> Option<&'static str> {
        match self {
            Qos::Guaranteed => None,
            Qos::Burstable => Some("burstable"),
            Qos::BestEffort => Some("besteffort"),
        }
    }
}

/// The kubelet's pod cgroup layout on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The pod root relative to the cgroup mount (`kubepods.slice`, `kubepods`).
    pub root: String,
    pub systemd: bool,
}

impl Layout {
    /// The layout the config names, or for `auto` whichever root exists under
    /// `mount` (systemd's when neither does yet: the kubelet default since 1.22).
    pub fn detect(k: &KubernetesConfig, mount: &Path) -> Layout {
        let systemd = match k.cgroup_driver {
            CgroupDriver::Systemd => true,
            CgroupDriver::Cgroupfs => false,
            CgroupDriver::Auto => match &k.kubepods_cgroup {
                Some(root) => root.ends_with(".slice"),
                None => mount.join("kubepods.slice").is_dir() || !mount.join("kubepods").is_dir(),
            },
        };
        let root = k.kubepods_cgroup.clone().unwrap_or_else(|| {
            if systemd {
                "kubepods.slice"
            } else {
                "kubepods"
            }
            .to_owned()
        });
        Layout { root, systemd }
    }

    /// The pod's cgroup, relative to the cgroup mount.
    pub fn pod_cgroup(&self, qos: Qos, uid: &str) -> String {
        if !self.systemd {
            return match qos.dir() {
                Some(q) => format!("{}/{q}/pod{uid}", self.root),
                None => format!("{}/pod{uid}", self.root),
            };
        }
        let stem = slice_stem(&self.root);
        let uid = uid.replace('-', "_");
        match qos.dir() {
            Some(q) => format!("{0}/{stem}-{q}.slice/{stem}-{q}-pod{uid}.slice", self.root),
            None => format!("{}/{stem}-pod{uid}.slice", self.root),
        }
    }

    /// The pod uid and container id of a cgroup path at or below a pod's cgroup
    /// (relative to the mount or absolute), for naming the workload in events.
    pub fn workload_of(&self, path: &str) -> Option<(String, Option<String>)> {
        let mut parts = path.split('/').skip_while(|p| !is_pod_dir(p, self.systemd));
        let pod = parts.next()?;
        let uid = pod_uid(pod, self.systemd)?;
        let container = parts.next().and_then(container_id);
        Some((uid, container))
    }
}

/// `kubepods` of `kubepods.slice`; the last component of a nested root.
fn slice_stem(root: &str) -> &str {
    let last = root.rsplit('/').next().unwrap_or(root);
    last.strip_suffix(".slice").unwrap_or(last)
}

fn is_pod_dir(name: &str, systemd: bool) -> bool {
    pod_uid(name, systemd).is_some()
}

/// The uid in `…-pod<uid_with_underscores>.slice` or `pod<uid>`.
fn pod_uid(name: &str, systemd: bool) -> Option<String> {
    let uid = if systemd {
        let inner = name.strip_suffix(".slice")?;
        let at = inner.rfind("-pod")?;
        inner[at + 4..].replace('_', "-")
    } else {
        name.strip_prefix("pod")?.to_owned()
    };
    (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

/// The container id of a container cgroup's directory name.
fn container_id(name: &str) -> Option<String> {
    let id = name
        .strip_suffix(".scope")
        .map_or(name, |n| n.rsplit_once('-').map_or(n, |(_, id)| id));
    (id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0d3f8a2e-7b1c-4e5f-9a6b-1c2d3e4f5a6b";

    fn layout(systemd: bool, root: &str) -> Layout {
        Layout {
            root: root.into(),
            systemd,
        }
    }

    #[test]
    fn pod_cgroups_follow_the_kubelet_for_both_drivers() {
        let s = layout(true, "kubepods.slice");
        assert_eq!(
            s.pod_cgroup(Qos::Guaranteed, UID),
            "kubepods.slice/kubepods-pod0d3f8a2e_7b1c_4e5f_9a6b_1c2d3e4f5a6b.slice"
        );
        assert_eq!(
            s.pod_cgroup(Qos::Burstable, UID),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d3f8a2e_7b1c_4e5f_9a6b_1c2d3e4f5a6b.slice"
        );
        assert_eq!(
            s.pod_cgroup(Qos::BestEffort, UID),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d3f8a2e_7b1c_4e5f_9a6b_1c2d3e4f5a6b.slice"
        );
        let c = layout(false, "kubepods");
        assert_eq!(
            c.pod_cgroup(Qos::Guaranteed, UID),
            format!("kubepods/pod{UID}")
        );
        assert_eq!(
            c.pod_cgroup(Qos::Burstable, UID),
            format!("kubepods/burstable/pod{UID}")
        );
        assert_eq!(
            c.pod_cgroup(Qos::BestEffort, UID),
            format!("kubepods/besteffort/pod{UID}")
        );
        // A moved root (kubelet --cgroup-root) keeps the naming rule.
        let nested = layout(true, "t/kubelet.slice/kubelet-kubepods.slice");
        assert_eq!(
            nested.pod_cgroup(Qos::Burstable, UID),
            "t/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod0d3f8a2e_7b1c_4e5f_9a6b_1c2d3e4f5a6b.slice"
        );
    }

    #[test]
    fn workloads_are_found_from_container_paths() {
        let s = layout(true, "kubepods.slice");
        let cid = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
        let path = format!(
            "/sys/fs/cgroup/{}/cri-containerd-{cid}.scope",
            s.pod_cgroup(Qos::Burstable, UID)
        );
        assert_eq!(
            s.workload_of(&path),
            Some((UID.to_owned(), Some(cid.to_owned())))
        );
        let pod_only = s.pod_cgroup(Qos::Guaranteed, UID);
        assert_eq!(s.workload_of(&pod_only), Some((UID.to_owned(), None)));
        assert_eq!(s.workload_of("system.slice/payments.service"), None);
        let c = layout(false, "kubepods");
        let path = format!("{}/{cid}", c.pod_cgroup(Qos::BestEffort, UID));
        assert_eq!(
            c.workload_of(&path),
            Some((UID.to_owned(), Some(cid.to_owned())))
        );
    }

    #[test]
    fn auto_detection_prefers_the_root_that_exists() {
        let dir = std::env::temp_dir().join(format!("residency-layout-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kubepods")).unwrap();
        let k = KubernetesConfig::default();
        assert_eq!(Layout::detect(&k, &dir), layout(false, "kubepods"));
        std::fs::create_dir_all(dir.join("kubepods.slice")).unwrap();
        assert_eq!(Layout::detect(&k, &dir), layout(true, "kubepods.slice"));
        std::fs::remove_dir_all(&dir).unwrap();
        let k = KubernetesConfig {
            kubepods_cgroup: Some("x/kubepods".into()),
            ..KubernetesConfig::default()
        };
        assert_eq!(
            Layout::detect(&k, Path::new("/nonexistent")),
            layout(false, "x/kubepods")
        );
    }
}
