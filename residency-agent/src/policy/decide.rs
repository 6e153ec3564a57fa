//! The offline twin of the kernel's verdict: what `explain` and the tests ask of a
//! compiled [`RuleSet`], computed the way `residency-ebpf/src/verdict.rs` computes it.

use residency_common::{ACTION_ALLOW, ACTION_DENY, ACTION_NONE, RULE_NONE};

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
