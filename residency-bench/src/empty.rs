//! The empty cgroup_skb program (`residency-bench-ebpf`, built from Rust source by this
//! crate's build script and embedded here): the baseline of the per-packet cost, timed
//! through aya's `TestRun`, and the "empty program" case of the datapath, attached to
//! the sender's cgroup through a BPF link.

use std::path::Path;

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/empty"));

/// The program's name in the object.
const NAME: &str = "bench_empty";

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
}
