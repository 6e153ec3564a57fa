//! The empty cgroup_skb program (`residency-bench-ebpf`, built from Rust source by this
//! crate's build script and embedded here): the baseline of the per-packet cost, timed
//! through aya's `TestRun`, and the "empty program" case of the datapath, attached to
//! the sender's cgroup through a BPF link.

use std::path::Path;

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        CgroupSockopt, Program, ProgramError,
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

/// Program `name` of the object, as its type.
fn program_of<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("the object has no program {name}"))?
        .try_into()?)
}

/// The empty program, loaded (and attached when [`EmptyProgram::attach`] was called).
/// Dropping it detaches and unloads it.
pub struct EmptyProgram {
    ebpf: Ebpf,
}

impl EmptyProgram {
    pub fn load() -> anyhow::Result<EmptyProgram> {
        let mut ebpf = Ebpf::load(OBJECT).context("loading the empty program's object")?;
        let prog: &mut CgroupSkb = program_of(&mut ebpf, NAME)?;
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
        let prog: &mut CgroupSkb = program_of(&mut empty.ebpf, NAME)?;
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
        let ingress: &mut CgroupSkb = program_of(&mut empty.ebpf, "bench_empty_ingress")?;
        ingress.load()?;
        ingress
            .attach(&cg, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
            .with_context(|| attached("bench_empty_ingress"))?;
        let create: &mut CgroupSock = program_of(&mut empty.ebpf, "bench_empty_sock_create")?;
        create.load()?;
        create
            .attach(&cg, CgroupAttachMode::Single)
            .with_context(|| attached("bench_empty_sock_create"))?;
        let sockopt: &mut CgroupSockopt = program_of(&mut empty.ebpf, "bench_empty_setsockopt")?;
        sockopt.load()?;
        sockopt
            .attach(&cg, CgroupAttachMode::Single)
            .with_context(|| attached("bench_empty_setsockopt"))?;
        for name in SOCK_ADDR {
            let prog: &mut CgroupSockAddr = program_of(&mut empty.ebpf, name)?;
            prog.load()?;
            prog.attach(&cg, CgroupAttachMode::Single)
                .with_context(|| attached(name))?;
        }
        Ok(empty)
    }
}
