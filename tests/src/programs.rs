//! Which programs are attached where, as `bpftool cgroup show` lists them: what the
//! tests check after attach, detach and crashes.

use std::{path::Path, process::Command};

use crate::Sandbox;

/// What the agent attaches to each topmost configured cgroup, each exactly once
/// (besides the packet socket guard, see [`Sandbox::residency_programs`]).
pub const PROGRAMS: &[&str] = &[
    "residency_bind4",
    "residency_bind6",
    "residency_connect4",
    "residency_connect6",
    "residency_egress",
    "residency_ingress",
    "residency_sendmsg4",
    "residency_sendmsg6",
    "residency_setsockopt",
    "residency_sock_create",
];

impl Sandbox {
    /// The residency programs attached to `cgroup`, sorted; the packet socket guard
    /// (`residency_socket_create`) is left out, as it attaches only where the kernel
    /// allows BPF LSM programs.
    pub fn residency_programs(cgroup: &Path) -> Vec<String> {
        let mut progs = Self::attached(cgroup);
        progs.sort();
        progs.retain(|p| p != "residency_socket_create");
        progs
    }

    /// Programs attached to a cgroup, as bpftool lists them (names).
    pub fn attached(cgroup: &Path) -> Vec<String> {
        let out = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(cgroup)
            .output();
        match out {
            Ok(o) if !o.status.success() => panic!(
                "bpftool cgroup show {} failed: {}",
                cgroup.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
                .collect(),
            Err(e) => panic!("bpftool (Debian package bpftool) cannot run: {e}"),
        }
    }
}
