//! One policy's entries sorted by prefix, the order a version is compiled and written
//! in: a run of equal prefixes is one trie entry, with the rules of that prefix.

use ipnetwork::IpNetwork;
use residency_common::{ACTION_ALLOW, ACTION_DENY};

use super::compile::{RULE_SPECIAL_BASE, SPECIAL_DESTINATIONS};
use crate::config::{Action, PolicyConfig, PortSpec};

/// The rules of one prefix of one policy: its own entries.
#[derive(Default)]
pub(super) struct Group {
    pub bare: Option<(u32, u32)>,
    /// `(spec, action, rule)`, most specific port range first, deny before allow.
    pub ports: Vec<(PortSpec, u32, u32)>,
}

fn action_value(a: Action) -> u32 {
    match a {
        Action::Allow => ACTION_ALLOW,
        Action::Deny => ACTION_DENY,
    }
}

/// One policy's entries and the special destinations it does not name itself, sorted
/// by prefix: a run of equal prefixes is one trie entry. Sorted positions (8 bytes
/// each) rather than a map of groups, since a policy can hold a million entries and
/// this lives beside them while a version is written.
pub(super) struct Prefixes<'p> {
    entries: &'p [crate::config::Entry],
    /// Positions, sorted by prefix: below `entries.len()` an entry, above it a special
    /// destination (`SPECIAL_DESTINATIONS[i - entries.len()]`). Each is held in the
    /// bits of `mask`; an IPv4 one carries its prefix above them when `packed`
    /// ([`sorted`]), so that runs are found without reading the entries.
    order: Vec<u64>,
    mask: u64,
    packed: bool,
    /// How many of `order`'s positions are IPv4 (they come first).
    v4_len: usize,
    specials: Vec<IpNetwork>,
}

/// One prefix's positions in a policy ([`Prefixes::runs`]).
#[derive(Clone, Copy)]
pub(super) struct Run<'a> {
    keys: &'a [u64],
    mask: u64,
}

impl Run<'_> {
    pub(super) fn positions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().map(|k| (k & self.mask) as u32)
    }

    pub(super) fn first(&self) -> u32 {
        (self.keys[0] & self.mask) as u32
    }
}

impl<'p> Prefixes<'p> {
    /// Sorts `policy`'s entries by prefix, with a deny of each special destination
    /// whose exact prefix the policy does not name (counted in `implicit`).
    pub(super) fn of(policy: &'p PolicyConfig, implicit: &mut usize) -> Prefixes<'p> {
        let entries = policy.entries.as_slice();
        let specials: Vec<IpNetwork> = SPECIAL_DESTINATIONS
            .iter()
            .map(|s| IpNetwork::new(s.addr, s.prefix_len).expect("valid special prefix"))
            .collect();
        let n = entries.len() as u32;
        let network = |i: u32| match entries.get(i as usize) {
            Some(e) => e.network,
            None => specials[(i - n) as usize],
        };
        let Sorted {
            order,
            mask,
            packed,
            v4_len,
        } = sorted(n + specials.len() as u32, network);
        let p = Prefixes {
            entries,
            order,
            mask,
            packed,
            v4_len,
            specials,
        };
        *implicit += p.runs().filter(|r| r.first() >= n).count();
        p
    }

    pub(super) fn network(&self, i: u32) -> IpNetwork {
        match self.entries.get(i as usize) {
            Some(e) => e.network,
            None => self.specials[i as usize - self.entries.len()],
        }
    }

    /// Whether a prefix's positions hold a protocol/port entry.
    pub(super) fn has_ports(&self, run: Run<'_>) -> bool {
        run.positions().any(|i| {
            self.entries
                .get(i as usize)
                .is_some_and(|e| e.ports.is_some())
        })
    }

    /// The positions of each prefix, prefix by prefix; entries before the special
    /// destination of the same prefix.
    pub(super) fn runs(&self) -> impl Iterator<Item = Run<'_>> {
        self.runs_in(false).chain(self.runs_in(true))
    }

    /// [`Self::runs`] of one family's prefixes (`v6`: IPv6), without reading the
    /// other's: writing a family's trie or tables passes over its own entries only.
    pub(super) fn runs_in(&self, v6: bool) -> impl Iterator<Item = Run<'_>> {
        let (v4, rest) = self.order.split_at(self.v4_len);
        let part = if v6 { rest } else { v4 };
        let packed = self.packed && !v6;
        let mask = self.mask;
        part.chunk_by(move |a, b| {
            if packed {
                a & !mask == b & !mask
            } else {
                self.network((a & mask) as u32) == self.network((b & mask) as u32)
            }
        })
        .map(move |keys| Run { keys, mask })
    }

    /// The positions of `net`, if the policy has any.
    pub(super) fn run_of(&self, net: &IpNetwork) -> Option<Run<'_>> {
        let network = |k: &u64| self.network((k & self.mask) as u32);
        let start = self.order.partition_point(|k| network(k) < *net);
        let len = self.order[start..]
            .iter()
            .take_while(|k| network(k) == *net)
            .count();
        (len > 0).then(|| Run {
            keys: &self.order[start..start + len],
            mask: self.mask,
        })
    }

    /// The rules of one prefix's positions: its bare `(action, rule)`, then its port
    /// entries, most specific range first, deny before allow.
    pub(super) fn group(&self, run: Run<'_>) -> Group {
        let mut g = Group::default();
        for i in run.positions() {
            match self.entries.get(i as usize) {
                Some(e) => {
                    let action = action_value(e.action);
                    match e.ports {
                        None => g.bare = Some((action, i)),
                        Some(spec) => g.ports.push((spec, action, i)),
                    }
                }
                None => {
                    let k = i - self.entries.len() as u32;
                    g.bare.get_or_insert((ACTION_DENY, RULE_SPECIAL_BASE + k));
                }
            }
        }
        g.ports.sort_by_key(|(spec, action, rule)| {
            (u32::from(spec.hi - spec.lo), *action != ACTION_DENY, *rule)
        });
        g
    }
}

/// Positions sorted by `(network, position)` ([`sorted`]).
struct Sorted {
    order: Vec<u64>,
    /// The bits of each key that hold its position.
    mask: u64,
    /// Whether IPv4 keys carry their prefix above the position.
    packed: bool,
    /// How many keys are IPv4 (they come first).
    v4_len: usize,
}

/// Positions `0..count` sorted by `(network(i), i)`.
///
/// Comparing through `network` reads a 32-byte entry at a random place for every
/// comparison: at a million entries that sort was a third of compiling them, and
/// finding the runs of equal prefixes in the sorted positions again cost most of each
/// pass over them. So each IPv4 position is kept as one number that orders the same
/// way — address, prefix length, position, from the high bits down — and only IPv6
/// positions (which `IpNetwork` orders after every IPv4 one) go through `network`.
fn sorted(count: u32, network: impl Fn(u32) -> IpNetwork) -> Sorted {
    /// Bits for a position below the address and the prefix length (0–32, 6 bits).
    const POSITION_BITS: u32 = 26;
    sorted_with(count, network, POSITION_BITS)
}

/// [`sorted`], packing IPv4 positions below `position_bits` when they fit.
fn sorted_with(count: u32, network: impl Fn(u32) -> IpNetwork, position_bits: u32) -> Sorted {
    if u64::from(count) >= 1 << position_bits {
        let mut order: Vec<u64> = (0..u64::from(count)).collect();
        order.sort_unstable_by_key(|i| (network(*i as u32), *i));
        let v4_len = order.partition_point(|i| network(*i as u32).is_ipv4());
        return Sorted {
            order,
            mask: u64::from(u32::MAX),
            packed: false,
            v4_len,
        };
    }
    let mut order: Vec<u64> = Vec::with_capacity(count as usize);
    let mut v6: Vec<u64> = Vec::new();
    for i in 0..count {
        match network(i) {
            IpNetwork::V4(net) => order.push(
                u64::from(net.ip().to_bits()) << 32
                    | u64::from(net.prefix()) << position_bits
                    | u64::from(i),
            ),
            IpNetwork::V6(_) => v6.push(u64::from(i)),
        }
    }
    order.sort_unstable();
    v6.sort_unstable_by_key(|i| (network(*i as u32), *i));
    let v4_len = order.len();
    order.extend(v6);
    Sorted {
        order,
        mask: (1 << position_bits) - 1,
        packed: true,
        v4_len,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    /// Networks with many equal prefixes (duplicates and port entries share one), of
    /// both families.
    fn networks() -> Vec<IpNetwork> {
        let mut next = crate::testing::xorshift();
        (0..5000)
            .map(|_| {
                let r = next();
                let bits = (r >> 8) as u8;
                if r.is_multiple_of(4) {
                    let addr = Ipv6Addr::from((u128::from(r >> 48)) << 112);
                    IpNetwork::new(IpAddr::V6(addr), bits % 129).unwrap()
                } else {
                    // A small address space, so that prefixes repeat.
                    let addr = Ipv4Addr::from(((r >> 32) as u32 & 0xff0f_0000) | 0xff);
                    IpNetwork::new(IpAddr::V4(addr), bits % 33).unwrap()
                }
            })
            .collect()
    }

    /// Packed or not (a policy of 2^26 positions or more), the positions come in the
    /// order of `(network, position)` — IPv4 before IPv6, by address, then prefix
    /// length, then position — and the runs are the groups of equal networks.
    #[test]
    fn positions_come_in_the_order_of_networks_and_positions() {
        let nets = networks();
        let network = |i: u32| nets[i as usize];
        let mut expected: Vec<u32> = (0..nets.len() as u32).collect();
        expected.sort_unstable_by_key(|i| (network(*i), *i));
        let groups: Vec<Vec<u32>> = expected
            .chunk_by(|a, b| network(*a) == network(*b))
            .map(<[u32]>::to_vec)
            .collect();
        for position_bits in [26, 8] {
            let s = sorted_with(nets.len() as u32, network, position_bits);
            assert_eq!(s.packed, position_bits == 26);
            let positions: Vec<u32> = s.order.iter().map(|k| (k & s.mask) as u32).collect();
            assert_eq!(positions, expected, "{position_bits} bits");
            assert_eq!(s.v4_len, nets.iter().filter(|n| n.is_ipv4()).count());
            let p = Prefixes {
                entries: &[],
                order: s.order,
                mask: s.mask,
                packed: s.packed,
                v4_len: s.v4_len,
                specials: nets.clone(),
            };
            let runs: Vec<Vec<u32>> = p.runs().map(|r| r.positions().collect()).collect();
            assert_eq!(runs, groups, "{position_bits} bits");
        }
        assert!(sorted(0, network).order.is_empty());
    }
}
