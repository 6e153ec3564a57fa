//! Section 4: an event storm. The agent enforces a 10k-prefix policy on the sender
//! cgroup with the kernel rate limit off (`rate_limit_per_cpu = 0`) and aggregation off
//! (`aggregate_window_ms = 0`), so every blocked packet is one event to deliver, to the
//! `json` sink (stdout, sent to /dev/null). Flooders send blocked 64-byte datagrams for
//! `secs` — one flooder, then one per CPU — and afterwards the agent drains its ring
//! buffer.
//!
//! Reported: events delivered per second (flood start to drained), events lost by
//! reason, the agent's CPU (utime + stime from /proc over the same interval), and
//! whether every count adds up: packets the kernel counted as blocked = sends the
//! flooders saw refused, and events delivered + events counted lost = packets blocked.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

use crate::{
    agent::{Agent, AgentSetup, cpu_seconds},
    prefixes,
    sandbox::{BLOCKED, Bench, DISCARD_PORT},
};

pub struct Result {
    pub flooders: usize,
    pub flood_s: f64,
    /// Flood start to the agent having read everything.
    pub total_s: f64,
    pub refused: u64,
    pub accepted: u64,
    pub blocked: u64,
    pub written: u64,
    pub received: u64,
    pub lost_ring: u64,
    pub lost_rate: u64,
    pub lost_sink: u64,
    /// Dropped because a sink's queue was full (it did not keep up).
    pub lost_backlog: u64,
    pub agent_cpu_s: f64,
}

impl Result {
    pub fn lost(&self) -> u64 {
        self.lost_ring + self.lost_rate + self.lost_sink + self.lost_backlog
    }

    pub fn delivered_per_s(&self) -> f64 {
        self.written as f64 / self.total_s
    }

    pub fn cores(&self) -> f64 {
        self.agent_cpu_s / self.total_s
    }

    /// Every packet counted, every event delivered or counted as lost.
    pub fn counts_exact(&self) -> bool {
        self.blocked == self.refused && self.written + self.lost() == self.blocked
    }
}

struct Counters {
    blocked: u64,
    written: u64,
    received: u64,
    lost_ring: u64,
    lost_rate: u64,
    lost_sink: u64,
    lost_backlog: u64,
}

fn counters(agent: &Agent) -> anyhow::Result<Counters> {
    let text = agent.scrape()?;
    let get = |name: &str, labels: &[&str]| -> anyhow::Result<u64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with([' ', '{']))
                    && labels.iter().all(|x| l.contains(x))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .with_context(|| format!("no {name}{labels:?} in the agent's metrics"))
    };
    Ok(Counters {
        blocked: get(
            "residency_packets_total",
            &["policy=\"bench\"", "verdict=\"blocked\"", "family=\"ipv4\""],
        )?,
        written: get("residency_events_total", &["sink=\"json\""])?,
        received: get("residency_events_received_total", &[])?,
        lost_ring: get("residency_events_lost_total", &["reason=\"ring_full\""])?,
        lost_rate: get("residency_events_lost_total", &["reason=\"rate_limited\""])?,
        lost_sink: get("residency_events_lost_total", &["reason=\"sink_error\""])?,
        lost_backlog: get("residency_events_lost_total", &["reason=\"sink_backlog\""])?,
    })
}

/// One storm from one flooder, then one from a flooder per CPU (the agent then shares
/// the CPUs with the flood).
pub fn run(sb: &Bench, bin: &Path, helper: &Path, secs: u32) -> anyhow::Result<Vec<Result>> {
    let allow = prefixes::ipv4(10_000).cidrs;
    let agent = Agent::start(
        bin,
        &sb.dir,
        &AgentSetup {
            name: "events",
            cgroup_rel: &sb.sender_rel,
            allow: &allow,
            events: "rate_limit_per_cpu = 0\naggregate_window_ms = 0",
        },
    )?;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut results = Vec::new();
    for flooders in [1, cpus] {
        eprintln!("bench: event storm, {flooders} flooder(s)");
        results.push(storm(sb, &agent, helper, secs, flooders)?);
    }
    agent.stop()?;
    Ok(results)
}

fn storm(
    sb: &Bench,
    agent: &Agent,
    helper: &Path,
    secs: u32,
    flooders: usize,
) -> anyhow::Result<Result> {
    let before = counters(agent)?;
    let cpu_before = cpu_seconds(agent.pid())?;
    let started = Instant::now();
    let children = (0..flooders)
        .map(|_| {
            sb.sender_cmd(helper)
                .args([
                    "helper",
                    "udp-flood",
                    "--addr",
                    &format!("{BLOCKED}:{DISCARD_PORT}"),
                    "--secs",
                    &secs.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .context("starting a flooder")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (mut accepted, mut refused) = (0u64, 0u64);
    for c in children {
        let out = c.wait_with_output()?;
        ensure!(out.status.success(), "a flooder failed: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let (a, r) = text.trim().split_once(' ').context("flooder output")?;
        accepted += a.parse::<u64>()?;
        refused += r.parse::<u64>()?;
    }
    let flood_s = started.elapsed().as_secs_f64();
    // Drained: every blocked packet's event read or counted lost, or no progress for 2 s.
    let mut last = (0, Instant::now());
    let after = loop {
        let c = counters(agent)?;
        let settled = c.received + c.lost_ring + c.lost_rate
            - before.received
            - before.lost_ring
            - before.lost_rate
            >= c.blocked - before.blocked
            && c.written + c.lost_sink + c.lost_backlog >= c.received;
        if settled {
            break c;
        }
        if c.received != last.0 {
            last = (c.received, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let total_s = started.elapsed().as_secs_f64();
    let agent_cpu_s = cpu_seconds(agent.pid())? - cpu_before;
    Ok(Result {
        flooders,
        flood_s,
        total_s,
        refused,
        accepted,
        blocked: after.blocked - before.blocked,
        written: after.written - before.written,
        received: after.received - before.received,
        lost_ring: after.lost_ring - before.lost_ring,
        lost_rate: after.lost_rate - before.lost_rate,
        lost_sink: after.lost_sink - before.lost_sink,
        lost_backlog: after.lost_backlog - before.lost_backlog,
        agent_cpu_s,
    })
}
