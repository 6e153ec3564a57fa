//! Attaching every program to one cgroup, as BPF links the caller pins (dropping an
//! unpinned link detaches it).

use std::{
    fs::File,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use aya::{
    pin::PinError,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        CgroupSockopt, LsmCgroup, ProgramError, links::FdLink,
    },
    sys::SyscallError,
};
use residency_common::{
    PROGRAM_BIND4, PROGRAM_BIND6, PROGRAM_CONNECT4, PROGRAM_CONNECT6, PROGRAM_EGRESS,
    PROGRAM_INGRESS, PROGRAM_SENDMSG4, PROGRAM_SENDMSG6, PROGRAM_SETSOCKOPT, PROGRAM_SOCK_CREATE,
    PROGRAM_SOCKET_CREATE,
};

use super::{BpfError, Loaded};
use crate::sys::bpf;

/// `BPF_CGROUP_SETSOCKOPT` (include/uapi/linux/bpf.h).
const BPF_CGROUP_SETSOCKOPT: u32 = 22;

/// A link just attached, not yet pinned: aya's, or one made with a raw `bpf(2)` where
/// aya cannot hand its link over (cgroup setsockopt).
pub enum AttachedLink {
    Aya(FdLink),
    Raw(OwnedFd),
}

impl AttachedLink {
    /// Pins the link at `path`; the pin then holds it, and this handle is dropped.
    pub fn pin(self, path: &Path) -> Result<(), PinError> {
        match self {
            AttachedLink::Aya(link) => link.pin(path).map(drop),
            AttachedLink::Raw(fd) => bpf::pin_fd(fd.as_fd(), path).map_err(|io_error| {
                PinError::SyscallError(SyscallError {
                    call: "BPF_OBJ_PIN",
                    io_error,
                })
            }),
        }
    }
}

/// The cgroup sock_addr programs (their attach types come from their ELF sections).
pub(super) const SOCK_ADDR_PROGRAMS: &[&str] = &[
    PROGRAM_CONNECT4,
    PROGRAM_CONNECT6,
    PROGRAM_SENDMSG4,
    PROGRAM_SENDMSG6,
    PROGRAM_BIND4,
    PROGRAM_BIND6,
];

/// Short names of the programs, used in link pin names (`link-<cgroup id>-<name>`).
pub fn short_name(program: &str) -> &str {
    program.strip_prefix("residency_").unwrap_or(program)
}

impl Loaded {
    /// Attaches every program to one cgroup and returns the links with the programs'
    /// short names, owned by the caller (dropping an unpinned link detaches it). On
    /// error, the links attached so far are dropped, so nothing is left half attached.
    pub fn attach(&mut self, path: &Path) -> Result<Vec<(&'static str, AttachedLink)>, BpfError> {
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
            links.push((
                short_name(name),
                AttachedLink::Aya(FdLink::try_from(link).map_err(not_fd)?),
            ));
        }
        // Then the socket guards: raw IP sockets, and the options that get around the
        // destination check.
        let prog: &mut CgroupSock = self
            .ebpf
            .program_mut(PROGRAM_SOCK_CREATE)
            .expect("loaded")
            .try_into()
            .expect("checked in load");
        let id = prog
            .attach(&file, CgroupAttachMode::Single)
            .map_err(failed(PROGRAM_SOCK_CREATE))?;
        let link = prog.take_link(id).map_err(failed(PROGRAM_SOCK_CREATE))?;
        links.push((
            short_name(PROGRAM_SOCK_CREATE),
            AttachedLink::Aya(FdLink::try_from(link).map_err(not_fd)?),
        ));
        let prog: &mut CgroupSockopt = self
            .ebpf
            .program_mut(PROGRAM_SETSOCKOPT)
            .expect("loaded")
            .try_into()
            .expect("checked in load");
        let prog_fd = prog.fd().map_err(failed(PROGRAM_SETSOCKOPT))?;
        let link = bpf::cgroup_link(prog_fd.as_fd(), file.as_fd(), BPF_CGROUP_SETSOCKOPT).map_err(
            |io_error| {
                failed(PROGRAM_SETSOCKOPT)(ProgramError::SyscallError(SyscallError {
                    call: "bpf_link_create",
                    io_error,
                }))
            },
        )?;
        links.push((short_name(PROGRAM_SETSOCKOPT), AttachedLink::Raw(link)));
        if self.socket_guard_missing.is_none() {
            let prog: &mut LsmCgroup = self
                .ebpf
                .program_mut(PROGRAM_SOCKET_CREATE)
                .expect("loaded")
                .try_into()
                .expect("checked in load");
            let id = prog.attach(&file).map_err(failed(PROGRAM_SOCKET_CREATE))?;
            let link = prog.take_link(id).map_err(failed(PROGRAM_SOCKET_CREATE))?;
            links.push((
                short_name(PROGRAM_SOCKET_CREATE),
                AttachedLink::Aya(FdLink::from(link)),
            ));
        }
        // Inbound connection attempts before outbound packets: a policy that judges
        // them never answers a forbidden SYN once its egress is judged.
        let prog: &mut CgroupSkb = self
            .ebpf
            .program_mut(PROGRAM_INGRESS)
            .expect("loaded above")
            .try_into()
            .expect("checked in load");
        let id = prog
            .attach(
                &file,
                CgroupSkbAttachType::Ingress,
                CgroupAttachMode::Single,
            )
            .map_err(failed(PROGRAM_INGRESS))?;
        let link = prog.take_link(id).map_err(failed(PROGRAM_INGRESS))?;
        links.push((
            short_name(PROGRAM_INGRESS),
            AttachedLink::Aya(FdLink::try_from(link).map_err(not_fd)?),
        ));
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
            AttachedLink::Aya(FdLink::try_from(link).map_err(not_fd)?),
        ));
        Ok(links)
    }
}
