//! The offline twin of the kernel's verdict: what `explain` and the tests ask of a
//! compiled [`RuleSet`], computed the way `residency-ebpf/src/verdict.rs` computes it.

use std::{collections::HashMap, net::IpAddr};

use residency_common::{ACTION_ALLOW, ACTION_DENY, ACTION_NONE, RULE_NONE, RuleValue};

use super::compile::{RuleSet, ports_base};

/// What the kernel is asked to judge ([`decide`]).
pub struct Target {
    pub addr: std::net::IpAddr,
    pub protocol: Option<u8>,
    pub port: Option<u16>,
}

/// The kernel's verdict, computed from a compiled [`RuleSet`] the way the kernel
/// program computes it (`residency-ebpf/src/verdict.rs`): the longest prefix of the
/// destination in the policy's scope, then its port rules, then its default.
/// Returns `(allowed, rule)`.
pub fn decide(rules: &RuleSet, slot: u32, id: u32, t: &Target) -> (bool, u32) {
    fn prefix_match(a: &[u8], b: &[u8], bits: u32) -> bool {
        let full = (bits / 8) as usize;
        if a[..full] != b[..full] {
            return false;
        }
        let rest = bits % 8;
        rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
    }
    let scope = residency_common::scope(slot, id);
    let best = match t.addr {
        std::net::IpAddr::V4(a) => rules
            .v4
            .iter()
            .filter(|(k, _)| k.data().policy == scope)
            .filter(|(k, _)| prefix_match(&k.data().addr, &a.octets(), k.prefix_len() - 32))
            .max_by_key(|(k, _)| k.prefix_len())
            .map(|(_, v)| *v),
        std::net::IpAddr::V6(a) => rules
            .v6
            .iter()
            .filter(|(k, _)| k.data().policy == scope)
            .filter(|(k, _)| prefix_match(&k.data().addr, &a.octets(), k.prefix_len() - 32))
            .max_by_key(|(k, _)| k.prefix_len())
            .map(|(_, v)| *v),
    };
    let Some(v) = best else {
        return (false, RULE_NONE);
    };
    by_ports(rules, slot, &v, t)
}

/// The verdict of matching entry `v`: its port rules, then its default.
fn by_ports(rules: &RuleSet, slot: u32, v: &RuleValue, t: &Target) -> (bool, u32) {
    let v = *v;
    let start = (v.ports_start - if v.ports_len > 0 { ports_base(slot) } else { 0 }) as usize;
    for r in &rules.ports[start..start + v.ports_len as usize] {
        if Some(r.protocol) != t.protocol {
            continue;
        }
        let every = r.port_lo == 0 && r.port_hi == u16::MAX;
        if !every {
            match t.port {
                None if u32::from(r.action) == ACTION_DENY => return (false, r.rule),
                None => continue,
                Some(p) if p < r.port_lo || p > r.port_hi => continue,
                Some(_) => {}
            }
        }
        return (u32::from(r.action) == ACTION_ALLOW, r.rule);
    }
    if v.action == ACTION_NONE {
        (false, RULE_NONE)
    } else {
        (v.action == ACTION_ALLOW, v.rule)
    }
}

/// [`decide`] for many targets: the entries indexed by policy, prefix length and
/// masked address, so that a target costs one lookup per prefix length (33 or 129)
/// instead of a walk over every entry. What `verify` computes its probes' verdicts by.
pub struct Index<'a> {
    rules: &'a RuleSet,
    slot: u32,
    entries: HashMap<(u32, u8, IpAddr), RuleValue>,
}

impl<'a> Index<'a> {
    pub fn new(rules: &'a RuleSet, slot: u32) -> Index<'a> {
        let id = |scope: [u8; 4]| u32::from_be_bytes([0, scope[1], scope[2], scope[3]]);
        let mut entries = HashMap::new();
        for (k, v) in &rules.v4 {
            let d = k.data();
            let addr = IpAddr::from(d.addr);
            entries.insert((id(d.policy), (k.prefix_len() - 32) as u8, addr), *v);
        }
        for (k, v) in &rules.v6 {
            let d = k.data();
            let addr = IpAddr::from(d.addr);
            entries.insert((id(d.policy), (k.prefix_len() - 32) as u8, addr), *v);
        }
        Index {
            rules,
            slot,
            entries,
        }
    }

    /// `decide(rules, slot, id, t)`, by the index.
    pub fn decide(&self, id: u32, t: &Target) -> (bool, u32) {
        let max: u8 = if t.addr.is_ipv4() { 32 } else { 128 };
        for len in (0..=max).rev() {
            if let Some(v) = self.entries.get(&(id, len, mask(t.addr, len))) {
                return by_ports(self.rules, self.slot, v, t);
            }
        }
        (false, RULE_NONE)
    }
}

/// `addr` with every bit past the first `len` cleared.
pub fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}
