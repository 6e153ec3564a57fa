//! What an operator sees: journal entries read back with `journalctl -o json`, an
//! exact Prometheus scrape after a known number of packets, RFC 5424 syslog received
//! by a test listener, the kernel log, address masking, and a block storm that stays
//! bounded while every packet is counted.

use std::{net::UdpSocket, time::Duration};

use residency_tests::{
    PORT, Sandbox, agent_binary, ensure_journald, eventually, http_get, journal_entries,
    require_root, sample,
};

const ALLOWED_V4: &str = "198.51.100.7";
const FORBIDDEN_V4: &str = "203.0.113.9";
const ALLOWED_V6: &str = "2001:db8:1::7";
const FORBIDDEN_V6: &str = "2001:db8:99::9";
const ADDRS: &[&str] = &[ALLOWED_V4, FORBIDDEN_V4, ALLOWED_V6, FORBIDDEN_V6];

/// A config whose policy name is unique to this run, so journal queries see only it.
fn config(policy: &str, mode: &str, events: &str) -> String {
    format!(
        r#"
[agent]
pin_path = "{{pins}}"
metrics_address = "{{metrics}}"

[events]
{events}

[[policy]]
name = "{policy}"
mode = "{mode}"
cgroups = ["{{cg}}/app"]
allow = ["198.51.100.0/24", "2001:db8:1::/48"]
"#
    )
}

fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 100_000
    )
}

fn scrape(sb: &Sandbox) -> String {
    let (status, body) = http_get(sb.metrics, "/metrics").expect("scrape /metrics");
    assert_eq!(status, 200);
    body
}

fn packets(body: &str, policy: &str, verdict: &str, family: &str) -> f64 {
    sample(body, &format!("residency_packets_total{{policy=\"{policy}\",verdict=\"{verdict}\",family=\"{family}\"}}"))
        .unwrap_or_else(|| panic!("no residency_packets_total for {policy}/{verdict}/{family} in:\n{body}"))
}

#[test]
fn journal_entries_and_metrics_are_exact() {
    if !require_root() {
        return;
    }
    ensure_journald().unwrap();
    let bin = agent_binary();
    let policy = unique("obs");
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &config(
            &policy,
            "enforce",
            r#"sinks = ["journal", "json"]
aggregate_window_ms = 500"#,
        ),
    );
    sb.start_agent(&bin, &cfg).unwrap();
    assert!(
        sb.agent()
            .stderr()
            .iter()
            .any(|l| l.contains("events go to: journal, json")),
        "{:?}",
        sb.agent().stderr()
    );

    assert_eq!(sb.udp_burst(Some(&app), ALLOWED_V4, 7), (7, 0));
    assert_eq!(sb.udp_burst(Some(&app), FORBIDDEN_V4, 5), (0, 5));
    assert_eq!(sb.udp_burst(Some(&app), ALLOWED_V6, 3), (3, 0));
    assert_eq!(sb.udp_burst(Some(&app), FORBIDDEN_V6, 2), (0, 2));

    // Exact counts from the kernel's per-CPU counters.
    let body = scrape(&sb);
    assert_eq!(packets(&body, &policy, "allowed", "ipv4"), 7.0);
    assert_eq!(packets(&body, &policy, "blocked", "ipv4"), 5.0);
    assert_eq!(packets(&body, &policy, "allowed", "ipv6"), 3.0);
    assert_eq!(packets(&body, &policy, "blocked", "ipv6"), 2.0);
    assert_eq!(packets(&body, &policy, "audited", "ipv4"), 0.0);
    assert_eq!(
        sample(
            &body,
            &format!("residency_policy_prefixes{{policy=\"{policy}\",family=\"ipv4\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(sample(&body, "residency_attached_cgroups"), Some(1.0));
    assert_eq!(sample(&body, "residency_policy_generation"), Some(1.0));
    assert!(body.contains("residency_build_info{version=\""), "{body}");
    assert!(
        body.contains("residency_reloads_total{result=\"failure\"} 0"),
        "{body}"
    );
    assert!(
        !body.contains("203.0.113.9"),
        "addresses must never be labels"
    );
    assert_eq!(http_get(sb.metrics, "/healthz").unwrap().0, 200);

    // The journal: one entry per (destination, port) at once, then one carrying the
    // count of the repeats; counts add up to the packets blocked.
    eventually(
        "journal entries with every blocked packet",
        Duration::from_secs(10),
        || {
            let total: u64 = journal_entries("RESIDENCY_POLICY", &policy)
                .iter()
                .map(|e| {
                    e["RESIDENCY_COUNT"]
                        .as_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                })
                .sum();
            total == 7
        },
    );
    let entries = journal_entries("RESIDENCY_POLICY", &policy);
    let v4: Vec<_> = entries
        .iter()
        .filter(|e| e["RESIDENCY_DST_ADDR"] == FORBIDDEN_V4)
        .collect();
    assert_eq!(v4.len(), 2, "first event plus one aggregate: {entries:#?}");
    let e = v4[0];
    assert!(
        e["MESSAGE"]
            .as_str()
            .unwrap()
            .starts_with("RESIDENCY_EGRESS_BLOCK policy="),
        "{e}"
    );
    assert_eq!(e["PRIORITY"], "4");
    assert_eq!(e["SYSLOG_IDENTIFIER"], "residency-agent");
    assert_eq!(e["MESSAGE_ID"], "5d1a8c0e3f7b4c2a9e6d1b0f4a7c3e21");
    assert_eq!(e["RESIDENCY_MODE"], "enforce");
    assert_eq!(e["RESIDENCY_PROTO"], "udp");
    assert_eq!(e["RESIDENCY_DST_PORT"], PORT.to_string());
    // Refused at sendto(): no packet, so no source yet; the process is named instead.
    assert_eq!(e["RESIDENCY_HOOK"], "sendmsg");
    assert_eq!(e["RESIDENCY_SRC_ADDR"], "unknown");
    assert_eq!(e["RESIDENCY_SRC_PORT"], "0");
    assert_eq!(e["RESIDENCY_COMM"], "python3");
    assert!(e["RESIDENCY_PID"].as_str().unwrap().parse::<u32>().unwrap() > 0);
    assert_eq!(e["RESIDENCY_CGROUP"], sb.from_root(&app));
    assert!(
        e["RESIDENCY_CGROUP_ID"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(e["RESIDENCY_UID"], "0");
    assert_eq!(e["RESIDENCY_RULE"], "default-deny");
    assert_eq!(e["RESIDENCY_COUNT"], "1");
    assert_eq!(v4[1]["RESIDENCY_COUNT"], "4");
    assert!(
        entries
            .iter()
            .any(|e| e["RESIDENCY_DST_ADDR"] == FORBIDDEN_V6)
    );

    // The JSON sink carried the same events.
    let json: Vec<serde_json::Value> = sb
        .agent()
        .events()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let counted: u64 = json.iter().map(|j| j["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 7, "{json:#?}");
    // Each line says its severity and the node, for the log collector.
    assert!(
        json.iter()
            .all(|j| j["level"] == "warning" && j["host"].as_str().is_some_and(|h| !h.is_empty())),
        "{json:#?}"
    );
    assert!(
        json.iter()
            .all(|j| j["event"] == "RESIDENCY_EGRESS_BLOCK" && j["policy"] == policy.as_str())
    );

    let body = scrape(&sb);
    assert_eq!(
        sample(&body, "residency_events_total{sink=\"journal\"}"),
        Some(entries.len() as f64)
    );
    assert_eq!(
        sample(&body, "residency_events_total{sink=\"json\"}"),
        Some(json.len() as f64)
    );
    assert_eq!(
        sample(&body, "residency_events_lost_total{reason=\"sink_error\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&body, "residency_events_received_total"), Some(7.0));

    // Once enforcement is detached the agent is no longer healthy (and exits).
    assert!(sb.detach(&bin, &cfg).status.success());
    sb.agent().wait_exit();
}

#[test]
fn audit_events_are_notices_and_addresses_can_be_masked() {
    if !require_root() {
        return;
    }
    ensure_journald().unwrap();
    let bin = agent_binary();
    let policy = unique("mask");
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &config(
            &policy,
            "audit",
            "sinks = [\"journal\", \"json\"]\nmask_addresses = true\naggregate_window_ms = 0",
        ),
    );
    sb.start_agent(&bin, &cfg).unwrap();
    assert_eq!(
        sb.udp_burst(Some(&app), FORBIDDEN_V4, 3),
        (3, 0),
        "audit passes"
    );
    assert_eq!(sb.udp_burst(Some(&app), FORBIDDEN_V6, 1), (1, 0));
    eventually("audit entries", Duration::from_secs(10), || {
        journal_entries("RESIDENCY_POLICY", &policy).len() == 4
    });
    let entries = journal_entries("RESIDENCY_POLICY", &policy);
    for e in &entries {
        assert_eq!(e["PRIORITY"], "5", "audits are notices");
        assert_eq!(e["MESSAGE_ID"], "a3c94e5b7d204f1e8b6a0c2d9f1e7b54");
        assert!(
            e["MESSAGE"]
                .as_str()
                .unwrap()
                .starts_with("RESIDENCY_EGRESS_AUDIT")
        );
        assert_eq!(e["RESIDENCY_MODE"], "audit");
    }
    assert!(
        entries
            .iter()
            .any(|e| e["RESIDENCY_DST_ADDR"] == "203.0.113.0/24"),
        "{entries:#?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["RESIDENCY_DST_ADDR"] == "2001:db8:99::/48"),
        "{entries:#?}"
    );
    let all = format!("{entries:?}{:?}", sb.agent().events());
    assert!(
        !all.contains(FORBIDDEN_V4) && !all.contains(FORBIDDEN_V6),
        "an exact address leaked: {all}"
    );
    // Metrics stay exact.
    assert_eq!(packets(&scrape(&sb), &policy, "audited", "ipv4"), 3.0);
}

/// The JSON events of `policy` for `dst`, as written so far.
fn json_events(sb: &mut Sandbox, policy: &str, dst: &str) -> Vec<serde_json::Value> {
    sb.agent()
        .events()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["policy"] == policy && j["dst"] == dst)
        .collect()
}

#[test]
fn one_connection_attempt_is_one_event_with_its_process() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let policy = unique("once");
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &config(
            &policy,
            "audit",
            "sinks = [\"json\"]\naggregate_window_ms = 0",
        ),
    );
    sb.start_agent(&bin, &cfg).unwrap();

    // An audited TCP connection: handshake, data, echo and close pass, every packet is
    // counted as audited, and the connection is one event, written by connect() with
    // the process that made it.
    assert!(
        sb.client(Some(&app), "tcp", FORBIDDEN_V4).ok,
        "audit passes"
    );
    let audited = packets(&scrape(&sb), &policy, "audited", "ipv4");
    assert!(audited >= 4.0, "every packet counted: {audited}");
    eventually("the connection's event", Duration::from_secs(10), || {
        !json_events(&mut sb, &policy, FORBIDDEN_V4).is_empty()
    });
    // Give any per-packet duplicate time to arrive before asserting there is none.
    std::thread::sleep(Duration::from_millis(500));
    let events = json_events(&mut sb, &policy, FORBIDDEN_V4);
    assert_eq!(events.len(), 1, "one connection, one event: {events:#?}");
    let e = &events[0];
    assert_eq!(e["event"], "RESIDENCY_EGRESS_AUDIT", "{e}");
    assert_eq!(e["hook"], "connect", "{e}");
    assert_eq!(e["proto"], "tcp", "{e}");
    assert_eq!(e["count"], 1, "{e}");
    assert_eq!(e["comm"], "python3", "{e}");
    assert!(
        e["pid"]
            .to_string()
            .trim_matches('"')
            .parse::<u32>()
            .unwrap()
            > 0,
        "{e}"
    );
    assert_eq!(e["uid"].to_string().trim_matches('"'), "0", "{e}");
    assert_eq!(e["cgroup"], sb.from_root(&app), "{e}");

    // An audited sendto() is reported by its call, with its process, and its datagram
    // is not reported again.
    assert_eq!(sb.udp_burst(Some(&app), FORBIDDEN_V6, 2), (2, 0));
    eventually("the datagrams' events", Duration::from_secs(10), || {
        json_events(&mut sb, &policy, FORBIDDEN_V6).len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let events = json_events(&mut sb, &policy, FORBIDDEN_V6);
    assert_eq!(events.len(), 2, "one event per sendto(): {events:#?}");
    assert!(
        events
            .iter()
            .all(|e| e["hook"] == "sendmsg" && e["comm"] == "python3"),
        "{events:#?}"
    );
    assert_eq!(packets(&scrape(&sb), &policy, "audited", "ipv6"), 2.0);
}

#[test]
fn a_flow_the_socket_calls_do_not_see_is_one_event_however_many_packets() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let policy = unique("flow");
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &(config(
            &policy,
            "enforce",
            "sinks = [\"json\"]\naggregate_window_ms = 0",
        ) + "allow_raw_sockets = true\n"),
    );
    sb.start_agent(&bin, &cfg).unwrap();
    // Five echo requests on one raw socket: no socket-call hook runs for raw sockets,
    // so the packet program judges each, drops each, counts each, and reports the flow
    // once.
    const SEND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for i in range(5):
    try:
        s.sendto(bytes([8, 0, 0xf7, 0xfe - i, 0, 0, 0, i]), (sys.argv[1], 0))
    except OSError:
        pass
"#;
    let out = sb
        .command(Some(&app), "python3", &["-c", SEND, FORBIDDEN_V4])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(packets(&scrape(&sb), &policy, "blocked", "ipv4"), 5.0);
    eventually("the flow's event", Duration::from_secs(10), || {
        !json_events(&mut sb, &policy, FORBIDDEN_V4).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let events = json_events(&mut sb, &policy, FORBIDDEN_V4);
    assert_eq!(events.len(), 1, "one flow, one event: {events:#?}");
    assert_eq!(events[0]["hook"], "packet");
    assert_eq!(events[0]["proto"], "icmp");
    // A second socket is a second attempt, reported again.
    let out = sb
        .command(Some(&app), "python3", &["-c", SEND, FORBIDDEN_V4])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    eventually("the second socket's event", Duration::from_secs(10), || {
        json_events(&mut sb, &policy, FORBIDDEN_V4).len() == 2
    });
    assert_eq!(packets(&scrape(&sb), &policy, "blocked", "ipv4"), 10.0);
}

#[test]
fn syslog_rfc5424_over_udp_and_tcp() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    for transport in ["udp", "tcp"] {
        let policy = unique(&format!("syslog-{transport}"));
        let mut sb = Sandbox::new(ADDRS).unwrap();
        let app = sb.cgroup("app").unwrap();
        let (addr, rx) = listen(transport);
        let cfg = sb.write_config(
            "residency.toml",
            &config(&policy, "enforce", &format!("sinks = [\"syslog\"]\nsyslog_target = \"{transport}://{addr}\"\naggregate_window_ms = 0")),
        );
        sb.start_agent(&bin, &cfg).unwrap();
        assert_eq!(sb.udp_burst(Some(&app), FORBIDDEN_V4, 1), (0, 1));
        let msg = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a syslog message");
        assert!(msg.starts_with("<28>1 "), "{msg}");
        let parts: Vec<&str> = msg.splitn(7, ' ').collect();
        assert!(
            parts[1].ends_with('Z') && parts[1].contains('T'),
            "RFC 3339 UTC timestamp: {msg}"
        );
        assert_eq!(parts[3], "residency-agent");
        assert!(parts[4].parse::<u32>().is_ok(), "PROCID: {msg}");
        assert_eq!(parts[5], "BLOCK");
        assert!(
            parts[6].starts_with(&format!(
                "[residency@32473 event=\"RESIDENCY_EGRESS_BLOCK\" policy=\"{policy}\""
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("dst=\"{FORBIDDEN_V4}\" dport=\"{PORT}\"")),
            "{msg}"
        );
        assert!(msg.contains("] RESIDENCY_EGRESS_BLOCK policy="), "{msg}");
    }
}

/// A syslog listener on loopback: UDP datagrams, or TCP with RFC 6587 octet counting.
fn listen(transport: &str) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    if transport == "udp" {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = sock.recv(&mut buf) {
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        (addr, rx)
    } else {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let (mut s, _) = listener.accept().unwrap();
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                // Frames are "LEN SP MSG".
                while let Some(sp) = data.iter().position(|b| *b == b' ') {
                    let len: usize = String::from_utf8_lossy(&data[..sp])
                        .parse()
                        .expect("octet count");
                    if data.len() < sp + 1 + len {
                        break;
                    }
                    let msg = String::from_utf8_lossy(&data[sp + 1..sp + 1 + len]).into_owned();
                    data.drain(..sp + 1 + len);
                    let _ = tx.send(msg);
                }
            }
        });
        (addr, rx)
    }
}

#[test]
fn kmsg_sink_writes_the_iptables_style_prefix() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let policy = unique("kmsg");
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &config(
            &policy,
            "enforce",
            "sinks = [\"kmsg\"]\naggregate_window_ms = 0",
        ),
    );
    sb.start_agent(&bin, &cfg).unwrap();
    assert_eq!(sb.udp_burst(Some(&app), FORBIDDEN_V4, 1), (0, 1));
    eventually("the kernel log line", Duration::from_secs(10), || {
        let out = std::process::Command::new("dmesg").output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            l.contains(&format!(
                "RESIDENCY_EGRESS_BLOCK: policy={policy} mode=enforce proto=udp dst={FORBIDDEN_V4} "
            ))
        })
    });

    // A cgroup path longer than a kernel log record: the line still arrives, with the
    // path shortened to its end.
    let deep = format!(
        "app/{}/{}/{}/{}/{}",
        "a".repeat(200),
        "b".repeat(200),
        "c".repeat(200),
        "d".repeat(200),
        format!("{policy}-deepest").repeat(4)
    );
    let deep = sb.cgroup(&deep).unwrap();
    assert!(deep.display().to_string().len() > 900);
    assert_eq!(sb.udp_burst(Some(&deep), FORBIDDEN_V4, 1), (0, 1));
    let tail = format!("{policy}-deepest").repeat(4);
    eventually(
        "the kernel log line of the deep cgroup",
        Duration::from_secs(10),
        || {
            let out = std::process::Command::new("dmesg").output().unwrap();
            String::from_utf8_lossy(&out.stdout).lines().any(|l| {
                l.contains(&format!("RESIDENCY_EGRESS_BLOCK: policy={policy} "))
                    && l.contains(&format!("/{tail} cgroup_id="))
                    && l.contains(" cgroup=…")
            })
        },
    );
}

#[test]
fn a_block_storm_is_bounded_and_every_packet_counted() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let policy = unique("storm");
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &config(
            &policy,
            "enforce",
            "sinks = [\"json\"]\nrate_limit_per_cpu = 1000\nrate_limit_burst = 200",
        ),
    );
    sb.start_agent(&bin, &cfg).unwrap();
    const STORM: u32 = 100_000;
    assert_eq!(sb.udp_burst(Some(&app), FORBIDDEN_V4, STORM), (0, STORM));

    // Every packet counted, exactly; every event delivered or counted as lost.
    let mut body = scrape(&sb);
    assert_eq!(packets(&body, &policy, "blocked", "ipv4"), f64::from(STORM));
    // The agent may still be draining the ring: wait until every event the kernel
    // emitted is accounted for.
    eventually(
        "every event received or counted lost",
        Duration::from_secs(10),
        || {
            body = scrape(&sb);
            let r = sample(&body, "residency_events_received_total").unwrap();
            let l = sample(
                &body,
                "residency_events_lost_total{reason=\"rate_limited\"}",
            )
            .unwrap();
            let f = sample(&body, "residency_events_lost_total{reason=\"ring_full\"}").unwrap();
            r + l + f == f64::from(STORM)
        },
    );
    let received = sample(&body, "residency_events_received_total").unwrap();
    let limited = sample(
        &body,
        "residency_events_lost_total{reason=\"rate_limited\"}",
    )
    .unwrap();
    let ring = sample(&body, "residency_events_lost_total{reason=\"ring_full\"}").unwrap();
    assert_eq!(received + limited + ring, f64::from(STORM), "{body}");
    assert!(limited > 0.0, "the kernel rate limit engaged");
    // Aggregation: one destination and port, so a handful of lines carry the counts.
    eventually("the aggregated counts", Duration::from_secs(10), || {
        let counted: u64 = sb
            .agent()
            .events()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|j| j["count"].as_u64().unwrap())
            .sum();
        counted as f64 == received
    });
    let lines = sb.agent().events().len();
    assert!(
        lines < 50,
        "{lines} event lines for one destination: not aggregated"
    );
    // Bounded agent memory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", sb.agent().pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kb < 64 * 1024, "agent RSS {rss_kb} kB after a storm");
}

#[test]
fn the_agents_own_log_carries_priorities_to_journald_and_to_stderr() {
    if !require_root() {
        return;
    }
    residency_tests::ensure_journald().unwrap();
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    sb.cgroup("app").unwrap();
    // One cgroup that does not exist yet: a warning in the log.
    let cfg = sb.write_config(
        "residency.toml",
        "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\n[events]\nsinks = [\"json\"]\n\
         [[policy]]\nname = \"eu\"\ncgroups = [\"{cg}/app\", \"{cg}/later\"]\nallow = [\"198.51.100.0/24\"]\n",
    );
    // Not on a terminal and not under systemd: each line starts with its priority.
    sb.start_agent(&bin, &cfg).unwrap();
    let log = sb.agent().stderr();
    assert!(
        log.iter()
            .any(|l| l.starts_with("<6>") && l.contains("attached; reporting")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("<4>") && l.contains("does not exist yet")),
        "{log:#?}"
    );
    sb.agent()
        .terminate(std::time::Duration::from_secs(10))
        .unwrap();

    // Under systemd (stderr is the journal's stream, as JOURNAL_STREAM says): to
    // journald natively, each entry with its priority.
    let wrapper = sb.dir.join("as-a-systemd-service");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2)\nexec {} \"$@\"\n",
            bin.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let launch = residency_tests::Launch {
        healthz: Some(sb.metrics),
        ..residency_tests::Launch::new(&[])
    };
    sb.start_agent_with(&wrapper, &cfg, &launch).unwrap();
    let pid = sb.agent().pid().to_string();
    let mut entries = Vec::new();
    for _ in 0..50 {
        entries = residency_tests::journal_entries("_PID", &pid);
        if entries.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let has = |priority: &str, text: &str| {
        entries.iter().any(|e| {
            e["PRIORITY"] == priority && e["MESSAGE"].as_str().is_some_and(|m| m.contains(text))
        })
    };
    assert!(has("6", "attached; reporting"), "{entries:#?}");
    assert!(has("4", "does not exist yet"), "{entries:#?}");
    assert!(sb.agent().stderr().is_empty(), "{:#?}", sb.agent().stderr());
}

/// A policy whose lookup tables do not fit in `[agent] ipv4_table_chunks` is judged by
/// its tries alone, as exactly: the agent says so in its log and the metrics keep
/// showing it, per policy and family, until a version that fits is in force.
#[test]
fn the_metrics_show_which_policies_the_lookup_tables_judge() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let mut sb = Sandbox::new(ADDRS).unwrap();
    let small = sb.cgroup("small").unwrap();
    let wide = sb.cgroup("wide").unwrap();
    // "wide": 300 /32s in blocks of their own, hundreds of chunks; "small" a few.
    let spread: Vec<String> = (0..300)
        .map(|i| format!("\"{}.{}.7.7/32\"", 10 + i / 200, i % 200))
        .collect();
    let config = |wide_allow: &str| {
        format!(
            r#"
[agent]
pin_path = "{{pins}}"
metrics_address = "{{metrics}}"
ipv4_table_chunks = 100
ipv6_table_chunks = 100

[[policy]]
name = "small"
cgroups = ["{{cg}}/small"]
allow = ["198.51.100.0/24", "2001:db8:1::/48"]

[[policy]]
name = "wide"
cgroups = ["{{cg}}/wide"]
allow = [{wide_allow}]
"#
        )
    };
    let cfg = sb.write_config(
        "residency.toml",
        &config(&format!("\"198.51.100.7/32\", {}", spread.join(", "))),
    );
    sb.start_agent(&bin, &cfg).unwrap();
    assert!(
        sb.agent()
            .stderr()
            .iter()
            .any(|l| l.contains("policy wide: its IPv4 lookup tables need")
                && l.contains("more than were left of [agent] ipv4_table_chunks (100 per slot)")),
        "{:?}",
        sb.agent().stderr()
    );
    let tables = |body: &str, policy: &str, family: &str| {
        sample(
            body,
            &format!("residency_policy_lookup_tables{{policy=\"{policy}\",family=\"{family}\"}}"),
        )
    };
    let body = scrape(&sb);
    assert_eq!(tables(&body, "small", "ipv4"), Some(1.0), "{body}");
    assert_eq!(tables(&body, "small", "ipv6"), Some(1.0), "{body}");
    assert_eq!(tables(&body, "wide", "ipv4"), Some(0.0), "{body}");
    assert_eq!(tables(&body, "wide", "ipv6"), Some(1.0), "{body}");
    assert_eq!(
        sample(&body, "residency_lookup_table_chunks_room{family=\"ipv4\"}"),
        Some(100.0)
    );
    let used = sample(&body, "residency_lookup_table_chunks{family=\"ipv4\"}").unwrap();
    assert!(used > 0.0 && used <= 100.0, "{body}");
    // `status` names it too, under the policy.
    let status = |sb: &Sandbox| {
        let o = sb.ctl(&bin, &["status"]);
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let s = status(&sb);
    let after_wide = &s[s.find("policy wide").unwrap_or_else(|| panic!("{s}"))..];
    assert!(
        after_wide.contains("\n    lookup tables: none for ipv4 (they did not fit"),
        "{s}"
    );
    assert_eq!(s.matches("lookup tables:").count(), 1, "{s}");
    // Judged by the tries, as exactly: of the test's addresses, the one the policy
    // lists passes and one it does not list is refused.
    assert_eq!(sb.udp_burst(Some(&wide), ALLOWED_V4, 3), (3, 0));
    assert_eq!(sb.udp_burst(Some(&wide), FORBIDDEN_V4, 3), (0, 3));
    assert_eq!(sb.udp_burst(Some(&small), ALLOWED_V4, 3), (3, 0));
    assert_eq!(sb.udp_burst(Some(&small), FORBIDDEN_V4, 3), (0, 3));

    // A version that fits: the gauge follows the version in force.
    sb.write_config("residency.toml", &config("\"198.51.100.7/32\""));
    let o = sb.ctl(&bin, &["reload"]);
    assert!(o.status.success(), "{o:?}");
    let body = scrape(&sb);
    assert_eq!(tables(&body, "wide", "ipv4"), Some(1.0), "{body}");
    assert!(!status(&sb).contains("lookup tables:"));
    // Both policies' tables now, where only the first's were.
    assert!(
        sample(&body, "residency_lookup_table_chunks{family=\"ipv4\"}").unwrap() > used,
        "{body}"
    );
    assert_eq!(sb.udp_burst(Some(&wide), ALLOWED_V4, 3), (3, 0));
    assert_eq!(sb.udp_burst(Some(&wide), FORBIDDEN_V4, 3), (0, 3));
}
