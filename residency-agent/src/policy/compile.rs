//! Policy compilation — where a config key becomes a map entry: from a validated
//! [`Config`] to the exact keys and values the kernel's rule tries and port rule
//! array hold.
//!
//! Every rule key starts with its policy's scope (the generation slot and the policy
//! id, big-endian, 32 bits that the trie must match exactly) followed by the
//! destination prefix, so one trie per family serves every policy of both slots.
//! Policy ids are assigned by `generations::ids` (stable by name), not config
//! positions.

use std::collections::HashMap;

use ipnetwork::IpNetwork;
use residency_common::{
    ACTION_NONE, MAX_PORT_RULES_PER_PREFIX, MODE_AUDIT, MODE_ENFORCE, POLICY_KEY_BITS,
    PORT_RULE_SLOTS, PortRule, RULE_NONE, RuleKeyV4, RuleKeyV6, RuleValue,
};

use super::prefixes::{Group, Prefixes, Run};
use crate::config::{Config, Mode};

/// A trie key as aya's `LpmTrie` takes it: `(prefix_len, data)`.
pub type KeyV4 = aya::maps::lpm_trie::Key<RuleKeyV4>;
pub type KeyV6 = aya::maps::lpm_trie::Key<RuleKeyV6>;

/// Everything to write into the rule tries and the port rule array for one config.
#[derive(Default)]
pub struct RuleSet {
    pub v4: Vec<(KeyV4, RuleValue)>,
    pub v6: Vec<(KeyV6, RuleValue)>,
    /// Port rules; [`RuleValue::ports_start`] indexes this list plus the slot's base
    /// ([`ports_base`]).
    pub ports: Vec<PortRule>,
    /// Trie entries added for [`SPECIAL_DESTINATIONS`] (not written in the config).
    pub implicit: usize,
}

/// A config that compiles to more than the kernel's bounded structures hold.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "policy \"{policy}\": {prefix} carries {count} protocol/port rules with the ones it \
         inherits from wider prefixes; the kernel walks at most {max} per prefix"
    )]
    TooManyPortRules {
        policy: String,
        prefix: IpNetwork,
        count: usize,
        max: u32,
    },
    #[error(
        "the config needs {needed} distinct protocol/port rule lists' entries; at most {max} fit"
    )]
    PortTableFull { needed: usize, max: u32 },
}

/// First index of a generation slot's half of the port rule array.
pub fn ports_base(slot: u32) -> u32 {
    slot * (PORT_RULE_SLOTS / 2)
}

/// Destinations that embed or stand for other addresses, or reach many hosts at once
/// (the table lives in `residency_common::special`, beside the rule numbers the kernel
/// reports for them). Every policy denies them unless it names them (or a prefix
/// inside them) itself: an allow of `::/0` or `2000::/3` must not open 6to4 or Teredo
/// tunnels to any IPv4 host, nor a broad IPv4 allow reach multicast groups.
pub use residency_common::{RULE_SPECIAL_BASE, special::SPECIAL_DESTINATIONS};

/// The prefix `bits` long that contains `net`.
fn widen(net: IpNetwork, bits: u8) -> IpNetwork {
    IpNetwork::new(net.ip(), bits)
        .and_then(|n| IpNetwork::new(n.network(), bits))
        .expect("shorter prefix of a valid network")
}

/// The trie entries of every policy, for generation slot `slot`, held in lists
/// ([`Compiled`] produces them one by one, as a version is written); `ids[i]` is the
/// id of `config.policies[i]`.
pub fn compile(config: &Config, ids: &[u32], slot: u32) -> Result<RuleSet, CompileError> {
    let c = Compiled::new(config, ids, slot)?;
    Ok(RuleSet {
        v4: c.v4().collect(),
        v6: c.v6().collect(),
        ports: c.ports.clone(),
        implicit: c.implicit,
    })
}

/// A config compiled for one generation slot, its trie entries produced as they are
/// written rather than held: a version of a million prefixes is written in batches
/// from each policy's entries sorted by prefix (8 bytes a position), not from a list
/// of 28-byte entries. What is not a simple function of one prefix's own entries (port
/// rules, inherited from wider prefixes) is worked out here, once.
pub struct Compiled<'c> {
    /// Per policy: its scope, and its entries sorted by prefix.
    policies: Vec<([u8; 4], Prefixes<'c>)>,
    /// The values of the prefixes that carry port rules, by policy and prefix.
    ported: HashMap<(usize, IpNetwork), RuleValue>,
    /// Port rules; [`RuleValue::ports_start`] indexes this list plus the slot's base
    /// ([`ports_base`]).
    pub ports: Vec<PortRule>,
    /// Trie entries added for [`SPECIAL_DESTINATIONS`] (not written in the config).
    pub implicit: usize,
    counts: (usize, usize),
}

impl<'c> Compiled<'c> {
    /// Compiles `config` for `slot`; `ids[i]` is the id of `config.policies[i]`.
    ///
    /// The kernel looks up one prefix (the most specific match) and walks its port
    /// rules, so inheritance is resolved here: a prefix with port entries but no bare
    /// entry of its own carries the port rules of the wider prefixes above it, up to
    /// the first one with a bare entry, whose action becomes its default.
    pub fn new(config: &'c Config, ids: &[u32], slot: u32) -> Result<Compiled<'c>, CompileError> {
        let mut c = Compiled {
            policies: Vec::with_capacity(config.policies.len()),
            ported: HashMap::new(),
            ports: Vec::new(),
            implicit: 0,
            counts: (0, 0),
        };
        // Identical port rule lists are stored once.
        let mut lists: HashMap<Vec<PortRule>, u32> = HashMap::new();
        for (index, (policy, id)) in config.policies.iter().zip(ids).enumerate() {
            let prefixes = Prefixes::of(policy, &mut c.implicit);
            for run in prefixes.runs() {
                let net = prefixes.network(run.first());
                match net {
                    IpNetwork::V4(_) => c.counts.0 += 1,
                    IpNetwork::V6(_) => c.counts.1 += 1,
                }
                if !prefixes.has_ports(run) {
                    continue;
                }
                let (rules, default) = port_rules(&prefixes, run);
                if rules.len() > MAX_PORT_RULES_PER_PREFIX as usize {
                    return Err(CompileError::TooManyPortRules {
                        policy: policy.name.clone(),
                        prefix: net,
                        count: rules.len(),
                        max: MAX_PORT_RULES_PER_PREFIX,
                    });
                }
                let len = rules.len() as u32;
                let next = c.ports.len() as u32;
                let start = *lists.entry(rules.clone()).or_insert_with(|| {
                    c.ports.extend_from_slice(&rules);
                    next
                });
                let (action, rule) = default.unwrap_or((ACTION_NONE, RULE_NONE));
                let value = RuleValue {
                    action,
                    rule,
                    ports_start: ports_base(slot) + start,
                    ports_len: len,
                };
                c.ported.insert((index, net), value);
            }
            c.policies
                .push((residency_common::scope(slot, *id), prefixes));
        }
        if c.ports.len() > (PORT_RULE_SLOTS / 2) as usize {
            return Err(CompileError::PortTableFull {
                needed: c.ports.len(),
                max: PORT_RULE_SLOTS / 2,
            });
        }
        Ok(c)
    }

    /// IPv4 and IPv6 trie entries.
    pub fn counts(&self) -> (usize, usize) {
        self.counts
    }

    /// Every trie entry of one family (`v6`: IPv6): its scope, prefix and value.
    fn entries(&self, v6: bool) -> impl Iterator<Item = ([u8; 4], IpNetwork, RuleValue)> + '_ {
        self.policies
            .iter()
            .enumerate()
            .flat_map(move |(index, (scope, prefixes))| {
                prefixes.runs_in(v6).map(move |run| {
                    let net = prefixes.network(run.first());
                    let ported = prefixes.has_ports(run);
                    let value = match ported.then(|| self.ported.get(&(index, net))).flatten() {
                        Some(v) => *v,
                        None => {
                            // No port entry: its own bare entry (or a special
                            // destination's) decides, with no port rules.
                            let (action, rule) =
                                prefixes.group(run).bare.unwrap_or((ACTION_NONE, RULE_NONE));
                            RuleValue {
                                action,
                                rule,
                                ports_start: 0,
                                ports_len: 0,
                            }
                        }
                    };
                    (*scope, net, value)
                })
            })
    }

    /// The IPv4 trie entries, in prefix order per policy.
    pub fn v4(&self) -> impl Iterator<Item = (KeyV4, RuleValue)> + '_ {
        self.entries(false)
            .filter_map(|(scope, net, value)| match net {
                IpNetwork::V4(n) => Some((
                    KeyV4::new(
                        POLICY_KEY_BITS + u32::from(n.prefix()),
                        RuleKeyV4 {
                            policy: scope,
                            addr: n.network().octets(),
                        },
                    ),
                    value,
                )),
                IpNetwork::V6(_) => None,
            })
    }

    /// The IPv6 trie entries, in prefix order per policy.
    pub fn v6(&self) -> impl Iterator<Item = (KeyV6, RuleValue)> + '_ {
        self.entries(true)
            .filter_map(|(scope, net, value)| match net {
                IpNetwork::V6(n) => Some((
                    KeyV6::new(
                        POLICY_KEY_BITS + u32::from(n.prefix()),
                        RuleKeyV6 {
                            policy: scope,
                            addr: n.network().octets(),
                        },
                    ),
                    value,
                )),
                IpNetwork::V4(_) => None,
            })
    }
}

/// The port rules the kernel walks for a prefix (its positions `run`) — its own, then
/// those inherited from the wider prefixes up to the first with a bare entry — and its
/// default `(action, rule)`.
fn port_rules(prefixes: &Prefixes<'_>, run: Run<'_>) -> (Vec<PortRule>, Option<(u32, u32)>) {
    let push = |rules: &mut Vec<PortRule>, g: &Group| {
        for (spec, action, rule) in &g.ports {
            rules.push(PortRule {
                port_lo: spec.lo,
                port_hi: spec.hi,
                protocol: spec.protocol.get(),
                action: *action as u8,
                _pad: 0,
                rule: *rule,
            });
        }
    };
    let g = prefixes.group(run);
    let mut rules = Vec::new();
    push(&mut rules, &g);
    let mut default = g.bare;
    if default.is_none() {
        let net = prefixes.network(run.first());
        for bits in (0..net.prefix()).rev() {
            if let Some(up) = prefixes.run_of(&widen(net, bits)) {
                let up = prefixes.group(up);
                push(&mut rules, &up);
                if up.bare.is_some() {
                    default = up.bare;
                    break;
                }
            }
        }
    }
    (rules, default)
}

/// The binding mode value for the kernel.
pub fn mode_value(mode: Mode) -> u8 {
    match mode {
        Mode::Enforce => MODE_ENFORCE,
        Mode::Audit => MODE_AUDIT,
    }
}
