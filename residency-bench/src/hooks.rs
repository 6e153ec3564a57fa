//! Section 2c: what each of residency's programs costs per run in real traffic — the
//! socket-call hooks (`connect`, `sendmsg`, socket creation, `setsockopt`) as well as
//! the packet hooks.
//!
//! The kernel has no `BPF_PROG_TEST_RUN` for cgroup sock_addr, sock and sockopt
//! programs, so they cannot be timed the way section 1 times the packet program.
//! Instead the kernel's own per-program statistics are switched on (`BPF_ENABLE_STATS`,
//! for as long as this process holds the descriptor) while the datapath's workloads
//! run once against the agent at 100k prefixes; each program's run time over its run
//! count is its mean cost, cold caches and real sockets included. The statistics cost
//! something themselves (two clock reads per run): the empty cgroup_skb program,
//! measured the same way under the same workloads, shows that floor. Kept out of the
//! datapath rounds, whose rates must not pay for the statistics.

use std::{collections::HashSet, fmt::Write as _, path::Path};

use anyhow::Context as _;
use aya::{
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};

use crate::{
    agent::{Agent, AgentSetup, config_text},
    datapath,
    empty::EmptyProgram,
    options::Options,
    prefixes,
    sandbox::Bench,
};

/// Prefixes in the agent's policy.
pub const PREFIXES: usize = 100_000;

/// One program's runs while the workloads ran.
pub struct Cost {
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

pub struct Result {
    /// The empty cgroup_skb program on the sender's egress: the statistics' own floor.
    pub empty: Cost,
    /// residency's programs, by name.
    pub residency: Vec<Cost>,
}

pub fn run(sb: &Bench, bin: &Path, helper: &Path, opts: &Options) -> anyhow::Result<Result> {
    eprintln!("bench: hook costs, the empty program");
    let empty = EmptyProgram::attach(&sb.sender)?;
    let stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    datapath::check(sb, helper, false)?;
    datapath::workloads(sb, helper, opts.secs)?;
    let info = empty.program()?.info()?;
    drop(stats);
    drop(empty);
    let empty = Cost {
        program: "empty cgroup_skb (egress)".into(),
        runs: info.run_count(),
        ns_per_run: per_run(info.run_time().as_nanos() as f64, info.run_count()),
    };

    eprintln!("bench: hook costs, residency at {PREFIXES} prefixes");
    let before: HashSet<u32> = loaded_programs().flatten().map(|p| p.id()).collect();
    let allow = prefixes::ipv4(PREFIXES).cidrs;
    let setup = AgentSetup {
        name: "hooks",
        cgroup_rel: &sb.sender_rel,
        allow: &allow,
        events: "",
    };
    // Room for the synthetic set's IPv4 lookup tables (a random spread of 100,000
    // prefixes needs 75,000 chunks, beyond the default), so that every first decision
    // takes the path a country-sized set takes.
    let agent = Agent::start_with(bin, &sb.dir, setup.name, |pins, metrics| {
        config_text(&sb.dir, pins, metrics, &setup).replacen(
            "[agent]\n",
            "[agent]\nipv4_table_chunks = 131072\n",
            1,
        )
    })?;
    let measured = (|| {
        let stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
        datapath::check(sb, helper, true)?;
        datapath::workloads(sb, helper, opts.secs)?;
        let mut costs: Vec<Cost> = loaded_programs()
            .flatten()
            .filter(|p| !before.contains(&p.id()) && p.run_count() > 0)
            .filter_map(|p| {
                let name = p.name_as_str()?.to_owned();
                name.starts_with("residency").then(|| Cost {
                    ns_per_run: per_run(p.run_time().as_nanos() as f64, p.run_count()),
                    runs: p.run_count(),
                    program: label(&name),
                })
            })
            .collect();
        drop(stats);
        costs.sort_by_key(|c| std::cmp::Reverse(c.runs));
        anyhow::Ok(costs)
    })();
    let stopped = agent.stop();
    let residency = measured?;
    stopped?;
    Ok(Result { empty, residency })
}

/// What a program is, from its name as the kernel keeps it (15 bytes: the IPv4 and
/// IPv6 variants of a hook share the stem; the workloads are IPv4).
fn label(kernel_name: &str) -> String {
    const KNOWN: [(&str, &str); 8] = [
        ("residency_egres", "egress: every packet sent"),
        ("residency_ingre", "ingress: every packet received"),
        ("residency_sendm", "sendmsg4: every unconnected `sendto()`"),
        ("residency_conne", "connect4: every `connect()`"),
        ("residency_sock_", "sock_create: every socket created"),
        ("residency_setso", "setsockopt: every `setsockopt()`"),
        ("residency_bind4", "bind4: every `bind()`"),
        (
            "residency_socke",
            "socket_create (LSM): every socket created",
        ),
    ];
    KNOWN
        .iter()
        .find(|(stem, _)| kernel_name.starts_with(stem))
        .map_or_else(|| kernel_name.to_owned(), |(_, l)| (*l).to_owned())
}

fn per_run(ns: f64, runs: u64) -> f64 {
    if runs == 0 {
        f64::NAN
    } else {
        ns / runs as f64
    }
}

/// The section's table.
pub fn table(r: &Result, secs: u32, s: &mut String) {
    let _ = writeln!(
        s,
        "## 2c. Cost per run of each program in real traffic (kernel statistics)\n\n\
         The datapath's workloads (small UDP, TCP RR, unconnected `sendto()`, TCP churn; \
         {secs} s each) once more, with the kernel's per-program statistics on \
         (`BPF_ENABLE_STATS`): run time over run count per program, residency at {} IPv4 \
         prefixes. Real sockets and cold caches, unlike section 1; and the socket-call \
         hooks, which have no `BPF_PROG_TEST_RUN`. The statistics add two clock reads per \
         run: the empty program's row is that floor, measured the same way.\n\n\
         | program | runs | ns per run |\n| --- | ---: | ---: |",
        crate::report::int(PREFIXES as f64)
    );
    for c in std::iter::once(&r.empty).chain(&r.residency) {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} |",
            c.program,
            crate::report::int(c.runs as f64),
            c.ns_per_run
        );
    }
    s.push('\n');
}
