//! IP protocols: the numbers the kernel reads from packets and the agent writes into
//! port rules, and which of them carry ports.

#[cfg(feature = "user")]
mod user;

#[cfg(feature = "user")]
pub use user::ProtocolNumber;

/// IANA protocol numbers of the protocols a rule may name.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// A protocol a rule may name ([`PortRule::protocol`](crate::PortRule::protocol) holds
/// its number).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp = IPPROTO_TCP,
    Udp = IPPROTO_UDP,
    Sctp = IPPROTO_SCTP,
    Icmp = IPPROTO_ICMP,
    Icmpv6 = IPPROTO_ICMPV6,
}

impl Protocol {
    /// Every protocol, in the order the config's error messages list them.
    pub const ALL: [Protocol; 5] = [
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Sctp,
        Protocol::Icmp,
        Protocol::Icmpv6,
    ];

    /// The IP protocol number.
    #[inline(always)]
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The protocol with this number, if a rule may name it.
    #[inline(always)]
    pub const fn from_number(number: u8) -> Option<Protocol> {
        match number {
            IPPROTO_TCP => Some(Protocol::Tcp),
            IPPROTO_UDP => Some(Protocol::Udp),
            IPPROTO_SCTP => Some(Protocol::Sctp),
            IPPROTO_ICMP => Some(Protocol::Icmp),
            IPPROTO_ICMPV6 => Some(Protocol::Icmpv6),
            _ => None,
        }
    }

    /// Whether its header starts with source and destination ports (TCP, UDP, SCTP):
    /// only then may a rule name ports, and only then does the kernel read them.
    #[inline(always)]
    pub const fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
    }

    /// ICMP or ICMPv6: the kernel reads type and code instead of ports.
    #[inline(always)]
    pub const fn is_icmp(self) -> bool {
        matches!(self, Protocol::Icmp | Protocol::Icmpv6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_number(p.number()), Some(p));
        }
        assert_eq!(Protocol::from_number(47), None);
    }

    #[test]
    fn ports_and_icmp() {
        // The agent's `PROTOCOLS` table: (number, has ports).
        let expected = [(6, true), (17, true), (132, true), (1, false), (58, false)];
        let table = Protocol::ALL.map(|p| (p.number(), p.has_ports()));
        assert_eq!(table, expected);
        for p in Protocol::ALL {
            assert_eq!(p.is_icmp(), !p.has_ports());
        }
    }
}
