//! The rules the Kubernetes API server (and its admission) applies on top of the
//! OpenAPI schemas, which `kubernetes-validate --strict` cannot see, checked on
//! rendered objects read into the `k8s-openapi` types. Each rule is one the server
//! refuses an object for (quoted from its validation where the wording matters), or
//! a reference between objects that must hold for the agent's pod to work (its
//! ServiceAccount, its RBAC, its ConfigMap, the Pod Security level of its namespace).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, Namespace, PodSpec, Probe, Service},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};
use serde_json::Value;

/// Every violation found, one line each, naming the object and field.
pub fn violations(objects: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let of_kind = |kind: &str| -> Vec<&Value> {
        objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .collect::<Vec<_>>()
    };
    let names = |kind: &str| -> BTreeSet<(String, String)> {
        of_kind(kind)
            .iter()
            .map(|o| {
                (
                    o["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                    o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    for o in objects {
        let what = format!("{} {}", o["kind"], o["metadata"]["name"]);
        let name = o["metadata"]["name"].as_str().unwrap_or("");
        // Names as the API server validates them per kind: Services and Namespaces
        // are DNS labels (a Service's a DNS-1035 one), RBAC objects path segments,
        // the rest DNS-1123 subdomains.
        let valid = match o["kind"].as_str().unwrap_or("") {
            "Service" => dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
            "Namespace" => dns_label(name),
            "ClusterRole" | "ClusterRoleBinding" => {
                !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
            }
            _ => dns_subdomain(name),
        };
        if !valid {
            out.push(format!(
                "{what}: metadata.name {name:?} is not valid for its kind"
            ));
        }
        let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
        if !cluster_scoped.contains(&o["kind"].as_str().unwrap_or(""))
            && o["metadata"]["namespace"]
                .as_str()
                .is_none_or(|n| !dns_label(n))
        {
            out.push(format!("{what}: no valid metadata.namespace"));
        }
        if let Some(labels) = o["metadata"]["labels"].as_object() {
            for (k, v) in labels {
                if !label_key(k) || !v.as_str().is_some_and(label_value) {
                    out.push(format!("{what}: label {k}={v} is not a valid label"));
                }
            }
        }
    }
    let service_accounts = names("ServiceAccount");
    let config_maps = names("ConfigMap");
    let namespaces: Vec<Namespace> = of_kind("Namespace")
        .into_iter()
        .map(|n| serde_json::from_value((*n).clone()).expect("a Namespace"))
        .collect();
    let mut pod_labels = Vec::new();
    let mut container_ports = BTreeSet::new();
    for ds in of_kind("DaemonSet") {
        let ds: DaemonSet = serde_json::from_value(ds.clone()).expect("a DaemonSet");
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let what = format!(
            "DaemonSet {ns}/{}",
            ds.metadata.name.clone().unwrap_or_default()
        );
        let spec = ds.spec.expect("spec");
        let template_labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        for (k, v) in spec.selector.match_labels.unwrap_or_default() {
            if template_labels.get(&k) != Some(&v) {
                out.push(format!(
                    "{what}: spec.template.metadata.labels: `selector` does not match template `labels` ({k}={v})"
                ));
            }
        }
        pod_labels.push(template_labels);
        let pod = spec.template.spec.expect("a pod spec");
        out.extend(pod_rules(&what, &pod, &mut container_ports));
        let sa = pod.service_account_name.clone().unwrap_or("default".into());
        if !service_accounts.contains(&(ns.clone(), sa.clone())) {
            out.push(format!(
                "{what}: serviceAccountName {sa} is not among the rendered objects"
            ));
        }
        if pod.automount_service_account_token != Some(true) {
            out.push(format!(
                "{what}: the agent watches the API, but its pod does not mount a service account token"
            ));
        }
        for v in pod.volumes.iter().flatten() {
            if let Some(cm) = &v.config_map
                && !config_maps.contains(&(ns.clone(), cm.name.clone()))
            {
                out.push(format!(
                    "{what}: volume {} names ConfigMap {} that is not rendered",
                    v.name, cm.name
                ));
            }
        }
        if needs_privileged_level(&pod) {
            for n in &namespaces {
                let name = n.metadata.name.as_deref().unwrap_or("");
                let level = n
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("pod-security.kubernetes.io/enforce"));
                if name == ns && level.map(String::as_str) != Some("privileged") {
                    out.push(format!(
                        "{what}: its pod needs the `privileged` Pod Security level (host paths, host network, capabilities), but Namespace {name} enforces {level:?}"
                    ));
                }
            }
        }
    }
    // RBAC: the agent's watch needs get, list and watch on pods and namespaces.
    let roles: BTreeMap<String, ClusterRole> = of_kind("ClusterRole")
        .into_iter()
        .map(|r| {
            let r: ClusterRole = serde_json::from_value(r.clone()).expect("a ClusterRole");
            (r.metadata.name.clone().unwrap_or_default(), r)
        })
        .collect();
    let bindings: Vec<ClusterRoleBinding> = of_kind("ClusterRoleBinding")
        .into_iter()
        .map(|b| serde_json::from_value(b.clone()).expect("a ClusterRoleBinding"))
        .collect();
    for (ns, sa) in &service_accounts {
        let granted = bindings.iter().any(|b| {
            b.subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount" && &s.name == sa && s.namespace.as_deref() == Some(ns)
            }) && b.role_ref.kind == "ClusterRole"
                && roles.get(&b.role_ref.name).is_some_and(grants_watch)
        });
        if !granted {
            out.push(format!(
                "ServiceAccount {ns}/{sa}: no ClusterRoleBinding grants it get, list and watch on pods and namespaces"
            ));
        }
    }
    for b in &bindings {
        if b.role_ref.kind == "ClusterRole" && !roles.contains_key(&b.role_ref.name) {
            out.push(format!(
                "ClusterRoleBinding: roleRef {} is not rendered",
                b.role_ref.name
            ));
        }
    }
    let mut service_ports = Vec::new();
    for s in of_kind("Service") {
        let s: Service = serde_json::from_value(s.clone()).expect("a Service");
        let what = format!("Service {}", s.metadata.name.clone().unwrap_or_default());
        let spec = s.spec.unwrap_or_default();
        let selector = spec.selector.unwrap_or_default();
        if !pod_labels
            .iter()
            .any(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
        {
            out.push(format!(
                "{what}: its selector matches no rendered pod template"
            ));
        }
        for p in spec.ports.iter().flatten() {
            if let Some(IntOrString::String(t)) = &p.target_port
                && !container_ports.contains(t)
            {
                out.push(format!("{what}: targetPort {t} names no container port"));
            }
            service_ports.push((
                s.metadata.labels.clone().unwrap_or_default(),
                p.name.clone(),
            ));
        }
    }
    for m in of_kind("ServiceMonitor") {
        let selector = m["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for e in m["spec"]["endpoints"].as_array().into_iter().flatten() {
            let port = e["port"].as_str();
            let found = service_ports.iter().any(|(labels, name)| {
                name.as_deref() == port
                    && selector
                        .iter()
                        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
            });
            if !found {
                out.push(format!(
                    "ServiceMonitor: endpoint port {port:?} is on no Service its selector matches"
                ));
            }
        }
    }
    out
}

fn grants_watch(role: &ClusterRole) -> bool {
    ["pods", "namespaces"].iter().all(|resource| {
        ["get", "list", "watch"].iter().all(|verb| {
            role.rules.iter().flatten().any(|r| {
                r.api_groups.iter().flatten().any(|g| g.is_empty())
                    && r.resources.iter().flatten().any(|x| x == resource)
                    && r.verbs.iter().any(|v| v == verb || v == "*")
            })
        })
    })
}

/// What the Pod Security `baseline` level refuses and `privileged` admits.
fn needs_privileged_level(pod: &PodSpec) -> bool {
    let baseline_caps = [
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    ];
    pod.host_network == Some(true)
        || pod.volumes.iter().flatten().any(|v| v.host_path.is_some())
        || all_containers(pod).any(|c| {
            let sc = c.security_context.clone().unwrap_or_default();
            sc.privileged == Some(true)
                || sc
                    .capabilities
                    .and_then(|c| c.add)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| !baseline_caps.contains(&c.as_str()))
                || sc.seccomp_profile.is_some_and(|p| p.type_ == "Unconfined")
        })
}

fn all_containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
}

fn pod_rules(what: &str, pod: &PodSpec, all_ports: &mut BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    if pod.restart_policy.as_deref().is_some_and(|p| p != "Always") {
        out.push(format!(
            "{what}: spec.template.spec.restartPolicy: Unsupported value (DaemonSets need Always)"
        ));
    }
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    if volumes.iter().collect::<BTreeSet<_>>().len() != volumes.len() {
        out.push(format!("{what}: volumes: Duplicate value"));
    }
    for v in pod.volumes.iter().flatten() {
        if let Some(h) = &v.host_path
            && !h.path.starts_with('/')
        {
            out.push(format!(
                "{what}: volume {}: hostPath.path must be absolute",
                v.name
            ));
        }
    }
    let mut container_names = BTreeSet::new();
    for c in all_containers(pod) {
        let at = format!("{what}: container {}", c.name);
        if !dns_label(&c.name) || !container_names.insert(c.name.clone()) {
            out.push(format!("{at}: name is not a unique DNS-1123 label"));
        }
        if c.image.as_deref().is_none_or(str::is_empty) {
            out.push(format!("{at}: image: Required value"));
        }
        let sc = c.security_context.clone().unwrap_or_default();
        let privileged = sc.privileged == Some(true);
        if sc.allow_privilege_escalation == Some(false) {
            if privileged {
                out.push(format!(
                    "{at}: cannot set `allowPrivilegeEscalation` to false and `privileged` to true"
                ));
            }
            let caps = sc
                .capabilities
                .clone()
                .and_then(|c| c.add)
                .unwrap_or_default();
            if caps.iter().any(|c| c == "CAP_SYS_ADMIN") {
                out.push(format!("{at}: cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN"));
            }
        }
        let mut paths = BTreeSet::new();
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains(&m.name.as_str()) {
                out.push(format!("{at}: volumeMounts {}: Not found", m.name));
            }
            if !paths.insert(m.mount_path.clone()) {
                out.push(format!(
                    "{at}: volumeMounts {}: mountPath must be unique",
                    m.mount_path
                ));
            }
            match m.mount_propagation.as_deref() {
                None | Some("None") | Some("HostToContainer") => {}
                Some("Bidirectional") if !privileged => out.push(format!(
                    "{at}: volumeMounts {}: mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers",
                    m.name
                )),
                Some("Bidirectional") => {}
                Some(other) => out.push(format!("{at}: mountPropagation {other}: Unsupported value")),
            }
        }
        let mut ports = BTreeSet::new();
        for p in c.ports.iter().flatten() {
            if !(1..=65535).contains(&p.container_port) {
                out.push(format!(
                    "{at}: containerPort {} out of range",
                    p.container_port
                ));
            }
            if pod.host_network == Some(true) && p.host_port.is_some_and(|h| h != p.container_port)
            {
                out.push(format!(
                    "{at}: hostPort must match containerPort when `hostNetwork` is true"
                ));
            }
            if let Some(n) = &p.name {
                if !iana_svc_name(n) || !ports.insert(n.clone()) {
                    out.push(format!("{at}: port name {n} is not a unique IANA_SVC_NAME"));
                }
                all_ports.insert(n.clone());
            }
        }
        for (kind, probe) in [
            ("startupProbe", &c.startup_probe),
            ("livenessProbe", &c.liveness_probe),
            ("readinessProbe", &c.readiness_probe),
        ] {
            if let Some(p) = probe {
                out.extend(probe_rules(&format!("{at}: {kind}"), kind, p, &ports));
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
                let supported = [
                    "metadata.name",
                    "metadata.namespace",
                    "metadata.uid",
                    "spec.nodeName",
                    "spec.serviceAccountName",
                    "status.hostIP",
                    "status.hostIPs",
                    "status.podIP",
                    "status.podIPs",
                ];
                if !supported.contains(&f.field_path.as_str()) {
                    out.push(format!(
                        "{at}: env {}: fieldPath {}: Unsupported value",
                        e.name, f.field_path
                    ));
                }
            }
        }
        if let Some(r) = &c.resources {
            let limits = r.limits.clone().unwrap_or_default();
            for (res, req) in r.requests.clone().unwrap_or_default() {
                if let Some(lim) = limits.get(&res)
                    && quantity(&req) > quantity(lim)
                {
                    out.push(format!(
                        "{at}: resources.requests[{res}]: must be less than or equal to {res} limit"
                    ));
                }
            }
        }
    }
    out
}

fn probe_rules(at: &str, kind: &str, p: &Probe, ports: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let handlers = [
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.exec.is_some(),
        p.grpc.is_some(),
    ];
    if handlers.iter().filter(|h| **h).count() != 1 {
        out.push(format!("{at}: must specify exactly one handler type"));
    }
    if kind != "readinessProbe" && p.success_threshold.is_some_and(|s| s != 1) {
        out.push(format!("{at}: successThreshold must be 1"));
    }
    if let Some(IntOrString::String(name)) = p.http_get.as_ref().map(|h| &h.port)
        && !ports.contains(name)
    {
        out.push(format!(
            "{at}: httpGet.port {name} names no port of the container"
        ));
    }
    out
}

/// A quantity in base units (bytes, cores); NaN (which compares false) for a form
/// this does not know.
fn quantity(q: &Quantity) -> f64 {
    let s = q.0.as_str();
    let (num, mult) = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((s, 1.0));
    num.parse::<f64>().map_or(f64::NAN, |n| n * mult)
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// IsDNS1123Subdomain: at most 253 characters, dot-separated lowercase alphanumeric
/// parts with inner dashes (no per-part limit).
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

fn label_value(v: &str) -> bool {
    v.len() <= 63
        && (v.is_empty()
            || (v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

fn label_key(k: &str) -> bool {
    let (prefix, name) = k.rsplit_once('/').map_or((None, k), |(p, n)| (Some(p), n));
    prefix.is_none_or(dns_subdomain) && !name.is_empty() && label_value(name)
}

fn iana_svc_name(n: &str) -> bool {
    n.len() <= 15
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && n.bytes().any(|b| b.is_ascii_lowercase())
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--")
}
