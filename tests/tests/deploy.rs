//! The monitoring artifacts under `deploy/`: Prometheus alert rules (checked and unit
//! tested with promtool), and a Grafana dashboard whose every query names metrics the
//! real agent exports; the live exposition itself passes `promtool check metrics`.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use residency_tests::{Sandbox, agent_binary, http_get, require_root};

/// One enforcing policy on the sandbox's `app` cgroup, events as text.
const CONFIG: &str = "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\n[events]\nsinks = [\"text\"]\n\
     [[policy]]\nname = \"eu-central\"\ncgroups = [\"{cg}/app\"]\nallow = [\"198.51.100.0/24\"]\n";

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(args: &[&str], dir: &PathBuf) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus; `cargo xtask setup` installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = deploy().join("prometheus");
    assert!(
        promtool(&["check", "rules", "residency-alerts.yml"], &dir)
            .contains("SUCCESS: 11 rules found")
    );
    assert!(promtool(&["test", "rules", "residency-alerts.test.yml"], &dir).contains("SUCCESS"));
}

/// Metric names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("residency_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

#[test]
fn dashboard_and_exposition_agree_with_the_agent() {
    if !require_root() {
        return;
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/residency-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    let rules = std::fs::read_to_string(deploy().join("prometheus/residency-alerts.yml")).unwrap();
    exprs.push(rules);
    assert!(exprs.len() > 10);

    let bin = agent_binary();
    let mut sb = Sandbox::new(&["203.0.113.9"]).unwrap();
    let app = sb.cgroup("app").unwrap();
    // A source with a max_age, for the source metrics ResidencySourceStale reads.
    std::fs::write(sb.dir.join("partners.txt"), "192.0.2.0/24\n").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &format!(
            "{CONFIG}allow_sources = [{{ format = \"plain\", path = \"partners.txt\", max_age = \"8d\" }}]\n"
        ),
    );
    sb.start_agent(&bin, &cfg).unwrap();
    assert!(!sb.client(Some(&app), "udp", "203.0.113.9").ok);
    let (status, body) = http_get(sb.metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    for expr in &exprs {
        // The residency_kubernetes_* family exists only with [kubernetes] enabled:
        // tests/kubernetes.rs checks those names against such an agent.
        for name in metric_names(expr)
            .into_iter()
            .filter(|n| !n.starts_with("residency_kubernetes_"))
        {
            // Counters are queried with their _total suffix; the exposition's # TYPE
            // line names the family without it.
            assert!(
                body.contains(&format!("\n{name}")) || body.contains(&format!("\n{name}{{")),
                "{name} is not exported:\n{body}"
            );
        }
    }

    // The live exposition passes Prometheus' own linter.
    residency_tests::assert_promtool_accepts(&body);
}

/// Percent-encodes a query-string value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_the_agent() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(&["203.0.113.9"]).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config("residency.toml", CONFIG);
    sb.start_agent(&bin, &cfg).unwrap();
    assert_eq!(sb.udp_burst(Some(&app), "203.0.113.9", 3), (0, 3));

    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let prom_dir = sb.dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: residency\n    static_configs:\n      - targets: ['{}']\n",
            sb.metrics
        ),
    )
    .unwrap();
    /// Stops the Prometheus server on every path out of the test.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus)"),
    );

    let query = r#"residency_packets_total{policy="eu-central",verdict="blocked",family="ipv4"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok((200, body)) = http_get(web, &format!("/api/v1/query?query={}", urlencode(query)))
        {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(r) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                assert_eq!(r["value"][1], "3", "{body}");
                assert_eq!(r["metric"]["job"], "residency");
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus never scraped the agent"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // The scrape target is healthy.
    let (_, targets) = http_get(web, "/api/v1/targets").unwrap();
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(deploy().join("systemd/residency-agent.service")).unwrap();
    assert!(
        unit.contains("Type=notify")
            && unit.contains("ExecReload=")
            && unit.contains("Restart=on-failure")
    );
    assert!(unit.contains("CapabilityBoundingSet=") && unit.contains("ProtectSystem=strict"));
    // `verify` insists that every Exec binary exists: point a copy at the one built.
    let bin = agent_binary();
    let dir = std::env::temp_dir().join(format!("residency-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("residency-agent.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/sbin/residency-agent",
            &bin.display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Unknown keys and other mistakes are warnings, not failures: allow none.
    assert!(
        text.trim().is_empty(),
        "systemd-analyze verify warned:\n{text}"
    );
}

#[test]
fn the_geoip_update_timer_replaces_the_database_whole_or_not_at_all() {
    let dir = deploy().join("systemd");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("residency-geoip-update.service"))
        .arg(dir.join("residency-geoip-update.timer"))
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
    let timer = std::fs::read_to_string(dir.join("residency-geoip-update.timer")).unwrap();
    assert!(timer.contains("OnCalendar=weekly") && timer.contains("Persistent=true"));

    // The service's script, as systemd hands it to the shell ($$ is a literal $),
    // run with a download that works, then one that fails and one that is empty.
    let unit = std::fs::read_to_string(dir.join("residency-geoip-update.service")).unwrap();
    let script = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/bin/sh -ec '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("ExecStart=/bin/sh -ec '...'")
        .replace("$$", "$");
    let work = std::env::temp_dir().join(format!("residency-geoip-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let file = work.join("GeoLite2-Country.mmdb");
    std::fs::write(&file, "the database in force").unwrap();
    let run = |download: &str| {
        Command::new("sh")
            .args(["-ec", &script])
            .env("GEOIP_FILE", &file)
            .env("GEOIP_DOWNLOAD", download)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!run("false"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "the database in force"
    );
    assert!(!run("true"), "an empty download is refused");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "the database in force"
    );
    let new = work.join("new.mmdb");
    std::fs::write(&new, "the next database").unwrap();
    assert!(run(&format!("cat {}", new.display())));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "the next database");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn sd_notify_ready_only_after_attach_then_watchdog_and_stopping() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(&["203.0.113.9"]).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config("residency.toml", CONFIG);
    let notify_path = sb.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let notify = notify_path.display().to_string();
    sb.start_agent_with_env(
        &bin,
        &cfg,
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let recv = |buf: &mut [u8]| {
        let n = sock.recv(buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv(&mut buf);
    assert!(
        first.contains("READY=1") && first.contains("STATUS=enforcing generation 1 on 1 cgroup(s)"),
        "{first}"
    );
    // READY means enforcing.
    assert!(!sb.client(Some(&app), "udp", "203.0.113.9").ok);
    let mut watchdog = false;
    for _ in 0..5 {
        if recv(&mut buf).contains("WATCHDOG=1") {
            watchdog = true;
            break;
        }
    }
    assert!(watchdog, "no watchdog ping within WATCHDOG_USEC");
    sb.agent().signal(libc::SIGTERM);
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 on SIGTERM");
}

#[test]
fn every_dashboard_query_of_a_policy_metric_honours_the_policy_filter() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/residency-dashboard.json")).unwrap(),
    )
    .unwrap();
    let per_policy = [
        "residency_packets_total",
        "residency_policy_prefixes",
        "residency_policy_lookup_tables",
        "residency_policy_info",
        "residency_policy_cgroups",
        "residency_kubernetes_events_total",
        "residency_kubernetes_pods",
    ];
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            if per_policy.iter().any(|m| expr.contains(m)) {
                assert!(
                    expr.contains("policy=~\"$policy\""),
                    "panel {:?} ignores $policy: {expr}",
                    panel["title"]
                );
            }
        }
    }
}

#[test]
fn policy_mode_coverage_reload_state_and_process_metrics_follow_the_agent() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(&["203.0.113.9"]).unwrap();
    sb.cgroup("app").unwrap();
    sb.cgroup("batch").unwrap();
    let good = "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\n[events]\nsinks = [\"text\"]\n\
                [[policy]]\nname = \"eu-central\"\ncgroups = [\"{cg}/app\", \"{cg}/later\"]\nallow = [\"198.51.100.0/24\"]\n\
                [[policy]]\nname = \"batch\"\nmode = \"audit\"\ncgroups = [\"{cg}/batch\"]\nallow = [\"198.51.100.0/24\"]\n";
    let cfg = sb.write_config("residency.toml", good);
    sb.start_agent(&bin, &cfg).unwrap();
    let scrape = |sb: &Sandbox| http_get(sb.metrics, "/metrics").unwrap().1;
    let body = scrape(&sb);
    let value = |body: &str, series: &str| residency_tests::sample(body, series);
    assert_eq!(
        value(
            &body,
            "residency_policy_info{policy=\"eu-central\",mode=\"enforce\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "residency_policy_info{policy=\"batch\",mode=\"audit\"}"
        ),
        Some(1.0)
    );
    // One of eu-central's two cgroups does not exist yet: a partial attach shows.
    assert_eq!(
        value(
            &body,
            "residency_policy_cgroups_configured{policy=\"eu-central\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &body,
            "residency_policy_cgroups_attached{policy=\"eu-central\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&body, "residency_policy_cgroups_attached{policy=\"batch\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&body, "residency_config_last_reload_successful"),
        Some(1.0)
    );
    let started = value(
        &body,
        "residency_config_last_reload_success_timestamp_seconds",
    )
    .unwrap();
    assert!(
        value(&body, "process_open_fds").is_some_and(|n| n > 3.0),
        "{body}"
    );
    assert!(value(&body, "process_resident_memory_bytes").is_some_and(|n| n > 1e6));
    assert!(value(&body, "process_cpu_seconds_total").is_some());

    // A rejected config: the gauge says so until a good one is applied.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("198.51.100.0/24", "198.51.100.0/33"),
    )
    .unwrap();
    assert!(!sb.ctl(&bin, &["reload"]).status.success());
    assert_eq!(
        value(&scrape(&sb), "residency_config_last_reload_successful"),
        Some(0.0)
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sb.write_config("residency.toml", good);
    assert!(sb.ctl(&bin, &["reload"]).status.success());
    let body = scrape(&sb);
    assert_eq!(
        value(&body, "residency_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(
        value(
            &body,
            "residency_config_last_reload_success_timestamp_seconds"
        )
        .unwrap()
            > started
    );
    // The exposition still passes Prometheus' linter.
    residency_tests::assert_promtool_accepts(&body);
}
