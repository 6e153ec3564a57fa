//! Section 3: reload. One agent runs with a 10-prefix policy; for 10k, 100k and 1M
//! prefixes the config is rewritten and `residency-agent reload` applies it (timed from
//! the CLI's start to its answer: the agent reads, validates and diffs the file, writes
//! the new version into the idle slot, flips, waits a grace period and deletes the old
//! version). Then a version of the same size with one prefix changed is swapped in (a
//! generation swap rewrites the whole version), and the 10-prefix policy comes back.
//! The agent's resident memory is read from /proc after each step.

use std::{path::Path, process::Command, time::Instant};

use anyhow::Context as _;

use residency_tests::stdout_of;

use crate::{
    agent::{Agent, AgentSetup, config_text, rss_kib},
    prefixes,
    sandbox::Bench,
};

pub const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];

pub struct Row {
    pub prefixes: usize,
    /// "apply" (from 10 prefixes), "swap" (same size, one prefix changed), "remove"
    /// (back to 10 prefixes).
    pub action: &'static str,
    /// Wall time of `residency-agent reload`.
    pub wall_ms: f64,
    /// The agent's own "applied in" time (write + flip + barrier + delete).
    pub agent_ms: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub struct Result {
    /// RSS after start with the 10-prefix policy.
    pub base_rss_kib: u64,
    pub rows: Vec<Row>,
    /// An agent started with 1M prefixes: start to ready (/healthz answering, the
    /// program attached), and its RSS and peak RSS then.
    pub start_1m_s: f64,
    pub start_1m_rss_kib: (u64, u64),
}

pub fn run(sb: &Bench, bin: &Path) -> anyhow::Result<Result> {
    eprintln!("bench: reload, starting the agent with 10 prefixes");
    let base = prefixes::ipv4(10).cidrs;
    let name = "reload";
    let agent = Agent::start(
        bin,
        &sb.dir,
        &AgentSetup {
            name,
            cgroup_rel: &sb.sender_rel,
            allow: &base,
            events: "",
        },
    )?;
    let base_rss_kib = rss_kib(agent.pid())?.0;
    let mut rows = Vec::new();
    let mut reload = |allow: &[String], prefixes: usize, action: &'static str| {
        eprintln!("bench: reload, {action} {prefixes} prefixes");
        let setup = AgentSetup {
            name,
            cgroup_rel: &sb.sender_rel,
            allow,
            events: "",
        };
        std::fs::write(
            &agent.config,
            config_text(
                &sb.dir,
                &sb.dir.join(format!("pins-{name}")),
                agent.metrics,
                &setup,
            ),
        )?;
        let started = Instant::now();
        let out = stdout_of(
            Command::new(bin)
                .args(["reload", "--config"])
                .arg(&agent.config),
        )?;
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        let first = out.lines().next().unwrap_or_default();
        let agent_ms = first
            .split_once(" applied in ")
            .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("unexpected reload answer: {first}"))?;
        let (rss, hwm) = rss_kib(agent.pid())?;
        rows.push(Row {
            prefixes,
            action,
            wall_ms,
            agent_ms,
            rss_kib: rss,
            hwm_kib: hwm,
        });
        anyhow::Ok(())
    };
    for n in SIZES {
        let mut set = prefixes::ipv4(n).cidrs;
        reload(&set, n, "apply")?;
        // 198.19.1.0/24 lies in the reserved range: no generated prefix overlaps it.
        set[0] = "198.19.1.0/24".to_owned();
        reload(&set, n, "swap")?;
        reload(&base, n, "remove")?;
    }
    agent.stop()?;

    eprintln!("bench: reload, an agent started with 1M prefixes");
    let million = prefixes::ipv4(1_000_000).cidrs;
    let started = Instant::now();
    let big = Agent::start(
        bin,
        &sb.dir,
        &AgentSetup {
            name: "start-1m",
            cgroup_rel: &sb.sender_rel,
            allow: &million,
            events: "",
        },
    )?;
    let start_1m_s = started.elapsed().as_secs_f64();
    let start_1m_rss_kib = rss_kib(big.pid())?;
    big.stop()?;
    Ok(Result {
        base_rss_kib,
        rows,
        start_1m_s,
        start_1m_rss_kib,
    })
}
