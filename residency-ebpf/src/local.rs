//! Is a source address the namespace's own? The check behind `rule=spoofed-source` in
//! the bind, sendmsg and packet programs.
//!
//! The kernel already refuses a foreign source to a socket that may not bind anywhere,
//! so the programs ask only about sockets that may ([`unchecked_sources`]: the
//! namespace's `ip_nonlocal_bind`, or `IP_FREEBIND`/`IP_TRANSPARENT` set before the
//! agent attached) and then look the source up in the agent's table of each
//! namespace's addresses ([`is_local`]). A namespace the agent has not learned yet has
//! no entries, so its sources are refused (fail closed) and the namespace is asked for
//! ([`ask`]); the agent learns it within milliseconds and follows its addresses from
//! then on.
//!
//! The fields read live in kernel structures this program has no types for: the agent
//! finds their offsets in the kernel's BTF (`residency_common::KernelLayout`), and they
//! are read with `bpf_probe_read_kernel`.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::helpers::generated::{bpf_get_current_pid_tgid, bpf_probe_read_kernel};
use residency_common::{LAYOUT_KNOWN, LocalAddrKey, NetnsAsk};

use crate::maps::{LAYOUT, LOCAL_ADDRS, NETNS_ASKS};

/// Reads a `T` at kernel address `addr`; `None` when the read faults.
#[inline(always)]
pub fn read<T: Copy>(addr: u64) -> Option<T> {
    // Left uninitialised: the helper writes every byte (zeroes on a fault), and
    // zeroing it first costs a byte loop (`memset`) for anything wider than a word,
    // which was 40 bytes on every unconnected `sendto()` (`sendmsg_oif`).
    let mut value = MaybeUninit::<T>::uninit();
    // SAFETY: the helper copies `size_of::<T>()` bytes into `value`, and reports a
    // fault instead of taking it.
    let r = unsafe {
        bpf_probe_read_kernel(
            value.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    // SAFETY: a successful read wrote all of `value`; `T` is plain data.
    (r == 0).then(|| unsafe { value.assume_init() })
}

/// The address a socket pointer holds, as a number. The verifier forbids arithmetic on
/// socket pointers, even to read one field through the helper, so the pointer is
/// copied out of this program's own stack by the helper, which yields a plain number.
/// Call it where the pointer is read, so the compiler has nothing to combine it with
/// on the way (it was seen to mask a pointer kept in a register pair).
#[inline(always)]
pub fn address_of(sk: *const c_void) -> u64 {
    let mut slot: *const c_void = core::ptr::null();
    // SAFETY: a write to a local; volatile, so the pointer really is on the stack.
    unsafe { core::ptr::write_volatile(&mut slot, sk) };
    read::<u64>(&slot as *const *const c_void as u64).unwrap_or(0)
}

/// Whether socket `sk` (a `struct sock *`, as [`address_of`] gives it) may send from a
/// source the kernel did not check, for an address of this family (`v6`: a real IPv6
/// address, not a mapped one).
/// False when the agent found no layout (no BTF): the kernel's own checks stand alone
/// then, which the agent reports. A read that faults counts as true (fail closed).
#[inline(always)]
pub fn unchecked_sources(sk: u64, v6: bool) -> bool {
    let Some(layout) = LAYOUT.get(0) else {
        return false;
    };
    if layout.flags & LAYOUT_KNOWN == 0 {
        return false;
    }
    if sk == 0 {
        return true;
    }
    match read::<u64>(sk + u64::from(layout.inet_flags)) {
        Some(flags) if flags & layout.any_source != 0 => return true,
        Some(_) => {}
        None => return true,
    }
    let Some(net) = read::<u64>(sk + u64::from(layout.sock_net)) else {
        return true;
    };
    let at = if v6 {
        layout.nonlocal_v6
    } else {
        layout.nonlocal_v4
    };
    read::<u8>(net + u64::from(at)).is_none_or(|nonlocal| nonlocal != 0)
}

/// The cookie of socket `sk`'s network namespace (`sock_net(sk)->net_cookie`, what
/// `bpf_get_netns_cookie` gives; that helper reaches cgroup/skb programs only in Linux
/// 6.15). 0 when it cannot be read.
#[inline(always)]
pub fn netns_of(sk: u64) -> u64 {
    LAYOUT
        .get(0)
        .and_then(|l| {
            let net = read::<u64>(sk + u64::from(l.sock_net))?;
            read::<u64>(net + u64::from(l.net_cookie))
        })
        .unwrap_or(0)
}

/// The name of interface `ifindex` in socket `sk`'s namespace, NUL-padded: the
/// `struct net_device` found in the namespace's index hash (`NETDEV_HASHBITS` 8),
/// looking at most 8 devices down the bucket. `None` when not found.
#[inline(always)]
pub fn interface_name(sk: u64, ifindex: u32) -> Option<[u8; 16]> {
    const BUCKETS: u32 = 1 << 8;
    let l = LAYOUT.get(0)?;
    if l.flags & LAYOUT_KNOWN == 0 {
        return None;
    }
    let net = read::<u64>(sk + u64::from(l.sock_net))?;
    let heads = read::<u64>(net + u64::from(l.net_dev_index_head))?;
    let mut node = read::<u64>(heads + u64::from(ifindex & (BUCKETS - 1)) * 8)?;
    for _ in 0..8 {
        if node == 0 {
            return None;
        }
        let dev = node.wrapping_sub(u64::from(l.dev_index_hlist));
        if read::<u32>(dev + u64::from(l.dev_ifindex))? == ifindex {
            let mut name = read::<[u8; 16]>(dev + u64::from(l.dev_name))?;
            // A renamed device may keep bytes of a longer old name past the NUL.
            let mut nul = false;
            for b in name.iter_mut() {
                nul |= *b == 0;
                if nul {
                    *b = 0;
                }
            }
            return Some(name);
        }
        // `struct hlist_node` begins with `next`.
        node = read::<u64>(node)?;
    }
    None
}

/// Whether `addr` (IPv6 form, IPv4 mapped) is one of namespace `netns`'s own: an
/// address or local route the agent learned. The unspecified address (the kernel picks
/// a source), multicast (a receiver's group; never a packet's source) and the limited
/// broadcast address (which the kernel takes as its own, outside any table) always
/// are.
#[inline(always)]
pub fn is_local(netns: u64, addr: &[u8; 16]) -> bool {
    if addr.iter().all(|b| *b == 0) || addr[0] == 0xff || is_v4_multicast(addr) {
        return true;
    }
    let key = aya_ebpf::maps::lpm_trie::Key::new(
        LocalAddrKey::prefix_len(128),
        LocalAddrKey::new(netns, *addr),
    );
    LOCAL_ADDRS.get(&key).is_some()
}

/// `::ffff:224.0.0.0/100`, and the unspecified and limited broadcast IPv4 addresses
/// mapped.
#[inline(always)]
fn is_v4_multicast(addr: &[u8; 16]) -> bool {
    is_mapped(addr)
        && (addr[12] & 0xf0 == 0xe0
            || addr[12..] == [0, 0, 0, 0]
            || addr[12..] == [255, 255, 255, 255])
}

/// `::ffff:0:0/96`.
#[inline(always)]
pub fn is_mapped(addr: &[u8; 16]) -> bool {
    addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff
}

/// An IPv4 address in the table's IPv6 form.
#[inline(always)]
pub fn mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&v4);
    a
}

/// Asks the agent to learn namespace `netns`, socket `sk`'s, naming the current process
/// (inside it in the process-context hooks; the agent checks, since a packet program
/// may run in another task's context) and the namespace's inode number.
#[inline(always)]
pub fn ask(sk: u64, netns: u64) {
    // SAFETY: a helper without arguments.
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    let inode = LAYOUT
        .get(0)
        .and_then(|l| {
            let net = read::<u64>(sk + u64::from(l.sock_net))?;
            read::<u32>(net + u64::from(l.net_inum))
        })
        .unwrap_or(0);
    let _ = NETNS_ASKS.output::<NetnsAsk>(&NetnsAsk { netns, tgid, inode }, 0);
}

/// The full source check: whether socket `sk` sending from `addr` (IPv6 form) uses a
/// source that is not its namespace's own (`netns` gives the namespace's cookie, read
/// only when needed). `None` when the socket cannot send from an unchecked source at
/// all (the kernel's checks hold).
#[inline(always)]
pub fn foreign(sk: u64, netns: impl FnOnce() -> u64, addr: &[u8; 16]) -> Option<bool> {
    if !unchecked_sources(sk, !is_mapped(addr)) {
        return None;
    }
    let netns = netns();
    if is_local(netns, addr) {
        return Some(false);
    }
    ask(sk, netns);
    Some(true)
}

/// The outgoing interface a `sendmsg()` chose so far (its socket's bound device, or an
/// `IP_PKTINFO`/`IPV6_PKTINFO` interface given with the message), read through the
/// sendmsg program's context `ctx` (the `struct bpf_sock_addr_kern *` itself: the
/// helper may read from it directly, as long as nothing is added to the pointer).
/// `None` when it cannot be read (no layout, or a fault).
#[inline(always)]
pub fn sendmsg_oif(ctx: *const c_void, v6: bool) -> Option<u32> {
    /// `struct bpf_sock_addr_kern` is five words long.
    const WORDS: usize = 5;
    let layout = LAYOUT.get(0)?;
    if layout.flags & LAYOUT_KNOWN == 0 {
        return None;
    }
    let kern = read::<[u64; WORDS]>(ctx as u64)?;
    let t_ctx = *kern.get(layout.sock_addr_t_ctx as usize / 8)?;
    let delta = if v6 {
        layout.oif_from_t_ctx_v6
    } else {
        layout.oif_from_t_ctx_v4
    };
    read::<u32>(t_ctx.wrapping_add_signed(i64::from(delta)))
}

/// Whether an IPv4 packet's route was made for an interface the sender forced onto a
/// destination no route there knows (`skb` a `struct sk_buff *`, as [`address_of`]
/// gives it). Given an interface per message (`IP_PKTINFO`), the kernel "assumes that
/// the destination is on link" there (`ip_route_output_key_hash_rcu`): a unicast
/// route without a gateway, made for this send only (on the uncached list, where no
/// route from the table goes). False when the layout is unknown.
#[inline(always)]
pub fn forced_on_link(skb: u64) -> bool {
    /// `RTN_UNICAST`.
    const UNICAST: u16 = 1;
    let Some(l) = LAYOUT.get(0) else {
        return false;
    };
    if l.flags & LAYOUT_KNOWN == 0 || skb == 0 {
        return false;
    }
    let Some(refdst) = read::<u64>(skb + u64::from(l.skb_refdst)) else {
        return false;
    };
    // The low bit says whether the packet holds a reference.
    let dst = refdst & !1;
    if dst == 0 || read::<u64>(dst + u64::from(l.dst_uncached)).is_none_or(|u| u == 0) {
        return false;
    }
    // `struct rtable` begins with its `struct dst_entry`.
    read::<u16>(dst + u64::from(l.rt_type)) == Some(UNICAST)
        && read::<u8>(dst + u64::from(l.rt_gw_family)) == Some(0)
}
