//! The real kernel program loaded into this process through the agent library, for
//! `BPF_PROG_TEST_RUN` (the kernel-verdict tests and the benchmark's program cost).
//! Nothing is attached: the kernel gives a test run a socket in the calling task's
//! cgroup, so callers bind *this process's* cgroup to the policy under test
//! ([`bind_own_cgroup`]). Needs root (BPF). Behind the `kernel` feature, so that xtask,
//! which builds before the BPF toolchain exists, does not build the agent.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::Context as _;
use residency_agent::{
    host::{self, BoundCgroup},
    kernel::{self as bpf, pins},
};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Loads the program with room for `capacity` rules, its maps pinned in a private
/// bpffs that is then unpinned and unmounted: the maps live on through the loaded
/// object's file descriptors, and nothing is left behind.
pub fn load_private(capacity: u32) -> anyhow::Result<bpf::Loaded> {
    load_private_with(capacity, residency_common::DEFAULT_TABLE_CHUNKS)
}

/// [`load_private`] with `table_chunks` chunks of lookup tables per slot, for each
/// family.
pub fn load_private_with(capacity: u32, table_chunks: u32) -> anyhow::Result<bpf::Loaded> {
    load_private_tables(
        capacity,
        residency_agent::generations::ByFamily {
            v4: table_chunks,
            v6: table_chunks,
        },
    )
}

/// [`load_private`] with the lookup tables' room per family.
pub fn load_private_tables(
    capacity: u32,
    table_chunks: residency_agent::generations::ByFamily<u32>,
) -> anyhow::Result<bpf::Loaded> {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let root = std::env::temp_dir().join(format!("residency-testrun-{}-{n}", std::process::id()));
    pins::ensure_bpffs(&root, true)
        .with_context(|| format!("mounting a bpffs on {}", root.display()))?;
    let maps_dir = root.join("maps");
    let loaded = bpf::load(&maps_dir, capacity, table_chunks);
    if let Ok(dir) = std::fs::read_dir(&maps_dir) {
        for e in dir.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(&maps_dir);
    crate::agent::unmount(&root);
    let _ = std::fs::remove_dir(&root);
    Ok(loaded?)
}

/// The cgroup v2 id of this process.
pub fn own_cgroup_id() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup v2 entry in /proc/self/cgroup")?
        .trim_start_matches('/');
    let h = host::Hierarchy::discover()?;
    let path = h.resolve(if rel.is_empty() { "." } else { rel })?;
    Ok(host::id_of(&path)?)
}

/// This process's cgroup bound to policy number `policy` of the config: what a test
/// run judges by.
pub fn bind_own_cgroup(policy: usize) -> anyhow::Result<BoundCgroup> {
    Ok(BoundCgroup {
        policy,
        path: "/".into(),
        id: own_cgroup_id()?,
    })
}

/// Runs the egress program once on `packet` (an Ethernet frame: the test run strips
/// the Ethernet header) and returns its verdict (1 pass, 0 drop).
pub fn run_egress(loaded: &mut bpf::Loaded, packet: &[u8]) -> anyhow::Result<u32> {
    use aya::programs::{CgroupSkb, TestRun as _, TestRunOptions};
    let prog: &mut CgroupSkb = loaded
        .ebpf
        .program_mut(residency_common::PROGRAM_EGRESS)
        .context("the egress program")?
        .try_into()?;
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    Ok(prog.test_run(opts)?.return_value)
}

/// An Ethernet frame (the test run strips the header) with an IPv4 or IPv6 header
/// from `src` to `dst` (one family) carrying `protocol`, then a UDP-shaped header
/// (ports 40000 to `dport`, length `8 + payload`) and `payload` zero bytes. The ports
/// sit where TCP's do too.
pub fn frame(src: IpAddr, dst: IpAddr, protocol: u8, dport: u16, payload: usize) -> Vec<u8> {
    let l4_len = 8 + payload;
    let mut p = vec![0u8; 14];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = protocol;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            p.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            ip[6] = protocol;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            p.extend_from_slice(&ip);
        }
        _ => panic!("a frame from {src} to {dst} mixes address families"),
    }
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(l4_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.resize(p.len() + payload, 0);
    p
}
