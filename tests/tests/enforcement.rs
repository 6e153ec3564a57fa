//! End-to-end enforcement: the real agent, real packets, in a sandbox cgroup and
//! network namespace. Each test proves the verdict is the agent's doing by also
//! showing the same traffic passing where the program is not in the way.

use residency_tests::{Sandbox, agent_binary, require_root};

const ALLOWED_V4: &str = "198.51.100.7";
const CARVED_OUT_V4: &str = "198.51.100.99";
const FORBIDDEN_V4: &str = "203.0.113.9";
const ALLOWED_V6: &str = "2001:db8:1::7";
const FORBIDDEN_V6: &str = "2001:db8:99::9";
const ADDRS: &[&str] = &[
    ALLOWED_V4,
    CARVED_OUT_V4,
    FORBIDDEN_V4,
    ALLOWED_V6,
    FORBIDDEN_V6,
];

const CONFIG: &str = r#"
[agent]
pin_path = "{pins}"
metrics_address = "{metrics}"

[events]
sinks = ["text"]
aggregate_window_ms = 0

[[policy]]
name = "eu-central"
mode = "enforce"
cgroups = ["{cg}/app"]
allow = ["198.51.100.0/24", "2001:db8:1::/48", "127.0.0.0/8", "::1/128"]
deny = ["198.51.100.99/32"]
# The ICMP checks ping over a raw socket, as monitoring agents do.
allow_raw_sockets = true

[[policy]]
name = "eu-audit"
mode = "audit"
cgroups = ["{cg}/audited"]
allow = ["198.51.100.0/24", "2001:db8:1::/48"]
"#;

#[test]
fn enforces_allowlist_for_tcp_udp_icmp_over_ipv4_and_ipv6() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    sb.cgroup("audited").unwrap();
    let child = sb.cgroup("app/worker").unwrap();

    // Before the agent: everything passes, so any failure later is the agent's doing.
    for addr in [FORBIDDEN_V4, CARVED_OUT_V4, FORBIDDEN_V6] {
        assert!(
            sb.client(Some(&app), "tcp", addr).ok,
            "baseline tcp to {addr}"
        );
    }

    let config = sb.write_config("residency.toml", CONFIG);
    sb.start_agent(&bin, &config).unwrap();

    for proto in ["tcp", "udp"] {
        for addr in [ALLOWED_V4, ALLOWED_V6] {
            let o = sb.client(Some(&app), proto, addr);
            assert!(o.ok, "{proto} to allowed {addr}: {o:?}");
        }
        for addr in [FORBIDDEN_V4, CARVED_OUT_V4, FORBIDDEN_V6] {
            let o = sb.client(Some(&app), proto, addr);
            assert!(!o.ok, "{proto} to forbidden {addr} passed");
        }
    }
    for addr in [ALLOWED_V4, ALLOWED_V6] {
        assert!(sb.ping(Some(&app), addr).ok, "icmp to allowed {addr}");
    }
    for addr in [FORBIDDEN_V4, FORBIDDEN_V6] {
        assert!(
            !sb.ping(Some(&app), addr).ok,
            "icmp to forbidden {addr} passed"
        );
    }

    // IPv4-mapped destinations from an IPv6 socket are judged as the IPv4 address.
    assert!(
        sb.client(Some(&app), "tcp", &format!("::ffff:{ALLOWED_V4}"))
            .ok
    );
    assert!(
        !sb.client(Some(&app), "tcp", &format!("::ffff:{FORBIDDEN_V4}"))
            .ok
    );
    assert!(
        !sb.client(Some(&app), "udp", &format!("::ffff:{CARVED_OUT_V4}"))
            .ok
    );

    // The unspecified address means this host: judged as loopback, which the policy
    // allows, at connect() as in the packet.
    assert!(sb.client(Some(&app), "tcp", "0.0.0.0").ok);
    assert!(sb.client(Some(&app), "tcp", "::").ok);

    // A child cgroup inherits the policy of its nearest configured ancestor.
    assert!(sb.client(Some(&child), "tcp", ALLOWED_V4).ok);
    assert!(!sb.client(Some(&child), "tcp", FORBIDDEN_V4).ok);

    // A process outside the configured cgroups is not affected.
    assert!(sb.client(None, "tcp", FORBIDDEN_V4).ok);
    assert!(sb.client(None, "udp", FORBIDDEN_V6).ok);

    // What the operator sees: one line per blocked connection attempt, with everything needed to
    // answer "what was blocked and why".
    let app_path = sb.from_root(&app);
    let child_path = sb.from_root(&child);
    let agent = sb.agent();
    let tcp = agent
        .wait_event(&[
            "RESIDENCY_EGRESS_BLOCK",
            "proto=tcp",
            &format!("dst={FORBIDDEN_V4} "),
            "dport=8080",
        ])
        .expect("tcp block event");
    assert!(
        tcp.starts_with("RESIDENCY_EGRESS_BLOCK policy=eu-central mode=enforce proto=tcp"),
        "{tcp}"
    );
    assert!(tcp.contains(&format!("cgroup={app_path} ")), "{tcp}");
    assert!(tcp.contains("rule=default-deny"), "{tcp}");
    // A forbidden connect() is refused before any packet: the event names the process.
    assert!(
        tcp.contains(" hook=connect pid=") && tcp.contains(r#"comm="python3""#),
        "{tcp}"
    );
    let carve = agent
        .wait_event(&["proto=udp", &format!("dst={CARVED_OUT_V4} ")])
        .expect("carve-out event");
    assert!(carve.contains("rule=deny:198.51.100.99/32"), "{carve}");
    assert!(
        agent
            .wait_event(&["proto=udp", &format!("dst={FORBIDDEN_V6} "), "dport=8080"])
            .is_some()
    );
    let icmp = agent
        .wait_event(&["proto=icmp ", &format!("dst={FORBIDDEN_V4} ")])
        .expect("icmp event");
    assert!(icmp.contains("icmp_type=8"), "{icmp}");
    assert!(
        agent
            .wait_event(&[
                "proto=icmpv6",
                &format!("dst={FORBIDDEN_V6} "),
                "icmp_type=128"
            ])
            .is_some()
    );
    let child_ev = agent
        .wait_event(&[
            &format!("cgroup={child_path} "),
            &format!("dst={FORBIDDEN_V4} "),
        ])
        .unwrap_or_else(|| panic!("no event names the child cgroup: {:#?}", agent.events()));
    assert!(child_ev.contains("policy=eu-central"), "{child_ev}");
    // Nothing allowed was reported.
    let events = agent.events();
    assert!(
        events
            .iter()
            .all(|l| !l.contains(&format!("dst={ALLOWED_V4} "))
                && !l.contains(&format!("dst={ALLOWED_V6} "))),
        "allowed traffic reported: {events:#?}"
    );
    // And the kernel holds exactly what the config means, its verdicts included.
    let (ok, out) = sb.verify(&bin, &config);
    assert!(ok && out.contains("kernel state = config"), "{out}");
}

#[test]
fn audit_mode_passes_and_reports_while_enforce_drops() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    let audited = sb.cgroup("audited").unwrap();
    let config = sb.write_config("residency.toml", CONFIG);
    sb.start_agent(&bin, &config).unwrap();

    assert!(
        sb.client(Some(&audited), "tcp", FORBIDDEN_V4).ok,
        "audit mode must pass"
    );
    assert!(
        sb.client(Some(&audited), "udp", FORBIDDEN_V6).ok,
        "audit mode must pass"
    );
    assert!(sb.client(Some(&audited), "tcp", ALLOWED_V4).ok);
    assert!(
        !sb.client(Some(&app), "tcp", FORBIDDEN_V4).ok,
        "enforce policy still drops"
    );

    let audited_path = sb.from_root(&audited);
    let agent = sb.agent();
    let audit = agent
        .wait_event(&[
            "RESIDENCY_EGRESS_AUDIT",
            "policy=eu-audit",
            &format!("dst={FORBIDDEN_V4} "),
        ])
        .expect("audit event");
    assert!(audit.contains("mode=audit proto=tcp"), "{audit}");
    assert!(
        audit.contains(&format!("cgroup={audited_path} ")),
        "{audit}"
    );
    assert!(
        agent
            .wait_event(&[
                "RESIDENCY_EGRESS_AUDIT",
                "proto=udp",
                &format!("dst={FORBIDDEN_V6} ")
            ])
            .is_some()
    );
    assert!(
        agent
            .wait_event(&[
                "RESIDENCY_EGRESS_BLOCK",
                "policy=eu-central",
                &format!("dst={FORBIDDEN_V4} ")
            ])
            .is_some()
    );
    assert!(
        agent
            .events()
            .iter()
            .all(|l| !(l.contains("policy=eu-audit") && l.starts_with("RESIDENCY_EGRESS_BLOCK"))),
        "an audit policy reported a block"
    );
}

#[test]
fn enforcement_outlives_the_agent_until_detach() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    sb.cgroup("audited").unwrap();
    let config = sb.write_config("residency.toml", CONFIG);

    sb.start_agent(&bin, &config).unwrap();
    assert!(!sb.client(Some(&app), "tcp", FORBIDDEN_V4).ok);
    let status = sb.agent().signal(libc::SIGTERM);
    assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
    assert!(
        sb.agent()
            .stderr()
            .iter()
            .any(|l| l.contains("enforcement stays pinned"))
    );
    // Fail closed: the agent is gone, the policy is not.
    assert!(
        !sb.client(Some(&app), "tcp", FORBIDDEN_V4).ok,
        "leak after SIGTERM"
    );
    assert!(sb.client(Some(&app), "tcp", ALLOWED_V4).ok);

    // SIGKILL of a second agent: the same, and the new agent replaced the old pins.
    sb.start_agent(&bin, &config).unwrap();
    assert_eq!(
        Sandbox::residency_programs(&app),
        residency_tests::PROGRAMS,
        "each program once: the old instance was replaced"
    );
    sb.agent().signal(libc::SIGKILL);
    assert!(
        !sb.client(Some(&app), "udp", FORBIDDEN_V4).ok,
        "leak after SIGKILL"
    );
    let instances = std::fs::read_dir(sb.pin_path().join("v3/links"))
        .unwrap()
        .count();
    assert_eq!(
        instances, 1,
        "a restarted agent replaces the pinned instance"
    );

    let out = sb.detach(&bin, &config);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("detached 2 cgroup link(s)"), "{text}");
    assert!(
        sb.client(Some(&app), "tcp", FORBIDDEN_V4).ok,
        "detach removes enforcement"
    );
    assert!(
        Sandbox::attached(&app).is_empty(),
        "{:?}",
        Sandbox::attached(&app)
    );
    assert!(!sb.pin_path().join("v3").exists(), "pins left behind");

    // Detaching twice is harmless and says so.
    let out = sb.detach(&bin, &config);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to detach"));
}

#[test]
fn sighup_is_harmless_and_sigint_is_a_clean_shutdown() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    sb.cgroup("audited").unwrap();
    let config = sb.write_config("residency.toml", CONFIG);
    sb.start_agent(&bin, &config).unwrap();
    // SIGHUP does not kill the agent nor change enforcement (this version cannot reload).
    // SAFETY: kill(2) on the agent we started.
    unsafe { libc::kill(sb.agent().pid() as i32, libc::SIGHUP) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        sb.agent().stderr().iter().any(|l| l.contains("SIGHUP")),
        "{:?}",
        sb.agent().stderr()
    );
    assert!(!sb.client(Some(&app), "tcp", FORBIDDEN_V6).ok);
    let status = sb.agent().signal(libc::SIGINT);
    assert!(status.success(), "{status}");
    assert!(!sb.client(Some(&app), "tcp", FORBIDDEN_V6).ok);
    assert!(sb.detach(&bin, &config).status.success());
    assert!(sb.client(Some(&app), "tcp", FORBIDDEN_V6).ok);
}

#[test]
fn detach_under_a_running_agent_stops_it() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    sb.cgroup("audited").unwrap();
    let config = sb.write_config("residency.toml", CONFIG);
    sb.start_agent(&bin, &config).unwrap();
    assert!(!sb.client(Some(&app), "udp", FORBIDDEN_V4).ok);
    let out = sb.detach(&bin, &config);
    assert!(out.status.success(), "{out:?}");
    // The agent does not carry on pretending to enforce.
    let status = sb.agent().wait_exit();
    assert!(status.success(), "{status}");
    assert!(
        sb.agent()
            .stderr()
            .iter()
            .any(|l| l.contains("was removed")),
        "{:?}",
        sb.agent().stderr()
    );
    assert!(sb.client(Some(&app), "udp", FORBIDDEN_V4).ok);
}
