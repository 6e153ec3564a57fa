//! Section 1: per-packet cost of the kernel program through `BPF_PROG_TEST_RUN`, for
//! allowlists of 10 to 1M prefixes, IPv4 and IPv6, an allowed (hit) and a blocked
//! (miss) destination, next to an empty cgroup_skb program timed in the same process.
//! `residency-bench program-run` ([`crate::testrun`]) does the measuring, each time in
//! a fresh process in a cgroup of its own (it fills the maps through the agent's own
//! config and generation code); this file feeds it and reads its JSON.

use std::{net::IpAddr, path::Path, process::Command};

use anyhow::{Context as _, bail};
use residency_tests::{join_cgroup, stdout_of};

use crate::{
    agent::{AgentSetup, config_text},
    allowlist::Allowlist,
    options::Options,
    prefixes,
    sandbox::Bench,
    stats,
};

pub const SIZES: [usize; 5] = [10, 1_000, 10_000, 100_000, 1_000_000];

/// One (family, size) measurement.
pub struct Row {
    pub family: u8,
    pub prefixes: usize,
    /// The real allowlist (`--countries`) rather than a synthetic set.
    pub real: bool,
    /// Levels between the bound cgroup and the socket's (0: the socket's own is bound).
    pub below: u32,
    /// ns per run of each trial: empty program, hit, miss.
    pub empty: Vec<f64>,
    pub hit: Vec<f64>,
    pub miss: Vec<f64>,
    /// The same with the verdict cache off (`[agent] verdict_cache = false`): every
    /// run takes the trie path, as the first packet of each flow does.
    pub hit_cold: Vec<f64>,
    pub miss_cold: Vec<f64>,
    pub repeat: u64,
    pub packet_bytes: u64,
    /// Time the agent code took to write the policy (informational).
    pub apply_ms: f64,
}

impl Row {
    /// Median of the case / median of the empty program.
    pub fn ratio(&self, case: &[f64]) -> f64 {
        stats::median(case) / stats::median(&self.empty)
    }
}

pub fn run(
    sb: &Bench,
    helper: &Path,
    opts: &Options,
    allow: &Allowlist,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for family in [4u8, 6] {
        for n in SIZES {
            let set = if family == 4 {
                prefixes::ipv4(n)
            } else {
                prefixes::ipv6(n)
            };
            rows.push(measure_set(sb, helper, opts, family, &set, 0)?);
        }
    }
    // A container's socket: its cgroup four levels below the bound one (a pod's), as
    // under the kubelet (pod slice, container scope, and what runtimes nest below).
    rows.push(measure_set(
        sb,
        helper,
        opts,
        4,
        &prefixes::ipv4(100_000),
        BELOW,
    )?);
    // A real allowlist, each family: section 6's (the EU-27 of GeoLite2 by default).
    for family in [4u8, 6] {
        let set = real_set(allow, family == 6)?;
        let mut row = measure_set(sb, helper, opts, family, &set, 0)?;
        row.real = true;
        rows.push(row);
    }
    Ok(rows)
}

/// The allowlist's prefixes of one family, hit in the middle one, missed in the
/// benchmark ranges (no country's).
fn real_set(allow: &Allowlist, v6: bool) -> anyhow::Result<prefixes::PrefixSet> {
    let cidrs = allow.cidrs(v6)?;
    let middle = &cidrs[cidrs.len() / 2];
    let first: IpAddr = middle
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .context("a prefix of the set")?;
    // Its second address: every prefix here holds one unless a host's.
    let hit = match first {
        IpAddr::V4(a) => IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) | 1)),
        IpAddr::V6(a) => IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) | 1)),
    };
    let miss: IpAddr = if v6 {
        "2001:db8:ffff::2".parse()?
    } else {
        "198.18.255.2".parse()?
    };
    Ok(prefixes::PrefixSet { cidrs, hit, miss })
}

/// Levels between the bound cgroup and the socket's in the nested row.
pub const BELOW: u32 = 4;

/// One row: `n` prefixes of `family`, the socket `below` levels under the bound cgroup;
/// measured with the verdict cache on, then off.
fn measure_set(
    sb: &Bench,
    helper: &Path,
    opts: &Options,
    family: u8,
    set: &prefixes::PrefixSet,
    below: u32,
) -> anyhow::Result<Row> {
    let n = set.cidrs.len();
    eprintln!("bench: program cost, IPv{family}, {n} prefixes, {below} levels below");
    let config = sb.dir.join(format!("program-v{family}-{n}.toml"));
    let setup = AgentSetup {
        name: "program",
        cgroup_rel: &format!("{}/program", sb.tag),
        allow: &set.cidrs,
        events: "",
    };
    let text = config_text(
        &sb.dir,
        &sb.dir.join("unused"),
        "127.0.0.1:1".parse()?,
        &setup,
    );
    let measure = |text: &str| -> anyhow::Result<Row> {
        std::fs::write(&config, text)?;
        let mut cmd = Command::new(helper);
        cmd.arg("program-run")
            .arg("--config")
            .arg(&config)
            .args(["--hit", &set.hit.to_string()])
            .args(["--miss", &set.miss.to_string()])
            .args(["--trials", &opts.trials.to_string()])
            .args(["--repeat", &opts.repeat.to_string()])
            .args(["--below", &below.to_string()]);
        // The test run's socket is in the caller's cgroup: a fresh one of our own.
        join_cgroup(&mut cmd, &sb.program);
        let out = stdout_of(&mut cmd);
        remove_below(&sb.program, below);
        let out = out?;
        let mut row =
            parse(family, n, &out).with_context(|| format!("program-run output:\n{out}"))?;
        row.below = below;
        Ok(row)
    };
    // Room for the lookup tables of every set of the row's family but the synthetic
    // IPv6 1M (the synthetic IPv4 1M spreads over 166,000 chunks; the IPv6 sets, one
    // prefix in each of N equal slots of 2000::/3, need several a prefix, which fits
    // the room below up to 100k; a country's set needs 1,500 to 30,000 a family); the
    // other family (the special destinations alone) keeps the default.
    let room = if family == 4 {
        "ipv4_table_chunks = 262144"
    } else {
        "ipv6_table_chunks = 524288"
    };
    let text = text.replacen("[agent]\n", &format!("[agent]\n{room}\n"), 1);
    let mut row = measure(&text)?;
    let cold = measure(&text.replacen("[agent]\n", "[agent]\nverdict_cache = false\n", 1))?;
    row.hit_cold = cold.hit;
    row.miss_cold = cold.miss;
    let _ = std::fs::remove_file(&config);
    Ok(row)
}

/// Removes the cgroups `program-run --below` made under `cgroup`, deepest first (its
/// process has exited).
fn remove_below(cgroup: &Path, levels: u32) {
    let paths: Vec<_> = (0..levels)
        .scan(cgroup.to_path_buf(), |p, level| {
            *p = p.join(format!("below-{level}"));
            Some(p.clone())
        })
        .collect();
    for p in paths.iter().rev() {
        if let Err(e) = std::fs::remove_dir(p)
            && p.exists()
        {
            eprintln!("bench: warning: could not remove {}: {e}", p.display());
        }
    }
}

fn parse(family: u8, prefixes: usize, out: &str) -> anyhow::Result<Row> {
    let mut row = Row {
        family,
        prefixes,
        real: false,
        below: 0,
        empty: Vec::new(),
        hit: Vec::new(),
        miss: Vec::new(),
        hit_cold: Vec::new(),
        miss_cold: Vec::new(),
        repeat: 0,
        packet_bytes: 0,
        apply_ms: 0.0,
    };
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        match v["kind"].as_str() {
            Some("setup") => {
                row.apply_ms = v["apply_ms"].as_f64().unwrap_or(f64::NAN);
                let n = v["prefixes"].as_u64().unwrap_or(0) as usize;
                if n != prefixes {
                    bail!("the agent applied {n} prefixes, expected {prefixes}");
                }
            }
            Some("trials") => {
                let ns: Vec<f64> = v["ns"]
                    .as_array()
                    .context("ns")?
                    .iter()
                    .filter_map(serde_json::Value::as_f64)
                    .collect();
                row.repeat = v["repeat"].as_u64().unwrap_or(0);
                row.packet_bytes = v["packet_bytes"].as_u64().unwrap_or(0);
                match v["case"].as_str() {
                    Some("empty") => row.empty = ns,
                    Some("hit") => row.hit = ns,
                    Some("miss") => row.miss = ns,
                    other => bail!("unknown case {other:?}"),
                }
            }
            _ => {}
        }
    }
    if row.empty.is_empty() || row.hit.is_empty() || row.miss.is_empty() {
        bail!("program-run printed no trials");
    }
    Ok(row)
}
