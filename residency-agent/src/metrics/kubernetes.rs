//! The Kubernetes metrics of a node agent: whether the API watch is in sync, its
//! failures, the node's pods by policy and namespace, and block events by namespace
//! (labels bounded by the config's policies and the node's namespaces).

use std::{collections::BTreeMap, sync::atomic::Ordering};

use prometheus_client::encoding::DescriptorEncoder;

use super::family::{counter, gauge};
use crate::{kubernetes::Node, policy::Versioned};

/// The API watch's health and how many of this node's pods each policy holds.
pub(super) fn encode(enc: &mut DescriptorEncoder, node: &Node, v: &Versioned) -> std::fmt::Result {
    gauge(
        enc,
        "residency_kubernetes_synced",
        "1 when the pod and namespace watches are in sync with the API server; 0 while it is unreachable (known pods keep their policies, new pods have the default policy).",
        &[(vec![], i64::from(node.synced.load(Ordering::Relaxed)))],
    )?;
    counter(
        enc,
        "residency_kubernetes_watch_errors",
        "Failures of the Kubernetes API watch (unreachable, dropped, refused).",
        &[(vec![], node.watch_errors.load(Ordering::Relaxed))],
    )?;
    let state = node.state.read().expect("lock");
    let assigned = state.assign(&v.config);
    // Pods by (policy, namespace); policy "" for the pods no policy selects. Both
    // label sets are bounded by the config and the node's namespaces.
    let mut pods: BTreeMap<(String, String), i64> = BTreeMap::new();
    for pod in state.pods.values() {
        let policy = assigned
            .iter()
            .find(|a| a.uid == pod.uid)
            .map_or(String::new(), |a| v.config.policies[a.policy].name.clone());
        *pods.entry((policy, pod.namespace.clone())).or_default() += 1;
    }
    // A policy (or the default) that holds no pod still shows, at 0.
    let names = v
        .config
        .policies
        .iter()
        .filter(|p| p.pods.is_some())
        .map(|p| p.name.clone());
    for policy in names.chain([String::new()]) {
        if !pods.keys().any(|(p, _)| *p == policy) {
            pods.insert((policy, String::new()), 0);
        }
    }
    let rows: Vec<_> = pods
        .into_iter()
        .map(|((policy, namespace), n)| (vec![("policy", policy), ("namespace", namespace)], n))
        .collect();
    gauge(
        enc,
        "residency_kubernetes_pods",
        "Pods on this node by namespace and the policy that selects them; policy=\"\" counts the pods no policy selects (they have the default policy).",
        &rows,
    )?;
    drop(state);
    let events: Vec<_> = node
        .events
        .lock()
        .expect("lock")
        .iter()
        .map(|((namespace, policy, audit), n)| {
            let verdict = if *audit { "audited" } else { "blocked" };
            (
                vec![
                    ("namespace", namespace.clone()),
                    ("policy", policy.clone()),
                    ("verdict", verdict.to_owned()),
                ],
                *n,
            )
        })
        .collect();
    counter(
        enc,
        "residency_kubernetes_events",
        "Block events of this node's pods by namespace, as the agent received them (before aggregation). Events the kernel's rate limit dropped are not here (residency_events_lost_total counts them); residency_packets_total has the exact counts per policy.",
        &events,
    )
}
