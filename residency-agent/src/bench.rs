//! `residency-agent bench-program` (hidden): the per-packet cost of the real kernel
//! program, through `BPF_PROG_TEST_RUN`, next to an empty cgroup_skb program timed the
//! same way in the same process. `cargo xtask bench` drives it; it prints JSON lines.
//!
//! The policy is filled only through the agent's own path — [`Config::parse`] and
//! [`Generations::apply`] — so the measurement follows the map layout wherever it goes.
//! Nothing is attached: a test run's socket lives in the calling task's cgroup, so this
//! process binds its own cgroup to the policy (`cargo xtask bench` starts it in a fresh
//! cgroup of its own).
//!
//! Both programs are timed with the raw `bpf(BPF_PROG_TEST_RUN)` command: the kernel
//! runs the program `repeat` times on one synthetic packet and reports the mean time
//! per run in ns (`bpf_test_run()` in net/bpf/test_run.c; time spent rescheduled is not
//! counted). The same packet every run keeps caches hot, so this is a lower bound. The
//! trials of the empty program, the allowed destination (hit) and the blocked one (miss)
//! are interleaved, so that load from other processes hits all three alike.

use std::{
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
};

use anyhow::{Context as _, bail, ensure};
use aya::programs::CgroupSkb;

use crate::{config::Config, generations::Generations, host::Hierarchy, kernel as bpf};

/// Arguments of `bench-program`.
#[derive(Debug, clap::Args)]
pub struct ProgramArgs {
    /// Config whose first policy (enforce mode) is bound to this process's cgroup.
    #[arg(long, required_unless_present = "attach_empty")]
    pub config: Option<PathBuf>,
    /// A destination the policy allows.
    #[arg(long, required_unless_present = "attach_empty")]
    pub hit: Option<IpAddr>,
    /// A destination the policy does not allow.
    #[arg(long, required_unless_present = "attach_empty")]
    pub miss: Option<IpAddr>,
    /// Instead of measuring: attach the empty program to this cgroup's egress (a BPF
    /// link, so it detaches when this process exits), print `attached`, and hold it
    /// until stdin closes. The datapath benchmark's "empty program" case: the cost of
    /// the cgroup hook itself.
    #[arg(long, conflicts_with_all = ["config", "hit", "miss"])]
    pub attach_empty: Option<PathBuf>,
    /// Trials per case.
    #[arg(long, default_value_t = 100)]
    pub trials: u32,
    /// Runs per trial (the kernel reports their mean).
    #[arg(long, default_value_t = 50_000)]
    pub repeat: u32,
    /// UDP payload bytes (64 matches the datapath benchmark).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
}

const PASS: u32 = 1;
const DROP: u32 = 0;

pub fn program(args: &ProgramArgs) -> anyhow::Result<()> {
    if let Some(cgroup) = &args.attach_empty {
        return hold_empty(cgroup);
    }
    let (Some(path), Some(hit), Some(miss)) = (&args.config, args.hit, args.miss) else {
        bail!("--config, --hit and --miss are required");
    };
    ensure!(
        hit.is_ipv4() == miss.is_ipv4(),
        "--hit and --miss must be of one family"
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let started = std::time::Instant::now();
    let config = Config::parse(&text, &path.display().to_string())?;
    let parse_ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(!config.policies.is_empty(), "the config has no policy");

    let mut loaded = load_private(config.agent.rule_capacity)?;
    loaded.configure(&config)?;
    let bound = [crate::host::BoundCgroup {
        policy: 0,
        path: "/".into(),
        id: own_cgroup_id()?,
    }];
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

    let prog: &CgroupSkb = loaded
        .ebpf
        .program(residency_common::PROGRAM_EGRESS)
        .context("the object has no egress program")?
        .try_into()?;
    let residency = prog.fd()?.as_fd().as_raw_fd();
    let empty = load_empty()?;

    let hit = udp_packet(hit, args.payload);
    let miss = udp_packet(miss, args.payload);
    let cases: [(&str, i32, &[u8], u32); 3] = [
        ("empty", empty.as_raw_fd(), &hit, PASS),
        ("hit", residency, &hit, PASS),
        ("miss", residency, &miss, DROP),
    ];
    for (name, fd, packet, want) in cases {
        let (verdict, _) = test_run(fd, packet, 1)?;
        ensure!(
            verdict == want,
            "{name}: the program returned {verdict}, expected {want} (is the hit destination \
             allowed and the miss destination not?)"
        );
    }
    let mut ns: [Vec<u32>; 3] = Default::default();
    for _ in 0..args.trials {
        for (i, (_, fd, packet, _)) in cases.iter().enumerate() {
            ns[i].push(test_run(*fd, packet, args.repeat)?.1);
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
    drop(generations);
    Ok(())
}

/// Attaches the empty program to `cgroup`'s egress through a BPF link and holds it
/// until stdin closes (or this process dies: the link goes with its last fd).
fn hold_empty(cgroup: &std::path::Path) -> anyhow::Result<()> {
    let prog = load_empty()?;
    let cg =
        std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: cg.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_INET_EGRESS,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_LINK_CREATE, &mut attr).context("bpf(BPF_LINK_CREATE)")?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    let _link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    println!("attached");
    std::io::Write::flush(&mut std::io::stdout())?;
    let mut sink = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)?;
    Ok(())
}

/// Loads the program with its maps pinned in a private bpffs, then unpins them and
/// unmounts it: the maps live on through the loaded object's file descriptors.
fn load_private(capacity: u32) -> anyhow::Result<bpf::Loaded> {
    let root = std::env::temp_dir().join(format!("residency-bench-{}", std::process::id()));
    crate::kernel::pins::ensure_bpffs(&root)?;
    let maps_dir = root.join("maps");
    let loaded = bpf::load(&maps_dir, capacity);
    if let Ok(dir) = std::fs::read_dir(&maps_dir) {
        for e in dir.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(&maps_dir);
    let c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())?;
    // SAFETY: umount2 of the bpffs this function mounted.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    let _ = std::fs::remove_dir(&root);
    Ok(loaded?)
}

/// The cgroup v2 id of this process.
fn own_cgroup_id() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup v2 entry in /proc/self/cgroup")?
        .trim_start_matches('/');
    let h = Hierarchy::discover()?;
    Ok(crate::host::id_of(&h.resolve(if rel.is_empty() {
        "."
    } else {
        rel
    })?)?)
}

const ETH_HLEN: usize = 14;

/// Ethernet (the test run strips it) + IPv4/IPv6 + UDP + `payload` zero bytes, the
/// shape of the datapath benchmark's iperf3 packets.
fn udp_packet(dst: IpAddr, payload: usize) -> Vec<u8> {
    let udp_len = 8 + payload;
    let mut p = vec![0u8; ETH_HLEN];
    match dst {
        IpAddr::V4(d) => {
            p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
            ip[16..20].copy_from_slice(&d.octets());
            p.extend_from_slice(&ip);
        }
        IpAddr::V6(d) => {
            p[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[6] = 17;
            ip[7] = 64;
            ip[8..24].copy_from_slice(
                &"2001:db8:ffff::1"
                    .parse::<std::net::Ipv6Addr>()
                    .expect("literal")
                    .octets(),
            );
            ip[24..40].copy_from_slice(&d.octets());
            p.extend_from_slice(&ip);
        }
    }
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&5201u16.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.resize(p.len() + payload, 0);
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_CGROUP_INET_EGRESS: u32 = 1;

/// The head of `union bpf_attr` for `BPF_PROG_LOAD` (include/uapi/linux/bpf.h); the
/// kernel zero-fills what a shorter attr leaves out.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (the cgroup form).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` bpf_attr prefix of the size
    // passed; the kernel reads and writes only within it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// The empty baseline: a cgroup_skb program that passes every packet (`r0 = 1; exit`).
fn load_empty() -> anyhow::Result<OwnedFd> {
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 1; then BPF_JMP | BPF_EXIT.
    let insns: [u64; 2] = [0xb7 | (1u64 << 32), 0x95];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"bench_empty");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SKB,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_INET_EGRESS,
        ..Default::default()
    };
    let fd =
        sys_bpf(BPF_PROG_LOAD, &mut attr).context("bpf(BPF_PROG_LOAD) of the empty program")?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One `BPF_PROG_TEST_RUN`: the verdict, and the mean ns per run.
fn test_run(prog_fd: i32, packet: &[u8], repeat: u32) -> anyhow::Result<(u32, u32)> {
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    if let Err(e) = sys_bpf(BPF_PROG_TEST_RUN, &mut attr) {
        bail!("bpf(BPF_PROG_TEST_RUN): {e}");
    }
    Ok((attr.retval, attr.duration))
}
