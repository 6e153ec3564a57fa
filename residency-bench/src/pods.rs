//! Section 5: pods. How long a new pod's cgroup runs under the default policy before
//! its own policy is bound, on a node whose agent watches a Kubernetes API stand-in
//! (`residency_tests::kube_api`, the list/watch wire format) and whose pod cgroups are
//! laid out as the kubelet's systemd driver lays them.
//!
//! The clock starts just before the pod's cgroup is created (`mkdir`, as the kubelet
//! does) and stops when the agent's binding of that cgroup is in the kernel's
//! bindings map (read from the pinned map every 0.2 ms): from then on every packet of
//! the pod is judged by its own policy. Before it, the pod has the default policy
//! (bound to the pod root), never nothing. Two orders:
//!
//! - **API first**: the API reports the pod 100 ms before the kubelet creates its
//!   cgroup (the usual order: the scheduler binds the pod, the kubelet then sets it
//!   up); the agent finds the cgroup through inotify.
//! - **together**: the cgroup appears and the API reports the pod at the same moment;
//!   the agent binds when the watch event arrives.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::maps::{HashMap, Map, MapData};
use residency_common::{Binding, BindingKey, maps::BINDINGS};
use residency_tests::kube_api::{KubeApi, namespace, pod};

use crate::{agent::Agent, sandbox::Bench, stats};

/// Pods created per order.
pub const PODS: usize = 40;
const NODE: &str = "bench-node";

pub struct Order {
    pub name: &'static str,
    /// Creation to binding, ms, one per pod.
    pub ms: Vec<f64>,
}

pub struct Result {
    pub orders: Vec<Order>,
}

pub fn run(sb: &mut Bench, bin: &Path) -> anyhow::Result<Result> {
    eprintln!("bench: pods, {PODS} pods per order");
    let api = KubeApi::start();
    let kubeconfig = api.kubeconfig(&sb.dir);
    // The pod root as the config names it (from the cgroup2 mount), and the QoS slice
    // as the sandbox makes it (from the sandbox's own cgroup).
    let root = format!("{}/kubepods.slice", sb.tag);
    let qos_rel = "kubepods.slice/kubepods-burstable.slice";
    sb.cgroup(qos_rel)?;
    api.put_namespace(&namespace("payments", &[]));
    let dir = sb.dir.clone();
    let agent = Agent::start_with(bin, &dir, "pods", |pins, metrics| {
        format!(
            "[agent]\npin_path = \"{}\"\ncontrol_socket = \"{}\"\nmetrics_address = \"{metrics}\"\n\
             [events]\nsinks = [\"json\"]\n\
             [kubernetes]\nenabled = true\nnode_name = \"{NODE}\"\nkubeconfig = \"{}\"\n\
             cgroup_driver = \"systemd\"\nkubepods_cgroup = \"{root}\"\ndefault_policy = \"cluster-default\"\n\
             [[policy]]\nname = \"payments\"\nnamespaces = [\"payments\"]\nallow = [\"198.18.0.0/24\"]\n\
             [[policy]]\nname = \"cluster-default\"\nallow = [\"198.19.0.0/24\"]\n",
            pins.display(),
            dir.join("pods.sock").display(),
            kubeconfig.display(),
        )
    })?;
    wait_synced(&agent)?;
    let pins = dir.join("pins-pods");
    let map = MapData::from_pin(residency_agent::kernel::pins::maps_dir(&pins).join(BINDINGS))
        .context("opening the pinned bindings map")?;
    let bindings: HashMap<MapData, BindingKey, Binding> = HashMap::try_from(Map::HashMap(map))?;
    let bound = |id: u64| {
        (0..2).any(|slot| {
            let key = BindingKey {
                cgroup_id: id,
                slot,
                _pad: 0,
            };
            bindings.get(&key, 0).is_ok()
        })
    };
    let mut orders = Vec::new();
    for (o, name) in ["API first", "together"].into_iter().enumerate() {
        let mut ms = Vec::new();
        for i in 0..PODS {
            let uid = format!("00000000-0000-4000-8000-{o:02}{i:010}");
            let container = format!("{o:02}{i:062}");
            let p = pod(
                NODE,
                "payments",
                &format!("api-{o}-{i}"),
                &uid,
                "Burstable",
                &[],
                &container,
            );
            if o == 0 {
                api.put_pod(&p);
                std::thread::sleep(Duration::from_millis(100));
            }
            let pod_rel = format!(
                "{qos_rel}/kubepods-burstable-pod{}.slice",
                uid.replace('-', "_")
            );
            let start = Instant::now();
            let pod_dir = sb.cgroup(&pod_rel)?;
            sb.cgroup(&format!("{pod_rel}/cri-containerd-{container}.scope"))?;
            if o == 1 {
                api.put_pod(&p);
            }
            let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&pod_dir)?);
            while !bound(id) {
                if start.elapsed() > Duration::from_secs(10) {
                    let log = std::fs::read_to_string(dir.join("pods.log")).unwrap_or_default();
                    bail!(
                        "pod {uid} ({name}) was not bound to its policy within 10 s; the agent's log:\n{log}"
                    );
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        eprintln!(
            "bench: pods, {name}: median {:.1} ms, max {:.1} ms",
            stats::median(&ms),
            ms.iter().cloned().fold(0.0, f64::max)
        );
        orders.push(Order { name, ms });
    }
    agent.stop()?;
    Ok(Result { orders })
}

fn wait_synced(agent: &Agent) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let body = agent.scrape()?;
        if residency_tests::sample(&body, "residency_kubernetes_synced") == Some(1.0) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the agent did not sync with the API stand-in within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
