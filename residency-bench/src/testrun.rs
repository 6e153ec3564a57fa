//! `residency-bench program-run` (hidden): the per-packet cost of the real kernel
//! program, through `BPF_PROG_TEST_RUN` (aya's [`TestRun`]), next to the empty
//! cgroup_skb program ([`crate::empty`]) timed the same way in the same process.
//! [`crate::program`] starts it in a fresh cgroup and reads the JSON lines it prints.
//!
//! The policy is filled only through the agent's own path — `Config::parse`,
//! `bpf::Loaded` and `Generations::apply` — so the measurement follows the map layout
//! wherever it goes. Nothing is attached: a test run's socket lives in the calling
//! task's cgroup, so this process binds its own cgroup to the policy
//! (`residency_tests::kernel`).
//!
//! The kernel runs the program `repeat` times on one synthetic packet and reports the
//! mean time per run in ns (`bpf_test_run()` in net/bpf/test_run.c; time spent
//! rescheduled is not counted). The same packet every run keeps caches hot, so this is
//! a lower bound. The trials of the empty program, the allowed destination (hit) and the
//! blocked one (miss) are interleaved, so that load from other processes hits all three
//! alike.

use std::{net::IpAddr, path::PathBuf};

use anyhow::{Context as _, ensure};
use aya::programs::{CgroupSkb, TestRun as _, TestRunOptions};
use residency_agent::{config::Config, generations::Generations};
use residency_tests::kernel;

use crate::empty::EmptyProgram;

/// Arguments of `program-run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config whose first policy (enforce mode) is bound to this process's cgroup.
    #[arg(long)]
    pub config: PathBuf,
    /// A destination the policy allows.
    #[arg(long)]
    pub hit: IpAddr,
    /// A destination the policy does not allow.
    #[arg(long)]
    pub miss: IpAddr,
    /// Trials per case.
    #[arg(long, default_value_t = 100)]
    pub trials: u32,
    /// Runs per trial (the kernel reports their mean).
    #[arg(long, default_value_t = 50_000)]
    pub repeat: u32,
    /// UDP payload bytes (64 matches the datapath benchmark).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Run the cases from a cgroup this many levels below the bound one, as a
    /// container's processes sit below their pod's cgroup: a test run's socket belongs
    /// to the caller's cgroup, whose binding is then its ancestor's.
    #[arg(long, default_value_t = 0)]
    pub below: u32,
}

const PASS: u32 = 1;
const DROP: u32 = 0;

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.hit.is_ipv4() == args.miss.is_ipv4(),
        "--hit and --miss must be of one family"
    );
    let path = &args.config;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let started = std::time::Instant::now();
    let config = std::sync::Arc::new(Config::parse(&text, &path.display().to_string())?);
    let parse_ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(!config.policies.is_empty(), "the config has no policy");

    let mut loaded =
        kernel::load_private_tables(config.agent.rule_capacity, config.agent.table_chunks())?;
    loaded.configure(&config)?;
    let bound = [kernel::bind_own_cgroup(0)?];
    let mut generations = Generations::new(loaded.take_policy_maps()?)?;
    let applied = generations.apply(&config, &bound)?;
    println!(
        "{}",
        serde_json::json!({
            "kind": "setup",
            "prefixes": applied.entries,
            "parse_ms": parse_ms,
            "apply_ms": applied.duration.as_secs_f64() * 1000.0,
        })
    );

    if args.below > 0 {
        descend(args.below)?;
    }
    let residency: &CgroupSkb = loaded
        .ebpf
        .program(residency_common::PROGRAM_EGRESS)
        .context("the object has no egress program")?
        .try_into()?;
    let empty = EmptyProgram::load()?;
    let hit = udp_packet(args.hit, args.payload);
    let miss = udp_packet(args.miss, args.payload);
    let cases: [(&str, &CgroupSkb, &[u8], u32); 3] = [
        ("empty", empty.program()?, &hit, PASS),
        ("hit", residency, &hit, PASS),
        ("miss", residency, &miss, DROP),
    ];
    measure(&cases, args)?;
    drop(generations);
    Ok(())
}

/// Moves this process `levels` cgroups below its own (created; removed by the bench
/// with the cgroup it made).
fn descend(levels: u32) -> anyhow::Result<()> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup v2 entry in /proc/self/cgroup")?
        .trim_start_matches('/')
        .to_owned();
    let mut path = residency_tests::cgroup2_mount()?.join(rel);
    for level in 0..levels {
        path = path.join(format!("below-{level}"));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    std::fs::write(path.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining {}", path.display()))
}

/// Checks each case's verdict, then times the cases interleaved, trial by trial, and
/// prints one JSON line of trials per case.
fn measure(cases: &[(&str, &CgroupSkb, &[u8], u32)], args: &Args) -> anyhow::Result<()> {
    for (name, prog, packet, want) in cases {
        let (verdict, _) = test_run(prog, packet, 1)?;
        ensure!(
            verdict == *want,
            "{name}: the program returned {verdict}, expected {want} (is the hit destination \
             allowed and the miss destination not?)"
        );
    }
    let mut ns = vec![Vec::with_capacity(args.trials as usize); cases.len()];
    for _ in 0..args.trials {
        for (i, (_, prog, packet, _)) in cases.iter().enumerate() {
            ns[i].push(test_run(prog, packet, args.repeat)?.1);
        }
    }
    for (i, (name, _, packet, _)) in cases.iter().enumerate() {
        println!(
            "{}",
            serde_json::json!({
                "kind": "trials",
                "case": name,
                "packet_bytes": packet.len() - ETH_HLEN,
                "repeat": args.repeat,
                "ns": ns[i],
            })
        );
    }
    Ok(())
}

/// One `BPF_PROG_TEST_RUN`: the verdict, and the mean ns per run.
pub fn test_run(prog: &CgroupSkb, packet: &[u8], repeat: u32) -> anyhow::Result<(u32, u64)> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    opts.repeat = repeat;
    let result = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    Ok((result.return_value, result.duration.as_nanos() as u64))
}

const ETH_HLEN: usize = 14;

/// Ethernet (the test run strips it) + IPv4/IPv6 + UDP + `payload` zero bytes, the
/// shape of the datapath benchmark's iperf3 packets.
fn udp_packet(dst: IpAddr, payload: usize) -> Vec<u8> {
    let src = match dst {
        IpAddr::V4(_) => IpAddr::from([198, 18, 0, 1]),
        IpAddr::V6(_) => "2001:db8:ffff::1".parse().expect("literal"),
    };
    residency_tests::kernel::frame(src, dst, 17, 5201, payload)
}
