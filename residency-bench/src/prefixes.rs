//! Deterministic allowlists of realistic shape, the same for every filter compared.
//!
//! Real allowlists are a cloud region's ranges or a country's GeoIP set: disjoint
//! prefixes spread over the address space, mostly /16–/24 for IPv4 (with some /8–/15
//! and /25–/32) and /29–/64 for IPv6 (mostly /32 and /48). The generator divides the
//! space into one slot per prefix and places one prefix of a sampled length at a random
//! aligned position inside each slot, so the prefixes never overlap: an nftables
//! interval set accepts them as they are, the kernel trie holds exactly N entries, and
//! no filter gets a smaller set by merging. When a slot is too small for the sampled
//! length (1M IPv4 prefixes leave about 4,000 addresses each), a length that fits is
//! drawn instead, as a country's set of that size would have.
//!
//! The benchmark ranges are kept out of every set: 198.18.0.0/15 (RFC 2544) holds the
//! datapath's addresses and 2001:db8::/32 (RFC 3849) the IPv6 test addresses. The last
//! prefix of each set is the one the datapath sends to (198.18.0.0/24, or
//! 2001:db8:1::/48), so an iptables chain checks it after all the others.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The prefix the datapath's receiver lives in, last in every IPv4 set.
pub const V4_TARGET: &str = "198.18.0.0/24";
/// Its IPv6 counterpart, last in every IPv6 set.
pub const V6_TARGET: &str = "2001:db8:1::/48";

/// One allowlist and two destinations to judge against it.
pub struct PrefixSet {
    /// `addr/len`, disjoint; the target prefix last.
    pub cidrs: Vec<String>,
    /// An address inside a generated prefix in the middle of the set.
    pub hit: IpAddr,
    /// An address no prefix covers (in the reserved benchmark range).
    pub miss: IpAddr,
}

/// IPv4 length mix: (shortest, longest, weight in percent).
const V4_MIX: &[(u32, u32, u32)] = &[
    (8, 15, 2),
    (16, 19, 13),
    (20, 23, 30),
    (24, 24, 45),
    (25, 32, 10),
];
/// IPv6 length mix.
const V6_MIX: &[(u32, u32, u32)] = &[
    (29, 29, 3),
    (32, 32, 35),
    (33, 47, 10),
    (48, 48, 40),
    (49, 63, 5),
    (64, 64, 7),
];

/// `n` IPv4 prefixes (n-1 generated, then [`V4_TARGET`]).
pub fn ipv4(n: usize) -> PrefixSet {
    let space = Space {
        bits: 32,
        start: 0,
        size: 1 << 32,
        reserved: (u128::from(u32::from(Ipv4Addr::new(198, 18, 0, 0))), 1 << 17),
        mix: V4_MIX,
        longest_fallback: 24,
    };
    let blocks = space.generate(n.saturating_sub(1), 0x5eed_0004 ^ n as u64);
    let mut cidrs: Vec<String> = blocks
        .iter()
        .map(|(a, l)| format!("{}/{l}", Ipv4Addr::from(*a as u32)))
        .collect();
    cidrs.push(V4_TARGET.to_owned());
    let (a, l) = blocks.get(blocks.len() / 2).copied().unwrap_or((0, 32));
    let hit = if l < 32 { a + 1 } else { a };
    PrefixSet {
        cidrs,
        hit: if blocks.is_empty() {
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))
        } else {
            IpAddr::V4(Ipv4Addr::from(hit as u32))
        },
        miss: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)),
    }
}

/// `n` IPv6 prefixes (n-1 generated in 2000::/3, then [`V6_TARGET`]). Positions are
/// counted in /64s (the longest length generated).
pub fn ipv6(n: usize) -> PrefixSet {
    let top = |a: Ipv6Addr| (u128::from(a) >> 64) as u64;
    let space = Space {
        bits: 64,
        start: u128::from(top("2000::".parse().expect("literal"))),
        size: 1 << 61,
        reserved: (
            u128::from(top("2001:db8::".parse().expect("literal"))),
            1 << 32,
        ),
        mix: V6_MIX,
        longest_fallback: 48,
    };
    let blocks = space.generate(n.saturating_sub(1), 0x5eed_0006 ^ n as u64);
    let addr = |unit: u128| Ipv6Addr::from(unit << 64);
    let mut cidrs: Vec<String> = blocks
        .iter()
        .map(|(a, l)| format!("{}/{l}", addr(*a)))
        .collect();
    cidrs.push(V6_TARGET.to_owned());
    let hit = match blocks.get(blocks.len() / 2) {
        Some((a, _)) => IpAddr::V6(Ipv6Addr::from((a << 64) | 1)),
        None => IpAddr::V6("2001:db8:1::2".parse().expect("literal")),
    };
    PrefixSet {
        cidrs,
        hit,
        miss: IpAddr::V6("2001:db8:ffff::2".parse().expect("literal")),
    }
}

/// An address space to fill: `[start, start + size)` in units of one address (IPv4)
/// or one /64 (IPv6), `bits` wide.
struct Space {
    bits: u32,
    start: u128,
    size: u128,
    /// `(start, size)` kept free of prefixes.
    reserved: (u128, u128),
    mix: &'static [(u32, u32, u32)],
    /// Longest length drawn when the sampled one does not fit a slot.
    longest_fallback: u32,
}

impl Space {
    /// `count` disjoint `(first unit, prefix length)` blocks, in address order.
    fn generate(&self, count: usize, seed: u64) -> Vec<(u128, u32)> {
        if count == 0 {
            return Vec::new();
        }
        let mut rng = SplitMix(seed);
        // A few more slots than prefixes: slots touching the reserved range are skipped.
        let per_slot = self.size / count as u128;
        let skipped = self.reserved.1 / per_slot.max(1) + 2;
        let slots = count as u128 + skipped;
        let slot = self.size / slots;
        let mut out = Vec::with_capacity(count);
        for i in 0..slots {
            if out.len() == count {
                break;
            }
            let (lo, hi) = (self.start + i * slot, self.start + (i + 1) * slot);
            let (r0, r1) = (self.reserved.0, self.reserved.0 + self.reserved.1);
            if lo < r1 && r0 < hi {
                continue;
            }
            // Any interval of 2B units holds an aligned block of B units.
            let shortest = (0..=self.bits)
                .find(|l| 2 * (1u128 << (self.bits - l)) <= slot)
                .expect("slots hold at least two units");
            let mut len = self.sample_len(&mut rng);
            if len < shortest {
                len = if shortest <= self.longest_fallback {
                    shortest + rng.below(u64::from(self.longest_fallback - shortest + 1)) as u32
                } else {
                    shortest
                };
            }
            let block = 1u128 << (self.bits - len);
            let first = lo.div_ceil(block) * block;
            let last = hi / block * block - block;
            let choices = (last - first) / block + 1;
            let at =
                first + u128::from(rng.below(choices.min(u128::from(u64::MAX)) as u64)) * block;
            out.push((at, len));
        }
        assert_eq!(out.len(), count, "the space holds {count} prefixes");
        out
    }

    fn sample_len(&self, rng: &mut SplitMix) -> u32 {
        let total: u32 = self.mix.iter().map(|m| m.2).sum();
        let mut pick = rng.below(u64::from(total)) as u32;
        for (lo, hi, w) in self.mix {
            if pick < *w {
                return lo + rng.below(u64::from(hi - lo + 1)) as u32;
            }
            pick -= w;
        }
        unreachable!("weights sum to the total")
    }
}

/// SplitMix64: a small, fixed, seeded generator (the sets must be the same every run).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is negligible for these sizes).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(c: &str) -> (u128, u32, u32) {
        let (a, l) = c.split_once('/').unwrap();
        let l: u32 = l.parse().unwrap();
        match a.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), l, 32),
            IpAddr::V6(a) => (u128::from(a), l, 128),
        }
    }

    fn covers(c: &str, ip: IpAddr) -> bool {
        let (a, l, bits) = parse(c);
        let ip = match ip {
            IpAddr::V4(x) => u128::from(u32::from(x)),
            IpAddr::V6(x) => u128::from(x),
        };
        l == 0 || (a ^ ip) >> (bits - l) == 0
    }

    fn check(set: &PrefixSet, n: usize) {
        assert_eq!(set.cidrs.len(), n);
        let mut ranges: Vec<(u128, u128)> = set
            .cidrs
            .iter()
            .map(|c| {
                let (a, l, bits) = parse(c);
                assert_eq!(a & ((1u128 << (bits - l)) - 1), 0, "{c} has host bits");
                (a, a + (1u128 << (bits - l)))
            })
            .collect();
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap");
        }
        assert!(set.cidrs.iter().any(|c| covers(c, set.hit)));
        assert!(!set.cidrs.iter().any(|c| covers(c, set.miss)));
    }

    #[test]
    fn sets_are_disjoint_deterministic_and_cover_the_hit_only() {
        for n in [1, 2, 10, 1000, 100_000] {
            check(&ipv4(n), n);
            check(&ipv6(n), n);
        }
        assert_eq!(ipv4(1000).cidrs, ipv4(1000).cidrs);
        let v4 = ipv4(100_000);
        let share = |lo: u32, hi: u32| {
            v4.cidrs
                .iter()
                .filter(|c| (lo..=hi).contains(&parse(c).1))
                .count()
                * 100
                / v4.cidrs.len()
        };
        assert!(share(16, 24) >= 70, "mostly /16-/24");
        assert!(share(25, 32) >= 5);
    }
}
