//! Every rule trie entry of the version in force against what the config compiles to:
//! prefix, action, the entry that decides, and its protocol/port rules read back from
//! the port table. Added, deleted and changed entries are each named.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{Array, LpmTrie, Map, MapData};
use residency_common::{PortRule, RuleKeyV4, RuleKeyV6, RuleValue, maps};

use super::Report;
use crate::{
    config::Config,
    policy::{self, RuleSet, describe_rule},
};

/// One rule trie entry, as a user reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub action: u32,
    pub rule: u32,
    pub ports: Vec<PortRule>,
}

/// Entries by policy id, address and prefix length.
pub(super) type Entries = BTreeMap<(u32, IpAddr, u8), Entry>;

/// Compares the tries of `slot` with `rules` (compiled from `found`, the config's
/// policies in force, with their ids); returns what the config means, for the probes.
pub(super) fn compare(
    open: &dyn Fn(&str) -> anyhow::Result<MapData>,
    rules: &RuleSet,
    slot: u32,
    (found, ids): (&Config, &[u32]),
    name_of: &dyn Fn(u32) -> String,
    report: &mut Report,
) -> anyhow::Result<Entries> {
    let ports: Array<MapData, PortRule> = Array::try_from(Map::from_map_data(open(maps::PORTS)?)?)?;
    let kernel_ports = |v: &RuleValue| -> Vec<PortRule> {
        (0..v.ports_len)
            .map(|i| ports.get(&(v.ports_start + i), 0).unwrap_or_default())
            .collect()
    };
    let expected_ports = |v: &RuleValue| -> Vec<PortRule> {
        if v.ports_len == 0 {
            return Vec::new();
        }
        let start = (v.ports_start - policy::ports_base(slot)) as usize;
        rules.ports[start..start + v.ports_len as usize].to_vec()
    };
    let entry = |v: &RuleValue, ports: Vec<PortRule>| Entry {
        action: v.action,
        rule: v.rule,
        ports,
    };
    let in_slot = |scope: [u8; 4]| u32::from(scope[0]) == slot;
    let id_in = |scope: [u8; 4]| u32::from_be_bytes([0, scope[1], scope[2], scope[3]]);

    let mut want: BTreeMap<(u32, IpAddr, u8), Entry> = BTreeMap::new();
    for (k, v) in &rules.v4 {
        let d = k.data();
        let net = (
            IpAddr::V4(Ipv4Addr::from(d.addr)),
            (k.prefix_len() - 32) as u8,
        );
        want.insert((id_in(d.policy), net.0, net.1), entry(v, expected_ports(v)));
    }
    for (k, v) in &rules.v6 {
        let d = k.data();
        let net = (
            IpAddr::V6(Ipv6Addr::from(d.addr)),
            (k.prefix_len() - 32) as u8,
        );
        want.insert((id_in(d.policy), net.0, net.1), entry(v, expected_ports(v)));
    }
    let mut have: BTreeMap<(u32, IpAddr, u8), Entry> = BTreeMap::new();
    let v4: LpmTrie<MapData, RuleKeyV4, RuleValue> =
        LpmTrie::try_from(Map::from_map_data(open(maps::RULES_V4)?)?)?;
    for item in v4.iter() {
        let (k, v) = item?;
        let d = k.data();
        if in_slot(d.policy) {
            let addr = IpAddr::V4(Ipv4Addr::from(d.addr));
            have.insert(
                (id_in(d.policy), addr, (k.prefix_len() - 32) as u8),
                entry(&v, kernel_ports(&v)),
            );
        }
    }
    let v6: LpmTrie<MapData, RuleKeyV6, RuleValue> =
        LpmTrie::try_from(Map::from_map_data(open(maps::RULES_V6)?)?)?;
    for item in v6.iter() {
        let (k, v) = item?;
        let d = k.data();
        if in_slot(d.policy) {
            let addr = IpAddr::V6(Ipv6Addr::from(d.addr));
            have.insert(
                (id_in(d.policy), addr, (k.prefix_len() - 32) as u8),
                entry(&v, kernel_ports(&v)),
            );
        }
    }
    report.prefixes = want.len();
    let policy_of = |id: u32| {
        found
            .policies
            .iter()
            .zip(ids)
            .find(|(_, i)| **i == id)
            .map(|(p, _)| p)
    };
    let show = |id: u32, e: &Entry| {
        let mut s = describe_rule(policy_of(id), e.rule);
        if !e.ports.is_empty() {
            let rules: Vec<String> = e
                .ports
                .iter()
                .map(|r| describe_rule(policy_of(id), r.rule))
                .collect();
            s.push_str(&format!(", then by port: {}", rules.join(", ")));
        }
        s
    };
    for (key @ (id, addr, len), w) in &want {
        let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
        match have.get(key) {
            None => report.mismatches.push(format!(
                "policy \"{}\": {family} {addr}/{len}: in the config ({}), missing from the kernel",
                name_of(*id),
                show(*id, w)
            )),
            Some(h) if h != w => report.mismatches.push(format!(
                "policy \"{}\": {family} {addr}/{len}: the kernel holds {} (action {}), the config means {} (action {})",
                name_of(*id),
                show(*id, h),
                h.action,
                show(*id, w),
                w.action
            )),
            Some(_) => {}
        }
    }
    for (key @ (id, addr, len), h) in &have {
        if !want.contains_key(key) {
            let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
            report.mismatches.push(format!(
                "policy \"{}\": {family} {addr}/{len}: in the kernel (action {}, {}), not in the config",
                name_of(*id),
                h.action,
                show(*id, h)
            ));
        }
    }
    Ok(want)
}
