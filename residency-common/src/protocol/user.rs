//! Protocol names, as the config and the events write them (`tcp`, `icmpv6`).

use core::{fmt, str::FromStr};

use super::Protocol;
use crate::UnknownName;

impl Protocol {
    /// The name a config entry uses (`tcp/443`) and events show.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
        }
    }

    /// The protocol named `name` ([`Protocol::as_str`]; lowercase, as configs write it).
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Protocol, UnknownName> {
        Protocol::from_name(s).ok_or(UnknownName { kind: "protocol" })
    }
}

/// Any IP protocol number as events show it: its name when a rule may name it, else
/// the number (`tcp`, `47`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolNumber(pub u8);

impl fmt::Display for ProtocolNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Protocol::from_number(self.0) {
            Some(p) => f.write_str(p.as_str()),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString as _;

    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_name(p.as_str()), Some(p));
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
            assert_eq!(ProtocolNumber(p.number()).to_string(), p.as_str());
        }
        assert_eq!(Protocol::from_name("TCP"), None);
        assert_eq!(
            "gre".parse::<Protocol>().map_err(|e| e.to_string()),
            Err("not a known protocol name".to_string())
        );
    }

    #[test]
    fn names_and_numbers_match_the_agent_tables() {
        // `residency-agent/src/config.rs`'s `PROTOCOLS`, and `events.rs`'s names.
        let expected = [
            ("tcp", 6, true),
            ("udp", 17, true),
            ("sctp", 132, true),
            ("icmp", 1, false),
            ("icmpv6", 58, false),
        ];
        assert_eq!(
            Protocol::ALL.map(|p| (p.as_str(), p.number(), p.has_ports())),
            expected
        );
        assert_eq!(ProtocolNumber(47).to_string(), "47");
        assert_eq!(ProtocolNumber(0).to_string(), "0");
    }
}
