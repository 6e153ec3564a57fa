//! The residency kernel programs: one object, one file per hook family under
//! `programs/`, and the steps they share beside it.
//!
//! - `programs/egress.rs` — where a packet is judged. `residency_egress` (cgroup/skb
//!   egress) is the backstop: for every packet a socket in an attached cgroup sends, it
//!   1. reads the destination, protocol and port from the packet (`packet.rs`);
//!   2. answers from the verdict cache when this socket sent to this destination and
//!      port under the same policy epoch before (`cache.rs`);
//!   3. else finds the policy bound to the socket's cgroup or its nearest bound
//!      ancestor (`binding.rs`) and judges the destination (`verdict.rs`): the most
//!      specific matching prefix and its port rules decide, no match means not allowed;
//!   4. counts the verdict and reports every packet that is not allowed (`report.rs`);
//!   5. drops the packet in enforce mode, passes it in audit mode.
//! - `programs/sock_addr.rs` — `residency_connect4/6` and `residency_sendmsg4/6`
//!   (cgroup sock_addr): the same verdict when an application calls `connect()` or
//!   `sendto()`, so a forbidden call fails at once with EPERM instead of timing out,
//!   and its event names the process.
//! - `programs/bind.rs` and `programs/message.rs` — `residency_bind4/6`, and what a
//!   `sendmsg()` chooses besides its destination: a source that is not the
//!   namespace's own where the kernel would take any (`local.rs`), an interface named
//!   per message.
//! - `programs/socket_create.rs` — `residency_socket_create`
//!   (lsm_cgroup/socket_create): packet sockets (AF_PACKET, AF_XDP) write below the IP
//!   layer, where no egress hook sees them; enforce policies deny creating them unless
//!   they allow it.
//!
//! Every map is declared in `maps.rs`, with names and layouts from `residency-common`.
//! Modules depend one way: `programs/` uses the steps (`packet`, `cache`, `binding`,
//! `verdict`, `report`); the steps use `maps` (and `cache` uses `packet` for its key);
//! nothing uses `programs/`.
//!
//! Errors fail closed: a packet or call the programs cannot judge is refused unless its
//! policy is known to be in audit mode.
#![no_std]
#![no_main]
// `atomic_xadd`: core has no read-modify-write atomics for the BPF target, and the
// per-CPU counters must not lose an increment when a softirq's program nests inside a
// process's on the same CPU (BPF_ATOMIC add, available since the first BPF ISA).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod binding;
mod cache;
mod local;
mod maps;
mod packet;
mod programs;
mod report;
mod seqlock;
mod table;
mod verdict;

// The verifier rejects any reachable panic, so this handler is never entered; the
// target has no unwinding and no std to provide one.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The kernel loads LSM programs (`residency_socket_create`) only under a GPL-compatible
// license (`bpf_lsm_verify_prog`, kernel/bpf/bpf_lsm.c), and GPL-only helpers need one.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
