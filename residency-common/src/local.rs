//! The source address check: which sources count as a host's own, per network
//! namespace, and where the kernel programs find what they need to read to know when
//! a socket may send from another.
//!
//! The kernel refuses a foreign source by itself unless a socket may bind anywhere: its
//! namespace sets `net.ipv4.ip_nonlocal_bind` or `net.ipv6.ip_nonlocal_bind`, or the
//! socket has `IP_FREEBIND`/`IP_TRANSPARENT` (refused by the setsockopt guard, but set
//! before the agent attached). Only then do the programs look a source up in
//! [`LocalAddrKey`]'s trie, which the agent fills from each namespace's addresses. The
//! sysctls and socket flags live in kernel structures whose layout differs between
//! builds, so the agent reads their offsets from the kernel's BTF ([`KernelLayout`]).

/// Entries of the local address trie: addresses and local routes of every namespace
/// the agent watches.
pub const LOCAL_ADDR_CAPACITY: u32 = 65_536;

/// Bytes of the ring buffer of asks (`RES_NETNS_ASKS`): a full ring drops an ask,
/// and the next source refused there asks again.
pub const NETNS_ASK_RING_BYTES: u32 = 4096;

/// Key of the local address trie: a network namespace's cookie
/// (`bpf_get_netns_cookie`, `SO_NETNS_COOKIE`) in big-endian bytes, then an address
/// in IPv6 form (IPv4 as `::ffff:a.b.c.d`). The trie's prefix length counts the
/// cookie's 64 bits first, so a lookup never crosses namespaces.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LocalAddrKey {
    pub netns: [u8; 8],
    pub addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<LocalAddrKey>() == 24);

impl LocalAddrKey {
    /// The key of `addr` (IPv6 form) in namespace `netns`.
    #[inline(always)]
    pub const fn new(netns: u64, addr: [u8; 16]) -> LocalAddrKey {
        LocalAddrKey {
            netns: netns.to_be_bytes(),
            addr,
        }
    }

    /// The trie prefix length of an address prefix of `bits` bits (in IPv6 form).
    #[inline(always)]
    pub const fn prefix_len(bits: u32) -> u32 {
        64 + bits
    }
}

/// A namespace asked for (a record of the `RES_NETNS_ASKS` ring buffer): its cookie,
/// the process that met it, and its inode number, by which the agent finds the
/// namespace when that process is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetnsAsk {
    pub netns: u64,
    pub tgid: u32,
    pub inode: u32,
}

const _: () = assert!(core::mem::size_of::<NetnsAsk>() == 16);

/// [`KernelLayout::flags`]: the offsets were found; without it no source is checked.
pub const LAYOUT_KNOWN: u32 = 1;

/// Where the kernel keeps what tells whether a socket may send from any source, byte
/// offsets read from the kernel's BTF by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelLayout {
    /// `struct sock` -> `__sk_common.skc_net`: the socket's `struct net *`.
    pub sock_net: u32,
    /// `struct net` -> `ipv4.sysctl_ip_nonlocal_bind` (one byte).
    pub nonlocal_v4: u32,
    /// `struct net` -> `ipv6.sysctl.ip_nonlocal_bind` (one byte).
    pub nonlocal_v6: u32,
    /// `struct inet_sock` -> `inet_flags`.
    pub inet_flags: u32,
    /// The bits of `inet_flags` that let a socket send from any address:
    /// `INET_FLAGS_FREEBIND`, `INET_FLAGS_TRANSPARENT` and `INET_FLAGS_HDRINCL`.
    pub any_source: u64,
    /// [`LAYOUT_KNOWN`].
    pub flags: u32,
    /// `struct net` -> `ns.inum`: the namespace's inode number, which names it in
    /// `/proc/<pid>/ns/net` and `/run/netns`.
    pub net_inum: u32,
    /// `struct bpf_sock_addr_kern` -> `t_ctx`: in a sendmsg program, a pointer to
    /// the source the call will use (`&ipc.addr` for IPv4, `&fl6->saddr` for IPv6).
    pub sock_addr_t_ctx: u32,
    /// From `t_ctx` to the outgoing interface the call chose so far (`ipc.oif`,
    /// `fl6->flowi6_oif`), in bytes: `IP_PKTINFO`/`IPV6_PKTINFO` set it per message.
    pub oif_from_t_ctx_v4: i32,
    pub oif_from_t_ctx_v6: i32,
    /// `struct sk_buff` -> `_skb_refdst`: the packet's route (`struct dst_entry *`,
    /// its low bit a flag).
    pub skb_refdst: u32,
    /// `struct dst_entry` -> `rt_uncached_list`: set on a route made for one send
    /// only, which an interface forced onto a destination no route knows there is.
    pub dst_uncached: u32,
    /// `struct rtable` -> `rt_type` (two bytes) and `rt_gw_family` (one).
    pub rt_type: u32,
    pub rt_gw_family: u32,
    /// `struct net` -> `net_cookie`: what `bpf_get_netns_cookie` returns, read so in
    /// the packet program, where that helper needs Linux 6.15.
    pub net_cookie: u32,
    /// `struct net` -> `dev_index_head` (the namespace's interfaces hashed by index),
    /// and `struct net_device` -> `index_hlist`, `ifindex`, `name`: an interface's
    /// name from its index, for a policy that names the interfaces it allows.
    pub net_dev_index_head: u32,
    pub dev_index_hlist: u32,
    pub dev_ifindex: u32,
    pub dev_name: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<KernelLayout>() == 88);
