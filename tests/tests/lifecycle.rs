//! Policy lifecycle: reloads (control socket, SIGHUP, dry run), atomicity under a
//! thousand reloads with traffic flowing, rejection of bad configs with the old policy
//! enforcing, a non-root client refused, and takeover after kill -9 without a window.

use std::{path::Path, process::Command};

use residency_tests::{
    Sandbox, agent_binary, http_get, output_within, pinned, require_root, sample, seccomp,
};

const BOTH: &str = "198.51.100.7"; // allowed by versions A and B
const ONLY_A: &str = "198.51.100.100"; // allowed by A only (in /25, not in /26)
const ONLY_B: &str = "203.0.113.9"; // allowed by B only
const NEITHER: &str = "198.51.100.99"; // allowed by neither (a carve-out in both)
const ADDRS: &[&str] = &[BOTH, ONLY_A, ONLY_B, NEITHER];

fn version(allow: &str) -> String {
    format!(
        r#"
[agent]
pin_path = "{{pins}}"
metrics_address = "{{metrics}}"

[events]
sinks = ["text"]

[[policy]]
name = "eu-central"
cgroups = ["{{cg}}/app"]
allow = [{allow}]
deny = ["198.51.100.99/32"]
"#
    )
}

fn version_a() -> String {
    version(r#""198.51.100.0/25""#)
}

fn version_b() -> String {
    version(r#""198.51.100.0/26", "203.0.113.0/24""#)
}

/// A sandbox with the cgroup `app` and an agent running `config`: the agent binary,
/// the sandbox, the cgroup and the config file.
fn started(
    config: &str,
) -> (
    std::path::PathBuf,
    Sandbox,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config("residency.toml", config);
    sb.start_agent(&bin, &cfg).unwrap();
    (bin, sb, app, cfg)
}

/// Version B is in force for `app`: it allows ONLY_B, and no longer ONLY_A.
fn version_b_judges(sb: &Sandbox, app: &Path, when: &str) {
    assert!(
        sb.client(Some(app), "udp", ONLY_B).ok,
        "{when}: version B allows {ONLY_B}"
    );
    assert!(
        !sb.client(Some(app), "udp", ONLY_A).ok,
        "{when}: version B no longer allows {ONLY_A}"
    );
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Replaces the config file atomically (write + rename), as an operator's editor or a
/// ConfigMap update does.
fn replace(path: &Path, text: &str, sb: &Sandbox) {
    let tmp = path.with_extension("tmp");
    let text = text
        .replace("{pins}", &sb.pin_path().display().to_string())
        .replace("{cg}", &sb.cgroup_root.display().to_string())
        .replace("{metrics}", &sb.metrics.to_string())
        .replace(
            "metrics_address",
            &format!(
                "control_socket = \"{}\"\nmetrics_address",
                sb.control_socket().display()
            ),
        );
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn reload_dry_run_status_and_sighup() {
    if !require_root() {
        return;
    }
    let (bin, mut sb, app, cfg) = started(&version_a());
    assert!(sb.client(Some(&app), "udp", ONLY_A).ok);
    assert!(!sb.client(Some(&app), "udp", ONLY_B).ok);

    // The socket is private to root.
    let mode = std::fs::metadata(sb.control_socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    replace(&cfg, &version_b(), &sb);
    let o = sb.ctl(&bin, &["reload", "--dry-run"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("dry run") && t.contains("~ policy eu-central: +2 -1 prefixes"),
        "{t}"
    );
    assert!(
        t.contains("+ allow:203.0.113.0/24") && t.contains("- allow:198.51.100.0/25"),
        "{t}"
    );
    assert!(
        !sb.client(Some(&app), "udp", ONLY_B).ok,
        "a dry run applies nothing"
    );

    let o = sb.ctl(&bin, &["reload"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("reloaded: generation 2 in force"), "{t}");
    version_b_judges(&sb, &app, "after the reload");

    let o = sb.ctl(&bin, &["status"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("generation 2") && t.contains("policy eu-central mode=enforce ipv4=3"),
        "{t}"
    );
    assert!(t.contains(&format!("cgroup {}", app.display())), "{t}");
    let o = sb.ctl(&bin, &["status", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["generation"], 2);
    assert_eq!(j["policies"][0]["name"], "eu-central");
    assert_eq!(j["policies"][0]["prefixes"]["ipv4"], 3);
    assert!(
        j["policies"][0]["packets"]["blocked"].as_u64().unwrap() >= 2,
        "{j}"
    );
    assert_eq!(j["reloads"]["success"], 1);

    // SIGHUP does what `reload` does.
    replace(&cfg, &version_a(), &sb);
    // SAFETY: kill(2) on the agent this test started.
    unsafe { libc::kill(sb.agent().pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sb
        .agent()
        .stderr()
        .iter()
        .any(|l| l.contains("generation 3 in force"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload: {:?}",
            sb.agent().stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(sb.client(Some(&app), "udp", ONLY_A).ok);
    let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
    assert_eq!(sample(&body, "residency_policy_generation"), Some(3.0));
    assert_eq!(
        sample(&body, "residency_reloads_total{result=\"success\"}"),
        Some(2.0)
    );
}

#[test]
fn a_bad_reload_is_rejected_and_the_policy_in_force_stays() {
    if !require_root() {
        return;
    }
    let (bin, sb, app, cfg) = started(&version_a());
    for (bad, expect) in [
        (
            version_a().replace("198.51.100.0/25", "198.51.100.0/33"),
            "198.51.100.0/33",
        ),
        (version_a().replace("allow =", "alow ="), "alow"),
        (
            version_a().replace("{cg}/app", "{cg}/app/cgroup.procs"),
            "not a cgroup v2 directory",
        ),
        (
            version_a().replace("[[policy]]", "[[policy]\n"),
            "residency.toml:",
        ),
    ] {
        replace(&cfg, &bad, &sb);
        let o = sb.ctl(&bin, &["reload"]);
        let t = text(&o);
        assert!(!o.status.success(), "accepted: {t}");
        assert!(t.contains("rejected") && t.contains(expect), "{t}");
        assert!(t.contains("residency.toml"), "names the file: {t}");
        // Still version A, exactly.
        assert!(sb.client(Some(&app), "udp", ONLY_A).ok);
        assert!(!sb.client(Some(&app), "udp", ONLY_B).ok);
        assert!(!sb.client(Some(&app), "udp", NEITHER).ok);
    }
    let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
    assert_eq!(
        sample(&body, "residency_reloads_total{result=\"failure\"}"),
        Some(4.0)
    );
    assert_eq!(sample(&body, "residency_policy_generation"), Some(1.0));
}

#[test]
fn a_non_root_client_is_refused() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    sb.cgroup("app").unwrap();
    let cfg = sb.write_config("residency.toml", &version_a());
    sb.start_agent(&bin, &cfg).unwrap();
    // The sandbox directory is root's; let nobody reach the socket file itself, so that
    // the agent's own credential check is what refuses.
    std::fs::set_permissions(&sb.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let other_users_bin = sb.agent_for_other_users();
    let as_nobody = |mode: u32| {
        std::fs::set_permissions(
            sb.control_socket(),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
        let mut c = Command::new(&other_users_bin);
        c.args(["reload", "--socket"]).arg(sb.control_socket());
        std::os::unix::process::CommandExt::uid(&mut c, 65534);
        std::os::unix::process::CommandExt::gid(&mut c, 65534);
        output_within(&mut c, 20)
    };
    let o = as_nobody(0o600);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("Permission denied") || text(&o).contains("permission denied"),
        "{}",
        text(&o)
    );
    let o = as_nobody(0o666);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("permission denied: uid 65534 is not root"),
        "{}",
        text(&o)
    );
    assert!(
        sb.agent()
            .stderr()
            .iter()
            .any(|l| l.contains("refused a client"))
    );
    let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
    assert_eq!(
        sample(&body, "residency_policy_generation"),
        Some(1.0),
        "nothing was reloaded"
    );
}

#[test]
fn a_thousand_reloads_under_traffic_never_mix_versions() {
    if !require_root() {
        return;
    }
    let (bin, sb, app, cfg) = started(&version_a());
    let probe = sb.probe(&app, BOTH, NEITHER);
    let started = std::time::Instant::now();
    // Differently named policies, so the two versions carry different policy ids: a
    // packet judged with one version's binding and the other's rules would find no
    // rule and drop BOTH, which the prober would see.
    let (a, b) = (
        version_a(),
        version_b().replace("name = \"eu-central\"", "name = \"eu-central-b\""),
    );
    for i in 0..1000 {
        replace(&cfg, if i % 2 == 0 { &b } else { &a }, &sb);
        let o = sb.ctl(&bin, &["reload"]);
        assert!(o.status.success(), "reload {i}: {}", text(&o));
    }
    let took = started.elapsed();
    let r = probe.finish();
    eprintln!("1000 reloads in {took:?}; prober sent {} pairs", r.sent);
    assert!(r.sent > 1000, "the prober ran throughout: {r:?}");
    assert_eq!(
        r.wrongly_dropped, 0,
        "packets both versions allow were dropped: {r:?}"
    );
    assert_eq!(r.leaked, 0, "packets neither version allows passed: {r:?}");
    let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
    assert_eq!(sample(&body, "residency_policy_generation"), Some(1001.0));
    assert_eq!(
        sample(&body, "residency_program_errors_total{kind=\"no_binding\"}"),
        Some(0.0)
    );
    // After a thousand swaps the kernel holds exactly the last version.
    let (ok, out) = sb.verify(&bin, &cfg);
    assert!(ok && out.contains("kernel state = config"), "{out}");
}

#[test]
fn kill_9_keeps_enforcing_and_a_restart_takes_over_without_a_window() {
    if !require_root() {
        return;
    }
    let (bin, mut sb, app, cfg) = started(&version_a());
    let probe = sb.probe(&app, BOTH, NEITHER);
    sb.agent().signal(libc::SIGKILL);
    assert!(
        !sb.client(Some(&app), "udp", NEITHER).ok,
        "still enforced after kill -9"
    );
    // The restarted agent runs version B: BOTH stays allowed and NEITHER blocked
    // through the takeover.
    replace(&cfg, &version_b(), &sb);
    sb.start_agent(&bin, &cfg).unwrap();
    assert!(
        sb.agent()
            .stderr()
            .iter()
            .any(|l| l.contains("adopting the pinned policy maps")),
        "{:?}",
        sb.agent().stderr()
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = probe.finish();
    assert!(r.sent > 100, "{r:?}");
    assert_eq!(r.wrongly_dropped, 0, "{r:?}");
    assert_eq!(r.leaked, 0, "{r:?}");
    assert!(
        sb.client(Some(&app), "udp", ONLY_B).ok,
        "the new agent's version is in force"
    );
    assert_eq!(
        Sandbox::residency_programs(&app),
        residency_tests::PROGRAMS,
        "one link per program: the old instance was retired"
    );
    // The adopted state, the IPv4 lookup tables included (their roots cleared at the
    // takeover, then written by the new agent), is exactly the new version.
    let (ok, out) = sb.verify(&bin, &cfg);
    assert!(ok, "{out}");
}

/// The kernel refuses the programs of an agent taking over from a killed one, as a
/// verifier that rejects them would. By then the new agent has adopted the pinned maps
/// and begun writing its version into the idle slot: it must give that version up,
/// refuse to start, and leave the killed agent's policy (which the pins keep in force)
/// judging on, its maps as they were.
#[test]
fn an_agent_whose_programs_the_kernel_refuses_leaves_the_policy_in_force_alone() {
    if !require_root() {
        return;
    }
    let (bin, mut sb, app, cfg) = started(&version_a());
    let pins = sb.pin_path();
    let count = || {
        ["RES_RULES_V4", "RES_RULES_V6", "RES_PORTS", "RES_BINDINGS"]
            .map(|m| pinned::entries(&pinned::map(&pins, m)))
    };
    let before = count();
    sb.agent().signal(libc::SIGKILL);
    replace(&cfg, &version_b(), &sb);
    let mut run = Command::new(&bin);
    run.args(["run", "--config"]).arg(&cfg).env("NO_COLOR", "1");
    let refusals = seccomp::refuse_program_loads(&mut run);
    let o = output_within(&mut run, 60);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(refusals.join() > 0, "no program load was refused: {t}");
    assert!(
        t.contains("adopting the pinned policy maps")
            && t.contains("refusing to start: the kernel program did not load"),
        "{t}"
    );
    assert_eq!(count(), before, "the version begun was deleted whole");
    assert_eq!(
        Sandbox::residency_programs(&app),
        residency_tests::PROGRAMS,
        "the killed agent's links stay"
    );
    for (dst, allowed) in [
        (BOTH, true),
        (ONLY_A, true),
        (ONLY_B, false),
        (NEITHER, false),
    ] {
        assert_eq!(
            sb.client(Some(&app), "udp", dst).ok,
            allowed,
            "{dst}: version A judges on"
        );
    }
    // Version A's state, its lookup tables aside: the failed agent cleared their
    // roots on adopting the maps (its trie judges alone until a version is applied),
    // which `verify` notes.
    let version_a = sb.write_config("a.toml", &version_a());
    let (ok, out) = sb.verify(&bin, &version_a);
    assert!(ok, "the kernel state is version A's: {out}");
    assert!(
        out.contains(
            "note: policy \"eu-central\": IPv4 lookup tables: not in the kernel (the config's"
        ),
        "{out}"
    );
    // An agent the kernel lets load takes over as usual.
    sb.start_agent(&bin, &cfg).unwrap();
    version_b_judges(&sb, &app, "after a takeover the kernel let load");
}

#[test]
fn an_unknown_pin_layout_is_refused() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    sb.cgroup("app").unwrap();
    let cfg = sb.write_config("residency.toml", &version_a());
    // Mount the bpffs first (by starting and stopping an agent), then plant a layout
    // from the future.
    sb.start_agent(&bin, &cfg).unwrap();
    sb.agent().signal(libc::SIGTERM);
    std::fs::create_dir(sb.pin_path().join("v9")).unwrap();
    let o = output_within(Command::new(&bin).args(["run", "--config"]).arg(&cfg), 30);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("layout \"v9\"") && t.contains("does not understand"),
        "{t}"
    );
    std::fs::remove_dir(sb.pin_path().join("v9")).unwrap();
}

#[test]
fn cgroups_that_appear_later_or_are_recreated_get_their_policy() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    // Neither `app` nor `batch/job` exists when the agent starts.
    let cfg = sb.write_config(
        "residency.toml",
        &version_a().replace(
            r#"cgroups = ["{cg}/app"]"#,
            r#"cgroups = ["{cg}/app", "{cg}/batch/job"]"#,
        ),
    );
    sb.start_agent(&bin, &cfg).unwrap();
    assert!(
        sb.agent()
            .stderr()
            .iter()
            .any(|l| l.contains("does not exist yet")),
        "{:?}",
        sb.agent().stderr()
    );

    let wait_attached = |sb: &mut Sandbox, path: &Path| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !sb
            .agent()
            .stderr()
            .iter()
            .any(|l| l.contains("cgroup appeared") && l.contains(&path.display().to_string()))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never got its policy",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let app = sb.cgroup("app").unwrap();
    wait_attached(&mut sb, &app);
    assert!(sb.client(Some(&app), "udp", BOTH).ok);
    assert!(
        !sb.client(Some(&app), "udp", ONLY_B).ok,
        "a cgroup created after start is enforced"
    );

    // Two levels created at once; and a child of the new cgroup inherits its policy.
    let job = sb.cgroup("batch/job").unwrap();
    wait_attached(&mut sb, &job);
    let step = sb.cgroup("batch/job/step-1").unwrap();
    assert!(!sb.client(Some(&step), "udp", NEITHER).ok);
    assert!(sb.client(Some(&step), "udp", BOTH).ok);
    let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
    assert_eq!(sample(&body, "residency_attached_cgroups"), Some(2.0));

    // Re-created (as systemd does on a unit restart): a new cgroup id, same policy.
    std::fs::remove_dir(&step).unwrap();
    std::fs::remove_dir(&job).unwrap();
    std::fs::create_dir(&job).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sb
        .agent()
        .stderr()
        .iter()
        .filter(|l| l.contains("cgroup appeared") && l.contains(&job.display().to_string()))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the re-created cgroup never got its policy"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!sb.client(Some(&job), "udp", ONLY_B).ok);
    assert!(sb.client(Some(&job), "udp", BOTH).ok);
}

#[test]
fn a_hundred_thousand_prefixes_reload_and_an_oversized_policy_is_rejected_whole() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &version_a()
            .replace("[events]", "[events]\n")
            .replace("metrics_address", "rule_capacity = 150000\nmetrics_address"),
    );
    sb.start_agent(&bin, &cfg).unwrap();

    // 60k IPv4 /32s in 10.0.0.0/8 and 40k IPv6 /64s, plus the version-B entries.
    let mut big = String::from(r#""198.51.100.0/26", "203.0.113.0/24""#);
    for i in 0..60_000u32 {
        big.push_str(&format!(
            ", \"10.{}.{}.{}/32\"",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        ));
    }
    for i in 0..40_000u32 {
        big.push_str(&format!(
            ", \"2001:db8:{:x}:{:x}::/64\"",
            0x100 + (i >> 16),
            i & 0xffff
        ));
    }
    let with_capacity = |v: String, cap: u32| {
        v.replace(
            "metrics_address",
            &format!("rule_capacity = {cap}\nmetrics_address"),
        )
    };
    replace(&cfg, &with_capacity(version(&big), 150_000), &sb);
    let o = sb.ctl(&bin, &["reload"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("reloaded: generation 2 in force (100003 prefixes applied in"),
        "{t}"
    );
    eprintln!("{}", t.lines().next().unwrap());
    assert!(sb.client(Some(&app), "udp", ONLY_B).ok);
    assert!(!sb.client(Some(&app), "udp", NEITHER).ok);

    // 150k entries do not fit beside the 100k in force in a 150k-entry map: rejected
    // whole, before anything is written; the 100k version keeps enforcing.
    let mut bigger = big.clone();
    for i in 0..50_000u32 {
        bigger.push_str(&format!(", \"172.16.{}.{}/32\"", (i >> 8) & 0xff, i & 0xff));
    }
    replace(&cfg, &with_capacity(version(&bigger), 150_000), &sb);
    let o = sb.ctl(&bin, &["reload"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("would not fit") && t.contains("RES_RULES_V4"),
        "{t}"
    );
    assert!(sb.client(Some(&app), "udp", ONLY_B).ok);
    assert!(!sb.client(Some(&app), "udp", NEITHER).ok);
    let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
    assert_eq!(
        sample(
            &body,
            "residency_policy_prefixes{policy=\"eu-central\",family=\"ipv4\"}"
        ),
        Some(60_003.0)
    );
}

#[test]
fn members_of_control_group_may_use_the_socket() {
    if !require_root() {
        return;
    }
    let group = format!("rzctl{}", std::process::id());
    let out = Command::new("groupadd")
        .arg(&group)
        .output()
        .expect("groupadd (Debian package passwd)");
    assert!(out.status.success(), "{}", text(&out));
    struct DelGroup(String);
    impl Drop for DelGroup {
        fn drop(&mut self) {
            let _ = Command::new("groupdel").arg(&self.0).status();
        }
    }
    let _del = DelGroup(group.clone());
    let gid: u32 = String::from_utf8_lossy(
        &Command::new("getent")
            .args(["group", &group])
            .output()
            .unwrap()
            .stdout,
    )
    .split(':')
    .nth(2)
    .unwrap()
    .parse()
    .unwrap();

    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &version_a().replace(
            "metrics_address",
            &format!("control_group = \"{group}\"\nmetrics_address"),
        ),
    );
    sb.start_agent(&bin, &cfg).unwrap();
    std::fs::set_permissions(&sb.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let meta = std::fs::metadata(sb.control_socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660
    );
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
    let other_users_bin = sb.agent_for_other_users();
    let as_user = |g: u32| {
        let mut c = Command::new(&other_users_bin);
        c.args(["status", "--socket"]).arg(sb.control_socket());
        std::os::unix::process::CommandExt::uid(&mut c, 65534);
        std::os::unix::process::CommandExt::gid(&mut c, g);
        output_within(&mut c, 20)
    };
    let o = as_user(gid);
    assert!(o.status.success(), "a member may ask: {}", text(&o));
    assert!(text(&o).contains("generation 1"), "{}", text(&o));
    // A non-member reaching the socket (made world-writable here) is refused by the
    // agent's own credential check.
    std::fs::set_permissions(
        sb.control_socket(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let o = as_user(65534);
    assert!(!o.status.success(), "a non-member may not: {}", text(&o));
    assert!(
        text(&o).contains("is not root and not in the control group"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_configmap_style_symlink_swap_is_applied_when_watch_config_is_on() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    // The layout the kubelet gives a mounted ConfigMap: the file is a symlink through
    // `..data`, and an update swaps `..data` to a new timestamped directory.
    let dir = sb.dir.join("configmap");
    std::fs::create_dir_all(dir.join("..v1")).unwrap();
    let (pins, cg, metrics, control) = (
        sb.pin_path(),
        sb.cgroup_root.clone(),
        sb.metrics,
        sb.control_socket(),
    );
    let render = |text: &str| {
        text.replace("{pins}", &pins.display().to_string())
            .replace("{cg}", &cg.display().to_string())
            .replace("{metrics}", &metrics.to_string())
            .replace(
                "metrics_address",
                &format!(
                    "control_socket = \"{}\"\nwatch_config = true\nmetrics_address",
                    control.display()
                ),
            )
    };
    std::fs::write(dir.join("..v1/residency.toml"), render(&version_a())).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/residency.toml", dir.join("residency.toml")).unwrap();
    sb.start_agent(&bin, &dir.join("residency.toml")).unwrap();
    assert!(!sb.client(Some(&app), "udp", ONLY_B).ok);

    std::fs::create_dir_all(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/residency.toml"), render(&version_b())).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sb
        .agent()
        .stderr()
        .iter()
        .any(|l| l.contains("generation 2 in force"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the swap was not applied: {:?}",
            sb.agent().stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        sb.agent()
            .stderr()
            .iter()
            .any(|l| l.contains("config file changed: reloading"))
    );
    assert!(sb.client(Some(&app), "udp", ONLY_B).ok);
    assert!(!sb.client(Some(&app), "udp", ONLY_A).ok);

    // A bad update is rejected like a bad reload; version B stays in force.
    std::fs::create_dir_all(dir.join("..v3")).unwrap();
    std::fs::write(
        dir.join("..v3/residency.toml"),
        render(&version_b()).replace("allow =", "alow ="),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v3", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sb
        .agent()
        .stderr()
        .iter()
        .any(|l| l.contains("reload rejected"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the bad update was not noticed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(sb.client(Some(&app), "udp", ONLY_B).ok);
    assert!(!sb.client(Some(&app), "udp", NEITHER).ok);
}

#[test]
fn detach_asks_before_ending_enforcement_for_running_workloads_and_leaves_a_journal_entry() {
    if !require_root() {
        return;
    }
    residency_tests::ensure_journald().unwrap();
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let (app, cfg) = start_one_policy(&mut sb, &bin);
    // A workload runs in the enforced cgroup.
    let mut workload = sb.command(Some(&app), "sleep", &["30"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Without a terminal and without --yes: refused, naming the cgroup; nothing changed.
    let o = sb.detach_asking(&bin, &cfg);
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("refusing without --yes") && t.contains("/app (1 process(es))"),
        "{t}"
    );
    assert!(
        !sb.client(Some(&app), "tcp", ONLY_B).ok,
        "enforcement must stay"
    );
    // With --yes: detached, and the journal says who did it.
    let o = sb.detach(&bin, &cfg);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pins = sb.pin_path().display().to_string();
    let mut found = false;
    for _ in 0..50 {
        found = residency_tests::journal_entries("MESSAGE_ID", "7f2c5e9a1b3d4c8e9f0a6b2d4e8c1a37")
            .iter()
            .any(|e| {
                e["RESIDENCY_PIN_PATH"] == pins.as_str()
                    && e["RESIDENCY_DETACHED_BY_UID"] == "0"
                    && e["RESIDENCY_BUSY_CGROUPS"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("/app"))
            });
        if found {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(found, "no journal entry of the detach");
    let _ = workload.kill();
    let _ = workload.wait();
}

#[test]
fn status_without_an_agent_reads_what_the_pins_still_enforce() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let (app, cfg) = start_one_policy(&mut sb, &bin);
    // The agent dies; the pinned program keeps enforcing.
    sb.agent().signal(libc::SIGKILL);
    assert!(!sb.client(Some(&app), "tcp", ONLY_B).ok);
    let cfg_arg = cfg.to_str().unwrap();
    let o = output_within(Command::new(&bin).args(["status", "--config", cfg_arg]), 20);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("no agent answers at") && t.contains("keeps enforcing"),
        "{t}"
    );
    assert!(t.contains(&format!("cgroup {} (id ", app.display())), "{t}");
    let o = output_within(
        Command::new(&bin).args(["status", "--json", "--config", cfg_arg]),
        20,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["agent"], false);
    assert_eq!(v["attached"][0]["cgroup"], app.display().to_string());
    // The pin path is found even in a config that no longer parses.
    let broken = sb.dir.join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("[[policy]]", "[[policy]\n"),
    )
    .unwrap();
    let o = output_within(
        Command::new(&bin).args(["status", "--config", broken.to_str().unwrap()]),
        20,
    );
    assert!(
        o.status.success() && text(&o).contains("keeps enforcing"),
        "{}",
        text(&o)
    );
    // Once detached, nothing enforces, and status says so with a failure.
    assert!(sb.detach(&bin, &cfg).status.success());
    let o = output_within(Command::new(&bin).args(["status", "--config", cfg_arg]), 20);
    assert!(!o.status.success());
    assert!(text(&o).contains("nothing enforces"), "{}", text(&o));
}

/// An agent enforcing one policy (198.51.100.0/24 allowed) on the sandbox's `app`
/// cgroup, events as text: the cgroup and the config.
fn start_one_policy(sb: &mut Sandbox, bin: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\n[events]\nsinks = [\"text\"]\n\
         [[policy]]\nname = \"eu\"\ncgroups = [\"{cg}/app\"]\nallow = [\"198.51.100.0/24\"]\n",
    );
    sb.start_agent(bin, &cfg).unwrap();
    (app, cfg)
}
