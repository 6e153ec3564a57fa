//! A namespace's own addresses, from rtnetlink: every address on its interfaces and
//! every route of its local table that accepts packets as local (an address's own
//! route, broadcast and anycast routes, and prefixes added with `ip route add local`).

use std::{io, net::IpAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};
use netlink_sys::Socket;

/// The kernel's local routing table (`RT_TABLE_LOCAL`).
const TABLE_LOCAL: u32 = 255;

/// An address prefix in IPv6 form (IPv4 mapped, its length counted from bit 0 of the
/// IPv6 form).
pub type Prefix = ([u8; 16], u8);

/// The namespace's own prefixes, sorted and without repeats.
pub fn local_prefixes(socket: &Socket) -> io::Result<Vec<Prefix>> {
    let mut out = Vec::new();
    for msg in request(
        socket,
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
    )? {
        if let RouteNetlinkMessage::NewAddress(a) = msg {
            // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on a
            // point-to-point link, and the address itself elsewhere.
            let local = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                out.push(host(ip));
            }
        }
    }
    let mut local_table = RouteMessage::default();
    local_table.header.table = TABLE_LOCAL as u8;
    for msg in request(socket, RouteNetlinkMessage::GetRoute(local_table))? {
        if let RouteNetlinkMessage::NewRoute(r) = msg {
            let table = r
                .attributes
                .iter()
                .find_map(|at| match at {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(r.header.table));
            let accepted = matches!(
                r.header.kind,
                RouteType::Local | RouteType::Broadcast | RouteType::Anycast
            );
            if table != TABLE_LOCAL || !accepted {
                continue;
            }
            let dst = r.attributes.iter().find_map(|at| match at {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
                _ => None,
            });
            if let Some(ip) = dst {
                let (addr, full) = host(ip);
                let bits = u8::try_from(
                    u32::from(full) - u32::from(if ip.is_ipv4() { 32u8 } else { 128 })
                        + u32::from(r.header.destination_prefix_length),
                )
                .unwrap_or(full);
                out.push((masked(addr, bits), bits));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// An address as a host prefix in IPv6 form.
fn host(ip: IpAddr) -> Prefix {
    match ip {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 128),
        IpAddr::V6(a) => (a.octets(), 128),
    }
}

/// `addr` with the bits after the first `bits` cleared.
fn masked(mut addr: [u8; 16], bits: u8) -> [u8; 16] {
    for (i, b) in addr.iter_mut().enumerate() {
        let keep = (u32::from(bits)).saturating_sub(i as u32 * 8).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    addr
}

/// Sends a dump request and collects the answers up to the end of the dump, again
/// (up to three times) when the kernel says the table changed under it
/// (`NLM_F_DUMP_INTR`). A message this crate cannot decode is skipped, not fatal:
/// it is at worst an entry the program will not find (refused, never let through).
fn request(socket: &Socket, inner: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut msg = NetlinkMessage::from(inner);
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    let mut tries = 0;
    loop {
        socket.send(&buf, 0)?;
        let (out, interrupted) = collect(socket)?;
        tries += 1;
        if !interrupted || tries == 3 {
            return Ok(out);
        }
    }
}

/// The answers to one dump request, and whether the dump was interrupted.
fn collect(socket: &Socket) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
    let mut out = Vec::new();
    let mut interrupted = false;
    let mut rx = Vec::with_capacity(64 * 1024);
    loop {
        rx.clear();
        let n = socket.recv(&mut rx, 0)?;
        let mut at = 0;
        // Each message starts with its length (`nlmsghdr.nlmsg_len`) and flags.
        while at + 16 <= n {
            let len = u32::from_ne_bytes(rx[at..at + 4].try_into().expect("4 bytes")) as usize;
            let flags = u16::from_ne_bytes(rx[at + 6..at + 8].try_into().expect("2 bytes"));
            if len < 16 || at + len > n {
                break;
            }
            interrupted |= flags & NLM_F_DUMP_INTR != 0;
            if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[at..at + len]) {
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok((out, interrupted)),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
            // Messages are 4-byte aligned (`NLMSG_ALIGN`).
            at += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_prefixes() {
        let a = [0xffu8; 16];
        assert_eq!(masked(a, 128), a);
        let m = masked(a, 100);
        assert_eq!(m[11], 0xff);
        assert_eq!(m[12], 0xf0);
        assert_eq!(m[13], 0);
        assert_eq!(masked(a, 0), [0; 16]);
    }

    /// The agent's own namespace has loopback: 127.0.0.0/8 is a local route, and
    /// `::1` an address, once `lo` is up (always, where these tests run).
    #[test]
    fn dumps_this_namespace() {
        let mut s = Socket::new(netlink_sys::protocols::NETLINK_ROUTE).unwrap();
        s.bind_auto().unwrap();
        let p = local_prefixes(&s).unwrap();
        let lo8 = (
            std::net::Ipv4Addr::new(127, 0, 0, 0)
                .to_ipv6_mapped()
                .octets(),
            104,
        );
        assert!(p.contains(&lo8), "{p:?}");
        assert!(
            p.contains(&(std::net::Ipv6Addr::LOCALHOST.octets(), 128)),
            "{p:?}"
        );
    }
}
