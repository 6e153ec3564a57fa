//! What the host must provide before any sandbox is built: root, the agent binary, and
//! the cgroup v2 mount.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Fails loudly when the tests cannot run here (they need root for BPF, cgroups and
/// namespaces). `RESIDENCY_SKIP_PRIVILEGED=1` is the explicit opt-out: then it returns
/// false and the caller returns early, saying so.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("RESIDENCY_SKIP_PRIVILEGED").is_some() {
        eprintln!("RESIDENCY_SKIP_PRIVILEGED is set: skipping a test that needs root");
        return false;
    }
    panic!(
        "this end-to-end test needs root (BPF, cgroups, network namespaces); run it as root or set RESIDENCY_SKIP_PRIVILEGED=1"
    );
}

/// The agent binary: `RESIDENCY_AGENT` or the workspace's debug build.
pub fn agent_binary() -> PathBuf {
    let path = std::env::var_os("RESIDENCY_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/residency-agent")
        });
    assert!(
        path.exists(),
        "agent binary {} not found: build it first (`cargo xtask test` does) or set RESIDENCY_AGENT",
        path.display()
    );
    path
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    text.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount))
        })
        .context("no cgroup2 mount")
}
