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
/// by prefix: a run of equal prefixes is one trie entry. Sorted positions (4 bytes
/// each) rather than a map of groups, since a policy can hold a million entries and
/// this lives beside them while a version is written.
pub(super) struct Prefixes<'p> {
    entries: &'p [crate::config::Entry],
    /// Positions: below `entries.len()` an entry, above it a special destination
    /// (`SPECIAL_DESTINATIONS[i - entries.len()]`).
    order: Vec<u32>,
    /// How many of `order`'s positions are IPv4 (they come first).
    v4_len: usize,
    specials: Vec<IpNetwork>,
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
        let order = sorted(n + specials.len() as u32, network);
        let v4_len = order.partition_point(|i| network(*i).is_ipv4());
        let p = Prefixes {
            entries,
            order,
            v4_len,
            specials,
        };
        *implicit += p.runs().filter(|r| r[0] >= n).count();
        p
    }

    pub(super) fn network(&self, i: u32) -> IpNetwork {
        match self.entries.get(i as usize) {
            Some(e) => e.network,
            None => self.specials[i as usize - self.entries.len()],
        }
    }

    /// Whether a prefix's positions hold a protocol/port entry.
    pub(super) fn has_ports(&self, run: &[u32]) -> bool {
        run.iter().any(|i| {
            self.entries
                .get(*i as usize)
                .is_some_and(|e| e.ports.is_some())
        })
    }

    /// The positions of each prefix, prefix by prefix; entries before the special
    /// destination of the same prefix.
    pub(super) fn runs(&self) -> impl Iterator<Item = &[u32]> {
        self.runs_in(false).chain(self.runs_in(true))
    }

    /// [`Self::runs`] of one family's prefixes (`v6`: IPv6), without reading the
    /// other's: writing a family's trie or tables passes over its own entries only.
    pub(super) fn runs_in(&self, v6: bool) -> impl Iterator<Item = &[u32]> {
        let (v4, rest) = self.order.split_at(self.v4_len);
        let part = if v6 { rest } else { v4 };
        part.chunk_by(|a, b| self.network(*a) == self.network(*b))
    }

    /// The positions of `net`, if the policy has any.
    pub(super) fn run_of(&self, net: &IpNetwork) -> Option<&[u32]> {
        let start = self.order.partition_point(|i| self.network(*i) < *net);
        let len = self.order[start..]
            .iter()
            .take_while(|i| self.network(**i) == *net)
            .count();
        (len > 0).then(|| &self.order[start..start + len])
    }

    /// The rules of one prefix's positions: its bare `(action, rule)`, then its port
    /// entries, most specific range first, deny before allow.
    pub(super) fn group(&self, run: &[u32]) -> Group {
        let mut g = Group::default();
        for &i in run {
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

/// Positions `0..count` sorted by `(network(i), i)`.
///
/// Comparing through `network` reads a 32-byte entry at a random place for every
/// comparison: at a million entries that sort was a third of compiling them. So each
/// IPv4 position is sorted as one number that orders the same way — address, prefix
/// length, position, from the high bits down — and only IPv6 positions (which
/// `IpNetwork` orders after every IPv4 one) go through `network`.
fn sorted(count: u32, network: impl Fn(u32) -> IpNetwork) -> Vec<u32> {
    /// Bits for a position below the address and the prefix length (0–32, 6 bits).
    const POSITION_BITS: u32 = 26;
    if u64::from(count) >= 1 << POSITION_BITS {
        let mut order: Vec<u32> = (0..count).collect();
        order.sort_unstable_by_key(|i| (network(*i), *i));
        return order;
    }
    let mut v4: Vec<u64> = Vec::new();
    let mut v6: Vec<u32> = Vec::new();
    for i in 0..count {
        match network(i) {
            IpNetwork::V4(net) => v4.push(
                u64::from(net.ip().to_bits()) << 32
                    | u64::from(net.prefix()) << POSITION_BITS
                    | u64::from(i),
            ),
            IpNetwork::V6(_) => v6.push(i),
        }
    }
    v4.sort_unstable();
    v6.sort_unstable_by_key(|i| (network(*i), *i));
    let mut order = Vec::with_capacity(count as usize);
    order.extend(v4.iter().map(|k| (k & ((1 << POSITION_BITS) - 1)) as u32));
    order.extend(v6);
    order
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    /// The packed sort orders positions exactly as comparing `(network, position)`
    /// does: IPv4 before IPv6, by address, then prefix length, then position, with
    /// many equal prefixes (duplicates and port entries share one).
    #[test]
    fn packed_order_is_the_order_of_networks_and_positions() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let nets: Vec<IpNetwork> = (0..5000)
            .map(|_| {
                let r = next();
                let bits = (r >> 8) as u8;
                if r % 4 == 0 {
                    let addr = Ipv6Addr::from((u128::from(r >> 48)) << 112);
                    IpNetwork::new(IpAddr::V6(addr), bits % 129).unwrap()
                } else {
                    // A small address space, so that prefixes repeat.
                    let addr = Ipv4Addr::from(((r >> 32) as u32 & 0xff0f_0000) | 0xff);
                    IpNetwork::new(IpAddr::V4(addr), bits % 33).unwrap()
                }
            })
            .collect();
        let network = |i: u32| nets[i as usize];
        let mut expected: Vec<u32> = (0..nets.len() as u32).collect();
        expected.sort_unstable_by_key(|i| (network(*i), *i));
        assert_eq!(sorted(nets.len() as u32, network), expected);
        assert!(sorted(0, network).is_empty());
    }
}
