//! A kernel that refuses to load large BPF programs, for one process: a seccomp
//! filter hands every `bpf(BPF_PROG_LOAD, …)` of the process to this test
//! (`SECCOMP_RET_USER_NOTIF`), which fails those of [`MIN_INSNS`] instructions or more
//! with `EPERM`, as the verifier or an LSM refusing a program would, and lets the rest
//! run: the few-instruction programs aya loads to probe the kernel's features, and
//! every other call (map creation, pins, map reads and writes) untouched. The agent's
//! start-up then fails where its own programs load, after it has adopted the pinned
//! maps and begun writing its version: the path on which it must give that version
//! up and leave the policy in force alone.

use std::{
    io::Error,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{net::UnixStream, process::CommandExt as _},
    },
    process::Command,
    thread::JoinHandle,
    time::Duration,
};

/// Programs this long or longer are refused: residency's are thousands of
/// instructions, aya's feature probes a handful.
pub const MIN_INSNS: u32 = 64;

/// Classic BPF opcodes and `struct seccomp_data` offsets (x86-64).
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0: u32 = 16;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const NR_BPF: u32 = 321;
const BPF_PROG_LOAD: u32 = 5;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// `bpf(BPF_PROG_LOAD)` goes to the supervisor; anything else runs.
const FILTER: [libc::sock_filter; 8] = [
    insn(LD_W_ABS, 0, 0, ARCH),
    // Another architecture's numbers mean other calls: let them be.
    insn(JEQ_K, 0, 4, AUDIT_ARCH_X86_64),
    insn(LD_W_ABS, 0, 0, NR),
    insn(JEQ_K, 0, 2, NR_BPF),
    insn(LD_W_ABS, 0, 0, ARG0),
    insn(JEQ_K, 1, 0, BPF_PROG_LOAD),
    insn(RET_K, 0, 0, SECCOMP_RET_ALLOW),
    insn(RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF),
];

/// The supervisor of one process's program loads: [`Refusals::join`] says how many
/// it refused once the process has ended.
pub struct Refusals {
    thread: JoinHandle<std::io::Result<u32>>,
    /// The process's end of the socket its filter's listener comes through, kept
    /// open until it has been spawned.
    _child_end: UnixStream,
}

impl Refusals {
    /// Program loads refused (call after the process has exited).
    pub fn join(self) -> u32 {
        self.thread
            .join()
            .expect("the supervisor panicked")
            .expect("supervising the program loads")
    }
}

/// Makes the process `cmd` spawns unable to load programs of [`MIN_INSNS`]
/// instructions or more (its children too). The filter knows x86-64's system call
/// numbers only: elsewhere it lets every call through, and [`Refusals::join`] says 0.
pub fn refuse_program_loads(cmd: &mut Command) -> Refusals {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    ours.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("a receive timeout");
    let child_fd = theirs.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls are made (prctl,
    // seccomp, sendmsg) on the stack and on data in the binary.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: FILTER.len() as u16,
                filter: FILTER.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(Error::last_os_error());
            }
            let listener = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            );
            if listener < 0 {
                return Err(Error::last_os_error());
            }
            // The listener is close-on-exec: handed over before the exec.
            send_fd(child_fd, listener as RawFd)
        });
    }
    let thread = std::thread::spawn(move || {
        let listener = receive_fd(ours.as_raw_fd())?;
        supervise(&listener)
    });
    Refusals {
        thread,
        _child_end: theirs,
    }
}

/// Runs `f` on a one-byte message with room for one descriptor's control message,
/// its buffers on this stack.
fn with_message<R>(f: impl FnOnce(&mut libc::msghdr) -> R) -> R {
    // Aligned for `cmsghdr`.
    let mut control = [0u64; 4];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: a plain C struct, for which all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    f(&mut msg)
}

/// Sends `fd` over the socket `sock` (`SCM_RIGHTS`).
fn send_fd(sock: RawFd, fd: RawFd) -> std::io::Result<()> {
    let size = std::mem::size_of::<RawFd>() as u32;
    // SAFETY: the CMSG macros stay inside the message's control buffer.
    with_message(|msg| unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(size) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size) as usize;
        libc::CMSG_DATA(cmsg).cast::<RawFd>().write_unaligned(fd);
        if libc::sendmsg(sock, msg, 0) != 1 {
            return Err(Error::last_os_error());
        }
        Ok(())
    })
}

/// Receives a descriptor [`send_fd`] sent.
fn receive_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: as in `send_fd`; the descriptor received is ours to own.
    with_message(|msg| unsafe {
        if libc::recvmsg(sock, msg, libc::MSG_CMSG_CLOEXEC) != 1 {
            return Err(Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(Error::other("no descriptor came with the message"));
        }
        Ok(OwnedFd::from_raw_fd(
            libc::CMSG_DATA(cmsg).cast::<RawFd>().read_unaligned(),
        ))
    })
}

/// Answers the process's program loads until it has gone; returns how many it refused.
fn supervise(listener: &OwnedFd) -> std::io::Result<u32> {
    let mut refused = 0;
    loop {
        // SAFETY: plain structs the ioctls fill and read.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        if unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut req,
            )
        } != 0
        {
            let e = Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The process (every user of the filter) has gone.
                Some(libc::ENOENT) => return Ok(refused),
                _ => return Err(e),
            }
        }
        let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
        resp.id = req.id;
        if instructions(req.pid, req.data.args[1]).is_some_and(|n| n >= MIN_INSNS) {
            resp.error = -libc::EPERM;
            refused += 1;
        } else {
            resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
        }
        // A process killed meanwhile makes this fail, harmlessly.
        unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    }
}

/// `insn_cnt` of the `union bpf_attr` at `attr` in process `pid` (its second word for
/// `BPF_PROG_LOAD`), read from the process's memory.
fn instructions(pid: u32, attr: u64) -> Option<u32> {
    use std::os::unix::fs::FileExt as _;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut head = [0u8; 8];
    mem.read_exact_at(&mut head, attr).ok()?;
    Some(u32::from_ne_bytes([head[4], head[5], head[6], head[7]]))
}
