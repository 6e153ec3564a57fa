//! The empty cgroup_skb program (`residency-bench-ebpf`, built from Rust source by this
//! crate's build script and embedded here): the baseline of the per-packet cost, timed
//! through aya's `TestRun`, and the "empty program" case of the datapath, attached to
//! the sender's cgroup through a BPF link.

use std::path::Path;

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, CgroupSockopt,
    },
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/empty"));

/// The program's name in the object.
const NAME: &str = "bench_empty";

/// The empty programs of the socket-address hooks (bind, connect, sendmsg).
const SOCK_ADDR: [&str; 6] = [
    "bench_empty_bind4",
    "bench_empty_bind6",
    "bench_empty_connect4",
    "bench_empty_connect6",
    "bench_empty_sendmsg4",
    "bench_empty_sendmsg6",
];

/// The empty program, loaded (and attached when [`EmptyProgram::attach`] was called).
/// Dropping it detaches and unloads it.
pub struct EmptyProgram {
    ebpf: Ebpf,
}

impl EmptyProgram {
    pub fn load() -> anyhow::Result<EmptyProgram> {
        let mut ebpf = Ebpf::load(OBJECT).context("loading the empty program's object")?;
        let prog: &mut CgroupSkb = ebpf
            .program_mut(NAME)
            .context("the object has no empty program")?
            .try_into()?;
        prog.load().context("loading the empty program")?;
        Ok(EmptyProgram { ebpf })
    }

    pub fn program(&self) -> anyhow::Result<&CgroupSkb> {
        Ok(self
            .ebpf
            .program(NAME)
            .context("the object has no empty program")?
            .try_into()?)
    }

    /// Loads the program and attaches it to `cgroup`'s egress (a BPF link on kernels
    /// >= 5.7, which lives as long as the returned value).
    pub fn attach(cgroup: &Path) -> anyhow::Result<EmptyProgram> {
        let mut empty = Self::load()?;
        let cg =
            std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
        let prog: &mut CgroupSkb = empty
            .ebpf
            .program_mut(NAME)
            .context("the object has no empty program")?
            .try_into()?;
        // aya 0.14: only `Single` works for links (aya issue #1078).
        prog.attach(cg, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .with_context(|| format!("attaching the empty program to {}", cgroup.display()))?;
        Ok(empty)
    }

    /// [`EmptyProgram::attach`], and empty programs at the other cgroup hooks residency
    /// attaches to (packets in, socket creation, bind, connect, sendmsg, both families,
    /// and setsockopt): what the hooks cost with nothing in them. Not the LSM socket
    /// guard's (see `residency-bench-ebpf/src/empty.rs`).
    pub fn attach_every_hook(cgroup: &Path) -> anyhow::Result<EmptyProgram> {
        let mut empty = Self::attach(cgroup)?;
        let cg =
            std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
        let attached = |name: &str| format!("attaching {name} to {}", cgroup.display());
        let ingress: &mut CgroupSkb = empty
            .ebpf
            .program_mut("bench_empty_ingress")
            .context("the object has no empty ingress program")?
            .try_into()?;
        ingress.load()?;
        ingress
            .attach(&cg, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
            .with_context(|| attached("bench_empty_ingress"))?;
        let create: &mut CgroupSock = empty
            .ebpf
            .program_mut("bench_empty_sock_create")
            .context("the object has no empty sock_create program")?
            .try_into()?;
        create.load()?;
        create
            .attach(&cg, CgroupAttachMode::Single)
            .with_context(|| attached("bench_empty_sock_create"))?;
        let sockopt: &mut CgroupSockopt = empty
            .ebpf
            .program_mut("bench_empty_setsockopt")
            .context("the object has no empty setsockopt program")?
            .try_into()?;
        sockopt.load()?;
        sockopt
            .attach(&cg, CgroupAttachMode::Single)
            .with_context(|| attached("bench_empty_setsockopt"))?;
        for name in SOCK_ADDR {
            let prog: &mut CgroupSockAddr = empty
                .ebpf
                .program_mut(name)
                .with_context(|| format!("the object has no {name}"))?
                .try_into()?;
            prog.load()?;
            prog.attach(&cg, CgroupAttachMode::Single)
                .with_context(|| attached(name))?;
        }
        Ok(empty)
    }
}
