//! `cargo xtask demo`: residency in one minute, in a sandbox that is removed afterwards.
//!
//! Builds a cgroup and a network namespace holding an "in-region" and an "out-of-region"
//! service (documentation addresses), starts the real agent with an enforcing policy,
//! and shows allowed and blocked TCP, UDP and ICMP over IPv4 and IPv6, the events the
//! agent writes, that enforcement outlives the agent (fail closed), and `detach`.

use std::{path::Path, process::Command};

use anyhow::Context as _;
use residency_tests::{Sandbox, http_get};

const IN_REGION_V4: &str = "198.51.100.7";
const IN_REGION_V6: &str = "2001:db8:1::7";
const OUT_OF_REGION_V4: &str = "203.0.113.9";
const OUT_OF_REGION_V6: &str = "2001:db8:99::9";

const CONFIG: &str = r#"[agent]
pin_path = "{pins}"
metrics_address = "{metrics}"

[events]
sinks = ["text"]
# One line per packet in the demo; production keeps the 1 s default.
aggregate_window_ms = 0

[[policy]]
name = "eu-central"
mode = "enforce"
cgroups = ["{cg}/payments.service"]
allow = ["198.51.100.0/24", "2001:db8:1::/48", "127.0.0.0/8", "::1/128"]
deny = ["198.51.100.99/32"]
"#;

pub fn demo(bin: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::setup::is_root(),
        "the demo loads BPF programs and builds a network namespace: run it as root"
    );
    let mut sb = Sandbox::new(&[
        IN_REGION_V4,
        IN_REGION_V6,
        OUT_OF_REGION_V4,
        OUT_OF_REGION_V6,
    ])
    .context("building the sandbox")?;
    let cg = sb.cgroup("payments.service")?;
    println!(
        "Sandbox: network namespace {}, cgroup {}",
        sb.netns,
        cg.display()
    );
    println!("  in-region services:     {IN_REGION_V4}, {IN_REGION_V6}");
    println!("  out-of-region services: {OUT_OF_REGION_V4}, {OUT_OF_REGION_V6}\n");

    println!("1. Without residency, the workload reaches everything:");
    probe(&sb, &cg, &[("tcp", OUT_OF_REGION_V4)]);

    let config = sb.write_config("residency.toml", CONFIG);
    println!(
        "\n2. Start `residency-agent run --config {}`:\n",
        config.display()
    );
    for l in std::fs::read_to_string(&config)?.lines() {
        println!("     {l}");
    }
    sb.start_agent(bin, &config)?;
    println!("\n   Traffic from the workload's cgroup:");
    probe(
        &sb,
        &cg,
        &[
            ("tcp", IN_REGION_V4),
            ("udp", IN_REGION_V4),
            ("icmp", IN_REGION_V4),
            ("tcp", IN_REGION_V6),
            ("tcp", OUT_OF_REGION_V4),
            ("udp", OUT_OF_REGION_V4),
            ("icmp", OUT_OF_REGION_V4),
            ("tcp", OUT_OF_REGION_V6),
            ("udp", OUT_OF_REGION_V6),
        ],
    );
    println!("\n   A process outside the cgroup is not affected:");
    let o = sb.client(None, "tcp", OUT_OF_REGION_V4);
    println!(
        "     tcp  {OUT_OF_REGION_V4:<16} {}",
        if o.ok { "allowed" } else { "BLOCKED" }
    );

    std::thread::sleep(std::time::Duration::from_millis(300));
    println!(
        "\n3. What the agent reported (one line per refused connect() or sendto(), with the process, and per blocked packet):"
    );
    for e in sb.agent().events() {
        println!("     {e}");
    }

    println!(
        "\n   Exact per-policy counters on the Prometheus endpoint (http://{}/metrics):",
        sb.metrics
    );
    let (_, body) = http_get(sb.metrics, "/metrics")?;
    for l in body
        .lines()
        .filter(|l| l.starts_with("residency_packets_total") && !l.ends_with(" 0"))
    {
        println!("     {l}");
    }

    println!("\n   Reload: the policy now also allows 203.0.113.0/24 (`residency-agent reload`):");
    let text = std::fs::read_to_string(&config)?.replace(
        "allow = [\"198.51.100.0/24\"",
        "allow = [\"203.0.113.0/24\", \"198.51.100.0/24\"",
    );
    std::fs::write(&config, text)?;
    let out = sb.ctl(bin, &["reload"]);
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        println!("     {l}");
    }
    probe(
        &sb,
        &cg,
        &[("tcp", OUT_OF_REGION_V4), ("tcp", OUT_OF_REGION_V6)],
    );

    println!("\n4. Stop the agent (SIGTERM). Enforcement stays pinned: fail closed.");
    sb.agent().signal(libc_sigterm());
    probe(
        &sb,
        &cg,
        &[("tcp", OUT_OF_REGION_V4), ("tcp", OUT_OF_REGION_V6)],
    );

    println!("\n5. `residency-agent detach` removes it:");
    let out = sb.detach(bin, &config);
    print!("     {}", String::from_utf8_lossy(&out.stdout));
    probe(&sb, &cg, &[("tcp", OUT_OF_REGION_V6)]);

    drop(sb);
    let left = Command::new("bpftool")
        .args(["prog", "show", "name", "residency_egress"])
        .output()?;
    println!(
        "\n6. Sandbox removed (cgroup, namespace, pins); residency programs still loaded: {}",
        String::from_utf8_lossy(&left.stdout)
            .lines()
            .filter(|l| l.contains("residency_egress"))
            .count()
    );
    Ok(())
}

fn probe(sb: &Sandbox, cg: &Path, cases: &[(&str, &str)]) {
    for (proto, addr) in cases {
        let o = if *proto == "icmp" {
            sb.ping(Some(cg), addr)
        } else {
            sb.client(Some(cg), proto, addr)
        };
        let verdict = if o.ok {
            "allowed".to_owned()
        } else {
            format!("BLOCKED ({})", o.detail.lines().next().unwrap_or(""))
        };
        println!("     {proto:<4} {addr:<16} {verdict}");
    }
}

/// SIGTERM's number on Linux (xtask has no libc dependency of its own).
const fn libc_sigterm() -> i32 {
    15
}
