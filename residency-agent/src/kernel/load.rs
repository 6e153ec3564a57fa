//! Loading the embedded kernel program: the object, its pinned maps (adopted from an
//! earlier agent when they exist), and every program loaded into the kernel, with the
//! packet socket guard probed by loading it.

use std::path::{Path, PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{LsmCgroup, Program, ProgramError},
};
use residency_common::{
    GENERATION_SLOTS, PROGRAM_EGRESS, PROGRAM_INGRESS, PROGRAM_SETSOCKOPT, PROGRAM_SOCK_CREATE,
    PROGRAM_SOCKET_CREATE, maps,
};

use super::{BpfError, attach::SOCK_ADDR_PROGRAMS, names::PolicyNames};
use crate::generations::ByFamily;

/// The kernel program, built from `residency-ebpf` by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/residency"));

/// The loaded programs and their maps.
pub struct Loaded {
    pub ebpf: Ebpf,
    /// Capacity of each rule trie.
    pub capacity: u32,
    /// Lookup table chunks per generation slot and family (0: no tables).
    pub table_chunks: ByFamily<u32>,
    /// Why the packet socket guard (`residency_socket_create`) is not enforcing, when
    /// it is not.
    pub socket_guard_missing: Option<String>,
    /// Why the source check (`rule=spoofed-source` where sockets may bind anywhere) is
    /// off, when it is: the kernel's BTF did not give the fields it reads.
    pub source_check_missing: Option<String>,
    /// The policy names map, pinned beside the maps (taken with the policy maps).
    pub names: Option<PolicyNames>,
}

/// Whether the BPF LSM is active: without it, lsm_cgroup programs load and attach but
/// never run. `None` when securityfs is not mounted (cannot tell).
fn bpf_lsm_active() -> Option<bool> {
    let list = std::fs::read_to_string("/sys/kernel/security/lsm").ok()?;
    Some(list.trim().split(',').any(|l| l == "bpf"))
}

/// Loads the object and creates its maps; the programs are loaded into the kernel by
/// [`Loaded::load_programs`], which may run while a version is written (nothing is
/// attached before both are done).
///
/// Maps are pinned under `maps_dir`; maps already pinned there (by an earlier agent)
/// are adopted instead of created, so the policy they hold keeps enforcing. New rule
/// tries get `capacity` entries each, new lookup tables `table_chunks` chunks per
/// generation slot and family; adopted ones keep their sizes.
pub fn open(
    maps_dir: &Path,
    capacity: u32,
    table_chunks: ByFamily<u32>,
) -> Result<Loaded, BpfError> {
    std::fs::create_dir_all(maps_dir).map_err(|source| BpfError::MapsDir {
        path: maps_dir.to_owned(),
        source,
    })?;
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::RULES_V4, capacity)
        .map_max_entries(maps::RULES_V6, capacity)
        // An array needs one entry at least; with none wanted, the one is never used.
        .map_max_entries(maps::TABLE_V4, (GENERATION_SLOTS * table_chunks.v4).max(1))
        .map_max_entries(maps::TABLE_V6, (GENERATION_SLOTS * table_chunks.v6).max(1));
    let paths: Vec<(&'static str, PathBuf)> = PINNED_MAPS
        .iter()
        .map(|name| (*name, maps_dir.join(name)))
        .collect();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let ebpf = loader.load(OBJECT).map_err(BpfError::Load)?;
    let names = PolicyNames::open_or_create(maps_dir).map_err(|source| BpfError::Names {
        path: maps_dir.join(super::names::POLICY_NAMES),
        source,
    })?;
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
    let per_slot = |name: &'static str| match ebpf.map(name) {
        Some(aya::maps::Map::Array(m)) => m
            .info()
            .map(|i| i.max_entries() / GENERATION_SLOTS)
            .map_err(|source| BpfError::Map { name, source }),
        _ => Err(BpfError::MissingMap { name }),
    };
    let table_chunks = ByFamily {
        v4: per_slot(maps::TABLE_V4)?,
        v6: per_slot(maps::TABLE_V6)?,
    };
    // Until the programs are loaded, neither the guard nor the check exists.
    let not_loaded = || Some("the programs are not loaded yet".to_owned());
    Ok(Loaded {
        ebpf,
        capacity,
        table_chunks,
        socket_guard_missing: not_loaded(),
        source_check_missing: not_loaded(),
        names: Some(names),
    })
}

/// [`open`], then [`Loaded::load_socket_guard`] and [`Loaded::load_programs`]: the
/// object loaded whole.
pub fn load(
    maps_dir: &Path,
    capacity: u32,
    table_chunks: ByFamily<u32>,
) -> Result<Loaded, BpfError> {
    let mut loaded = open(maps_dir, capacity, table_chunks)?;
    loaded.load_socket_guard()?;
    loaded.load_programs()?;
    // The kernel's BTF was read three times over (aya's relocations, the LSM program,
    // the layout): tens of MB freed by now, which the allocator would keep resident.
    crate::sys::return_free_memory();
    Ok(loaded)
}

impl Loaded {
    /// Probes the packet socket guard by loading it (a BPF LSM program), and records
    /// why it is missing, when it is: first, so that an agent that must refuse to run
    /// without it refuses before it writes any map.
    pub fn load_socket_guard(&mut self) -> Result<(), BpfError> {
        let program_error = |source| BpfError::Program {
            name: PROGRAM_SOCKET_CREATE,
            source,
        };
        let guard: &mut LsmCgroup = self
            .ebpf
            .program_mut(PROGRAM_SOCKET_CREATE)
            .ok_or(program_error(ProgramError::UnexpectedProgramType))?
            .try_into()
            .map_err(program_error)?;
        self.socket_guard_missing = load_socket_guard(guard);
        Ok(())
    }

    /// Loads the cgroup programs into the kernel (the verifier takes most of an
    /// agent's start) and writes the kernel layout the source check reads; records why
    /// the source check is missing, when it is.
    pub fn load_programs(&mut self) -> Result<(), BpfError> {
        // The layout is read from the kernel's BTF while the verifier works.
        let layout = std::thread::spawn(super::layout::read);
        load_programs(&mut self.ebpf)?;
        let layout = match layout.join() {
            Ok(read) => read.map_err(|e| e.to_string()),
            Err(_) => Err("the kernel layout reader panicked".to_owned()),
        };
        self.source_check_missing = layout.and_then(|l| write_layout(&mut self.ebpf, l)).err();
        Ok(())
    }
}

/// Loads the cgroup programs. The verifier takes most of an agent's start — the egress
/// program alone about 0.3–0.5 s, the ingress one 0.2–0.3 s on a 2-core VM — so the
/// egress program is verified on a thread of its own while this one goes through the
/// rest.
fn load_programs(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    let wanted: Vec<&'static str> = [
        PROGRAM_EGRESS,
        PROGRAM_INGRESS,
        PROGRAM_SOCK_CREATE,
        PROGRAM_SETSOCKOPT,
    ]
    .into_iter()
    .chain(SOCK_ADDR_PROGRAMS.iter().copied())
    .collect();
    let mut found: Vec<(&'static str, &mut Program)> = Vec::new();
    for (name, prog) in ebpf.programs_mut() {
        if let Some(n) = wanted.iter().find(|w| **w == name) {
            found.push((n, prog));
        }
    }
    if let Some(name) = wanted.iter().find(|w| !found.iter().any(|(n, _)| n == *w)) {
        return Err(BpfError::Program {
            name,
            source: ProgramError::UnexpectedProgramType,
        });
    }
    let (egress, rest): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|(n, _)| *n == PROGRAM_EGRESS);
    std::thread::scope(|s| {
        let first = s.spawn(move || egress.into_iter().try_for_each(|(n, p)| load_one(n, p)));
        let others = rest.into_iter().try_for_each(|(n, p)| load_one(n, p));
        first
            .join()
            .expect("the egress program's loader")
            .and(others)
    })
}

/// Loads the packet socket guard where the kernel accepts BPF LSM programs; otherwise
/// says why it is missing. Probing by loading: some kernels list the BPF LSM yet
/// refuse its programs.
fn load_socket_guard(prog: &mut LsmCgroup) -> Option<String> {
    if bpf_lsm_active() == Some(false) {
        return Some(
            "the BPF LSM is not active (\"bpf\" is missing from /sys/kernel/security/lsm)"
                .to_owned(),
        );
    }
    match Btf::from_sys_fs() {
        Err(e) => Some(format!("kernel BTF is not readable ({e})")),
        Ok(btf) => prog.load("socket_create", &btf).err().map(|e| {
            format!(
                "the kernel refused the cgroup LSM program ({e}); Linux >= 6.0 with the BPF \
                 LSM usable is needed"
            )
        }),
    }
}

/// Loads one cgroup program, whatever its type.
fn load_one(name: &'static str, prog: &mut Program) -> Result<(), BpfError> {
    let loaded = match prog {
        Program::CgroupSkb(p) => p.load(),
        Program::CgroupSock(p) => p.load(),
        Program::CgroupSockopt(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        _ => Err(ProgramError::UnexpectedProgramType),
    };
    loaded.map_err(|source| BpfError::Program { name, source })
}

/// Writes where the kernel keeps what the source check reads, before any program is
/// attached; on failure the check stays off (the map holds zeros).
fn write_layout(ebpf: &mut Ebpf, layout: residency_common::KernelLayout) -> Result<(), String> {
    let map = ebpf
        .map_mut(maps::LAYOUT)
        .ok_or_else(|| format!("no map {}", maps::LAYOUT))?;
    let mut array: aya::maps::Array<_, residency_common::KernelLayout> =
        aya::maps::Array::try_from(map).map_err(|e| e.to_string())?;
    array.set(0, layout, 0).map_err(|e| e.to_string())
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
    maps::INTERFACES,
    // The lookup tables, for `verify` to read. An adopting agent clears their roots
    // before its first version (`TableMaps::new`): the trie judges meanwhile.
    maps::TABLE_V4,
    maps::TABLE_ROOTS,
    maps::TABLE_V6,
    maps::TABLE_ROOTS_V6,
    maps::TABLE_EPOCH,
];
