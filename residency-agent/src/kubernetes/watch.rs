//! The API watch: this node's pods (field selector `spec.nodeName`) and every
//! namespace (for `namespace_selector`), each a kube-runtime `watcher` — a list, then
//! a watch from its resourceVersion, re-listed when the watch expires or drops, with
//! backoff while the API is unreachable — and a full re-list every `resync_seconds`.
//!
//! While the API cannot be reached the state stays as last known (pods keep their
//! policies, new pods have the default), [`Node::synced`] is false and each failure is
//! logged and counted.

use std::{collections::BTreeMap, sync::Arc, sync::atomic::Ordering, time::Duration};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, watcher},
};
use tracing::{info, warn};

use super::{Node, PodInfo, state::namespace_labels};
use crate::config::KubernetesConfig;

/// The node name: `node_name`, else the environment variable `node_name_env`.
pub fn node_name(k: &KubernetesConfig) -> anyhow::Result<String> {
    if let Some(n) = &k.node_name {
        return Ok(n.clone());
    }
    std::env::var(&k.node_name_env)
        .ok()
        .filter(|n| !n.is_empty())
        .with_context(|| {
            format!(
                "[kubernetes] is enabled but the node name is unknown: set node_name, or the \
                 environment variable {} (the downward API's spec.nodeName)",
                k.node_name_env
            )
        })
}

/// A client from `kubeconfig`, else in-cluster, else `$KUBECONFIG` / `~/.kube/config`.
pub async fn client(k: &KubernetesConfig) -> anyhow::Result<Client> {
    let config = match &k.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster service account and no kubeconfig")?,
    };
    let mut config = config;
    // The client's own retries of 503/504 hide an outage for as long as they last (and
    // a re-list restarts them); the watcher's backoff retries, and the agent must see
    // each failure to report it.
    config.default_retry = false;
    Client::try_from(config).context("building the Kubernetes client")
}

/// The watch task: a client (retried every few seconds while it cannot be built,
/// e.g. no kubeconfig yet), then [`run`].
pub async fn start(k: KubernetesConfig, node_name: String, node: Arc<Node>) {
    let client = loop {
        match client(&k).await {
            Ok(c) => break c,
            Err(e) => {
                node.watch_errors.fetch_add(1, Ordering::Relaxed);
                warn!("kubernetes: no API client, enforcing the default policy on pods: {e:#}");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    info!(node = %node_name, "kubernetes: watching this node's pods and the namespaces");
    run(
        client,
        node_name,
        Duration::from_secs(k.resync_seconds),
        node,
    )
    .await;
}

/// Watches pods and namespaces into `node` until the task is dropped.
pub async fn run(client: Client, node_name: String, resync: Duration, node: Arc<Node>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client);
    let pod_config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    loop {
        let mut pod_events = watcher(pods.clone(), pod_config.clone())
            .default_backoff()
            .boxed();
        let mut ns_events = watcher(namespaces.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listed = Listed::default();
        let resync_at = tokio::time::sleep(resync);
        tokio::pin!(resync_at);
        loop {
            tokio::select! {
                Some(e) = pod_events.next() => on_pod(&node, &mut listed, e),
                Some(e) = ns_events.next() => on_namespace(&node, &mut listed, e),
                () = &mut resync_at => break,
            }
        }
        info!("kubernetes: periodic re-list of pods and namespaces");
    }
}

/// Objects of a list in progress (the watcher's `Init` … `InitDone`), swapped in
/// whole when it completes, so a re-list never shows a half-empty state.
#[derive(Default)]
struct Listed {
    pods: Option<BTreeMap<String, PodInfo>>,
    namespaces: Option<BTreeMap<String, BTreeMap<String, String>>>,
    pods_done: bool,
    namespaces_done: bool,
}

fn failed(node: &Node, what: &str, e: &watcher::Error) {
    node.watch_errors.fetch_add(1, Ordering::Relaxed);
    if node.synced.swap(false, Ordering::Relaxed) {
        warn!(
            "kubernetes: watching {what} failed, enforcing what is known (new pods have the default policy): {e}"
        );
    } else {
        warn!("kubernetes: watching {what} still failing: {e}");
    }
}

fn mark_synced(node: &Node, listed: &Listed) {
    if listed.pods_done && listed.namespaces_done && !node.synced.swap(true, Ordering::Relaxed) {
        let n = node.state.read().expect("lock").pods.len();
        info!(pods = n, "kubernetes: pods and namespaces in sync");
    }
}

fn on_pod(node: &Node, listed: &mut Listed, e: Result<watcher::Event<Pod>, watcher::Error>) {
    let event = match e {
        Ok(e) => e,
        Err(e) => return failed(node, "pods", &e),
    };
    {
        let mut state = node.state.write().expect("lock");
        match event {
            watcher::Event::Init => listed.pods = Some(BTreeMap::new()),
            watcher::Event::InitApply(p) => {
                if let (Some(list), Some(p)) = (listed.pods.as_mut(), PodInfo::from_api(&p)) {
                    list.insert(p.uid.clone(), p);
                }
                return;
            }
            watcher::Event::InitDone => {
                state.pods = listed.pods.take().unwrap_or_default();
                listed.pods_done = true;
            }
            watcher::Event::Apply(p) => {
                if let Some(p) = PodInfo::from_api(&p) {
                    state.pods.insert(p.uid.clone(), p);
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(uid) = &p.metadata.uid {
                    state.pods.remove(uid);
                }
            }
        }
    }
    mark_synced(node, listed);
    node.changed.notify_one();
}

fn on_namespace(
    node: &Node,
    listed: &mut Listed,
    e: Result<watcher::Event<Namespace>, watcher::Error>,
) {
    let event = match e {
        Ok(e) => e,
        Err(e) => return failed(node, "namespaces", &e),
    };
    {
        let mut state = node.state.write().expect("lock");
        match event {
            watcher::Event::Init => listed.namespaces = Some(BTreeMap::new()),
            watcher::Event::InitApply(ns) => {
                if let Some(list) = listed.namespaces.as_mut() {
                    let (name, labels) = namespace_labels(&ns);
                    list.insert(name, labels);
                }
                return;
            }
            watcher::Event::InitDone => {
                state.namespaces = listed.namespaces.take().unwrap_or_default();
                listed.namespaces_done = true;
            }
            watcher::Event::Apply(ns) => {
                let (name, labels) = namespace_labels(&ns);
                state.namespaces.insert(name, labels);
            }
            watcher::Event::Delete(ns) => {
                state.namespaces.remove(&namespace_labels(&ns).0);
            }
        }
    }
    mark_synced(node, listed);
    node.changed.notify_one();
}
