//! `residency-bench`, run by `cargo xtask bench` (after setup and the release build of
//! the agent): how residency compares with the no-filter limit and with nftables and
//! iptables lockdowns, as allowlists grow to real-world sizes.
//!
//! Six sections, all in one run on one machine, reported as ratios within the run:
//!
//! 1. [`program`]: per-packet cost of the kernel program (BPF_PROG_TEST_RUN, measured
//!    by [`testrun`]) for 10 to 1M prefixes, IPv4 and IPv6, hit and miss, next to the
//!    empty cgroup_skb program of [`empty`]; and ([`lookup`]) what a lookup structure of
//!    residency's own would cost against the kernel's LPM trie;
//! 2. [`datapath`]: small-UDP packet rate and TCP request/response rate over a veth
//!    pair, no filter vs residency vs an nftables interval set vs an iptables chain;
//! 3. [`reload`]: time to apply 10k / 100k / 1M prefixes and to swap generations, and
//!    the agent's memory at each size;
//! 4. [`events`]: events delivered from a flood of blocked packets, events lost, and
//!    the agent's CPU;
//! 5. [`pods`]: on a Kubernetes node (an API stand-in, kubelet-style cgroups), the
//!    time from a pod cgroup's creation to its own policy being bound;
//! 6. [`geoip`]: a real allowlist (the EU-27 of a GeoLite2 Country release by default,
//!    `--countries` another; IPv4 and IPv6) applied, refreshed live with 1% changed,
//!    and loaded by nftables. Sections 1 and 2 measure it beside the synthetic sets.
//!
//! Markdown tables go to stdout and `target/bench/results.md`, raw numbers to
//! `target/bench/results.json`, and a plot of packet rate against prefix count to
//! `target/bench/rate-vs-prefixes.png` ([`report`]). Needs root; builds its sandbox
//! with the test harness ([`sandbox`], on `residency_tests::Sandbox`) and removes it on
//! every path. The datapath runs first and the 1M-prefix work last: freeing a large
//! trie keeps a CPU busy for a while.
//!
//! Two hidden subcommands run inside the sandbox: `helper` (the load generators of
//! [`helpers`]) and `program-run` (one [`testrun`] measurement, in a cgroup of its own).

mod agent;
mod allowlist;
mod datapath;
mod empty;
mod events;
mod geoip;
mod helpers;
mod hooks;
mod lookup;
mod machine;
mod options;
mod pods;
mod prefixes;
mod program;
mod reload;
mod report;
mod sandbox;
mod stats;
mod testrun;

use std::path::Path;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use machine::Machine;
use options::{Options, Section};

#[derive(Parser)]
#[command(
    name = "residency-bench",
    about = "Benchmark residency against no filter, nftables and iptables (root); writes target/bench/",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    inner: Option<Inner>,
    #[command(flatten)]
    opts: Options,
}

/// What the benchmark runs of itself inside its sandbox.
#[derive(Subcommand)]
enum Inner {
    /// Load generators run inside the benchmark's namespaces.
    #[command(hide = true, subcommand)]
    Helper(helpers::Helper),
    /// One per-packet cost measurement (section 1), run in a cgroup of its own.
    #[command(hide = true)]
    ProgramRun(testrun::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.inner {
        Some(Inner::Helper(helper)) => helpers::run(helper),
        Some(Inner::ProgramRun(args)) => testrun::run(&args),
        None => bench(&cli.opts),
    }
}

/// Everything one run measured.
#[derive(Default)]
pub struct Results {
    pub program: Vec<program::Row>,
    pub lookup: Vec<lookup::Row>,
    pub datapath: Vec<datapath::Case>,
    pub hooks: Option<hooks::Result>,
    pub reload: Option<reload::Result>,
    pub events: Vec<events::Result>,
    pub pods: Option<pods::Result>,
    pub geoip: Option<geoip::Result>,
    /// The real allowlist beside the synthetic sets (`--countries`).
    pub allowlist: allowlist::Allowlist,
    pub machine: Machine,
}

/// The workspace root (this crate lives one level below it).
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("residency-bench has a parent")
}

fn bench(opts: &Options) -> anyhow::Result<()> {
    let allowlist = opts.allowlist()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the benchmark loads BPF programs and builds cgroups and network namespaces: run it as root"
        );
    }
    let bin = opts
        .agent
        .clone()
        .unwrap_or_else(|| workspace().join("target/release/residency-agent"));
    if !bin.exists() {
        bail!(
            "agent binary {} not found: `cargo xtask bench` builds it",
            bin.display()
        );
    }
    let tools = machine::check_tools()?;
    let helper = std::env::current_exe().context("locating the residency-bench binary")?;
    let out = workspace().join("target/bench");
    std::fs::create_dir_all(&out)?;

    let started = std::time::Instant::now();
    let mut results = Results {
        machine: Machine::now(opts.command_line(), opts.secs, tools),
        allowlist,
        ..Default::default()
    };
    run_sections(&bin, &helper, &out, opts, &mut results)?;
    results.machine.loadavg_end = machine::loadavg();
    results.machine.duration_s = started.elapsed().as_secs_f64();
    report::write(&results, &out)
}

/// The sections `opts` asks for, in one sandbox (removed before the report).
fn run_sections(
    bin: &Path,
    helper: &Path,
    out: &Path,
    opts: &Options,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut sb = sandbox::Bench::new()?;
    if opts.wanted(Section::Datapath) || opts.wanted(Section::Hooks) || opts.wanted(Section::Events)
    {
        sb.network(helper)?;
    }
    if opts.wanted(Section::Datapath) {
        results.datapath = datapath::run(&sb, bin, helper, opts, &results.allowlist)?;
        // The exact sets, for anyone re-running the peers side by side.
        for n in [10, 10_000, 100_000] {
            let mut text = prefixes::ipv4(n).cidrs.join("\n");
            text.push('\n');
            std::fs::write(out.join(format!("prefixes-ipv4-{n}.txt")), text)?;
        }
        let mut real = results.allowlist.ipv4_cidrs()?;
        real.push(prefixes::V4_TARGET.to_owned());
        let file = format!("prefixes-ipv4-{}.txt", results.allowlist.slug());
        std::fs::write(out.join(file), real.join("\n") + "\n")?;
    }
    if opts.wanted(Section::Hooks) {
        results.hooks = Some(hooks::run(&sb, bin, helper, opts)?);
    }
    if opts.wanted(Section::Events) {
        results.events = events::run(&sb, bin, helper, opts.secs)?;
    }
    if opts.wanted(Section::Program) {
        results.program = program::run(&sb, helper, opts, &results.allowlist)?;
    }
    if opts.wanted(Section::Lookup) {
        results.lookup = lookup::run(opts, &results.allowlist)?;
    }
    if opts.wanted(Section::Pods) {
        results.pods = Some(pods::run(&mut sb, bin)?);
    }
    if opts.wanted(Section::Reload) {
        results.reload = Some(reload::run(&sb, bin)?);
    }
    if opts.wanted(Section::Geoip) {
        results.geoip = Some(geoip::run(&sb, bin, &results.allowlist)?);
    }
    Ok(())
}
