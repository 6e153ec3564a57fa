//! Config parsing and validation: what is accepted, and that every rejection names
//! file, line, key and reason.

use super::*;

mod keys;
mod lift;
mod sources;

const GOOD: &str = r#"
[agent]
pin_path = "/sys/fs/bpf/residency"
control_socket = "/run/residency/agent.sock"
metrics_address = "127.0.0.1:9477"

[[policy]]
name = "eu-central"
mode = "enforce"
cgroups = ["/sys/fs/cgroup/system.slice/payments.service"]
allow = ["10.0.0.0/16", "2001:db8:100::/48", "127.0.0.0/8", "::1/128"]
deny = ["10.0.99.0/24"]

[[policy]]
name = "eu-west"
mode = "audit"
cgroups = ["system.slice/reports.service"]
allow = ["198.51.100.7"]
"#;

fn err(text: &str) -> String {
    Config::parse(text, "test.toml").unwrap_err().to_string()
}

#[test]
fn parses_the_documented_example() {
    let c = Config::parse(GOOD, "test.toml").unwrap();
    assert_eq!(c.agent, AgentConfig::default());
    assert_eq!(c.policies.len(), 2);
    let p = &c.policies[0];
    assert_eq!(p.name, "eu-central");
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.entries.len(), 5);
    assert_eq!(p.entries[4].action, Action::Deny);
    assert_eq!(p.entries[4].network.to_string(), "10.0.99.0/24");
    assert_eq!(p.entries[4].line, 12);
    assert_eq!(c.policies[1].mode, Mode::Audit);
    assert_eq!(
        c.policies[1].entries[0].network.to_string(),
        "198.51.100.7/32"
    );
}

#[test]
fn mode_defaults_to_enforce_and_lists_to_empty() {
    let c = Config::parse("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n", "t").unwrap();
    assert_eq!(c.policies[0].mode, Mode::Enforce);
    assert!(c.policies[0].entries.is_empty());
}

#[test]
fn embedded_default_is_audit_only() {
    let c = Config::embedded_default();
    assert!(!c.policies.is_empty());
    assert!(c.policies.iter().all(|p| p.mode == Mode::Audit));
}

#[test]
fn rejects_prefix_too_long_with_line() {
    let e = err("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"198.51.100.0/33\"]\n");
    assert!(e.starts_with("test.toml:4:10: policy \"a\".allow:"), "{e}");
    assert!(e.contains("198.51.100.0/33"), "{e}");
}

#[test]
fn rejects_host_bits() {
    let e = err("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.1/8\"]\n");
    assert!(e.contains("test.toml:4:"), "{e}");
    assert!(e.contains("host bits"), "{e}");
    assert!(e.contains("10.0.0.0/8"), "{e}");
}

#[test]
fn rejects_unknown_key_with_line() {
    let e = err("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallwo = [\"10.0.0.0/8\"]\n");
    assert!(e.starts_with("test.toml:4:"), "{e}");
    assert!(e.contains("allwo"), "{e}");
}

#[test]
fn rejects_unknown_agent_key() {
    let e = err("[agent]\npin_dir = \"/x\"\n");
    assert!(e.starts_with("test.toml:2:"), "{e}");
    assert!(e.contains("pin_dir"), "{e}");
}

#[test]
fn rejects_duplicate_policy_name() {
    let e = err(
        "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n[[policy]]\nname = \"a\"\ncgroups = [\"y\"]\n",
    );
    assert!(e.starts_with("test.toml:5:"), "{e}");
    assert!(e.contains("duplicate policy name"), "{e}");
}

#[test]
fn rejects_bad_mode() {
    let e = err("[[policy]]\nname = \"a\"\nmode = \"block\"\ncgroups = [\"x\"]\n");
    assert!(e.starts_with("test.toml:3:"), "{e}");
}

#[test]
fn rejects_conflicting_and_duplicate_entries() {
    let e = err(
        "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.0.0.0/8\"]\n",
    );
    assert!(e.contains("both allowed and denied"), "{e}");
    assert!(e.starts_with("test.toml:5:"), "{e}");
    let e = err(
        "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n",
    );
    assert!(e.contains("listed twice"), "{e}");
}

#[test]
fn rejects_cgroup_in_two_policies_and_empty_cgroups() {
    let e = err(
        "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n[[policy]]\nname = \"b\"\ncgroups = [\"x/\"]\n",
    );
    assert!(e.contains("already bound to policy \"a\""), "{e}");
    let e = err("[[policy]]\nname = \"a\"\ncgroups = []\n");
    assert!(e.contains("binds no cgroup"), "{e}");
    let e = err("[[policy]]\nname = \"a\"\ncgroups = [\"../etc\"]\n");
    assert!(e.contains("not a usable cgroup path"), "{e}");
}

#[test]
fn rejects_bad_names_and_addresses() {
    assert!(err("[[policy]]\nname = \"a b\"\ncgroups = [\"x\"]\n").contains("not a valid name"));
    assert!(err("[agent]\nmetrics_address = \"localhost\"\n").contains("not an address:port"));
    assert!(err("[agent]\npin_path = \"bpf\"\n").contains("absolute"));
}

#[test]
fn parses_events_section() {
    let c = Config::parse(
        "[events]\nsinks = [\"journal\", \"json\"]\nmask_addresses = true\naggregate_window_ms = 250\n\
         rate_limit_per_cpu = 0\nsyslog_target = \"udp://127.0.0.1:5514\"\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        c.events.sinks,
        Some(vec![SinkKind::Journal, SinkKind::Json])
    );
    assert!(c.events.mask_addresses);
    assert_eq!(
        c.events.aggregate_window,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(c.events.rate_limit_per_cpu, 0);
    assert_eq!(
        c.events.syslog_target,
        SyslogTarget::Udp("127.0.0.1:5514".parse().unwrap())
    );
    assert_eq!(
        Config::parse("", "t").unwrap().events,
        EventsConfig::default()
    );
    let e = err("[events]\nsinks = [\"journal\", \"splunk\"]\n");
    assert!(
        e.starts_with("test.toml:2:21: events.sinks: unknown sink \"splunk\""),
        "{e}"
    );
    assert!(err("[events]\nsinks = []\n").contains("is empty"));
    assert!(err("[events]\nsyslog_target = \"10.0.0.1:514\"\n").contains("not a syslog target"));
    assert!(err("[events]\nsyslog_target = \"tcp://host:601\"\n").contains("not an address:port"));
}

#[test]
fn protocol_and_port_entries_are_parsed_and_checked() {
    let c = Config::parse(
        "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n\
         allow = [\"10.0.0.0/16 tcp/5432\", \"10.0.0.0/16 UDP/53\", \"203.0.113.0/24 tcp/8000-8100\", \"198.51.100.0/24 icmp\", \"10.0.0.0/16\"]\n",
        "t.toml",
    )
    .unwrap();
    let e = &c.policies[0].entries;
    assert_eq!(
        e[0].ports,
        Some(PortSpec {
            protocol: std::num::NonZeroU8::new(6).unwrap(),
            lo: 5432,
            hi: 5432
        })
    );
    assert_eq!(e[1].ports.unwrap().to_string(), "udp/53");
    assert_eq!(e[2].ports.unwrap().to_string(), "tcp/8000-8100");
    assert_eq!(e[3].ports.unwrap().to_string(), "icmp");
    assert_eq!(e[4].ports, None, "the same prefix bare is its own entry");
    for (entry, reason) in [
        ("10.0.0.0/16 tcp/99999", "is not a port"),
        ("10.0.0.0/16 gre", "does not name a protocol"),
        ("10.0.0.0/16 icmp/8", "icmp has no ports"),
        ("2001:db8::/32 icmp", "is icmpv6"),
        ("10.0.0.0/8 icmpv6", "write icmp"),
        ("10.0.0.0/16 tcp/10-5", "is empty"),
        ("10.0.0.0/16 tcp/1 tcp/2", "more than a prefix and one"),
    ] {
        let e = err(&format!(
            "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [\"{entry}\"]\n"
        ));
        assert!(e.contains(reason) && e.contains("t.toml:4"), "{entry}: {e}");
    }
    let e = err(
        "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8 tcp/22\"]\ndeny = [\"10.0.0.0/8 tcp/22\"]\n",
    );
    assert!(
        e.contains("10.0.0.0/8 tcp/22 is both allowed and denied"),
        "{e}"
    );
    let many: Vec<String> = (1..=17)
        .map(|p| format!("\"10.0.0.0/8 tcp/{p}\""))
        .collect();
    let e = err(&format!(
        "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [{}]\n",
        many.join(", ")
    ));
    assert!(e.contains("more than 16 protocol/port entries"), "{e}");
}

#[test]
fn prefixes_normalise_and_reject_mapped() {
    assert_eq!(
        parse_prefix("2001:db8::").unwrap().to_string(),
        "2001:db8::/128"
    );
    assert_eq!(
        parse_prefix(" 10.0.0.0/8 ").unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert!(
        parse_prefix("::ffff:10.0.0.0/104")
            .unwrap_err()
            .contains("10.0.0.0/8")
    );
    assert!(
        parse_prefix("2001:db8::1/64")
            .unwrap_err()
            .contains("host bits")
    );
    assert!(parse_prefix("eu-central-1").is_err());
}

#[test]
fn type_and_key_errors_name_the_key_path() {
    // A wrong type inside the third policy names that policy's key, with its line.
    let e = err("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n\
                 [[policy]]\nname = \"b\"\ncgroups = [\"y\"]\n\
                 [[policy]]\nname = \"c\"\ncgroups = \"z\"\n");
    assert!(e.starts_with("test.toml:9:"), "{e}");
    assert!(e.contains(": policy[2].cgroups: "), "{e}");
    assert!(e.contains("invalid type: string"), "{e}");
    // A key no section knows.
    let e = err("[agent]\npin_pth = \"/sys/fs/bpf/x\"\n");
    assert!(
        e.contains(": agent.pin_pth: unknown field `pin_pth`"),
        "{e}"
    );
    // A wrong type in a table.
    let e = err("[events]\nrate_limit_per_cpu = \"many\"\n");
    assert!(e.contains(": events.rate_limit_per_cpu: "), "{e}");
    // A syntax error has no key path: it names the config.
    let e = err("[[policy]\nname = 1\n");
    assert!(e.contains(": config: "), "{e}");
}

const PODS: &str = r#"
[kubernetes]
enabled = true
node_name = "node-1"
default_policy = "cluster-default"
service_cidrs = ["10.96.0.0/12"]

[[policy]]
name = "payments-eu"
namespaces = ["payments-eu"]
pod_selector = { match_labels = { app = "api" }, match_expressions = [{ key = "tier", operator = "NotIn", values = ["debug"] }] }
allow = ["198.51.100.0/24"]

[[policy]]
name = "eu-namespaces"
namespaceSelector = { matchLabels = { "residency.example/region" = "eu" } }
allow = ["198.51.100.0/24", "203.0.113.0/24"]

[[policy]]
name = "cluster-default"
allow = ["10.0.0.0/8"]
"#;

#[test]
fn pod_selection_and_kubernetes_section_parse() {
    let c = Config::parse(PODS, "test.toml").unwrap();
    assert!(c.kubernetes.enabled);
    assert_eq!(c.kubernetes.node_name.as_deref(), Some("node-1"));
    assert_eq!(
        c.kubernetes.default_policy.as_deref(),
        Some("cluster-default")
    );
    assert_eq!(c.kubernetes.service_cidrs[0].to_string(), "10.96.0.0/12");
    let p = c.policies[0].pods.as_ref().unwrap();
    assert_eq!(
        p.namespaces.as_deref(),
        Some(&["payments-eu".to_owned()][..])
    );
    assert_eq!(p.line, 10);
    let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let none = labels(&[]);
    assert!(p.selects("payments-eu", &none, &labels(&[("app", "api")])));
    assert!(!p.selects(
        "payments-eu",
        &none,
        &labels(&[("app", "api"), ("tier", "debug")])
    ));
    assert!(!p.selects("other", &none, &labels(&[("app", "api")])));
    let eu = c.policies[1].pods.as_ref().unwrap();
    assert!(eu.selects("x", &labels(&[("residency.example/region", "eu")]), &none));
    assert!(!eu.selects("x", &none, &none));
    assert!(c.policies[2].pods.is_none() && c.policies[2].cgroups.is_empty());
    assert!(p.overlaps(eu), "a namespace labelled eu may be payments-eu");
}

#[test]
fn pod_selection_errors_name_the_key() {
    let e = err("[[policy]]\nname = \"p\"\nallow = []\n");
    assert!(
        e.contains("test.toml:2:") && e.contains("binds nothing"),
        "{e}"
    );
    let e = err("[[policy]]\nname = \"p\"\nnamespaces = []\n");
    assert!(
        e.contains(": policy \"p\".namespaces: selects no namespace"),
        "{e}"
    );
    let e = err("[[policy]]\nname = \"p\"\nnamespaces = [\"Payments\"]\n");
    assert!(e.contains("not a namespace name"), "{e}");
    let e = err(
        "[[policy]]\nname = \"p\"\npod_selector = { match_expressions = [{ key = \"app\", operator = \"In\" }] }\n",
    );
    assert!(
        e.contains("test.toml:3:")
            && e.contains("policy \"p\".pod_selector.match_expressions")
            && e.contains("needs at least one value"),
        "{e}"
    );
    let e = err(
        "[[policy]]\nname = \"p\"\npod_selector = { match_expressions = [{ key = \"app\", operator = \"Exists\", values = [\"x\"] }] }\n",
    );
    assert!(e.contains("takes no values"), "{e}");
    let e = err(
        "[[policy]]\nname = \"p\"\npod_selector = { match_expressions = [{ key = \"app\", operator = \"Has\" }] }\n",
    );
    assert!(
        e.contains("policy[0].pod_selector.match_expressions[0].operator")
            && e.contains("unknown variant `Has`"),
        "{e}"
    );
    let e = err("[[policy]]\nname = \"p\"\npod_selector = { match_labels = { app = \"a b\" } }\n");
    assert!(e.contains("not a label value"), "{e}");
    let e = err(
        "[kubernetes]\ndefault_policy = \"nope\"\n[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n",
    );
    assert!(
        e.contains("test.toml:2:") && e.contains("kubernetes.default_policy: names no policy"),
        "{e}"
    );
    let e = err("[kubernetes]\ncgroup_driver = \"docker\"\n");
    assert!(e.contains("kubernetes.cgroup_driver"), "{e}");
}
