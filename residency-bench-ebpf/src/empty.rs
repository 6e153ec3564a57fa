//! The benchmark's baseline: a cgroup_skb egress program that passes every packet and
//! does nothing else. Its cost under `BPF_PROG_TEST_RUN` is the floor of any cgroup_skb
//! program (the test-run loop and the program call), and attached to a cgroup it shows
//! what the egress hook itself costs the datapath; residency is reported as a ratio to
//! it. Built for the BPF target by `residency-bench`'s build script and embedded there.
//!
//! Beside it, empty programs for the other cgroup hooks residency attaches (packets in,
//! socket creation, bind, connect, sendmsg and setsockopt): attached together they are
//! the floor of residency's design, what the hooks cost before any program does
//! anything (the datapath's "empty programs, residency's hooks" case). Not the LSM
//! socket guard's: an empty lsm_cgroup program passes the verifier here but its load
//! fails with EPERM, and that hook runs once per socket created, as socket creation's.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, cgroup_sockopt},
    programs::{SkBuffContext, SockAddrContext, SockContext, SockoptContext},
};

/// cgroup/skb return value: let the packet through; and the socket hooks': go on.
const PASS: i32 = 1;

/// Passes every packet, reading nothing.
#[cgroup_skb(egress)]
pub fn bench_empty(_ctx: SkBuffContext) -> i32 {
    PASS
}

#[cgroup_skb(ingress)]
pub fn bench_empty_ingress(_ctx: SkBuffContext) -> i32 {
    PASS
}

#[cgroup_sock(sock_create)]
pub fn bench_empty_sock_create(_ctx: SockContext) -> i32 {
    PASS
}

#[cgroup_sockopt(setsockopt)]
pub fn bench_empty_setsockopt(_ctx: SockoptContext) -> i32 {
    PASS
}

#[cgroup_sock_addr(bind4)]
pub fn bench_empty_bind4(_ctx: SockAddrContext) -> i32 {
    PASS
}

#[cgroup_sock_addr(bind6)]
pub fn bench_empty_bind6(_ctx: SockAddrContext) -> i32 {
    PASS
}

#[cgroup_sock_addr(connect4)]
pub fn bench_empty_connect4(_ctx: SockAddrContext) -> i32 {
    PASS
}

#[cgroup_sock_addr(connect6)]
pub fn bench_empty_connect6(_ctx: SockAddrContext) -> i32 {
    PASS
}

#[cgroup_sock_addr(sendmsg4)]
pub fn bench_empty_sendmsg4(_ctx: SockAddrContext) -> i32 {
    PASS
}

#[cgroup_sock_addr(sendmsg6)]
pub fn bench_empty_sendmsg6(_ctx: SockAddrContext) -> i32 {
    PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
