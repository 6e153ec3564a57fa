//! Special destinations: ranges that embed or stand for other addresses, or reach many
//! hosts at once.
//!
//! Every policy denies them unless it names them (or a prefix inside them) itself: an
//! allow of `::/0` or `2000::/3` must not open 6to4 or Teredo tunnels to any IPv4 host,
//! nor a broad IPv4 allow reach multicast groups. The agent compiles the denies; the
//! kernel only sees their rule numbers ([`RULE_SPECIAL_BASE`] + index), so the table
//! is userspace-only.

use core::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::{RULE_DEVICE_BINDING, RULE_SPECIAL_BASE};

/// One special destination: a prefix and the name events give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialDestination {
    /// The prefix's network address.
    pub addr: IpAddr,
    /// The prefix's length in bits.
    pub prefix_len: u8,
    /// Its name in events and `explain` (`special-deny:<name>:<prefix>`).
    pub name: &'static str,
}

/// `addr/prefix_len`, as a config writes the prefix (`224.0.0.0/4`).
impl fmt::Display for SpecialDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

const fn v4(a: [u8; 4], prefix_len: u8, name: &'static str) -> SpecialDestination {
    SpecialDestination {
        addr: IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
        prefix_len,
        name,
    }
}

const fn v6(s: [u16; 8], prefix_len: u8, name: &'static str) -> SpecialDestination {
    SpecialDestination {
        addr: IpAddr::V6(Ipv6Addr::new(
            s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
        )),
        prefix_len,
        name,
    }
}

/// The special destinations; the index of each is its rule number above
/// [`RULE_SPECIAL_BASE`]. Append only: an event still in the ring names its
/// destination by index.
pub const SPECIAL_DESTINATIONS: &[SpecialDestination] = &[
    v4([224, 0, 0, 0], 4, "multicast"),
    v4([255, 255, 255, 255], 32, "broadcast"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96, "ipv4-compatible"),
    v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, "ipv4-translated"),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "nat64"),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "nat64-local"),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "teredo"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
];

// The rule numbers of the table stay below the named rule numbers (RULE_DEVICE_BINDING
// is the lowest of them).
const _: () =
    assert!((SPECIAL_DESTINATIONS.len() as u32) < RULE_DEVICE_BINDING - RULE_SPECIAL_BASE);

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{string::ToString as _, vec::Vec};

    use super::*;

    #[test]
    fn table_matches_the_agent_table_it_replaces() {
        // `residency-agent/src/policy.rs`'s `SPECIAL_DESTINATIONS`, as `(prefix, name)`.
        let expected = [
            ("224.0.0.0/4", "multicast"),
            ("255.255.255.255/32", "broadcast"),
            ("::/96", "ipv4-compatible"),
            ("::ffff:0:0:0/96", "ipv4-translated"),
            ("64:ff9b::/96", "nat64"),
            ("64:ff9b:1::/48", "nat64-local"),
            ("2002::/16", "6to4"),
            ("2001::/32", "teredo"),
            ("ff00::/8", "multicast"),
        ];
        let table: Vec<_> = SPECIAL_DESTINATIONS
            .iter()
            .map(|s| (s.to_string(), s.name))
            .collect();
        let expected: Vec<_> = expected.iter().map(|(p, n)| (p.to_string(), *n)).collect();
        assert_eq!(table, expected);
    }

    #[test]
    fn prefixes_are_network_addresses() {
        for s in SPECIAL_DESTINATIONS {
            let (bits, width) = match s.addr {
                IpAddr::V4(a) => (u128::from(a.to_bits()), 32),
                IpAddr::V6(a) => (a.to_bits(), 128),
            };
            let host = width - u32::from(s.prefix_len);
            assert!(host == 0 || bits & ((1u128 << host) - 1) == 0, "{s}");
        }
    }
}
