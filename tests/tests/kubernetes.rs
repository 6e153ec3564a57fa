//! Kubernetes pods as workloads, end to end: cgroups laid out exactly as the kubelet
//! lays them (systemd and cgroupfs drivers), a stand-in API server speaking the
//! list/watch wire format (`residency_tests::kube_api`), the real agent with `[kubernetes]`
//! enabled, and real traffic from inside the pods' container cgroups.
//!
//! Checked: selected pods are held to their policy, pods no policy selects and pods
//! the API has not told of yet are held to the default policy from the moment their
//! cgroup exists, relabelling a pod or its namespace moves it, a deleted pod falls
//! back to the default, and with the API down enforcement holds, new pods get the
//! default and `residency_kubernetes_synced` says 0.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use residency_tests::{
    Sandbox, agent_binary, http_get,
    kube_api::{self, KubeApi, namespace},
    require_root, sample,
};

/// Allowed by the `payments-eu` and `eu-namespaces` policies only.
const EU: &str = "198.51.100.7";
/// Allowed by the default policy only.
const CLUSTER: &str = "203.0.113.9";
const NODE: &str = "node-1";

/// A pod on this test's node.
fn pod(
    ns: &str,
    name: &str,
    uid: &str,
    qos: &str,
    pod_labels: &[(&str, &str)],
    container: &str,
) -> Pod {
    kube_api::pod(NODE, ns, name, uid, qos, pod_labels, container)
}

fn config(sb: &Sandbox, kubeconfig: &Path, root: &str, driver: &str) -> PathBuf {
    sb.write_config(
        "residency.toml",
        &format!(
            r#"
[agent]
pin_path = "{{pins}}"
metrics_address = "{{metrics}}"

[events]
sinks = ["text"]

[kubernetes]
enabled = true
node_name = "{NODE}"
kubeconfig = "{}"
cgroup_driver = "{driver}"
kubepods_cgroup = "{}/{root}"
default_policy = "cluster-default"
resync_seconds = 10

[[policy]]
name = "payments-eu"
namespaces = ["payments"]
pod_selector = {{ match_labels = {{ app = "api" }} }}
allow = ["198.51.100.0/24"]

[[policy]]
name = "eu-namespaces"
namespace_selector = {{ matchLabels = {{ "residency.example/region" = "eu" }} }}
allow = ["198.51.100.0/24"]

[[policy]]
name = "cluster-default"
allow = ["203.0.113.0/24"]
"#,
            kubeconfig.display(),
            sb.name
        ),
    )
}

/// Polls until a TCP echo from `cgroup` to EU and to CLUSTER gives `(eu, cluster)`;
/// the time it took.
fn held_to(sb: &Sandbox, cgroup: &Path, eu: bool, cluster: bool, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = (
            sb.client(Some(cgroup), "tcp", EU).ok,
            sb.client(Some(cgroup), "tcp", CLUSTER).ok,
        );
        if got == (eu, cluster) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: from {} expected EU {eu} / cluster {cluster}, got {got:?}",
            cgroup.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const PAYMENTS: (bool, bool) = (true, false);
const DEFAULT: (bool, bool) = (false, true);

fn metric(sb: &Sandbox, series: &str) -> Option<f64> {
    let (_, body) = http_get(sb.metrics, "/metrics").ok()?;
    sample(&body, series)
}

fn wait_metric(sb: &mut Sandbox, series: &str, want: f64) {
    let start = Instant::now();
    while metric(sb, series) != Some(want) {
        if start.elapsed() > Duration::from_secs(30) {
            let log = sb.agent().stderr();
            panic!(
                "{series} did not become {want} (now {:?}); the agent's log:\n{}",
                metric(sb, series),
                log.iter()
                    .filter(|l| !l.contains("failed with status"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One pod's cgroups as the kubelet makes them: the pod's, then its container's.
fn make_pod_cgroup(sb: &mut Sandbox, pod_dir: &str, container_dir: &str) -> PathBuf {
    sb.cgroup(&format!("{pod_dir}/{container_dir}")).unwrap()
}

/// [`make_pod_cgroup`] with the systemd driver's names, written out here rather than
/// taken from the agent: the slice of pod `uid` in `parent` repeats the parent's name
/// (`kubepods-burstable.slice` → `kubepods-burstable-pod<uid_>.slice`), and the
/// container's is containerd's scope.
fn make_systemd_pod(sb: &mut Sandbox, parent: &str, uid: &str, container: &str) -> PathBuf {
    let stem = parent
        .rsplit('/')
        .next()
        .and_then(|p| p.strip_suffix(".slice"))
        .expect("a slice");
    let pod_dir = format!("{parent}/{stem}-pod{}.slice", uid.replace('-', "_"));
    make_pod_cgroup(sb, &pod_dir, &format!("cri-containerd-{container}.scope"))
}

#[test]
fn pods_are_held_to_the_policy_their_labels_select_systemd_driver() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let api = KubeApi::start();
    let mut sb = Sandbox::new(&[EU, CLUSTER]).unwrap();
    let kc = api.kubeconfig(&sb.dir);
    // What the kubelet has before any pod: the root and the QoS slices.
    let root = "kubepods.slice";
    let burstable = format!("{root}/kubepods-burstable.slice");
    let besteffort = format!("{root}/kubepods-besteffort.slice");
    sb.cgroup(&burstable).unwrap();
    sb.cgroup(&besteffort).unwrap();
    api.put_namespace(&namespace("payments", &[]));
    api.put_namespace(&namespace("web", &[]));
    let cfg = config(&sb, &kc, root, "systemd");
    sb.start_agent(&bin, &cfg).unwrap();
    wait_metric(&mut sb, "residency_kubernetes_synced", 1.0);

    // A Burstable pod the API knows before its cgroup exists: its policy from the
    // start (or the default for the moments before it is bound, never nothing).
    let uid_a = "1a2b3c4d-0000-4000-8000-00000000000a";
    let cid_a = "aa".repeat(32);
    api.put_pod(&pod(
        "payments",
        "api-0",
        uid_a,
        "Burstable",
        &[("app", "api")],
        &cid_a,
    ));
    let a = make_systemd_pod(&mut sb, &burstable, uid_a, &cid_a);
    let took = held_to(&sb, &a, PAYMENTS.0, PAYMENTS.1, "selected pod");
    eprintln!("pod cgroup created -> its own policy enforced: {took:?}");
    // The block names the pod, its container and the container's unit.
    let line = sb.agent().wait_event(&[
        &format!("dst={CLUSTER}"),
        "k8s_namespace=payments k8s_pod=api-0 k8s_container=app",
        &format!("unit=cri-containerd-{cid_a}.scope"),
    ]);
    assert!(
        line.is_some(),
        "no event naming the pod: {:#?}",
        sb.agent().events()
    );
    // And counts towards its namespace in the metrics.
    let blocked = metric(
        &sb,
        "residency_kubernetes_events_total{namespace=\"payments\",policy=\"payments-eu\",verdict=\"blocked\"}",
    );
    assert!(blocked.is_some_and(|n| n >= 1.0), "{blocked:?}");
    // Every residency_kubernetes_* series the alert rules and the dashboard use is exported, and the
    // exposition with its namespace labels passes Prometheus' linter.
    let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rules = std::fs::read_to_string(deploy.join("prometheus/residency-alerts.yml")).unwrap()
        + &std::fs::read_to_string(deploy.join("grafana/residency-dashboard.json")).unwrap();
    for name in rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("residency_kubernetes_"))
    {
        assert!(
            body.contains(&format!("\n{name}")),
            "{name} is not exported:\n{body}"
        );
    }
    residency_tests::assert_promtool_accepts(&body);

    // A pod in the same namespace that the pod selector does not match: the default.
    let uid_b = "1a2b3c4d-0000-4000-8000-00000000000b";
    let cid_b = "bb".repeat(32);
    api.put_pod(&pod(
        "payments",
        "web-0",
        uid_b,
        "BestEffort",
        &[("app", "web")],
        &cid_b,
    ));
    let b = make_systemd_pod(&mut sb, &besteffort, uid_b, &cid_b);
    held_to(&sb, &b, DEFAULT.0, DEFAULT.1, "unselected pod");

    // A pod cgroup the API has not told of: judged by the default at once.
    let c = make_systemd_pod(
        &mut sb,
        &burstable,
        "1a2b3c4d-0000-4000-8000-00000000000c",
        &"cc".repeat(32),
    );
    assert!(
        !sb.client(Some(&c), "tcp", EU).ok,
        "a pod unknown to the agent left unjudged"
    );
    assert!(sb.client(Some(&c), "tcp", CLUSTER).ok);

    // Relabelling moves a pod between policies.
    api.put_pod(&pod(
        "payments",
        "web-0",
        uid_b,
        "BestEffort",
        &[("app", "api")],
        &cid_b,
    ));
    held_to(&sb, &b, PAYMENTS.0, PAYMENTS.1, "relabelled pod");
    api.put_pod(&pod(
        "payments",
        "web-0",
        uid_b,
        "BestEffort",
        &[("app", "web")],
        &cid_b,
    ));
    held_to(&sb, &b, DEFAULT.0, DEFAULT.1, "pod relabelled back");

    // A namespace label selects every pod in it.
    let uid_e = "1a2b3c4d-0000-4000-8000-00000000000e";
    let cid_e = "ee".repeat(32);
    let e = make_systemd_pod(&mut sb, root, uid_e, &cid_e);
    api.put_pod(&pod("web", "frontend-0", uid_e, "Guaranteed", &[], &cid_e));
    held_to(
        &sb,
        &e,
        DEFAULT.0,
        DEFAULT.1,
        "Guaranteed pod in an unlabelled namespace",
    );
    api.put_namespace(&namespace("web", &[("residency.example/region", "eu")]));
    held_to(&sb, &e, PAYMENTS.0, PAYMENTS.1, "namespace labelled eu");

    // A dropped watch is resumed: later changes still arrive.
    api.drop_watches();
    api.put_namespace(&namespace("web", &[]));
    held_to(
        &sb,
        &e,
        DEFAULT.0,
        DEFAULT.1,
        "namespace unlabelled after a dropped watch",
    );

    // A deleted pod falls back to the default.
    api.delete_pod(&pod(
        "payments",
        "api-0",
        uid_a,
        "Burstable",
        &[("app", "api")],
        &cid_a,
    ));
    held_to(&sb, &a, DEFAULT.0, DEFAULT.1, "deleted pod");

    // The API goes down: what is known holds, new pods get the default, and the
    // agent says it is out of sync.
    api.put_pod(&pod(
        "payments",
        "web-0",
        uid_b,
        "BestEffort",
        &[("app", "api")],
        &cid_b,
    ));
    held_to(
        &sb,
        &b,
        PAYMENTS.0,
        PAYMENTS.1,
        "relabelled before the outage",
    );
    api.set_down(true);
    wait_metric(&mut sb, "residency_kubernetes_synced", 0.0);
    assert!(metric(&sb, "residency_kubernetes_watch_errors_total").unwrap() >= 1.0);
    held_to(
        &sb,
        &b,
        PAYMENTS.0,
        PAYMENTS.1,
        "known pod while the API is down",
    );
    let f = make_systemd_pod(
        &mut sb,
        &burstable,
        "1a2b3c4d-0000-4000-8000-00000000000f",
        &"ff".repeat(32),
    );
    held_to(
        &sb,
        &f,
        DEFAULT.0,
        DEFAULT.1,
        "new pod while the API is down",
    );
    api.set_down(false);
    wait_metric(&mut sb, "residency_kubernetes_synced", 1.0);
    held_to(
        &sb,
        &b,
        PAYMENTS.0,
        PAYMENTS.1,
        "known pod after the outage",
    );
    assert_eq!(
        metric(
            &sb,
            "residency_kubernetes_pods{policy=\"payments-eu\",namespace=\"payments\"}"
        ),
        Some(1.0)
    );

    // verify checks the pods' bindings as the agent placed them, report names them.
    let (ok, out) = sb.verify(&bin, &cfg);
    assert!(ok && out.contains("kernel state = config"), "{out}");
    let o = residency_tests::output_within(
        std::process::Command::new(&bin).args([
            "report",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ]),
        120,
    );
    assert!(o.status.success(), "{o:?}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let policy = |name: &str| {
        report["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{report}"))
    };
    assert_eq!(
        policy("payments-eu")["pods"],
        serde_json::json!(["payments/web-0"]),
        "{report}"
    );
    assert!(
        report["verification"]["pods"].as_u64() >= Some(1),
        "{report}"
    );
    // A pod's binding deleted by hand is named by its cgroup.
    let pod_id = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(b.parent().unwrap()).unwrap().ino()
    };
    // BindingKey: cgroup id, slot, padding.
    let mut key = pod_id.to_le_bytes().to_vec();
    key.extend([
        residency_tests::pinned::active_slot(&sb.pin_path()),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    residency_tests::pinned::delete(
        &residency_tests::pinned::map(&sb.pin_path(), "RES_BINDINGS"),
        &key,
    );
    let (ok, out) = sb.verify(&bin, &cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "cgroup {}: bound to policy \"payments-eu\" in the config, bound to nothing in the kernel",
            b.parent().unwrap().display()
        )),
        "{out}"
    );
}

#[test]
fn pods_are_found_under_the_cgroupfs_driver_layout() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let api = KubeApi::start();
    let mut sb = Sandbox::new(&[EU, CLUSTER]).unwrap();
    let kc = api.kubeconfig(&sb.dir);
    let root = "kubepods";
    sb.cgroup(&format!("{root}/burstable")).unwrap();
    api.put_namespace(&namespace("payments", &[]));
    let cfg = config(&sb, &kc, root, "cgroupfs");
    sb.start_agent(&bin, &cfg).unwrap();
    wait_metric(&mut sb, "residency_kubernetes_synced", 1.0);
    for (uid, qos, dir) in [
        (
            "2a2b3c4d-0000-4000-8000-00000000000a",
            "Guaranteed",
            root.to_owned(),
        ),
        (
            "2a2b3c4d-0000-4000-8000-00000000000b",
            "Burstable",
            format!("{root}/burstable"),
        ),
    ] {
        let cid = "ab".repeat(32);
        api.put_pod(&pod(
            "payments",
            &format!("api-{qos}"),
            uid,
            qos,
            &[("app", "api")],
            &cid,
        ));
        let cg = make_pod_cgroup(&mut sb, &format!("{dir}/pod{uid}"), &cid);
        held_to(&sb, &cg, PAYMENTS.0, PAYMENTS.1, qos);
    }
}
