//! Waiting until no BPF program still runs on the policy version a reload just retired
//! ([`RcuBarrier`]), moving a pinned object to another bpffs ([`repin`]), and the cgroup
//! setsockopt link aya cannot hand over ([`cgroup_link`], [`pin_fd`]).
//!
//! A packet's program reads the active generation slot once and then looks up that
//! slot's entries; deleting the old slot's entries while such a program still runs
//! would make its lookups miss (a wrongful drop). Programs run inside an RCU read-side
//! section, so one RCU grace period after the flip, none can still be on the old slot.
//! Userspace has no `synchronize_rcu()`, but the kernel runs one for us: an update of a
//! map-of-maps from a syscall waits for every running non-sleepable BPF program to
//! finish (`maybe_wait_bpf_programs()` in kernel/bpf/syscall.c, since Linux 5.x). So
//! the barrier is one `BPF_MAP_UPDATE_ELEM` on a private one-slot `ARRAY_OF_MAPS`.
//!
//! Raw `bpf(2)` because no kept crate covers it: aya creates maps only from an ELF
//! object's definitions, and aya-ebpf 0.2 has no map-of-maps type to define one in the
//! kernel program; this map is the agent's alone and never seen by a program.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// A private map-of-maps whose updates are RCU barriers.
pub struct RcuBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

/// `union bpf_attr`, large enough for the commands used here and zero-filled, as
/// the kernel requires of unused trailing bytes.
#[repr(C, align(8))]
pub(super) struct Attr([u8; 128]);

impl Attr {
    pub(super) fn new() -> Attr {
        Attr([0; 128])
    }
    pub(super) fn u32_at(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    pub(super) fn u64_at(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    pub(super) fn u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

pub(super) fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: bpf(2) with a zero-initialised attribute buffer of the size we pass.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn create_map(map_type: u32, inner_fd: Option<i32>) -> std::io::Result<OwnedFd> {
    create(map_type, 4, 1, inner_fd)
}

fn create(
    map_type: u32,
    value_size: u32,
    max_entries: u32,
    inner_fd: Option<i32>,
) -> std::io::Result<OwnedFd> {
    let mut attr = Attr::new();
    // map_type, key_size, value_size, max_entries, map_flags, inner_map_fd
    attr.u32_at(0, map_type)
        .u32_at(4, 4)
        .u32_at(8, value_size)
        .u32_at(12, max_entries);
    if let Some(fd) = inner_fd {
        attr.u32_at(20, fd as u32);
    }
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: bpf(BPF_MAP_CREATE) returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl RcuBarrier {
    pub fn new() -> std::io::Result<RcuBarrier> {
        let inner = create_map(BPF_MAP_TYPE_ARRAY, None)?;
        let outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, Some(inner.as_raw_fd()))?;
        Ok(RcuBarrier { outer, inner })
    }

    /// Returns once every BPF program that was running when it was called has finished.
    pub fn wait(&self) -> std::io::Result<()> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        let mut attr = Attr::new();
        // map_fd, (pad), key ptr, value ptr, flags
        attr.u32_at(0, self.outer.as_raw_fd() as u32)
            .u64_at(8, &key as *const u32 as u64)
            .u64_at(16, &value as *const u32 as u64)
            .u64_at(24, 0);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }
}

/// Pins the object pinned at `from` at `to` as well (BPF_OBJ_GET, then BPF_OBJ_PIN):
/// the object lives while either pin (or an fd) does, whatever it is — a map, a link.
/// aya opens pins only as a known kind; this moves any.
pub fn repin(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
    };
    let (from, to) = (c(from)?, c(to)?);
    let mut attr = Attr::new();
    // pathname, bpf_fd, file_flags
    attr.u64_at(0, from.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: bpf(BPF_OBJ_GET) returned a new fd that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = Attr::new();
    attr.u64_at(0, to.as_ptr() as u64)
        .u32_at(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Attaches program `prog` to the cgroup open as `cgroup` with `attach_type` as a new
/// BPF link (BPF_LINK_CREATE, multi-attach as links always are), returning the link.
/// Raw because aya 0.14 cannot turn a cgroup sockopt link into a pinnable `FdLink`
/// (it has no `impl_try_into_fdlink!` for it), and every link must be pinned.
pub fn cgroup_link(
    prog: std::os::fd::BorrowedFd<'_>,
    cgroup: std::os::fd::BorrowedFd<'_>,
    attach_type: u32,
) -> std::io::Result<OwnedFd> {
    let mut attr = Attr::new();
    // prog_fd, target_fd, attach_type, flags
    attr.u32_at(0, prog.as_raw_fd() as u32)
        .u32_at(4, cgroup.as_raw_fd() as u32)
        .u32_at(8, attach_type)
        .u32_at(12, 0);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: bpf(BPF_LINK_CREATE) returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins the BPF object open as `fd` at `path` (BPF_OBJ_PIN).
pub fn pin_fd(fd: std::os::fd::BorrowedFd<'_>, path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut attr = Attr::new();
    attr.u64_at(0, c.as_ptr() as u64)
        .u32_at(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// A new `ARRAY` map of `max_entries` values of `value_size` bytes, keyed by u32: a
/// map of the agent's own that no program reads (the policy names).
pub fn create_array(value_size: u32, max_entries: u32) -> std::io::Result<OwnedFd> {
    create(BPF_MAP_TYPE_ARRAY, value_size, max_entries, None)
}

/// The BPF object pinned at `path` (BPF_OBJ_GET).
pub fn obj_get(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut attr = Attr::new();
    attr.u64_at(0, c.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: bpf(BPF_OBJ_GET) returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Writes `value` at index `key` of the array map `map`.
pub fn array_set(map: std::os::fd::BorrowedFd<'_>, key: u32, value: &[u8]) -> std::io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, map.as_raw_fd() as u32)
        .u64_at(8, &key as *const u32 as u64)
        .u64_at(16, value.as_ptr() as u64)
        .u64_at(24, 0);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// Reads index `key` of the array map `map` into `value` (its value size).
pub fn array_get(
    map: std::os::fd::BorrowedFd<'_>,
    key: u32,
    value: &mut [u8],
) -> std::io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, map.as_raw_fd() as u32)
        .u64_at(8, &key as *const u32 as u64)
        .u64_at(16, value.as_mut_ptr() as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(|_| ())
}

/// What a cgroup link says of itself: its program and the cgroup it is attached to
/// (0 once detached, by `bpftool link detach` or the cgroup's removal).
pub struct CgroupLinkInfo {
    pub prog_id: u32,
    pub cgroup_id: u64,
    pub attach_type: u32,
}

/// `struct bpf_link_info` of the link `fd` (BPF_OBJ_GET_INFO_BY_FD), cgroup fields.
pub fn cgroup_link_info(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<CgroupLinkInfo> {
    // type, id, prog_id, then the union at offset 16: cgroup_id (u64), attach_type.
    let mut info = [0u8; 64];
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32)
        .u32_at(4, info.len() as u32)
        .u64_at(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let u32_at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().expect("4 bytes"));
    Ok(CgroupLinkInfo {
        prog_id: u32_at(8),
        cgroup_id: u64::from_ne_bytes(info[16..24].try_into().expect("8 bytes")),
        attach_type: u32_at(24),
    })
}

/// What a program says of itself: its name (as the kernel keeps it, at most 15
/// bytes) and tag (a hash of its instructions, map references left out).
pub struct ProgInfo {
    pub name: String,
    pub tag: [u8; 8],
}

/// `struct bpf_prog_info` of the program `fd` (BPF_OBJ_GET_INFO_BY_FD), name and tag.
pub fn prog_info(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<ProgInfo> {
    // type, id, tag[8] at 8, ..., name[16] at 64.
    let mut info = [0u8; 96];
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32)
        .u32_at(4, info.len() as u32)
        .u64_at(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let name = &info[64..80];
    let len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(ProgInfo {
        name: String::from_utf8_lossy(&name[..len]).into_owned(),
        tag: info[8..16].try_into().expect("8 bytes"),
    })
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;

/// The program with id `id` (BPF_PROG_GET_FD_BY_ID), e.g. the one a link runs.
pub fn prog_by_id(id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32_at(0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: bpf(BPF_PROG_GET_FD_BY_ID) returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Runs the cgroup/skb program `prog` once on `frame` (from the Ethernet header on)
/// with `skb->mark = mark` (BPF_PROG_TEST_RUN); its return value. The kernel gives the
/// run a socket of its own, in the calling process's cgroup.
pub fn test_run_skb(
    prog: std::os::fd::BorrowedFd<'_>,
    frame: &[u8],
    mark: u32,
) -> std::io::Result<u32> {
    // `struct __sk_buff` up to `mark`: len and pkt_type must be 0, mark is settable.
    let mut ctx = [0u8; 12];
    ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
    let mut attr = Attr::new();
    // prog_fd, retval (out), data_size_in, data_size_out, data_in, data_out, repeat,
    // duration (out), ctx_size_in, ctx_size_out, ctx_in
    attr.u32_at(0, prog.as_raw_fd() as u32)
        .u32_at(8, frame.len() as u32)
        .u64_at(16, frame.as_ptr() as u64)
        .u32_at(32, 1)
        .u32_at(40, ctx.len() as u32)
        .u64_at(48, ctx.as_ptr() as u64);
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(u32::from_ne_bytes(
        attr.0[4..8].try_into().expect("4 bytes"),
    ))
}
