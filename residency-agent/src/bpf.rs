//! Loading the embedded kernel program, filling its maps from a compiled config, and
//! attaching it to cgroups.
//!
//! The object is built from `residency-ebpf` by `build.rs` and embedded here, so the
//! agent binary is all a host needs.
//!
//! Programs, all attached to each topmost configured cgroup:
//! - `residency_egress` (cgroup/skb egress): every packet, the backstop;
//! - `residency_connect4/6`, `residency_sendmsg4/6` (cgroup sock_addr): `connect()` and
//!   `sendto()` fail with EPERM at once;
//! - `residency_socket_create` (lsm_cgroup/socket_create): packet sockets are refused.
//!   It needs the BPF LSM (`bpf` in `/sys/kernel/security/lsm`) and kernel BTF; where
//!   they are missing, the agent refuses to start while a policy depends on it.
//!
//! # Minimum kernel version
//! 6.0 (cgroup LSM programs; 5.8 for the rest: BPF ring buffer, cgroup BPF links,
//! `bpf_skb_ancestor_cgroup_id`); developed and tested on 6.18.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, LsmCgroup, ProgramError,
        links::FdLink,
    },
};
use residency_common::{
    PROGRAM_CONNECT4, PROGRAM_CONNECT6, PROGRAM_EGRESS, PROGRAM_SENDMSG4, PROGRAM_SENDMSG6,
    PROGRAM_SOCKET_CREATE, SETTINGS_NO_VERDICT_CACHE, Settings, maps,
};

use crate::{
    cgroup::{self, CgroupError, Hierarchy},
    config::Config,
    generations::PolicyMaps,
    metrics::KernelCounters,
};

/// The kernel program, built from `residency-ebpf` by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/residency"));

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
        "cgroup {path} is bound by policy \"{first}\" and again by policy \"{second}\"; a cgroup has one policy"
    )]
    BoundTwice {
        path: PathBuf,
        first: String,
        second: String,
    },
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
    #[error("{file}:{line}")]
    CgroupAt {
        file: String,
        line: usize,
        #[source]
        source: CgroupError,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
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

/// A configured cgroup, resolved on this host.
#[derive(Debug, Clone)]
pub struct BoundCgroup {
    pub policy: usize,
    pub path: PathBuf,
    pub id: u64,
}

/// A configured cgroup that does not exist (yet): its policy applies when it appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingCgroup {
    pub policy: usize,
    pub path: PathBuf,
}

/// Resolves every configured cgroup to a path and id on this host; cgroups that do not
/// exist are returned apart, to be watched for.
pub fn resolve_cgroups(
    config: &Config,
    hierarchy: &Hierarchy,
) -> Result<(Vec<BoundCgroup>, Vec<MissingCgroup>), BpfError> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (policy, p) in config.policies.iter().enumerate() {
        for c in &p.cgroups {
            let at = |source| BpfError::CgroupAt {
                file: config.source.clone(),
                line: c.line,
                source,
            };
            let path = hierarchy.resolve(&c.path).map_err(at)?;
            let id = match cgroup::id_of(&path) {
                Ok(id) => id,
                Err(CgroupError::Stat { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    missing.push(MissingCgroup { policy, path });
                    continue;
                }
                Err(e) => return Err(at(e)),
            };
            // The same directory written two ways ("x" and "<mount>/x") would bind one
            // cgroup twice, the second silently winning.
            if let Some(other) = out.iter().find(|b: &&BoundCgroup| b.id == id) {
                return Err(BpfError::BoundTwice {
                    path,
                    first: config.policies[other.policy].name.clone(),
                    second: p.name.clone(),
                });
            }
            out.push(BoundCgroup { policy, path, id });
        }
    }
    Ok((out, missing))
}

/// The cgroups to attach to: configured cgroups with no configured ancestor. A packet
/// from any cgroup below runs the program once, and the program finds the nearest
/// bound ancestor itself (`find_binding` in the kernel program).
pub fn attach_points(bound: &[BoundCgroup]) -> Vec<&BoundCgroup> {
    bound
        .iter()
        .filter(|c| {
            !bound
                .iter()
                .any(|o| o.path != c.path && c.path.starts_with(&o.path))
        })
        .collect()
}

/// The loaded programs and their maps.
pub struct Loaded {
    pub ebpf: Ebpf,
    /// Capacity of each rule trie.
    pub capacity: u32,
    /// Why the packet socket guard (`residency_socket_create`) is not enforcing, when
    /// it is not.
    pub socket_guard_missing: Option<String>,
}

/// The cgroup sock_addr programs (their attach types come from their ELF sections).
const SOCK_ADDR_PROGRAMS: &[&str] = &[
    PROGRAM_CONNECT4,
    PROGRAM_CONNECT6,
    PROGRAM_SENDMSG4,
    PROGRAM_SENDMSG6,
];

/// Short names of the programs, used in link pin names (`link-<cgroup id>-<name>`).
pub fn short_name(program: &str) -> &str {
    program.strip_prefix("residency_").unwrap_or(program)
}

/// Whether the BPF LSM is active: without it, lsm_cgroup programs load and attach but
/// never run. `None` when securityfs is not mounted (cannot tell).
fn bpf_lsm_active() -> Option<bool> {
    let list = std::fs::read_to_string("/sys/kernel/security/lsm").ok()?;
    Some(list.trim().split(',').any(|l| l == "bpf"))
}

/// Loads the object and the program into the kernel (nothing is attached yet).
///
/// Maps are pinned under `maps_dir`; maps already pinned there (by an earlier agent)
/// are adopted instead of created, so the policy they hold keeps enforcing. New rule
/// tries get `capacity` entries each; adopted ones keep theirs.
pub fn load(maps_dir: &Path, capacity: u32) -> Result<Loaded, BpfError> {
    std::fs::create_dir_all(maps_dir).map_err(|source| BpfError::MapsDir {
        path: maps_dir.to_owned(),
        source,
    })?;
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::RULES_V4, capacity)
        .map_max_entries(maps::RULES_V6, capacity);
    let paths: Vec<(&'static str, PathBuf)> = PINNED_MAPS
        .iter()
        .map(|name| (*name, maps_dir.join(name)))
        .collect();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT).map_err(BpfError::Load)?;
    let capacity = match ebpf.map(maps::RULES_V4) {
        Some(aya::maps::Map::LpmTrie(m)) => {
            m.info()
                .map(|i| i.max_entries())
                .map_err(|source| BpfError::Map {
                    name: maps::RULES_V4,
                    source,
                })?
        }
        _ => {
            return Err(BpfError::MissingMap {
                name: maps::RULES_V4,
            });
        }
    };
    fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, BpfError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        ebpf.program_mut(name)
            .ok_or(BpfError::Program {
                name,
                source: ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(|source| BpfError::Program { name, source })
    }
    let prog: &mut CgroupSkb = program(&mut ebpf, PROGRAM_EGRESS)?;
    prog.load().map_err(|source| BpfError::Program {
        name: PROGRAM_EGRESS,
        source,
    })?;
    for name in SOCK_ADDR_PROGRAMS {
        let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        prog.load()
            .map_err(|source| BpfError::Program { name, source })?;
    }
    // Probing by loading: some kernels list the BPF LSM yet refuse its programs.
    let socket_guard_missing = match bpf_lsm_active() {
        Some(false) => Some(
            "the BPF LSM is not active (\"bpf\" is missing from /sys/kernel/security/lsm)"
                .to_owned(),
        ),
        _ => {
            let prog: &mut LsmCgroup = program(&mut ebpf, PROGRAM_SOCKET_CREATE)?;
            match Btf::from_sys_fs() {
                Err(e) => Some(format!("kernel BTF is not readable ({e})")),
                Ok(btf) => prog
                    .load("socket_create", &btf)
                    .err()
                    .map(|e| format!("the kernel refused the cgroup LSM program ({e}); Linux >= 6.0 with the BPF LSM usable is needed")),
            }
        }
    };

    Ok(Loaded {
        ebpf,
        capacity,
        socket_guard_missing,
    })
}

/// The maps pinned under `<pin_path>/v3/maps` and adopted by the next agent. The
/// verdict cache is not among them: a cache is never worth adopting (the first swap
/// retires it anyway), and two builds must never read each other's keys.
const PINNED_MAPS: &[&str] = &[
    maps::BINDINGS,
    maps::ACTIVE,
    maps::RULES_V4,
    maps::RULES_V6,
    maps::COUNTERS,
    maps::STATS,
    maps::EVENTS,
    maps::SETTINGS,
    maps::RATE,
    maps::PORTS,
];

impl Loaded {
    /// Takes the maps that hold the policy out of the object (call after pinning).
    pub fn take_policy_maps(&mut self) -> Result<PolicyMaps, BpfError> {
        fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, BpfError> {
            let map = ebpf.take_map(name).ok_or(BpfError::MissingMap { name })?;
            T::try_from(map).map_err(|source| BpfError::Map { name, source })
        }
        Ok(PolicyMaps {
            rules_v4: take(&mut self.ebpf, maps::RULES_V4)?,
            rules_v6: take(&mut self.ebpf, maps::RULES_V6)?,
            bindings: take(&mut self.ebpf, maps::BINDINGS)?,
            active: take(&mut self.ebpf, maps::ACTIVE)?,
            ports: take(&mut self.ebpf, maps::PORTS)?,
            capacity: self.capacity,
        })
    }

    /// Enforce policies that deny packet sockets while this kernel cannot deny them:
    /// with `[agent] require_packet_socket_guard` the config is refused; otherwise each
    /// exposed policy is reported as an error (never silently).
    pub fn check_socket_guard(&self, config: &Config) -> Result<(), BpfError> {
        let Some(reason) = &self.socket_guard_missing else {
            return Ok(());
        };
        for p in config
            .policies
            .iter()
            .filter(|p| p.mode == crate::config::Mode::Enforce && !p.allow_packet_sockets)
        {
            if config.agent.require_packet_socket_guard {
                return Err(BpfError::PacketSocketGuard {
                    policy: p.name.clone(),
                    reason: reason.clone(),
                });
            }
            tracing::error!(
                policy = %p.name,
                "packet sockets (AF_PACKET, AF_XDP) are NOT denied for this policy's workloads: {reason}. \
                 Their egress bypasses every IP hook: drop CAP_NET_RAW from these workloads, or boot \
                 with the BPF LSM usable; set [agent] require_packet_socket_guard = true to refuse to run without it"
            );
        }
        Ok(())
    }

    /// Attaches every program to one cgroup and returns the links with the programs'
    /// short names, owned by the caller (dropping an unpinned link detaches it). On
    /// error, the links attached so far are dropped, so nothing is left half attached.
    pub fn attach(&mut self, path: &Path) -> Result<Vec<(&'static str, FdLink)>, BpfError> {
        let file = File::open(path).map_err(|source| BpfError::OpenCgroup {
            path: path.to_owned(),
            source,
        })?;
        let failed = |program: &'static str| {
            move |source: ProgramError| BpfError::Attach {
                program,
                path: path.to_owned(),
                source,
            }
        };
        let not_fd = |source| BpfError::NotFdLink {
            path: path.to_owned(),
            source,
        };
        let mut links = Vec::new();
        // Socket calls first, packets last: from the moment packets are judged, a
        // forbidden connect() already fails fast.
        for name in SOCK_ADDR_PROGRAMS {
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .expect("loaded")
                .try_into()
                .expect("checked in load");
            let id = prog
                .attach(&file, CgroupAttachMode::Single)
                .map_err(failed(name))?;
            let link = prog.take_link(id).map_err(failed(name))?;
            links.push((short_name(name), FdLink::try_from(link).map_err(not_fd)?));
        }
        if self.socket_guard_missing.is_none() {
            let prog: &mut LsmCgroup = self
                .ebpf
                .program_mut(PROGRAM_SOCKET_CREATE)
                .expect("loaded")
                .try_into()
                .expect("checked in load");
            let id = prog.attach(&file).map_err(failed(PROGRAM_SOCKET_CREATE))?;
            let link = prog.take_link(id).map_err(failed(PROGRAM_SOCKET_CREATE))?;
            links.push((short_name(PROGRAM_SOCKET_CREATE), FdLink::from(link)));
        }
        let prog: &mut CgroupSkb = self
            .ebpf
            .program_mut(PROGRAM_EGRESS)
            .expect("loaded above")
            .try_into()
            .expect("checked in load");
        // Single mode through a BPF link: the kernel still lets other programs coexist
        // (links imply BPF_F_ALLOW_MULTI); other modes fail with EINVAL in aya 0.14
        // (aya issue #1078).
        let id = prog
            .attach(&file, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .map_err(failed(PROGRAM_EGRESS))?;
        let link = prog.take_link(id).map_err(failed(PROGRAM_EGRESS))?;
        links.push((
            short_name(PROGRAM_EGRESS),
            FdLink::try_from(link).map_err(not_fd)?,
        ));
        Ok(links)
    }

    /// Takes the event ring buffer out of the object, for the event reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, BpfError> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or(BpfError::MissingMap { name: maps::EVENTS })?;
        RingBuf::try_from(map).map_err(|source| BpfError::Map {
            name: maps::EVENTS,
            source,
        })
    }

    fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, BpfError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(BpfError::MissingMap { name })?;
        T::try_from(map).map_err(|source| BpfError::Map { name, source })
    }

    /// Takes the packet and health counters out of the object, for the metrics
    /// endpoint and the shutdown report (call after pinning).
    pub fn take_counters(&mut self) -> Result<KernelCounters, BpfError> {
        let take =
            |ebpf: &mut Ebpf, name: &'static str| -> Result<PerCpuArray<MapData, u64>, BpfError> {
                let map = ebpf.take_map(name).ok_or(BpfError::MissingMap { name })?;
                PerCpuArray::try_from(map).map_err(|source| BpfError::Map { name, source })
            };
        Ok(KernelCounters {
            counters: take(&mut self.ebpf, maps::COUNTERS)?,
            stats: take(&mut self.ebpf, maps::STATS)?,
        })
    }

    /// Writes the program settings (the event rate limit, the verdict cache).
    pub fn configure(&mut self, config: &Config) -> Result<(), BpfError> {
        let mut settings: Array<_, Settings> = self.map_mut(maps::SETTINGS)?;
        let value = Settings {
            events_per_second: config.events.rate_limit_per_cpu,
            events_burst: config.events.rate_limit_burst,
            flags: if config.agent.verdict_cache {
                0
            } else {
                SETTINGS_NO_VERDICT_CACHE
            },
            _pad: 0,
        };
        settings.set(0, value, 0).map_err(|source| BpfError::Map {
            name: maps::SETTINGS,
            source,
        })
    }
}
