//! `cargo xtask bench`: how residency compares with the no-filter limit and with
//! nftables and iptables lockdowns, as allowlists grow to real-world sizes.
//!
//! Four sections, all in one run on one machine, reported as ratios within the run:
//!
//! 1. [`program`]: per-packet cost of the kernel program (BPF_PROG_TEST_RUN) for 10 to
//!    1M prefixes, IPv4 and IPv6, hit and miss, next to an empty cgroup_skb program;
//! 2. [`datapath`]: small-UDP packet rate and TCP request/response rate over a veth
//!    pair, no filter vs residency vs an nftables interval set vs an iptables chain;
//! 3. [`reload`]: time to apply 10k / 100k / 1M prefixes and to swap generations, and
//!    the agent's memory at each size;
//! 4. [`events`]: events delivered from a flood of blocked packets, events lost, and
//!    the agent's CPU.
//!
//! Markdown tables go to stdout and `target/bench/results.md`, raw numbers to
//! `target/bench/results.json`, and a plot of packet rate against prefix count to
//! `target/bench/rate-vs-prefixes.png` ([`report`]). Needs root; builds its own
//! sandbox ([`sandbox`]) and removes it on every path. The datapath runs first and the
//! 1M-prefix work last: freeing a large trie keeps a CPU busy for a while.

mod datapath;
mod events;
pub mod helpers;
mod prefixes;
mod program;
mod reload;
mod report;
mod sandbox;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Datapath rounds (every case once per round; the median is reported).
    #[arg(long, default_value_t = 7)]
    pub rounds: u32,
    /// Seconds per datapath measurement and for the event flood.
    #[arg(long, default_value_t = 2)]
    pub secs: u32,
    /// BPF_PROG_TEST_RUN trials per case (median and p99 over these).
    #[arg(long, default_value_t = 100)]
    pub trials: u32,
    /// Program runs per trial (the kernel reports their mean).
    #[arg(long, default_value_t = 50_000)]
    pub repeat: u32,
    /// Run only these sections (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Section>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Program,
    Datapath,
    Reload,
    Events,
}

/// Everything one run measured.
#[derive(Default)]
pub struct Results {
    pub program: Vec<program::Row>,
    pub datapath: Vec<datapath::Case>,
    pub reload: Option<reload::Result>,
    pub events: Vec<events::Result>,
    pub machine: Machine,
}

/// Where and how the run happened.
#[derive(Default)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub started: String,
    pub duration_s: f64,
    pub command: String,
    /// Seconds per datapath measurement and for the flood.
    pub secs: u32,
    pub tools: Vec<String>,
}

pub fn bench(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    if !crate::setup::is_root() {
        bail!(
            "the benchmark loads BPF programs and builds cgroups and network namespaces: run it as root"
        );
    }
    let tools = check_tools()?;
    let helper = std::env::current_exe().context("locating the xtask binary")?;
    let out = crate::workspace().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let wanted = |s: Section| opts.only.is_empty() || opts.only.contains(&s);

    let started = std::time::Instant::now();
    let mut results = Results {
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            loadavg_start: read_trim("/proc/loadavg"),
            started: sandbox::stdout_of(
                std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]),
            )
            .unwrap_or_default()
            .trim()
            .to_owned(),
            command: command_line(opts),
            secs: opts.secs,
            tools,
            ..Default::default()
        },
        ..Default::default()
    };
    {
        let mut sb = sandbox::Sandbox::new()?;
        if wanted(Section::Datapath) || wanted(Section::Events) {
            sb.network(&helper)?;
        }
        if wanted(Section::Datapath) {
            results.datapath = datapath::run(&sb, bin, &helper, opts)?;
            // The exact sets, for anyone re-running the peers side by side.
            for n in [10, 10_000, 100_000] {
                let mut text = prefixes::ipv4(n).cidrs.join("\n");
                text.push('\n');
                std::fs::write(out.join(format!("prefixes-ipv4-{n}.txt")), text)?;
            }
        }
        if wanted(Section::Events) {
            results.events = events::run(&sb, bin, &helper, opts.secs)?;
        }
        if wanted(Section::Program) {
            results.program = program::run(&sb, bin, opts)?;
        }
        if wanted(Section::Reload) {
            results.reload = Some(reload::run(&sb, bin)?);
        }
    }
    results.machine.loadavg_end = read_trim("/proc/loadavg");
    results.machine.duration_s = started.elapsed().as_secs_f64();
    report::write(&results, &out)
}

/// The programs the benchmark drives, with their versions for the report.
fn check_tools() -> anyhow::Result<Vec<String>> {
    let mut versions = Vec::new();
    for (tool, package, version_arg) in [
        ("iperf3", "iperf3", "--version"),
        ("nft", "nftables", "--version"),
        ("iptables", "iptables", "--version"),
        ("iptables-restore", "iptables", "--version"),
        ("gnuplot", "gnuplot-nox", "--version"),
        ("ip", "iproute2", "-V"),
    ] {
        let Some(path) = which(tool) else {
            bail!(
                "`{tool}` is not installed (Debian package {package}); `cargo xtask setup` installs it"
            );
        };
        if tool == "iptables-restore" || tool == "ip" {
            continue;
        }
        let out = std::process::Command::new(&path)
            .arg(version_arg)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        versions.push(text.lines().next().unwrap_or(tool).trim().to_owned());
    }
    Ok(versions)
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn command_line(opts: &Options) -> String {
    let mut c = "cargo xtask bench".to_owned();
    let d = Options {
        rounds: 7,
        secs: 2,
        trials: 100,
        repeat: 50_000,
        only: Vec::new(),
    };
    if opts.rounds != d.rounds {
        c += &format!(" --rounds {}", opts.rounds);
    }
    if opts.secs != d.secs {
        c += &format!(" --secs {}", opts.secs);
    }
    if opts.trials != d.trials {
        c += &format!(" --trials {}", opts.trials);
    }
    if opts.repeat != d.repeat {
        c += &format!(" --repeat {}", opts.repeat);
    }
    if !opts.only.is_empty() {
        let names: Vec<String> = opts
            .only
            .iter()
            .map(|s| format!("{s:?}").to_lowercase())
            .collect();
        c += &format!(" --only {}", names.join(","));
    }
    c
}

/// Order statistics over a handful of samples.
pub mod stats {
    pub fn sorted(v: &[f64]) -> Vec<f64> {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s
    }

    pub fn median(v: &[f64]) -> f64 {
        let s = sorted(v);
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    /// Nearest-rank percentile (`p` in 0..=100).
    pub fn percentile(v: &[f64], p: f64) -> f64 {
        let s = sorted(v);
        if s.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        s[rank.clamp(1, s.len()) - 1]
    }
}
