//! Sources: which hook judged an event ([`Event::source`](crate::Event::source)), and
//! the socket families the socket creation hook guards.

#[cfg(feature = "user")]
mod user;

/// [`Event::source`](crate::Event::source): the cgroup/skb egress program.
pub const SOURCE_SKB: u8 = 1;
/// [`Event::source`](crate::Event::source): a `connect()` (cgroup/connect4 or connect6).
pub const SOURCE_CONNECT: u8 = 2;
/// [`Event::source`](crate::Event::source): a `sendto()`/`sendmsg()` (cgroup/sendmsg4
/// or sendmsg6).
pub const SOURCE_SENDMSG: u8 = 3;
/// [`Event::source`](crate::Event::source): creating a socket. A packet socket
/// (lsm_cgroup/socket_create) has `family` 0 and `protocol` holding its address family
/// ([`AF_PACKET`] or [`AF_XDP`]); a raw IP socket (cgroup/sock_create) has `family` 4
/// or 6 and its IP protocol.
pub const SOURCE_SOCKET: u8 = 4;
/// [`Event::source`](crate::Event::source): a `setsockopt()` (cgroup/setsockopt);
/// `family` and `protocol` are the socket's, `icmp_type` holds the option's level and
/// `icmp_code` its name (every option judged is below 256).
pub const SOURCE_SOCKOPT: u8 = 5;
/// [`Event::source`](crate::Event::source): an inbound connection attempt (a TCP SYN,
/// cgroup/skb ingress) from a source the policy does not allow; `src_addr` is the
/// remote peer, the address judged.
pub const SOURCE_INBOUND: u8 = 6;
/// [`Event::source`](crate::Event::source): a `bind()` (cgroup/bind4 or bind6) to an
/// address that is not the namespace's own; `src_addr` is the address.
pub const SOURCE_BIND: u8 = 7;

/// `AF_PACKET` (include/linux/socket.h): sockets that write below the IP layer.
pub const AF_PACKET: i32 = 17;
/// `AF_XDP` (include/linux/socket.h, since Linux 4.18): sockets that write to a
/// device's queues, below the IP layer too.
pub const AF_XDP: i32 = 44;

/// The hook that judged an event, typed: [`Event::source`](crate::Event::source)
/// holds [`Source::value`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A packet, judged by the cgroup/skb egress program.
    Skb = SOURCE_SKB,
    /// A `connect()` call.
    Connect = SOURCE_CONNECT,
    /// A `sendto()`/`sendmsg()` call.
    Sendmsg = SOURCE_SENDMSG,
    /// A packet or raw socket creation.
    Socket = SOURCE_SOCKET,
    /// A `setsockopt()` call.
    Sockopt = SOURCE_SOCKOPT,
    /// An inbound connection attempt.
    Inbound = SOURCE_INBOUND,
    /// A `bind()` call.
    Bind = SOURCE_BIND,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 7] = [
        Source::Skb,
        Source::Connect,
        Source::Sendmsg,
        Source::Socket,
        Source::Sockopt,
        Source::Inbound,
        Source::Bind,
    ];

    /// The value in [`Event::source`](crate::Event::source).
    #[inline(always)]
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// The source an [`Event::source`](crate::Event::source) value stands for.
    #[inline(always)]
    pub const fn from_value(value: u8) -> Option<Source> {
        match value {
            SOURCE_SKB => Some(Source::Skb),
            SOURCE_CONNECT => Some(Source::Connect),
            SOURCE_SENDMSG => Some(Source::Sendmsg),
            SOURCE_SOCKET => Some(Source::Socket),
            SOURCE_SOCKOPT => Some(Source::Sockopt),
            SOURCE_INBOUND => Some(Source::Inbound),
            SOURCE_BIND => Some(Source::Bind),
            _ => None,
        }
    }
}

/// A socket family the socket creation hook guards, typed: a [`Source::Socket`]
/// event's `protocol` holds [`SocketFamily::value`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketFamily {
    Packet = AF_PACKET as u8,
    Xdp = AF_XDP as u8,
}

impl SocketFamily {
    /// Every guarded family.
    pub const ALL: [SocketFamily; 2] = [SocketFamily::Packet, SocketFamily::Xdp];

    /// The family number, as a socket event's `protocol` carries it.
    #[inline(always)]
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// The guarded family with this number.
    #[inline(always)]
    pub const fn from_value(value: u8) -> Option<SocketFamily> {
        match value as i32 {
            AF_PACKET => Some(SocketFamily::Packet),
            AF_XDP => Some(SocketFamily::Xdp),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for s in Source::ALL {
            assert_eq!(Source::from_value(s.value()), Some(s));
        }
        assert_eq!(Source::from_value(0), None);
        for f in SocketFamily::ALL {
            assert_eq!(SocketFamily::from_value(f.value()), Some(f));
        }
        assert_eq!(SocketFamily::from_value(2), None);
    }
}
