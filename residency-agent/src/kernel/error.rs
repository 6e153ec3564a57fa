//! What can go wrong loading, filling and attaching the kernel program, each error
//! saying what the kernel or the host lacks.

use std::path::PathBuf;

use aya::{maps::MapError, programs::ProgramError};

/// Errors while loading, filling or attaching.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "loading the BPF object failed: {0}\n(residency needs a kernel with BPF, BTF-free \
         cgroup/skb programs, LPM tries and ring buffers: Linux >= 5.8, run as root or with \
         CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN)"
    )]
    Load(#[source] aya::EbpfError),
    #[error(
        "the kernel rejected the program {name}: {source}\n(is CONFIG_CGROUP_BPF enabled, \
         and does the agent have CAP_BPF and CAP_NET_ADMIN?)"
    )]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the policy names map ({path}): {source}")]
    Names {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the lookup tables of the new version could not be set up: {0}")]
    Tables(#[source] crate::generations::TableError),
    #[error("map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {name} is full: cannot insert entry {entry} ({source})")]
    MapFull {
        name: &'static str,
        entry: String,
        #[source]
        source: MapError,
    },
    #[error(
        "the kernel attached {path} without a BPF link, which cannot be pinned: {source} (Linux >= 5.7 needed)"
    )]
    NotFdLink {
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error(
        "the policy binds {needed} cgroups; one version binds at most {max} (the old and the \
         new version share the map during a swap): bind a common parent cgroup instead"
    )]
    TooManyBindings { needed: usize, max: u32 },
    #[error(
        "the policy would not fit: map {name} needs {needed} entries while the old and new \
         versions coexist during the swap, and holds {capacity} (raise [agent] rule_capacity)"
    )]
    WouldNotFit {
        name: &'static str,
        needed: usize,
        capacity: u32,
    },
    #[error(transparent)]
    Policy(crate::policy::CompileError),
    #[error(
        "waiting for running BPF programs (an RCU barrier through a map-of-maps update) failed: {source}"
    )]
    Barrier {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the map pin directory {path}: {source}")]
    MapsDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open cgroup {path}: {source}")]
    OpenCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "attaching {program} to cgroup {path} failed: {source}\n(is CONFIG_CGROUP_BPF enabled and the \
         path a cgroup v2 directory?)"
    )]
    Attach {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: ProgramError,
    },
    #[error(
        "policy \"{policy}\" enforces and denies packet sockets (AF_PACKET, AF_XDP), but this \
         kernel cannot enforce that: {reason}.\n([agent] require_packet_socket_guard is set.) Boot \
         with the BPF LSM usable (lsm=...,bpf and BPF LSM programs allowed), or set \
         allow_packet_sockets = true in the policy to accept this gap knowingly"
    )]
    PacketSocketGuard { policy: String, reason: String },
}
