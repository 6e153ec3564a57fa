//! Random policies and destinations for the property tests: the kernel's verdict on
//! each destination must be what the agent's offline `decide` computes from the same
//! compiled policy. Seeded, so a failure reproduces; the seed is in every message.
//!
//! Prefixes are drawn from two small spaces (10.0.0.0/8 and 2001:db8::/32) so that
//! they nest and overlap, with protocol/port entries on some, wide allows that the
//! special destinations' implicit denies must cut into, and destinations drawn inside
//! the prefixes, beside them, in the special ranges and as IPv4-mapped IPv6.

use std::{
    collections::HashSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// xorshift64*: enough randomness for test data, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn word(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.word() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A random policy's entries, as `allow`/`deny` list items.
pub struct RandomPolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// The prefixes used, to draw destinations inside them.
    prefixes: Vec<(IpAddr, u8)>,
}

/// Ports the entries and the destinations share, so that port rules are hit.
const PORTS: [u16; 6] = [53, 443, 5000, 5001, 5005, 8080];

impl RandomPolicy {
    /// About `n` entries.
    pub fn new(rng: &mut Rng, n: usize) -> RandomPolicy {
        let mut p = RandomPolicy {
            allow: Vec::new(),
            deny: Vec::new(),
            prefixes: Vec::new(),
        };
        let mut taken = HashSet::new();
        for _ in 0..n {
            let (addr, len) = if rng.chance(55) {
                let len = 8 + rng.below(25) as u8;
                let bits = (10u32 << 24) | (rng.word() as u32 & 0x00ff_ffff);
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len))
                };
                (IpAddr::V4(Ipv4Addr::from(bits & mask)), len)
            } else {
                let len = 32 + rng.below(97) as u8;
                let bits = (0x2001_0db8u128 << 96)
                    | (u128::from(rng.word()) << 32 | u128::from(rng.word() as u32))
                        & ((1u128 << 96) - 1);
                let mask = if len == 128 {
                    u128::MAX
                } else {
                    !(u128::MAX >> len)
                };
                (IpAddr::V6(Ipv6Addr::from(bits & mask)), len)
            };
            let ports = match rng.below(10) {
                0..=5 => String::new(),
                6 | 7 => format!(" udp/{}", PORTS[rng.below(6) as usize]),
                8 => format!(" udp/{}-{}", 5000, 5000 + rng.below(10)),
                _ => format!(" tcp/{}", PORTS[rng.below(6) as usize]),
            };
            let item = format!("{addr}/{len}{ports}");
            if !taken.insert(item.clone()) {
                continue;
            }
            p.prefixes.push((addr, len));
            if rng.chance(70) {
                p.allow.push(item);
            } else {
                p.deny.push(item);
            }
        }
        // Wide allows, which the special destinations' implicit denies cut into.
        for wide in ["0.0.0.0/0", "::/0"] {
            if rng.chance(30) {
                p.allow.push(wide.to_owned());
            }
        }
        p
    }

    /// The `[[policy]]` table, bound to `cgroup`.
    pub fn toml(&self, name: &str, cgroup: &str) -> String {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|i| format!("\"{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "[[policy]]\nname = \"{name}\"\ncgroups = [\"{cgroup}\"]\nallow = [{}]\ndeny = [{}]\n",
            list(&self.allow),
            list(&self.deny)
        );
        s
    }

    /// A destination and port: inside a prefix of the policy, beside them, in a
    /// special range, or IPv4-mapped IPv6 when `mapped` allows it.
    pub fn target(&self, rng: &mut Rng, mapped: bool) -> (IpAddr, u16) {
        let port = if rng.chance(80) {
            PORTS[rng.below(6) as usize]
        } else {
            1 + rng.below(65535) as u16
        };
        let addr = match rng.below(10) {
            0..=5 if !self.prefixes.is_empty() => {
                let (base, len) = self.prefixes[rng.below(self.prefixes.len() as u64) as usize];
                inside(rng, base, len)
            }
            6 => IpAddr::V4(Ipv4Addr::from(
                (10u32 << 24) | (rng.word() as u32 & 0x00ff_ffff),
            )),
            7 => IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8u128 << 96) | u128::from(rng.word()),
            )),
            8 => {
                // Special ranges: 6to4, Teredo, NAT64, IPv4-compatible, multicast.
                let v6: [u128; 4] = [0x2002 << 112, 0x2001 << 112, 0x0064_ff9b << 96, 0];
                let pick = rng.below(5) as usize;
                if pick == 4 {
                    IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1 + rng.below(200) as u8))
                } else {
                    IpAddr::V6(Ipv6Addr::from(
                        v6[pick] | u128::from(rng.word() as u32) | 0x0a00_0000,
                    ))
                }
            }
            _ if mapped => {
                let v4 = (10u32 << 24) | (rng.word() as u32 & 0x00ff_ffff);
                IpAddr::V6(Ipv4Addr::from(v4).to_ipv6_mapped())
            }
            _ => IpAddr::V4(Ipv4Addr::from(
                (10u32 << 24) | (rng.word() as u32 & 0x00ff_ffff),
            )),
        };
        (addr, port)
    }
}

/// A random address inside `base/len`.
fn inside(rng: &mut Rng, base: IpAddr, len: u8) -> IpAddr {
    match base {
        IpAddr::V4(a) => {
            let host = if len == 32 {
                0
            } else {
                rng.word() as u32 & (u32::MAX >> len)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
        }
        IpAddr::V6(a) => {
            let r = u128::from(rng.word()) << 64 | u128::from(rng.word());
            let host = if len == 128 {
                0
            } else {
                r & (u128::MAX >> len)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
        }
    }
}
