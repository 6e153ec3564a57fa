//! `[kubernetes]`: the node agent's link to the cluster — how it learns its node and
//! reaches the API, where the kubelet keeps pod cgroups, the policy every pod has
//! until its own is bound, and the Service ranges an allow must not cover unawares —
//! and a policy's pod selection (`namespaces`, `namespace_selector`, `pod_selector`).

use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use toml::Spanned;

use super::{
    ConfigError,
    entry::parse_prefix,
    locate::Locator,
    selector::{LabelSelector, RawSelector, parse_selector},
};

/// The kubelet's cgroup driver: how pod cgroups are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Whichever of `kubepods.slice` (systemd) and `kubepods` (cgroupfs) exists.
    Auto,
    /// `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice`.
    Systemd,
    /// `kubepods/<qos>/pod<uid>`.
    Cgroupfs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubernetes {
    pub enabled: Option<bool>,
    pub node_name: Option<Spanned<String>>,
    pub node_name_env: Option<Spanned<String>>,
    pub kubeconfig: Option<Spanned<String>>,
    pub default_policy: Option<Spanned<String>>,
    pub cgroup_driver: Option<CgroupDriver>,
    pub kubepods_cgroup: Option<Spanned<String>>,
    #[serde(default)]
    pub service_cidrs: Vec<Spanned<String>>,
    pub resync_seconds: Option<Spanned<u64>>,
}

/// `[kubernetes]`, validated. Absent or `enabled = false`: pod selection selects
/// nothing and the agent talks to no API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub enabled: bool,
    /// The node's name as written; else read from [`KubernetesConfig::node_name_env`].
    pub node_name: Option<String>,
    /// Environment variable holding the node name (the downward API's `spec.nodeName`).
    pub node_name_env: String,
    /// A kubeconfig file; without it the in-cluster service account, then
    /// `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The policy bound to the kubelet's pod root, so every pod cgroup has it from
    /// the moment it exists until its own policy is bound.
    pub default_policy: Option<String>,
    pub cgroup_driver: CgroupDriver,
    /// The kubelet's pod root relative to the cgroup mount, when it is not the
    /// driver's default (`kubepods.slice` or `kubepods`; kubelet `--cgroup-root`).
    pub kubepods_cgroup: Option<String>,
    /// The cluster's Service ranges: traffic to a ClusterIP is judged by the ClusterIP,
    /// so `check` warns when an allow covers one.
    pub service_cidrs: Vec<IpNetwork>,
    /// Seconds between full re-lists of pods and namespaces, besides the watch.
    pub resync_seconds: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node_name: None,
            node_name_env: "NODE_NAME".into(),
            kubeconfig: None,
            default_policy: None,
            cgroup_driver: CgroupDriver::Auto,
            kubepods_cgroup: None,
            service_cidrs: Vec::new(),
            resync_seconds: 300,
        }
    }
}

pub(crate) fn parse_kubernetes(
    at: &Locator<'_>,
    raw: RawKubernetes,
) -> Result<KubernetesConfig, ConfigError> {
    let mut k = KubernetesConfig {
        enabled: raw.enabled.unwrap_or(false),
        cgroup_driver: raw.cgroup_driver.unwrap_or(CgroupDriver::Auto),
        ..KubernetesConfig::default()
    };
    if let Some(n) = raw.node_name {
        if !dns_subdomain(n.get_ref()) {
            return Err(at.error(
                n.span(),
                "kubernetes.node_name",
                &format!("\"{}\" is not a node name (a DNS subdomain)", n.get_ref()),
            ));
        }
        k.node_name = Some(n.into_inner());
    }
    if let Some(e) = raw.node_name_env {
        if e.get_ref().is_empty() || e.get_ref().contains(['=', '\0']) {
            return Err(at.error(
                e.span(),
                "kubernetes.node_name_env",
                "is not an environment variable name",
            ));
        }
        k.node_name_env = e.into_inner();
    }
    if let Some(p) = raw.kubeconfig {
        if !p.get_ref().starts_with('/') {
            return Err(at.error(
                p.span(),
                "kubernetes.kubeconfig",
                "must be an absolute path",
            ));
        }
        k.kubeconfig = Some(PathBuf::from(p.into_inner()));
    }
    if let Some(c) = raw.kubepods_cgroup {
        let path = c.get_ref().trim_matches('/');
        if path.is_empty() || path.split('/').any(|s| s == "..") || path.contains('\0') {
            return Err(at.error(
                c.span(),
                "kubernetes.kubepods_cgroup",
                &format!("\"{}\" is not a usable cgroup path", c.get_ref()),
            ));
        }
        k.kubepods_cgroup = Some(path.to_owned());
    }
    for s in raw.service_cidrs {
        let net = parse_prefix(s.get_ref())
            .map_err(|r| at.error(s.span(), "kubernetes.service_cidrs", &r))?;
        k.service_cidrs.push(net);
    }
    if let Some(r) = raw.resync_seconds {
        if !(10..=86_400).contains(r.get_ref()) {
            return Err(at.error(
                r.span(),
                "kubernetes.resync_seconds",
                "must be between 10 and 86400",
            ));
        }
        k.resync_seconds = *r.get_ref();
    }
    // Checked against the policies' names by the caller, which knows them.
    k.default_policy = raw.default_policy.map(|d| d.into_inner());
    Ok(k)
}

/// A policy's pod selection: a pod is selected when its namespace is listed (or no
/// list is given), its namespace's labels match `namespace_selector` and its own
/// labels match `pod_selector` (each absent one holding for every pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSelection {
    pub namespaces: Option<Vec<String>>,
    pub namespace_selector: Option<LabelSelector>,
    pub pod_selector: Option<LabelSelector>,
    /// Line of the policy's first selection key, for messages.
    pub line: usize,
}

impl PodSelection {
    /// Whether a pod in `namespace` (with `namespace_labels`) and with `labels` is
    /// selected.
    pub fn selects(
        &self,
        namespace: &str,
        namespace_labels: &std::collections::BTreeMap<String, String>,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.iter().any(|n| n == namespace))
            && self
                .namespace_selector
                .as_ref()
                .is_none_or(|s| s.matches(namespace_labels))
            && self.pod_selector.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// Whether some pod can be selected by both.
    pub fn overlaps(&self, other: &PodSelection) -> bool {
        let namespaces = match (&self.namespaces, &other.namespaces) {
            (Some(a), Some(b)) => a.iter().any(|n| b.contains(n)),
            _ => true,
        };
        let either = |a: &Option<LabelSelector>, b: &Option<LabelSelector>| match (a, b) {
            (Some(a), Some(b)) => a.overlaps(b),
            _ => true,
        };
        namespaces
            && either(&self.namespace_selector, &other.namespace_selector)
            && either(&self.pod_selector, &other.pod_selector)
    }
}

/// The selection keys of one `[[policy]]`, or `None` when it has none.
pub(crate) fn parse_pod_selection(
    at: &Locator<'_>,
    key: &str,
    namespaces: Option<Spanned<Vec<Spanned<String>>>>,
    namespace_selector: Option<Spanned<RawSelector>>,
    pod_selector: Option<Spanned<RawSelector>>,
) -> Result<Option<PodSelection>, ConfigError> {
    let first = [
        namespaces.as_ref().map(|n| n.span().start),
        namespace_selector.as_ref().map(|s| s.span().start),
        pod_selector.as_ref().map(|s| s.span().start),
    ]
    .into_iter()
    .flatten()
    .min();
    let Some(first) = first else {
        return Ok(None);
    };
    let namespaces = match namespaces {
        None => None,
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(at.error(
                    list.span(),
                    &format!("{key}.namespaces"),
                    "selects no namespace; leave the key out to select every namespace",
                ));
            }
            let mut out = Vec::new();
            for n in list.into_inner() {
                if !dns_label(n.get_ref()) {
                    return Err(at.error(
                        n.span(),
                        &format!("{key}.namespaces"),
                        &format!("\"{}\" is not a namespace name", n.get_ref()),
                    ));
                }
                out.push(n.into_inner());
            }
            Some(out)
        }
    };
    let namespace_selector = namespace_selector
        .map(|s| parse_selector(at, &format!("{key}.namespace_selector"), s))
        .transpose()?;
    let pod_selector = pod_selector
        .map(|s| parse_selector(at, &format!("{key}.pod_selector"), s))
        .transpose()?;
    Ok(Some(PodSelection {
        namespaces,
        namespace_selector,
        pod_selector,
        line: at.line(first),
    }))
}

/// An RFC 1123 label (namespace names).
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain (node names).
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}
