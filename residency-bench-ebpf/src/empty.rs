//! The benchmark's baseline: a cgroup_skb egress program that passes every packet and
//! does nothing else. Its cost under `BPF_PROG_TEST_RUN` is the floor of any cgroup_skb
//! program (the test-run loop and the program call), and attached to a cgroup it shows
//! what the egress hook itself costs the datapath; residency is reported as a ratio to
//! it. Built for the BPF target by `residency-bench`'s build script and embedded there.
#![no_std]
#![no_main]

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

/// cgroup/skb return value: let the packet through.
const PASS: i32 = 1;

/// Passes every packet, reading nothing.
#[cgroup_skb(egress)]
pub fn bench_empty(_ctx: SkBuffContext) -> i32 {
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
