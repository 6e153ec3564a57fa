//! `bind()`: `residency_bind4/6` (cgroup sock_addr).
//!
//! A socket bound to another host's address sends as that host: the receiver's ICMP
//! errors and echo replies, quoting the data, go to the forbidden host. The kernel
//! refuses such a bind by itself unless the socket may bind anywhere (`local.rs`); for
//! those, enforce policies refuse an address that is not the namespace's own
//! (`rule=spoofed-source`, `hook=bind`), audit policies report it and let it pass.
//! The kernel runs these programs before its own checks, for the socket's cgroup.

use aya_ebpf::{
    helpers::generated::bpf_get_netns_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use residency_common::{RULE_SPOOFED_SOURCE, SOURCE_BIND};

use super::{ALLOW_CALL, DENY_CALL, caller_binding, refused_call};
use crate::local;

#[cgroup_sock_addr(bind4)]
pub fn residency_bind4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context the kernel handed us; the verifier checks the field read.
    let ip = unsafe { (*ctx.sock_addr).user_ip4 };
    bind_call(&ctx, local::mapped(ip.to_ne_bytes()))
}

#[cgroup_sock_addr(bind6)]
pub fn residency_bind6(ctx: SockAddrContext) -> i32 {
    let mut addr = [0u8; 16];
    // SAFETY: as above; `user_ip6` is readable in bind6 programs.
    let words = unsafe { (*ctx.sock_addr).user_ip6 };
    for (i, word) in words.iter().enumerate() {
        addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    bind_call(&ctx, addr)
}

/// Judges a bind to `addr` (IPv6 form; an IPv4 address mapped).
#[inline(always)]
fn bind_call(ctx: &SockAddrContext, addr: [u8; 16]) -> i32 {
    // SAFETY: `sk` is always set in sock_addr programs; its value is only copied.
    let (sk, protocol) = unsafe {
        let sk = (*ctx.sock_addr).__bindgen_anon_1.sk;
        (local::address_of(sk.cast()), (*sk).protocol as u8)
    };
    // SAFETY: the context pointer, as the helper takes it.
    let netns = || unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    if local::foreign(sk, netns, &addr) != Some(true) {
        return ALLOW_CALL;
    }
    let family = if local::is_mapped(&addr) { 4 } else { 6 };
    let audit = refused_call(
        caller_binding(),
        RULE_SPOOFED_SOURCE,
        SOURCE_BIND,
        false,
        |e| {
            e.family = family;
            e.protocol = protocol;
            e.src_addr = if family == 4 {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&addr[12..]);
                a
            } else {
                addr
            };
        },
    );
    if audit { ALLOW_CALL } else { DENY_CALL }
}
