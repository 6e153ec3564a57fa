//! The real kernel program loaded into this process through the agent library, for
//! `BPF_PROG_TEST_RUN` (the kernel-verdict tests and the benchmark's program cost).
//! Nothing is attached: the kernel gives a test run a socket in the calling task's
//! cgroup, so callers bind *this process's* cgroup to the policy under test
//! ([`bind_own_cgroup`]). Needs root (BPF). Behind the `kernel` feature, so that xtask,
//! which builds before the BPF toolchain exists, does not build the agent.

use std::sync::atomic::{AtomicUsize, Ordering};

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
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let root = std::env::temp_dir().join(format!("residency-testrun-{}-{n}", std::process::id()));
    pins::ensure_bpffs(&root, true)
        .with_context(|| format!("mounting a bpffs on {}", root.display()))?;
    let maps_dir = root.join("maps");
    let loaded = bpf::load(&maps_dir, capacity);
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
