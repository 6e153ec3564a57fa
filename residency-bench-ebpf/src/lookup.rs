//! The benchmark's lookup prototype (section 1b): an IPv4 destination looked up in a
//! bare LPM trie, the kernel structure residency's program uses, and in leaf-pushed
//! multibit tables of 16, 8 and 8 bits (DPDK's DIR-24-8 idea with a smaller first
//! level), the structure issue 18 names as the way to a cheaper first packet. Nothing
//! else is done, so the two programs' difference is the lookups' difference. Neither is
//! part of residency: this measures whether building the tables into it would pay.
//!
//! A table entry is a leaf (0: no prefix covers the address; else the prefix's value)
//! or, with [`CHUNK`] set, the index of a 256-entry chunk of the next level.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{cgroup_skb, map},
    maps::{Array, LpmTrie, lpm_trie::Key},
    programs::SkBuffContext,
};

/// cgroup/skb return values.
const PASS: i32 = 1;
const DROP: i32 = 0;

/// An entry that points at a chunk of the next level.
const CHUNK: u32 = 1 << 31;

/// `{/len, address}` -> value; sized by the loader.
#[map(name = "BENCH_TRIE")]
static TRIE: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(1, 0);

/// The first level: one entry per /16.
#[map(name = "BENCH_L0")]
static L0: Array<u32> = Array::with_max_entries(1 << 16, 0);

/// Every chunk of the second and third levels, 256 entries each; sized by the loader.
#[map(name = "BENCH_CHUNKS")]
static CHUNKS: Array<u32> = Array::with_max_entries(1, 0);

/// The IPv4 destination, host order (the test run's data starts at the IP header).
#[inline(always)]
fn destination(ctx: &SkBuffContext) -> Option<u32> {
    // SAFETY: the context's data pointers; the read is bounds checked against
    // `data_end`, as the verifier requires.
    unsafe {
        let start = (*ctx.skb.skb).data as usize;
        let end = (*ctx.skb.skb).data_end as usize;
        if start + 20 > end {
            return None;
        }
        let d = core::ptr::read_unaligned((start + 16) as *const [u8; 4]);
        Some(u32::from_be_bytes(d))
    }
}

/// The LPM trie's verdict: allowed when a prefix covers the destination.
#[cgroup_skb(egress)]
pub fn bench_trie(ctx: SkBuffContext) -> i32 {
    let Some(a) = destination(&ctx) else {
        return DROP;
    };
    match TRIE.get(Key::new(32, a.to_be_bytes())) {
        Some(_) => PASS,
        None => DROP,
    }
}

/// The tables' verdict, for the same prefixes.
#[cgroup_skb(egress)]
pub fn bench_table(ctx: SkBuffContext) -> i32 {
    let Some(a) = destination(&ctx) else {
        return DROP;
    };
    if table(a).unwrap_or(0) != 0 {
        PASS
    } else {
        DROP
    }
}

/// At most three array reads, each inlined by the verifier (a bounds check and an
/// address computation, no helper call).
#[inline(always)]
fn table(a: u32) -> Option<u32> {
    let e = *L0.get(a >> 16)?;
    if e & CHUNK == 0 {
        return Some(e);
    }
    let e = *CHUNKS.get(((e & !CHUNK) << 8) | ((a >> 8) & 0xff))?;
    if e & CHUNK == 0 {
        return Some(e);
    }
    CHUNKS.get(((e & !CHUNK) << 8) | (a & 0xff)).copied()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
