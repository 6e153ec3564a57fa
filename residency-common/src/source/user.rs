//! Names of the hooks and guarded socket families, as the events show them
//! (`hook=connect`, `proto=packet-socket`).

use core::{fmt, str::FromStr};

use super::{SocketFamily, Source};
use crate::UnknownName;

impl Source {
    /// The hook's name in events: `packet` (cgroup/skb), `connect`, `sendmsg`,
    /// `socket` (packet or raw socket creation), `setsockopt`, `inbound` (a TCP SYN
    /// received) or `bind`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Skb => "packet",
            Source::Connect => "connect",
            Source::Sendmsg => "sendmsg",
            Source::Socket => "socket",
            Source::Sockopt => "setsockopt",
            Source::Inbound => "inbound",
            Source::Bind => "bind",
        }
    }

    /// The source named `name` ([`Source::as_str`]).
    pub fn from_name(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Source, UnknownName> {
        Source::from_name(s).ok_or(UnknownName { kind: "hook" })
    }
}

impl SocketFamily {
    /// What a socket event shows as its protocol: `packet-socket` or `xdp-socket`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SocketFamily::Packet => "packet-socket",
            SocketFamily::Xdp => "xdp-socket",
        }
    }

    /// The family named `name` ([`SocketFamily::as_str`]).
    pub fn from_name(name: &str) -> Option<SocketFamily> {
        SocketFamily::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for SocketFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SocketFamily {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<SocketFamily, UnknownName> {
        SocketFamily::from_name(s).ok_or(UnknownName {
            kind: "socket family",
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString as _;

    use super::*;
    use crate::{SOURCE_CONNECT, SOURCE_SENDMSG, SOURCE_SKB, SOURCE_SOCKET};

    #[test]
    fn names_round_trip() {
        for s in Source::ALL {
            assert_eq!(Source::from_name(s.as_str()), Some(s));
            assert_eq!(s.as_str().parse::<Source>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        for f in SocketFamily::ALL {
            assert_eq!(SocketFamily::from_name(f.as_str()), Some(f));
            assert_eq!(f.as_str().parse::<SocketFamily>(), Ok(f));
            assert_eq!(f.to_string(), f.as_str());
        }
        assert!("skb".parse::<Source>().is_err());
    }

    #[test]
    fn names_match_the_agent_events() {
        // `residency-agent/src/events.rs` names `Event::source` and socket families so.
        let name = |v| Source::from_value(v).map(Source::as_str);
        assert_eq!(name(SOURCE_SKB), Some("packet"));
        assert_eq!(name(SOURCE_CONNECT), Some("connect"));
        assert_eq!(name(SOURCE_SENDMSG), Some("sendmsg"));
        assert_eq!(name(SOURCE_SOCKET), Some("socket"));
        let family = |v| SocketFamily::from_value(v).map(SocketFamily::as_str);
        assert_eq!(family(17), Some("packet-socket"));
        assert_eq!(family(44), Some("xdp-socket"));
    }
}
