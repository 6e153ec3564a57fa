//! The agent's command line as an operator meets it: `check` on good and bad configs,
//! and `run` refusing to start when it could not enforce.

use std::process::{Command, Output};

use residency_tests::{Sandbox, agent_binary, cgroup2_mount, output_within, require_root};

fn agent(args: &[&str]) -> Output {
    output_within(
        Command::new(agent_binary()).args(args).env("NO_COLOR", "1"),
        30,
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &tempdir::Dir, name: &str, body: &str) -> String {
    let p = dir.0.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let p =
                std::env::temp_dir().join(format!("residency-cli-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn check_summarises_a_good_config() {
    let dir = tempdir::Dir::new("good");
    let mount = cgroup2_mount().unwrap();
    let cfg = write(
        &dir,
        "good.toml",
        &format!(
            r#"
[agent]
pin_path = "/sys/fs/bpf/residency"
control_socket = "/run/residency/agent.sock"
metrics_address = "127.0.0.1:9477"

[[policy]]
name = "eu-central"
mode = "enforce"
cgroups = ["{m}/system.slice/payments.service"]
allow = ["10.0.0.0/16", "2001:db8:100::/48", "127.0.0.0/8", "::1/128"]
deny = ["10.0.99.0/24"]

[[policy]]
name = "eu-west"
mode = "audit"
cgroups = ["batch.slice"]
allow = ["198.51.100.0/24"]
"#,
            m = mount.display()
        ),
    );
    let o = agent(&["check", "--config", &cfg]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("OK, 2 policies"), "{t}");
    assert!(
        t.contains("eu-central") && t.contains("mode=enforce"),
        "{t}"
    );
    assert!(
        t.contains("ipv4: allow=2 deny=1  ipv6: allow=2 deny=0"),
        "{t}"
    );
    assert!(t.contains("eu-west") && t.contains("mode=audit"), "{t}");
    // Cgroups that do not exist yet are a note, not an error.
    assert!(
        t.lines().any(|l| l.starts_with("note:")
            && l.contains("payments.service")
            && l.ends_with("(its policy applies as soon as it appears)")),
        "{t}"
    );
    // The same note in the JSON form.
    let o = agent(&["check", "--format", "json", "--config", &cfg]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let notes = v["notes"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert!(
        notes.iter().any(
            |n| n.as_str().is_some_and(|n| n.contains("payments.service")
                && n.ends_with("(its policy applies as soon as it appears)"))
        ),
        "{v}"
    );

    // Lookup tables that would not fit are a note of their own: the policy is judged
    // by its tries, whatever its cgroups.
    let small = write(
        &dir,
        "small-tables.toml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("[agent]\n", "[agent]\nipv4_table_chunks = 2\n"),
    );
    let o = agent(&["check", "--config", &small]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let note = t
        .lines()
        .find(|l| l.contains("policy eu-central: its IPv4 lookup tables need"))
        .unwrap_or_else(|| panic!("no lookup table note: {t}"));
    assert!(
        note.starts_with("note: ")
            && note.ends_with(
                "more than [agent] ipv4_table_chunks (2) leaves for it; its first packets will \
                 be judged by the trie (correct, slower)"
            ),
        "{note}"
    );
    // And what to set instead: room for every policy's tables, at least this one's.
    let chunks = |line: &str, after: &str| -> u32 {
        let (_, rest) = line.split_once(after).unwrap_or_else(|| panic!("{line}"));
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let need = chunks(note, "lookup tables need ");
    let all = t
        .lines()
        .find(|l| l.contains("every policy's IPv4 lookup tables together need"))
        .unwrap_or_else(|| panic!("no note of the room that fits: {t}"));
    let fits = chunks(all, "together need ");
    assert!(
        all.starts_with("note: ")
            && fits > need
            && all.contains(&format!(
                "[agent] ipv4_table_chunks = {fits} or more fits them all"
            )),
        "{all}"
    );
}

#[test]
fn check_rejects_bad_configs_with_file_line_and_reason() {
    let dir = tempdir::Dir::new("bad");
    let mount = cgroup2_mount().unwrap();
    let policy = |body: &str| format!("[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n{body}\n");
    let outside = format!(
        "outside the cgroup v2 hierarchy mounted at {}",
        mount.display()
    );
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("bad-len.toml", policy("allow = [\"198.51.100.0/33\"]"), ":4:", "198.51.100.0/33"),
        ("host-bits.toml", policy("allow = [\"10.0.0.1/8\"]"), ":4:", "host bits"),
        ("unknown-key.toml", policy("alow = [\"10.0.0.0/8\"]"), ":4:", "alow"),
        (
            "dup-name.toml",
            "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n[[policy]]\nname = \"p\"\ncgroups = [\"y\"]\n".into(),
            ":5:",
            "duplicate policy name",
        ),
        ("bad-mode.toml", "[[policy]]\nname = \"p\"\nmode = \"block\"\ncgroups = [\"x\"]\n".into(), ":3:", "block"),
        ("outside.toml", "[[policy]]\nname = \"p\"\ncgroups = [\"/etc/systemd\"]\n".into(), ":3:", &outside),
        ("not-toml.toml", "[[policy]\nname = 1\n".into(), ":1:", "config"),
    ];
    for (file, body, line, reason) in cases {
        let path = write(&dir, file, &body);
        let o = agent(&["check", "--config", &path]);
        let t = text(&o);
        assert!(!o.status.success(), "{file} was accepted: {t}");
        assert!(
            t.contains(&format!("{path}{line}")),
            "{file}: no file:line in {t}"
        );
        assert!(t.contains(reason), "{file}: reason missing in {t}");
    }
    let o = agent(&["check", "--config", "/nonexistent/residency.toml"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("/nonexistent/residency.toml: cannot read"),
        "{}",
        text(&o)
    );
}

#[test]
fn run_refuses_to_start_when_it_cannot_enforce() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new(&[]).unwrap();
    // A configured path that exists but is not a cgroup directory: nothing is attached,
    // and the message names the file, the line and the path.
    let cfg = sb.write_config(
        "notcgroup.toml",
        "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\n[[policy]]\nname = \"p\"\ncgroups = [\"{cg}/cgroup.procs\"]\nallow = [\"198.51.100.0/24\"]\n",
    );
    let o = agent(&["run", "--config", &cfg.display().to_string()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("refusing to start")
            && t.contains("notcgroup.toml:7")
            && t.contains("not a cgroup v2 directory"),
        "{t}"
    );
    assert!(Sandbox::attached(&sb.cgroup_root).is_empty());

    // No policy at all: starting would replace pinned enforcement with nothing.
    let cfg = sb.write_config(
        "empty.toml",
        "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\n",
    );
    let o = agent(&["run", "--config", &cfg.display().to_string()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("has no [[policy]]"), "{t}");

    // A pin path that cannot hold a BPF filesystem.
    let cfg = sb.write_config(
        "badpin.toml",
        "[agent]\npin_path = \"/proc/residency-cannot-exist\"\n[[policy]]\nname = \"p\"\ncgroups = [\"{cg}\"]\n",
    );
    let o = agent(&["run", "--config", &cfg.display().to_string()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("refusing to start") && t.contains("/proc/residency-cannot-exist"),
        "{t}"
    );
    assert!(Sandbox::attached(&sb.cgroup_root).is_empty());
}

#[test]
fn check_needs_a_config_unless_asked_for_the_embedded_default() {
    // With no /etc/residency/residency.toml, a bare `check` fails (a CI step must not
    // pass on a config that was never shipped); `--default` checks the embedded one,
    // which only audits. With a host config, it checks that (the host's own business).
    if std::path::Path::new("/etc/residency/residency.toml").exists() {
        return;
    }
    let o = agent(&["check"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("no config at /etc/residency/residency.toml") && t.contains("--default"),
        "{t}"
    );
    let o = agent(&["check", "--default"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("embedded"), "{t}");
    assert!(t.contains("mode=audit"), "{t}");
    assert!(!t.contains("mode=enforce"), "{t}");
}

#[test]
fn check_speaks_json_for_ci_and_strict_makes_lock_out_risks_errors() {
    let dir = tempdir::Dir::new("json");
    let risky = write(
        &dir,
        "risky.toml",
        "[[policy]]\nname = \"host\"\ncgroups = [\".\"]\nallow = [\"10.0.0.0/8 tcp/443\"]\n",
    );
    // Warnings, not errors, by default.
    let o = agent(&["check", "--config", &risky]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("warning:") && t.contains("enforces on the root cgroup"),
        "{t}"
    );
    assert!(
        t.contains("allows no DNS") && t.contains("allows no IPv6"),
        "{t}"
    );
    // --strict: errors, non-zero.
    let o = agent(&["check", "--strict", "--config", &risky]);
    assert!(!o.status.success(), "{}", text(&o));
    // JSON for machines: the summary, the warnings, and the verdict.
    let o = agent(&["check", "--format", "json", "--config", &risky]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], true);
    assert_eq!(v["policies"][0]["name"], "host");
    assert_eq!(v["policies"][0]["mode"], "enforce");
    assert!(v["warnings"].as_array().unwrap().len() >= 3, "{v:#}");
    let bad = write(
        &dir,
        "bad.toml",
        "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/33\"]\n",
    );
    let o = agent(&["check", "--format", "json", "--config", &bad]);
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains("bad.toml:4:"),
        "{v:#}"
    );
}

#[test]
fn shipped_configs_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["config/residency.example.toml", "config/default.toml"] {
        let path = root.join(file).display().to_string();
        let o = agent(&["check", "--config", &path]);
        assert!(o.status.success(), "{file}: {}", text(&o));
        assert!(text(&o).contains(": OK, "), "{file}: {}", text(&o));
    }
}

#[test]
fn run_refuses_one_cgroup_bound_twice_under_two_spellings() {
    if !require_root() {
        return;
    }
    let mut sb = Sandbox::new(&[]).unwrap();
    sb.cgroup("app").unwrap();
    let rel = sb.cgroup_root.strip_prefix(&sb.mount).unwrap().join("app");
    let cfg = sb.write_config(
        "twice.toml",
        &format!(
            "[agent]\npin_path = \"{{pins}}\"\n[[policy]]\nname = \"a\"\ncgroups = [\"{{cg}}/app\"]\n\
             [[policy]]\nname = \"b\"\ncgroups = [\"{}\"]\n",
            rel.display()
        ),
    );
    let o = agent(&["run", "--config", &cfg.display().to_string()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("bound by policy \"a\" and again by policy \"b\""),
        "{t}"
    );
}

#[test]
fn explain_names_the_deciding_entry() {
    let dir = tempdir::Dir::new("explain");
    let cfg = write(
        &dir,
        "explain.toml",
        "[[policy]]\nname = \"eu-central\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/16\"]\ndeny = [\"10.0.99.0/24\"]\n",
    );
    let o = agent(&["explain", "--config", &cfg, "10.0.99.7", "tcp/5432"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains(&format!("10.0.99.7 tcp/5432: BLOCKED by policy eu-central (mode=enforce): deny 10.0.99.0/24 ({cfg}:5)")), "{t}");
    let t = text(&agent(&["explain", "--config", &cfg, "::ffff:10.0.1.1"]));
    assert!(
        t.contains("judged as 10.0.1.1")
            && t.contains("ALLOWED")
            && t.contains("allow 10.0.0.0/16"),
        "{t}"
    );
    let t = text(&agent(&["explain", "--config", &cfg, "203.0.113.9"]));
    assert!(t.contains("BLOCKED") && t.contains("default deny"), "{t}");
    assert!(
        !agent(&["explain", "--config", &cfg, "--policy", "nope", "10.0.0.1"])
            .status
            .success()
    );
}

#[test]
fn version_completions_and_man_page_come_from_the_cli_definition() {
    let t = text(&agent(&["--version"]));
    assert!(
        t.starts_with("residency-agent 0.") && t.contains("commit "),
        "{t}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let o = agent(&["completions", shell]);
        assert!(o.status.success());
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(
            script.contains("residency-agent")
                && script.contains("reload")
                && script.contains("explain"),
            "{shell}"
        );
    }
    let o = agent(&["man"]);
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && page.contains(".TH residency-agent 1") && page.contains("detach"),
        "{page}"
    );
}

#[test]
fn region_sources_are_read_aggregated_reported_and_explained() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let dir = tempdir::Dir::new("sources");
    let cfg = write(
        &dir,
        "sources.toml",
        &format!(
            r#"
[[policy]]
name = "eu-central"
cgroups = ["x"]
allow = ["10.0.0.0/16"]
deny = ["18.158.0.0/16"]
allow_sources = [
  {{ format = "aws", path = "{f}/ip-ranges.json", regions = ["eu-central-1"] }},
  {{ format = "gcp", path = "{f}/cloud.json", scopes = ["europe-west3"] }},
  {{ format = "azure", path = "{f}/ServiceTags_Public.json", regions = ["germanywestcentral"] }},
  {{ format = "plain", path = "{f}/eu-partners.txt" }},
]
"#,
            f = fixtures.display()
        ),
    );
    let o = agent(&["check", "--config", &cfg]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // AWS: 5 entries for eu-central-1 (one duplicate, two adjacent /15s) -> 3.
    assert!(
        t.contains("source aws ") && t.contains("ip-ranges.json: 5 prefixes, 3 after aggregation"),
        "{t}"
    );
    assert!(
        t.contains("cloud.json: 2 prefixes, 2 after aggregation"),
        "{t}"
    );
    assert!(
        t.contains("ServiceTags_Public.json: 3 prefixes, 2 after aggregation"),
        "source names are shown as written: {t}"
    );
    assert!(
        t.contains("eu-partners.txt: 3 prefixes, 2 after aggregation"),
        "{t}"
    );

    let explain = |addr: &str| text(&agent(&["explain", "--config", &cfg, addr]));
    let t = explain("18.157.1.1");
    assert!(
        t.contains("ALLOWED")
            && t.contains("allow 18.156.0.0/14 (from aws ")
            && t.contains("ip-ranges.json"),
        "{t}"
    );
    let t = explain("18.158.3.3");
    assert!(
        t.contains("BLOCKED") && t.contains("deny 18.158.0.0/16") && !t.contains("from aws"),
        "a hand-written deny carves the source out: {t}"
    );
    let t = explain("52.94.248.17");
    assert!(
        t.contains("BLOCKED") && t.contains("default deny"),
        "us-east-1 is not allowed: {t}"
    );
    assert!(explain("20.52.100.1").contains("allow 20.52.0.0/17 (from azure "));
    assert!(explain("2600:1900:4031::1").contains("(from gcp "));
    assert!(explain("198.51.100.200").contains("allow 198.51.100.0/24 (from plain "));

    // A region that matches nothing is an error naming the config line.
    let bad = write(
        &dir,
        "bad.toml",
        &format!(
            "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow_sources = [{{ format = \"aws\", path = \"{}/ip-ranges.json\", regions = [\"mars-1\"] }}]\n",
            fixtures.display()
        ),
    );
    let o = agent(&["check", "--config", &bad]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("bad.toml:4:") && text(&o).contains("no prefix"),
        "{}",
        text(&o)
    );
}

#[test]
fn check_refuses_what_run_and_reload_would_refuse_and_warns_before_a_reload_would() {
    let dir = tempdir::Dir::new("ceilings");
    let prefixes = |n: usize| {
        (0..n)
            .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // More trie entries than rule_capacity: run could not write them.
    let cfg = write(
        &dir,
        "capacity.toml",
        &format!(
            "[agent]\nrule_capacity = 64\n[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [{}]\n",
            prefixes(100)
        ),
    );
    let o = agent(&["check", "--config", &cfg]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("IPv4 trie entries and [agent] rule_capacity is 64"),
        "{t}"
    );
    // Fits once, not twice: a reload from a version as large would be refused.
    let cfg = write(
        &dir,
        "half.toml",
        &format!(
            "[agent]\nrule_capacity = 160\n[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [{}]\n",
            prefixes(100)
        ),
    );
    let o = agent(&["check", "--config", &cfg]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("warning:") && t.contains("more than half of rule_capacity (160)"),
        "{t}"
    );
    // More cgroups than one version of the bindings holds: refused with the key, and
    // the advice that helps (not rule_capacity).
    let many: Vec<String> = (0..16_385).map(|i| format!("\"c{i}\"")).collect();
    let cfg = write(
        &dir,
        "bindings.toml",
        &format!(
            "[[policy]]\nname = \"p\"\ncgroups = [{}]\nallow = [\"10.0.0.0/8\"]\n",
            many.join(", ")
        ),
    );
    let o = agent(&["check", "--config", &cfg]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("policy \"p\".cgroups: more than 16384 cgroups")
            && t.contains("Bind a common parent cgroup")
            && !t.contains("rule_capacity"),
        "{t}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::{io::Read as _, os::unix::process::ExitStatusExt as _, process::Stdio};
    let dir = tempdir::Dir::new("sigpipe");
    // A summary far larger than a pipe holds.
    let policies: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "[[policy]]\nname = \"p{i}\"\ncgroups = [\"x{i}\"]\nallow = [\"10.{}.{}.0/24\"]\n",
                i / 256,
                i % 256
            )
        })
        .collect();
    let cfg = write(&dir, "big.toml", &policies.concat());
    let mut child = Command::new(agent_binary())
        .args(["check", "--config", &cfg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader is gone (`check | head -c1`).
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}

#[test]
fn reload_of_a_broken_config_reaches_the_agent_which_refuses_and_counts_it() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(&["203.0.113.9"]).unwrap();
    sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\n\
         [[policy]]\nname = \"eu\"\ncgroups = [\"{cg}/app\"]\nallow = [\"198.51.100.0/24\"]\n",
    );
    sb.start_agent(&bin, &cfg).unwrap();
    // Broken beyond parsing, control_socket and all: the CLI still finds the agent
    // (through the socket the file names, read leniently) and the agent says why.
    let original = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, original.replace("[[policy]]", "[[policy]\n")).unwrap();
    let o = agent(&["reload", "--config", cfg.to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("rejected") && t.contains("residency.toml:"),
        "{t}"
    );
    let (_, body) = residency_tests::http_get(sb.metrics, "/metrics").unwrap();
    assert_eq!(
        residency_tests::sample(&body, "residency_reloads_total{result=\"failure\"}"),
        Some(1.0),
        "{body}"
    );
    assert!(
        sb.agent()
            .stderr()
            .iter()
            .any(|l| l.contains("reload rejected")),
        "the agent logged nothing"
    );
}

#[test]
fn every_whole_config_example_in_the_docs_passes_check() {
    // Each ```toml block with a [[policy]] (a whole config, not a fragment) of the
    // README and docs/, as a reader would copy it.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempdir::Dir::new("docs");
    let mut docs = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        // Pages only: docs/ holds pictures too (docs/bench).
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            docs.push(path);
        }
    }
    let mut checked = 0;
    for doc in docs {
        let page = std::fs::read_to_string(&doc).unwrap();
        for (n, block) in page.split("```toml\n").skip(1).enumerate() {
            let example = &block[..block.find("```").unwrap()];
            if !example.contains("[[policy]]") {
                continue;
            }
            let name = format!("{}-{n}.toml", doc.file_stem().unwrap().to_string_lossy());
            let cfg = write(&dir, &name, example);
            let o = agent(&["check", "--config", &cfg]);
            assert!(
                o.status.success(),
                "{} example {n} fails check:\n{example}\n{}",
                doc.display(),
                text(&o)
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} examples found");
}

#[test]
fn check_refuses_a_file_as_a_cgroup_and_a_config_without_policies_as_run_does() {
    let dir = tempdir::Dir::new("run-refusals");
    let file = write(
        &dir,
        "file.toml",
        "[[policy]]\nname = \"p\"\ncgroups = [\"cgroup.procs\"]\nallow = [\"10.0.0.0/8\", \"::1/128\"]\n",
    );
    let o = agent(&["check", "--config", &file]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("file.toml:3: ") && text(&o).contains("is not a cgroup v2 directory"),
        "{}",
        text(&o)
    );
    // A binding deeper than the kernel program's ancestor walk: refused, named.
    let deep = format!(
        "[[policy]]\nname = \"deep\"\ncgroups = [\"{}\"]\nallow = [\"10.0.0.0/8\", \"::1/128\"]\n",
        vec!["d"; 33].join("/")
    );
    let deep = write(&dir, "deep.toml", &deep);
    let o = agent(&["check", "--config", &deep]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("deep.toml:3:")
            && text(&o).contains("is 33 levels below the cgroup root"),
        "{}",
        text(&o)
    );
    let empty = write(&dir, "empty.toml", "[agent]\nwatch_config = true\n");
    let o = agent(&["check", "--config", &empty]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("has no [[policy]], so there is nothing to enforce"),
        "{}",
        text(&o)
    );
}
