//! Reading what the verdict needs from an egress packet.
//!
//! A cgroup/skb program sees the packet from the network header on. Addresses are read
//! from the packet, never from the socket: an IPv6 socket sending to `::ffff:a.b.c.d`
//! emits IPv4 packets, and a raw socket can write any header it likes.
//!
//! The IP header and the ports, read for every packet, are read straight from the
//! packet when its linear part holds them (the usual case for locally sent packets: one
//! bounds check against `data_end`, no helper call), else through
//! `bpf_skb_load_bytes` ([`read`]). The rarer headers (IPv4 options, IPv6 extension
//! headers, ICMP type and code) always go through `bpf_skb_load_bytes`. Both check
//! bounds at run time, so a short packet is an error value here, not a verifier
//! problem.

use aya_ebpf::programs::SkBuffContext;
use residency_common::protocol::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
};

/// `skb->protocol` values (network byte order on the wire, host order after `u16::from_be`).
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

// Headers that may sit between the IP header and the transport header (IPv6
// extension headers; AH in IPv4 too). Only the kernel walks them, so they are not in
// `residency-common`.
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// How many IPv6 extension headers are walked before giving up on the transport header.
const MAX_EXT_HEADERS: u32 = 8;

/// The packet could not be read far enough to judge it.
pub struct ParseError;

/// What the verdict and the event need from one packet.
pub struct Packet {
    /// 4 or 6: the IP version of the packet.
    pub family: u8,
    /// Transport protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Source and destination, network byte order; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ports in host byte order (0 when absent: not TCP, UDP or SCTP, a later
    /// fragment, or a transport header out of reach).
    pub src_port: u16,
    pub dst_port: u16,
    /// The destination port was read (TCP, UDP or SCTP, first fragment): only then may
    /// a port rule allow the packet.
    pub ports_known: bool,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Offset of the transport header from the network header (0 when not reached).
    pub transport: u16,
}

impl Packet {
    /// The IPv4 address the destination is judged as: the address itself for an IPv4
    /// packet, else `None`. An IPv6 packet is judged as IPv6 whatever its destination
    /// looks like: the kernel sends to an IPv4-mapped destination (`::ffff:a.b.c.d`) as
    /// IPv4, so an IPv6 packet to one was written by hand (a raw socket) and goes
    /// wherever IPv6 routes it, never to the IPv4 host. The mapped form is judged as
    /// IPv4 only at the socket calls ([`judged_as_v4`]), where it means just that.
    #[inline(always)]
    pub fn dst_v4(&self) -> Option<[u8; 4]> {
        (self.family == 4).then_some([self.dst[0], self.dst[1], self.dst[2], self.dst[3]])
    }
}

/// The IPv4 address a destination is judged as: the address itself for IPv4, the
/// embedded address for an IPv4-mapped IPv6 destination (`::ffff:a.b.c.d`), else
/// `None` (judged as IPv6). Other IPv6 forms that embed an IPv4 address (IPv4-compatible,
/// 6to4, Teredo, NAT64) are judged as IPv6: the agent denies them unless a policy allows
/// them explicitly.
#[inline(always)]
pub fn judged_as_v4(is_v4: bool, d: &[u8; 16]) -> Option<[u8; 4]> {
    if is_v4 {
        return Some([d[0], d[1], d[2], d[3]]);
    }
    let mapped = d[0..10].iter().all(|b| *b == 0) && d[10] == 0xff && d[11] == 0xff;
    mapped.then_some([d[12], d[13], d[14], d[15]])
}

/// A destination as judged, for cache keys and events: `v4` ([`judged_as_v4`]) in the
/// first 4 bytes when it is judged as IPv4, else the address as sent.
#[inline(always)]
pub fn as_judged(d: &[u8; 16], v4: Option<[u8; 4]>) -> [u8; 16] {
    let mut addr = *d;
    if let Some(a) = v4 {
        addr = in_16(a);
    }
    addr
}

#[repr(C)]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    check: u16,
    saddr: [u8; 4],
    daddr: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    ver_tc_flow: u32,
    payload_len: u16,
    nexthdr: u8,
    hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// Reads a `T` at `offset`: straight from the packet when the bytes are in its linear
/// part (the usual case for locally sent packets: one bounds check, no helper call),
/// else through `bpf_skb_load_bytes`.
#[inline(always)]
fn read<T>(ctx: &SkBuffContext, offset: usize) -> Result<T, ParseError> {
    // SAFETY: reads of the context's own data pointers; the packet read is bounds
    // checked against `data_end`, as the verifier requires.
    unsafe {
        let start = (*ctx.skb.skb).data as usize;
        let end = (*ctx.skb.skb).data_end as usize;
        if start + offset + core::mem::size_of::<T>() <= end {
            return Ok(core::ptr::read_unaligned((start + offset) as *const T));
        }
    }
    ctx.load(offset).map_err(|_| ParseError)
}

/// Parses the network header and, where present, the transport ports.
#[inline(always)]
pub fn parse(ctx: &SkBuffContext) -> Result<Packet, ParseError> {
    // SAFETY: `skb` is the context pointer the kernel passed to this program.
    let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    match proto {
        ETH_P_IP => parse_v4(ctx),
        ETH_P_IPV6 => parse_v6(ctx),
        _ => Err(ParseError),
    }
}

#[inline(always)]
fn parse_v4(ctx: &SkBuffContext) -> Result<Packet, ParseError> {
    let ip: Ipv4Hdr = read(ctx, 0)?;
    if ip.ver_ihl >> 4 != 4 {
        return Err(ParseError);
    }
    let ihl = ((ip.ver_ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(ParseError);
    }
    let mut p = Packet {
        family: 4,
        protocol: ip.protocol,
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        ports_known: false,
        icmp_type: 0,
        icmp_code: 0,
        transport: 0,
    };
    p.src[..4].copy_from_slice(&ip.saddr);
    p.dst = in_16(ip.daddr);
    if ihl > 20 {
        reject_source_route_v4(ctx, ihl)?;
    }
    // Only the first fragment carries the transport header (offset is in the low 13 bits).
    if u16::from_be(ip.frag_off) & 0x1fff == 0 {
        let mut offset = ihl;
        if p.protocol == IPPROTO_AH {
            // IPsec AH sits between IP and the transport header (RFC 4302): its
            // length is in 4-byte units, minus 2.
            let h: [u8; 2] = read(ctx, offset)?;
            p.protocol = h[0];
            offset += (h[1] as usize + 2) * 4;
        }
        read_transport(ctx, offset, &mut p);
    }
    Ok(p)
}

#[inline(always)]
fn parse_v6(ctx: &SkBuffContext) -> Result<Packet, ParseError> {
    let ip: Ipv6Hdr = read(ctx, 0)?;
    if u32::from_be(ip.ver_tc_flow) >> 28 != 6 {
        return Err(ParseError);
    }
    let mut p = Packet {
        family: 6,
        protocol: ip.nexthdr,
        src: ip.saddr,
        dst: ip.daddr,
        src_port: 0,
        dst_port: 0,
        ports_known: false,
        icmp_type: 0,
        icmp_code: 0,
        transport: 0,
    };
    let mut offset: usize = 40;
    let mut first_fragment = true;
    for _ in 0..MAX_EXT_HEADERS {
        match p.protocol {
            IPPROTO_ROUTING => {
                // With segments left, the destination field is only the next hop: the
                // packet's real destination is further down the header. Such a packet
                // cannot be judged by its destination field, so it is not judged.
                let h: [u8; 4] = ctx.load(offset).map_err(|_| ParseError)?;
                if h[3] != 0 {
                    return Err(ParseError);
                }
                p.protocol = h[0];
                offset += (h[1] as usize + 1) * 8;
            }
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS => {
                let h: [u8; 2] = ctx.load(offset).map_err(|_| ParseError)?;
                p.protocol = h[0];
                offset += (h[1] as usize + 1) * 8;
            }
            IPPROTO_AH => {
                let h: [u8; 2] = ctx.load(offset).map_err(|_| ParseError)?;
                p.protocol = h[0];
                offset += (h[1] as usize + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let h: [u8; 4] = ctx.load(offset).map_err(|_| ParseError)?;
                p.protocol = h[0];
                offset += 8;
                if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                    // A later fragment: what follows is payload, whatever it looks
                    // like (it may imitate headers); its ports are unknown.
                    first_fragment = false;
                    break;
                }
            }
            _ => break,
        }
    }
    // Still inside the extension headers after the bounded walk: the transport
    // header (and any routing header further on) is out of sight. Not judged.
    if first_fragment && is_extension_header(p.protocol) {
        return Err(ParseError);
    }
    if first_fragment {
        read_transport(ctx, offset, &mut p);
    }
    Ok(p)
}

/// IPv6 extension headers the parser walks.
#[inline(always)]
fn is_extension_header(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

/// IPv4 loose or strict source routing (options 131, 137) sends a packet through the
/// header's destination to another address listed in the option: judging the header's
/// destination would let an allowed router relay to a forbidden one. Such packets are
/// not judged (fail closed). Options take at most 40 bytes, so the walk is bounded.
#[inline(always)]
fn reject_source_route_v4(ctx: &SkBuffContext, ihl: usize) -> Result<(), ParseError> {
    const IPOPT_END: u8 = 0;
    const IPOPT_NOOP: u8 = 1;
    const IPOPT_LSRR: u8 = 131;
    const IPOPT_SSRR: u8 = 137;
    let mut off = 20;
    for _ in 0..40 {
        if off >= ihl {
            break;
        }
        let kind: u8 = ctx.load(off).map_err(|_| ParseError)?;
        match kind {
            IPOPT_END => break,
            IPOPT_NOOP => off += 1,
            IPOPT_LSRR | IPOPT_SSRR => return Err(ParseError),
            _ => {
                let len: u8 = ctx.load(off + 1).map_err(|_| ParseError)?;
                if len < 2 {
                    return Err(ParseError);
                }
                off += len as usize;
            }
        }
    }
    Ok(())
}

/// Reads ports (TCP, UDP, SCTP: each starts with source and destination port) or type
/// and code (ICMP, ICMPv6). A transport header that cannot be read
/// leaves them 0: the destination is still judged, and no rule may rely on a port it
/// could not see.
#[inline(always)]
fn read_transport(ctx: &SkBuffContext, offset: usize, p: &mut Packet) {
    p.transport = offset as u16;
    match p.protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            if let Ok(ports) = read::<[u16; 2]>(ctx, offset) {
                p.src_port = u16::from_be(ports[0]);
                p.dst_port = u16::from_be(ports[1]);
                p.ports_known = true;
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if let Ok(tc) = ctx.load::<[u8; 2]>(offset) {
                p.icmp_type = tc[0];
                p.icmp_code = tc[1];
            }
        }
        _ => {}
    }
}

/// An IPv4 address in the first 4 bytes of a 16-byte field, the rest zero.
///
/// Built as four 32-bit words: zeroing the 12 bytes after 4 of a byte array makes LLVM
/// call `memset` (a byte loop in BPF) on every packet, since it cannot assume the
/// alignment that wider stores need. Words it stores inline.
#[inline(always)]
pub fn in_16(a: [u8; 4]) -> [u8; 16] {
    let words: [u32; 4] = [u32::from_ne_bytes(a), 0, 0, 0];
    // SAFETY: [u32; 4] and [u8; 16] have the same size, and every bit pattern is valid
    // for both.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) }
}
