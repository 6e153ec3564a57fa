//! `residency-agent verify`: the pinned state of the version in force against the
//! config on disk, with and without a running agent, and every kind of tampering a
//! root user can do by hand (`bpftool map update/delete`, `bpftool link detach`, a
//! config edited but not reloaded) named precisely, with a non-zero exit.

use std::{path::Path, process::Command, process::Output, time::Duration};

use residency_tests::{
    Sandbox, agent_binary, eventually, http_get, journal_entries, output_within, pinned,
    require_root, sample,
};

const CONFIG: &str = r#"
[agent]
pin_path = "{pins}"
metrics_address = "{metrics}"

[[policy]]
name = "eu"
cgroups = ["{cg}/app"]
allow = ["198.51.100.0/24", "2001:db8:1::/48", "10.20.0.0/16 tcp/5432", "10.30.0.0/24 udp/53"]
deny = ["198.51.100.99/32"]
interfaces = ["wg0"]

[[policy]]
name = "batch"
mode = "audit"
cgroups = ["{cg}/batch"]
allow = ["203.0.113.0/24"]
"#;

fn verify(config: &Path) -> (bool, String) {
    let o: Output = output_within(
        Command::new(agent_binary()).args(["verify", "--config", config.to_str().unwrap()]),
        60,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// RuleValue: action 1 (allow), rule 0, no port rules.
const ALLOW: [u8; 16] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A rule trie key of the first policy (id 0) in `slot`: prefix length (32 + `len`),
/// scope, address.
/// Leaves the lookup tables unread, as an agent without them leaves them when it
/// changes the version: `RES_TABLE_EPOCH` two behind the epoch in force. Returns
/// (the stale value, the epoch in force).
fn leave_tables_unread(pin_path: &Path) -> (u32, u32) {
    let active = pinned::lookup(&pinned::map(pin_path, "RES_ACTIVE"), &[0; 4]);
    let epoch = u32::from_le_bytes(active[..4].try_into().unwrap());
    let stale = epoch.wrapping_sub(2);
    pinned::update(
        &pinned::map(pin_path, "RES_TABLE_EPOCH"),
        &[0; 4],
        &stale.to_le_bytes(),
    );
    (stale, epoch)
}

/// Makes the first-level chunk of policy id 0 in generation `slot` (its root in map
/// `roots`, its chunks in `chunks`) allow everything (each leaf: decided, allowed,
/// rule 0), and returns the chunk's index.
fn allow_all_in_first_chunk(pin_path: &Path, slot: u8, roots: &str, chunks: &str) -> u32 {
    let root = pinned::lookup(
        &pinned::map(pin_path, roots),
        &(u32::from(slot) * 1024).to_le_bytes(),
    );
    let chunk = u32::from_le_bytes(root[..4].try_into().unwrap()) - 1;
    let allow_all: Vec<u8> = (0..256)
        .flat_map(|_| ((1u32 << 28) | (1 << 30)).to_le_bytes())
        .collect();
    pinned::update(
        &pinned::map(pin_path, chunks),
        &chunk.to_le_bytes(),
        &allow_all,
    );
    chunk
}

fn rule_key(slot: u8, a: [u8; 4], len: u8) -> Vec<u8> {
    let mut k = (32u32 + u32::from(len)).to_le_bytes().to_vec();
    k.extend([slot, 0, 0, 0]);
    k.extend(a);
    k
}

#[test]
fn verify_matches_the_config_and_names_each_tampering() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(&["198.51.100.7"]).unwrap();
    let app = sb.cgroup("app").unwrap();
    sb.cgroup("batch").unwrap();
    let cfg = sb.write_config("residency.toml", CONFIG);
    sb.start_agent(&bin, &cfg).unwrap();

    let (ok, out) = verify(&cfg);
    assert!(ok, "{out}");
    assert!(
        out.contains("verified 2 policies") && out.contains("kernel state = config"),
        "{out}"
    );
    // The live program was driven, policy by policy...
    let probes: usize = out
        .split(" probes: ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(probes > 100, "{out}");
    assert!(!out.contains("not probed"), "{out}");
    // ...and its probes were neither counted nor reported.
    std::thread::sleep(Duration::from_millis(500));
    let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
    for verdict in ["blocked", "audited", "allowed"] {
        for (policy, family) in [("eu", "ipv4"), ("eu", "ipv6"), ("batch", "ipv4")] {
            let s = sample(
                &body,
                &format!(
                    "residency_packets_total{{policy=\"{policy}\",verdict=\"{verdict}\",family=\"{family}\"}}"
                ),
            );
            assert_eq!(
                s,
                Some(0.0),
                "{policy} {verdict} {family}: probes were counted"
            );
        }
    }
    assert!(
        sb.agent().events().is_empty(),
        "probes were reported: {:?}",
        sb.agent().events()
    );

    let trie = pinned::map(&sb.pin_path(), "RES_RULES_V4");
    // The version in force is in slot 1 after the agent's first apply (epoch 1).
    let slot = pinned::active_slot(&sb.pin_path());

    // 1. An entry added by hand.
    let added = rule_key(slot, [192, 0, 2, 0], 24);
    pinned::update(&trie, &added, &ALLOW);
    let (ok, out) = verify(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains("policy \"eu\": ipv4 192.0.2.0/24: in the kernel")
            && out.contains("not in the config"),
        "{out}"
    );
    pinned::delete(&trie, &added);
    assert!(verify(&cfg).0, "back as it was");

    // 2. An entry of the config deleted by hand: the deny carve-out.
    let carve = rule_key(slot, [198, 51, 100, 99], 32);
    pinned::delete(&trie, &carve);
    let (ok, out) = verify(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains("policy \"eu\": ipv4 198.51.100.99/32: in the config (deny:198.51.100.99/32), missing from the kernel"),
        "{out}"
    );

    // 3. An entry changed by hand: the carve-out turned into an allow.
    pinned::update(&trie, &carve, &ALLOW);
    let (ok, out) = verify(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains("policy \"eu\": ipv4 198.51.100.99/32: the kernel holds")
            && out.contains("(action 1), the config means deny:198.51.100.99/32 (action 2)"),
        "{out}"
    );
    // The live program judges this IPv4 destination by the policy's lookup tables,
    // which still hold the config's verdict: the probes find nothing wrong.
    assert!(
        !out.contains("udp 198.51.100.99 port 53: the kernel allows"),
        "{out}"
    );

    // 3b. The lookup tables changed by hand: the policy's first-level chunk made to
    // allow everything.
    let chunk = allow_all_in_first_chunk(&sb.pin_path(), slot, "RES_TABLE_ROOTS", "RES_TABLE_V4");
    let (ok, out) = verify(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains("policy \"eu\": IPv4 lookup tables: 1 of ")
            && out.contains(&format!(
                "chunks differ from the config's (first: chunk {chunk}, entry "
            )),
        "{out}"
    );
    // The probes see it too: the live program now allows what the config refuses.
    assert!(
        out.contains(
            "policy \"eu\": udp 198.51.100.99 port 53: the kernel allows, the config refuses"
        ),
        "{out}"
    );

    // 3c. The same for the IPv6 tables (the policy's 2001:db8:1::/48).
    let chunk =
        allow_all_in_first_chunk(&sb.pin_path(), slot, "RES_TABLE_ROOTS_V6", "RES_TABLE_V6");
    let (ok, out) = verify(&cfg);
    assert!(!ok, "{out}");
    // Its own line (the IPv4 chunk changed above may have the same index).
    assert!(
        out.lines()
            .any(|l| l.contains("policy \"eu\": IPv6 lookup tables: 1 of ")
                && l.contains(&format!(
                    "chunks differ from the config's (first: chunk {chunk}, entry "
                ))),
        "{out}"
    );

    // 3d. The tables left unread: `RES_TABLE_EPOCH` behind the epoch in force, as an
    // agent without lookup tables leaves it when it changes the version. The tries
    // judge alone, as exactly: a note, not a mismatch.
    let (stale, epoch) = leave_tables_unread(&sb.pin_path());
    let (ok, out) = verify(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "note: lookup tables: not read by the programs: RES_TABLE_EPOCH holds {stale}, \
             the version in force is epoch {epoch}"
        ))),
        "{out}"
    );
    assert!(
        !out.lines()
            .any(|l| l.starts_with("mismatch:") && l.contains("RES_TABLE_EPOCH")),
        "{out}"
    );

    // 4. The event rate limit lowered by hand: blocks would go on unreported.
    // Settings: events per second 1, burst 1, flags 0.
    let mut one_per_second = [0u8; 16];
    one_per_second[0] = 1;
    one_per_second[4] = 1;
    pinned::update(
        &pinned::map(&sb.pin_path(), "RES_SETTINGS"),
        &[0; 4],
        &one_per_second,
    );
    let (ok, out) = verify(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "settings: [events] rate_limit_per_cpu is 1 in the kernel, 1000 in the config"
        ) && out
            .contains("settings: [events] rate_limit_burst is 1 in the kernel, 200 in the config"),
        "{out}"
    );

    // 5. The config edited on disk but not reloaded.
    let edited = std::fs::read_to_string(&cfg).unwrap().replace(
        "\"203.0.113.0/24\"",
        "\"203.0.113.0/24\", \"2001:db8:2::/48\"",
    );
    std::fs::write(&cfg, edited).unwrap();
    let (ok, out) = verify(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains("policy \"batch\": ipv6 2001:db8:2::/48: in the config (allow:2001:db8:2::/48), missing from the kernel"),
        "{out}"
    );
    // A reload makes the kernel match the file again (the tampered entry is replaced
    // with the rest of the version, the settings written again).
    let o = output_within(
        Command::new(agent_binary()).args(["reload", "--config", cfg.to_str().unwrap()]),
        30,
    );
    assert!(o.status.success(), "{o:?}");
    let (ok, out) = verify(&cfg);
    assert!(ok, "after a reload: {out}");
    assert!(!out.contains("lookup tables: not read"), "{out}");
    // The tables left unread and nothing else: verify passes, and notes it.
    leave_tables_unread(&sb.pin_path());
    let (ok, out) = verify(&cfg);
    assert!(ok, "a note is no mismatch: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("note: lookup tables: not read by the programs")),
        "{out}"
    );

    // 6. A link detached by hand, with no agent running: verify reads the pins alone.
    sb.agent().terminate(Duration::from_secs(10)).unwrap();
    let (ok, out) = verify(&cfg);
    assert!(ok, "without an agent: {out}");
    let instance = std::fs::read_dir(sb.pin_path().join("v3/links"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let app_id = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&app).unwrap().ino()
    };
    let link = instance.join(format!("link-{app_id}-egress"));
    pinned::bpftool(&["link", "detach", "pinned", link.to_str().unwrap()]);
    let (ok, out) = verify(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "cgroup {}: program egress: its link",
            app.display()
        )) && out.contains("is detached"),
        "{out}"
    );
}

#[test]
fn the_agent_verifies_each_change_itself_and_reports_a_difference() {
    if !require_root() {
        return;
    }
    residency_tests::ensure_journald().unwrap();
    let bin = agent_binary();
    let mut sb = Sandbox::new(&["198.51.100.7"]).unwrap();
    sb.cgroup("app").unwrap();
    // `late` does not exist yet: binding it when it appears is a change to verify.
    let cfg = sb.write_config(
        "residency.toml",
        &CONFIG.replace(
            "cgroups = [\"{cg}/app\"]",
            "cgroups = [\"{cg}/app\", \"{cg}/late\"]",
        ),
    );
    sb.cgroup("batch").unwrap();
    sb.start_agent(&bin, &cfg).unwrap();
    let metric = |sb: &Sandbox, name: &str| {
        let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
        sample(&body, name).unwrap_or(-1.0)
    };
    eventually(
        "the first self-verification",
        Duration::from_secs(30),
        || {
            metric(&sb, "residency_verifications_total") >= 1.0
                && metric(&sb, "residency_last_verification_timestamp_seconds") > 0.0
        },
    );
    assert_eq!(metric(&sb, "residency_verification_failures_total"), 0.0);
    assert_eq!(metric(&sb, "residency_last_verification_mismatches"), 0.0);

    // Tamper with the version in force, then make a change the agent verifies.
    let slot = pinned::active_slot(&sb.pin_path());
    pinned::update(
        &pinned::map(&sb.pin_path(), "RES_RULES_V4"),
        &rule_key(slot, [192, 0, 2, 0], 24),
        &ALLOW,
    );
    sb.cgroup("late").unwrap();
    eventually(
        "a failed self-verification",
        Duration::from_secs(30),
        || metric(&sb, "residency_verification_failures_total") >= 1.0,
    );
    assert!(metric(&sb, "residency_last_verification_mismatches") >= 1.0);
    eventually("its journal entry", Duration::from_secs(30), || {
        journal_entries("MESSAGE_ID", "3b8e1f6a9c2d4e7f8a1b5c9d2e6f0a43")
            .iter()
            .any(|e| {
                e["MESSAGE"].as_str().is_some_and(|m| {
                    m.contains(&cfg.display().to_string()) && m.contains("192.0.2.0/24")
                })
            })
    });
}

#[test]
fn report_is_evidence_an_auditor_can_file_and_diff() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(&["198.51.100.7", "192.0.2.44"]).unwrap();
    let app = sb.cgroup("app").unwrap();
    sb.cgroup("batch").unwrap();
    let cfg = sb.write_config("residency.toml", CONFIG);
    sb.start_agent(&bin, &cfg).unwrap();
    assert_eq!(sb.udp_burst(Some(&app), "192.0.2.44", 3), (0, 3));
    let o = output_within(
        Command::new(agent_binary()).args(["reload", "--config", cfg.to_str().unwrap()]),
        30,
    );
    assert!(o.status.success(), "{o:?}");
    let report = || -> serde_json::Value {
        let o = output_within(
            Command::new(agent_binary()).args([
                "report",
                "--json",
                "--config",
                cfg.to_str().unwrap(),
            ]),
            60,
        );
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let r = report();
    let sha =
        String::from_utf8(Command::new("sha256sum").arg(&cfg).output().unwrap().stdout).unwrap();
    assert_eq!(
        r["config"]["sha256"],
        sha.split_whitespace().next().unwrap()
    );
    assert!(
        r["report"]["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{r:#}"
    );
    assert!(
        r["report"]["kernel"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "{r:#}"
    );
    assert!(
        r["verification"]["result"]
            .as_str()
            .unwrap()
            .ends_with("kernel state = config"),
        "{r:#}"
    );
    let policies = r["policies"].as_array().unwrap();
    assert_eq!(policies[0]["name"], "batch", "sorted by name");
    let eu = &policies[1];
    assert_eq!(eu["name"], "eu");
    assert_eq!(eu["mode"], "enforce");
    assert_eq!(eu["packets_since_start"]["blocked"], 3, "{eu:#}");
    assert_eq!(
        eu["top_blocked"][0]["destination"], "192.0.2.44 udp/8080",
        "{eu:#}"
    );
    assert_eq!(eu["top_blocked"][0]["count"], 3, "{eu:#}");
    assert_eq!(r["agent"]["running"], true);
    let history = r["agent"]["reload_history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{r:#}");
    assert_eq!(history[0]["by"], "uid 0 (control socket)");
    assert_eq!(history[0]["applied"], true);
    // Stable: a second report differs only in its own time.
    let mut again = report();
    let mut first = r.clone();
    first["report"]["generated"] = serde_json::Value::Null;
    again["report"]["generated"] = serde_json::Value::Null;
    assert_eq!(first, again);
    // The readable form says the same.
    let o = output_within(
        Command::new(agent_binary()).args(["report", "--config", cfg.to_str().unwrap()]),
        60,
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("verification: verified 2 policies")
            && text.contains("blocked 192.0.2.44 udp/8080 x3")
            && text.contains("reload at ")
            && text.contains("by uid 0 (control socket)"),
        "{text}"
    );
    assert!(!text.contains("note:"), "{text}");
    // A verification note (the lookup tables left unread) is in both forms.
    leave_tables_unread(&sb.pin_path());
    let r = report();
    assert!(
        r["verification"]["notes"][0]
            .as_str()
            .is_some_and(|n| n.starts_with("lookup tables: not read by the programs")),
        "{r:#}"
    );
    let o = output_within(
        Command::new(agent_binary()).args(["report", "--config", cfg.to_str().unwrap()]),
        60,
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("\n  note: lookup tables: not read by the programs"),
        "{text}"
    );
}
