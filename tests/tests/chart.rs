//! The Kubernetes artefacts as a cluster takes them: the Helm chart linted and
//! rendered by the real Helm with the default values and with operators' values
//! files, each rendering validated strictly against the Kubernetes schemas
//! (`kubernetes-validate`) and against the rules the API server adds on top
//! (`chart/admission.rs`), its policy accepted by `residency-agent check`; the plain
//! manifests equal to the chart's default rendering; the image built from the binary
//! the build makes; and the agent enforcing with no more capabilities than the
//! DaemonSet grants.

#[path = "chart/admission.rs"]
mod admission;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use residency_tests::{
    Sandbox, agent_binary,
    helm::{self, chart_dir, deploy_dir},
    require_root,
};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/helm")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("residency-chart-{}-{name}", std::process::id()))
}

/// The YAML documents as JSON values (PyYAML, installed with kubernetes-validate).
fn objects(yaml: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not YAML:\n{yaml}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `kubernetes-validate --strict` on every object of a built-in kind (a
/// ServiceMonitor is a CRD, which it has no schema for: admission.rs checks it).
fn validate_strictly(name: &str, objects: &[Value]) {
    let builtin: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] != "ServiceMonitor")
        .collect();
    let path = scratch(&format!("{name}.json"));
    std::fs::write(
        &path,
        builtin
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
    .unwrap();
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(&path)
        .output()
        .expect("kubernetes-validate (PyPI; `cargo xtask setup` installs it)");
    let _ = std::fs::remove_file(&path);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        builtin.len(),
        "{name}: not every object was validated:\n{text}"
    );
}

fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The agent's TOML from the rendered ConfigMap.
fn config_of(objects: &[Value]) -> String {
    let cm = kind(objects, "ConfigMap");
    assert_eq!(cm.len(), 1);
    cm[0]["data"]["residency.toml"].as_str().unwrap().to_owned()
}

/// `residency-agent check` on a config text: (passed, output).
fn check(name: &str, toml: &str) -> (bool, String) {
    let path = scratch(&format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(agent_binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The agent container of the rendered DaemonSet.
fn agent_container(objects: &[Value]) -> &Value {
    let ds = kind(objects, "DaemonSet");
    assert_eq!(ds.len(), 1);
    ds[0]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "agent")
        .expect("an agent container")
}

/// Renders with the values files, then everything a cluster would check.
fn render_and_admit(name: &str, values: &[&Path]) -> Vec<Value> {
    let rendered = helm::render(values).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let objects = objects(&rendered);
    validate_strictly(name, &objects);
    let refused = admission::violations(&objects);
    assert!(
        refused.is_empty(),
        "{name}: the API server would refuse:\n{}",
        refused.join("\n")
    );
    let (ok, text) = check(name, &config_of(&objects));
    assert!(
        ok,
        "{name}: the rendered policy fails `residency-agent check`:\n{text}"
    );
    objects
}

#[test]
fn the_chart_lints_and_every_rendering_is_admitted_with_a_valid_policy() {
    let chart = chart_dir();
    let operator = fixture("values-operator.yaml");
    let mount = fixture("values-mount-bpffs.yaml");
    for values in [None, Some(&operator), Some(&mount)] {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        if let Some(v) = values {
            args.extend(["--values", v.to_str().unwrap()]);
        }
        helm::run_helm(&args).unwrap_or_else(|e| panic!("{e:#}"));
    }

    // The defaults: what deploy/kubernetes/ holds.
    let objects = render_and_admit("defaults", &[]);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    let agent = agent_container(&objects);
    assert_eq!(agent["securityContext"]["privileged"], false);
    assert!(
        agent["startupProbe"]["httpGet"]["path"] == "/healthz",
        "{agent:#}"
    );
    assert_eq!(
        agent["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let pod = &kind(&objects, "DaemonSet")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert!(
        pod["initContainers"].is_null(),
        "no privileged container by default"
    );
    let config = config_of(&objects);
    assert!(config.contains("mount_bpffs = false"), "{config}");
    assert!(
        config.contains("[kubernetes]") && config.contains("default_policy = \"cluster-default\""),
        "{config}"
    );

    // An operator's values: every knob lands where Kubernetes reads it.
    let objects = render_and_admit("operator", &[&operator]);
    let ds = kind(&objects, "DaemonSet")[0];
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["node.kubernetes.io/pool"], "regulated");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["values"][0],
        "eu-central-1"
    );
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "registry-credentials");
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    let meta = &ds["spec"]["template"]["metadata"];
    assert_eq!(meta["annotations"]["team.example.com/owner"], "platform");
    assert_eq!(meta["annotations"]["prometheus.io/port"], "9478");
    assert_eq!(meta["labels"]["team.example.com/cost-center"], "4711");
    let agent = agent_container(&objects);
    assert_eq!(
        agent["image"],
        "registry.example.com/platform/residency-agent:0.1.0"
    );
    assert_eq!(agent["imagePullPolicy"], "Always");
    assert_eq!(agent["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(agent["ports"][0]["containerPort"], 9478);
    let monitor = kind(&objects, "ServiceMonitor");
    assert_eq!(monitor.len(), 1, "serviceMonitor.enabled renders one");
    assert_eq!(
        monitor[0]["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(monitor[0]["spec"]["endpoints"][0]["interval"], "1m30s");
    let config = config_of(&objects);
    for line in [
        "rule_capacity = 2097152",
        "ipv6_table_chunks = 32768",
        "aggregate_window_ms = 2000",
        "rate_limit_per_cpu = 500",
        "resync_seconds = 600",
        "metrics_address = \"0.0.0.0:9478\"",
        // Kept as written: the chart fills in only what the values leave out.
        "watch_config = false",
    ] {
        assert!(
            config.lines().any(|l| l.trim() == line),
            "{line} not in the rendered config:\n{config}"
        );
    }
    assert!(
        !config.contains("e+0"),
        "a number rendered as a float:\n{config}"
    );

    // Hosts without a bpffs: one privileged init container, which alone may use
    // Bidirectional propagation; no Namespace when the operator brings their own.
    let objects = render_and_admit("mount-bpffs", &[&mount]);
    assert!(kind(&objects, "Namespace").is_empty());
    let pod = &kind(&objects, "DaemonSet")[0]["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(init["securityContext"]["privileged"], true);
    assert_eq!(init["volumeMounts"][0]["mountPropagation"], "Bidirectional");
    assert_eq!(
        kind(&objects, "DaemonSet")[0]["metadata"]["namespace"],
        "default"
    );
}

/// The rendered DaemonSet's first container, to change.
fn agent_mut(objects: &mut [Value]) -> &mut Value {
    let ds = objects
        .iter_mut()
        .find(|o| o["kind"] == "DaemonSet")
        .unwrap();
    &mut ds["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_admission_rules_refuse_what_the_api_server_refuses() {
    let objects = objects(&helm::render(&[]).unwrap());
    assert!(admission::violations(&objects).is_empty());
    let ds_at = objects
        .iter()
        .position(|o| o["kind"] == "DaemonSet")
        .unwrap();
    let refuse = |change: &dyn Fn(&mut Vec<Value>), needle: &str| {
        let mut changed = objects.clone();
        change(&mut changed);
        let v = admission::violations(&changed);
        assert!(
            v.iter().any(|l| l.contains(needle)),
            "expected {needle:?}, got {v:#?}"
        );
    };
    // What the shipped DaemonSet did before: Bidirectional in an unprivileged container.
    refuse(
        &|o| agent_mut(o)["volumeMounts"][0]["mountPropagation"] = "Bidirectional".into(),
        "Bidirectional mount propagation is available only to privileged containers",
    );
    refuse(
        &|o| agent_mut(o)["securityContext"]["privileged"] = true.into(),
        "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
    );
    refuse(
        &|o| agent_mut(o)["ports"][0]["name"] = "prometheus-metrics".into(),
        "IANA_SVC_NAME",
    );
    refuse(
        &|o| o[ds_at]["spec"]["template"]["metadata"]["labels"] = serde_json::json!({"app": "x"}),
        "`selector` does not match template `labels`",
    );
    refuse(
        &|o| o.retain(|x| x["kind"] != "ClusterRoleBinding"),
        "no ClusterRoleBinding grants it",
    );
    refuse(
        &|o| {
            let ns = o.iter_mut().find(|x| x["kind"] == "Namespace").unwrap();
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "baseline".into();
        },
        "needs the `privileged` Pod Security level",
    );
    refuse(
        &|o| o[ds_at]["spec"]["template"]["spec"]["automountServiceAccountToken"] = false.into(),
        "does not mount a service account token",
    );
}

#[test]
fn the_config_value_is_the_agents_config_as_toml_or_yaml() {
    // The same TOML file as on a host, verbatim.
    let toml_values = scratch("toml-values.yaml");
    std::fs::write(
        &toml_values,
        "config: |\n  [agent]\n  mount_bpffs = false\n  watch_config = true\n  metrics_address = \"0.0.0.0:9477\"\n  rule_capacity = 2097152\n\
         \n  [[policy]]\n  name = \"node-daemons\"\n  cgroups = [\"system.slice\"]\n  allow = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let objects = objects(&helm::render(&[&toml_values]).unwrap());
    let config = config_of(&objects);
    assert!(
        config.contains("rule_capacity = 2097152\n")
            && config.contains("cgroups = [\"system.slice\"]"),
        "{config}"
    );
    let (ok, text) = check("toml", &config);
    assert!(ok && text.contains("OK, 1 policies"), "{text}");

    // A TOML config that would let the agent pin into the pod's own bpffs: refused
    // at render time, with the reason.
    std::fs::write(
        &toml_values,
        "config: |\n  [[policy]]\n  name = \"a\"\n  cgroups = [\"system.slice\"]\n",
    )
    .unwrap();
    let err = helm::render(&[&toml_values]).unwrap_err().to_string();
    assert!(
        err.contains("must set [agent] mount_bpffs = false"),
        "{err}"
    );

    // A default_policy naming no policy: refused at render time, not by a crash-looping pod.
    std::fs::write(
        &toml_values,
        "config:\n  kubernetes: {enabled: true, default_policy: cluster-wide}\n  policy:\n    - {name: payments, namespaces: [payments]}\n",
    )
    .unwrap();
    let err = helm::render(&[&toml_values]).unwrap_err().to_string();
    assert!(
        err.contains("default_policy \"cluster-wide\" names no policy"),
        "{err}"
    );

    // A misspelt key is refused before anything is rendered, not by crash-looping pods.
    std::fs::write(
        &toml_values,
        "config:\n  policy:\n    - {name: payments, namespaces: [payments], alow: [\"10.0.0.0/8\"]}\n",
    )
    .unwrap();
    let err = helm::render(&[&toml_values]).unwrap_err().to_string();
    assert!(err.contains("schema"), "{err}");
    let _ = std::fs::remove_file(&toml_values);
}

#[test]
fn the_docs_values_examples_render_to_valid_policies() {
    // Every `# my-values.yaml` example of the README and of docs/kubernetes.md.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seen = 0;
    for doc in ["README.md", "docs/kubernetes.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (n, block) in text.split("```yaml\n# my-values.yaml").skip(1).enumerate() {
            let example = format!("# my-values.yaml{}", &block[..block.find("```").unwrap()]);
            let path = scratch(&format!("values-{n}.yaml"));
            std::fs::write(&path, &example).unwrap();
            let objects = render_and_admit(&doc.replace('/', "-"), &[&path]);
            let _ = std::fs::remove_file(&path);
            assert!(
                config_of(&objects).contains("name = \"payments-eu\""),
                "{doc}: {example}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "the values examples were not found");
}

#[test]
fn the_plain_manifests_are_the_chart_with_its_defaults() {
    for (name, text) in helm::plain_manifests().unwrap() {
        let path = deploy_dir().join("kubernetes").join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(
            on_disk == text,
            "{} differs from the chart's default rendering: run `cargo xtask manifests`",
            path.display()
        );
    }
}

#[test]
fn the_image_holds_the_binary_the_build_makes() {
    let dockerfile = std::fs::read_to_string(deploy_dir().join("container/Dockerfile")).unwrap();
    let instruction = |word: &str| -> Vec<String> {
        dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix(word).map(|r| r.trim().to_owned()))
            .collect()
    };
    // The base is the Debian release the binary is built on: the glibc it links is there.
    let from = instruction("FROM ");
    let debian = std::fs::read_to_string("/etc/debian_version").unwrap();
    assert_eq!(from, ["debian:bookworm-slim"]);
    assert!(
        debian.starts_with("12."),
        "built on Debian {debian}, image is bookworm"
    );
    let copy = instruction("COPY ");
    assert_eq!(
        copy,
        ["target/release/residency-agent /usr/bin/residency-agent"]
    );
    assert!(
        std::fs::read_to_string(deploy_dir().join("container/Dockerfile.dockerignore"))
            .unwrap()
            .contains("!target/release/residency-agent"),
        "the build context must let the binary in"
    );
    assert_eq!(
        instruction("ENTRYPOINT "),
        ["[\"/usr/bin/residency-agent\"]"]
    );
    // It needs nothing from the image but glibc.
    let ldd = Command::new("ldd").arg(agent_binary()).output().unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    for line in ldd.lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        assert!(
            [
                "linux-vdso",
                "libc.so",
                "libm.so",
                "libgcc_s.so",
                "ld-linux",
                "/lib64/ld-linux"
            ]
            .iter()
            .any(|ok| lib.starts_with(ok)),
            "the agent links {lib}, which debian:bookworm-slim may lack:\n{ldd}"
        );
    }
    // The DaemonSet's args are a command line the binary takes.
    let objects = objects(&helm::render(&[]).unwrap());
    let args: Vec<String> = agent_container(&objects)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args[0], "run");
    let help = Command::new(agent_binary())
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
}

/// The capabilities the DaemonSet adds, as `setpriv` names them.
fn daemonset_capabilities() -> Vec<String> {
    let objects = objects(&helm::render(&[]).unwrap());
    let sc = &agent_container(&objects)["securityContext"];
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_lowercase())
        .collect()
}

#[test]
fn the_agent_enforces_with_only_the_daemonsets_capabilities() {
    if !require_root() {
        return;
    }
    let caps = daemonset_capabilities();
    let mut sb = Sandbox::new(&["198.51.100.7", "203.0.113.9"]).unwrap();
    // As in the pod: the host's bpffs is there and the agent must not mount one.
    let pins = sb.pin_path();
    std::fs::create_dir_all(&pins).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&pins)
        .status()
        .unwrap();
    assert!(mounted.success());
    let config = sb.write_config(
        "residency.toml",
        "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\nmount_bpffs = false\n\
         [events]\nsinks = [\"json\"]\n\
         [[policy]]\nname = \"eu\"\ncgroups = [\"{cg}/app\"]\nallow = [\"198.51.100.0/24\"]\n",
    );
    let app = sb.cgroup("app").unwrap();
    let wrapper = sb.dir.join("agent-with-pod-capabilities");
    let set: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set=-all,{} --inh-caps=-all {} \"$@\"\n",
            set.join(","),
            agent_binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    sb.start_agent(&wrapper, &config)
        .unwrap_or_else(|e| panic!("with only {caps:?}: {e:#}"));
    // It really runs with only those.
    let status = std::fs::read_to_string(format!("/proc/{}/status", sb.agent().pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    let eff = u64::from_str_radix(eff, 16).unwrap();
    // capability(7) numbers of the names the DaemonSet uses.
    let bit = |c: &str| match c {
        "dac_read_search" => 2,
        "net_admin" => 12,
        "sys_admin" => 21,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("the DaemonSet adds {other}: name its bit here"),
    };
    let want = caps.iter().fold(0u64, |m, c| m | 1 << bit(c));
    assert_eq!(
        eff, want,
        "CapEff {eff:x}, the DaemonSet's set is {want:x} ({caps:?})"
    );
    assert!(
        sb.client(Some(&app), "tcp", "198.51.100.7").ok,
        "allowed destination refused"
    );
    assert!(
        !sb.client(Some(&app), "tcp", "203.0.113.9").ok,
        "forbidden destination reached"
    );
}

/// The keys the agent's config parser takes in `table` (`[agent]`, `[[policy]]`, …),
/// as its own error for an unknown one lists them.
fn config_keys(table: &str) -> Vec<String> {
    let text = format!("{table}\nno_such_key = 1\n");
    let err = residency_agent::config::Config::parse(&text, "keys.toml")
        .err()
        .unwrap_or_else(|| panic!("{table} took an unknown key"))
        .to_string();
    let (_, expected) = err
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("{table}: {err}"));
    expected
        .split(", ")
        .map(|k| k.trim().trim_matches('`').to_owned())
        .collect()
}

/// The chart's values schema takes every key of the agent's config in its YAML form,
/// and no other: a key missing there would be refused by `helm` although the agent
/// takes it.
#[test]
fn the_values_schema_takes_every_key_of_the_config() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let config = &schema["properties"]["config"]["oneOf"][1];
    for (table, properties) in [
        ("[agent]", &config["properties"]["agent"]["properties"]),
        ("[events]", &config["properties"]["events"]["properties"]),
        (
            "[kubernetes]",
            &config["properties"]["kubernetes"]["properties"],
        ),
        ("[[policy]]", &schema["definitions"]["policy"]["properties"]),
    ] {
        let mut in_schema: Vec<String> = properties
            .as_object()
            .unwrap_or_else(|| panic!("{table}: no properties in the schema"))
            .keys()
            .cloned()
            .collect();
        let mut in_config = config_keys(table);
        in_schema.sort();
        in_config.sort();
        assert_eq!(
            in_schema, in_config,
            "{table}: the schema's keys, the agent's"
        );
    }
}
