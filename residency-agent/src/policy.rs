//! Policy compilation: from a validated [`Config`] to the exact keys and values the
//! kernel's rule tries hold, and back from a rule index to the entry that decided.
//!
//! Policy ids are the policies' positions in the config. Every rule key starts with its
//! policy id (big-endian, 32 bits that the trie must match exactly) followed by the
//! destination prefix, so one trie per family serves every policy.

use ipnetwork::IpNetwork;
use residency_common::{
    ACTION_ALLOW, ACTION_DENY, ACTION_NONE, MAX_PORT_RULES_PER_PREFIX, MODE_AUDIT, MODE_ENFORCE,
    POLICY_KEY_BITS, PORT_RULE_SLOTS, PortRule, RULE_ERROR, RULE_NONE, RuleKeyV4, RuleKeyV6,
    RuleValue,
};

use crate::config::{Action, Config, Mode, PolicyConfig, PortSpec};

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

/// A config together with the policy ids its version carries in the kernel.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub config: Config,
    /// `ids[i]` is the id of `config.policies[i]`.
    pub ids: Vec<u32>,
    /// Versions applied by this agent.
    pub generation: u64,
}

impl Versioned {
    /// A config as a first version: ids in config order, generation 1.
    #[cfg(test)]
    pub fn initial(config: Config) -> Versioned {
        let ids = (0..config.policies.len() as u32).collect();
        Versioned {
            config,
            ids,
            generation: 1,
        }
    }

    /// The policy carrying kernel id `id`.
    pub fn by_id(&self, id: u32) -> Option<&PolicyConfig> {
        self.ids
            .iter()
            .position(|i| *i == id)
            .map(|i| &self.config.policies[i])
    }
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

/// Destinations that embed or stand for other addresses, or reach many hosts at once.
/// Every policy denies them unless it names them (or a prefix inside them) itself: an
/// allow of `::/0` or `2000::/3` must not open 6to4 or Teredo tunnels to any IPv4
/// host, nor a broad IPv4 allow reach multicast groups. `(prefix, name)`; the index is
/// the rule number above [`RULE_SPECIAL_BASE`].
pub const SPECIAL_DESTINATIONS: &[(&str, &str)] = &[
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("::/96", "ipv4-compatible"),
    ("::ffff:0:0:0/96", "ipv4-translated"),
    ("64:ff9b::/96", "nat64"),
    ("64:ff9b:1::/48", "nat64-local"),
    ("2002::/16", "6to4"),
    ("2001::/32", "teredo"),
    ("ff00::/8", "multicast"),
];

/// Rule number of the first [`SPECIAL_DESTINATIONS`] entry.
pub const RULE_SPECIAL_BASE: u32 = u32::MAX - 64;

/// The rules of one prefix of one policy: its own entries.
#[derive(Default)]
struct Group {
    bare: Option<(u32, u32)>,
    /// `(spec, action, rule)`, most specific port range first, deny before allow.
    ports: Vec<(PortSpec, u32, u32)>,
}

fn action_value(a: Action) -> u32 {
    match a {
        Action::Allow => ACTION_ALLOW,
        Action::Deny => ACTION_DENY,
    }
}

/// The prefix `bits` long that contains `net`.
fn widen(net: IpNetwork, bits: u8) -> IpNetwork {
    IpNetwork::new(net.ip(), bits)
        .and_then(|n| IpNetwork::new(n.network(), bits))
        .expect("shorter prefix of a valid network")
}

/// Builds the trie entries of every policy, for generation slot `slot`; `ids[i]` is
/// the id of `config.policies[i]`.
///
/// The kernel looks up one prefix (the most specific match) and walks its port rules,
/// so inheritance is resolved here: a prefix with port entries but no bare entry of
/// its own carries the port rules of the wider prefixes above it, up to the first one
/// with a bare entry, whose action becomes its default.
pub fn compile(config: &Config, ids: &[u32], slot: u32) -> Result<RuleSet, CompileError> {
    use std::collections::HashMap;
    let mut set = RuleSet::default();
    let mut lists: HashMap<Vec<PortRule>, u32> = HashMap::new();
    let specials: Vec<IpNetwork> = SPECIAL_DESTINATIONS
        .iter()
        .map(|(p, _)| p.parse().expect("valid special prefix"))
        .collect();
    for (policy, id) in config.policies.iter().zip(ids) {
        let scope = residency_common::scope(slot, *id);
        let mut order: Vec<IpNetwork> = Vec::new();
        let mut groups: HashMap<IpNetwork, Group> = HashMap::with_capacity(policy.entries.len());
        for (rule, entry) in policy.entries.iter().enumerate() {
            let g = groups.entry(entry.network).or_insert_with(|| {
                order.push(entry.network);
                Group::default()
            });
            let action = action_value(entry.action);
            match entry.ports {
                None => g.bare = Some((action, rule as u32)),
                Some(spec) => g.ports.push((spec, action, rule as u32)),
            }
        }
        for (k, net) in specials.iter().enumerate() {
            let g = groups.entry(*net).or_insert_with(|| {
                set.implicit += 1;
                order.push(*net);
                Group::default()
            });
            g.bare
                .get_or_insert((ACTION_DENY, RULE_SPECIAL_BASE + k as u32));
        }
        for g in groups.values_mut() {
            g.ports.sort_by_key(|(spec, action, rule)| {
                (u32::from(spec.hi - spec.lo), *action != ACTION_DENY, *rule)
            });
        }
        for net in &order {
            let g = &groups[net];
            let mut rules: Vec<PortRule> = Vec::new();
            let push = |rules: &mut Vec<PortRule>, g: &Group| {
                for (spec, action, rule) in &g.ports {
                    rules.push(PortRule {
                        port_lo: spec.lo,
                        port_hi: spec.hi,
                        protocol: spec.protocol,
                        action: *action as u8,
                        _pad: 0,
                        rule: *rule,
                    });
                }
            };
            push(&mut rules, g);
            let mut default = g.bare;
            if default.is_none() {
                for bits in (0..net.prefix()).rev() {
                    if let Some(up) = groups.get(&widen(*net, bits)) {
                        push(&mut rules, up);
                        if up.bare.is_some() {
                            default = up.bare;
                            break;
                        }
                    }
                }
            }
            if rules.len() > MAX_PORT_RULES_PER_PREFIX as usize {
                return Err(CompileError::TooManyPortRules {
                    policy: policy.name.clone(),
                    prefix: *net,
                    count: rules.len(),
                    max: MAX_PORT_RULES_PER_PREFIX,
                });
            }
            let (ports_start, ports_len) = if rules.is_empty() {
                (0, 0)
            } else {
                let len = rules.len() as u32;
                let next = set.ports.len() as u32;
                let start = *lists.entry(rules.clone()).or_insert_with(|| {
                    set.ports.extend_from_slice(&rules);
                    next
                });
                (ports_base(slot) + start, len)
            };
            let (action, rule) = default.unwrap_or((ACTION_NONE, RULE_NONE));
            let value = RuleValue {
                action,
                rule,
                ports_start,
                ports_len,
            };
            match net {
                IpNetwork::V4(n) => set.v4.push((
                    KeyV4::new(
                        POLICY_KEY_BITS + u32::from(n.prefix()),
                        RuleKeyV4 {
                            policy: scope,
                            addr: n.network().octets(),
                        },
                    ),
                    value,
                )),
                IpNetwork::V6(n) => set.v6.push((
                    KeyV6::new(
                        POLICY_KEY_BITS + u32::from(n.prefix()),
                        RuleKeyV6 {
                            policy: scope,
                            addr: n.network().octets(),
                        },
                    ),
                    value,
                )),
            }
        }
    }
    if set.ports.len() > (PORT_RULE_SLOTS / 2) as usize {
        return Err(CompileError::PortTableFull {
            needed: set.ports.len(),
            max: PORT_RULE_SLOTS / 2,
        });
    }
    Ok(set)
}

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

/// The binding mode value for the kernel.
pub fn mode_value(mode: Mode) -> u8 {
    match mode {
        Mode::Enforce => MODE_ENFORCE,
        Mode::Audit => MODE_AUDIT,
    }
}

/// What decided a verdict, for events: the entry, or the default.
pub fn describe_rule(policy: Option<&PolicyConfig>, rule: u32) -> String {
    match rule {
        RULE_NONE => "default-deny".to_owned(),
        RULE_ERROR => "unparsable-packet".to_owned(),
        i if i >= RULE_SPECIAL_BASE => {
            match SPECIAL_DESTINATIONS.get((i - RULE_SPECIAL_BASE) as usize) {
                Some((prefix, name)) => format!("special-deny:{name}:{prefix}"),
                None => format!("rule-{i}"),
            }
        }
        i => match policy.and_then(|p| p.entries.get(i as usize)) {
            Some(e) => format!(
                "{}:{}",
                e.action.as_str(),
                crate::config::display_entry(e.network, e.ports)
            ),
            None => format!("rule-{i}"),
        },
    }
}

/// What a reload changes, per policy: the text `reload` prints and its JSON form.
pub fn diff(old: &Config, new: &Config) -> (String, serde_json::Value) {
    use std::collections::BTreeSet;
    use std::fmt::Write as _;
    let entries = |p: &PolicyConfig| -> BTreeSet<String> {
        p.entries
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e.action.as_str(),
                    crate::config::display_entry(e.network, e.ports)
                )
            })
            .collect()
    };
    let cgroups = |p: &PolicyConfig| -> BTreeSet<String> {
        p.cgroups.iter().map(|c| c.path.clone()).collect()
    };
    let mut text = String::new();
    let mut json = Vec::new();
    for p in &new.policies {
        match old.policies.iter().find(|o| o.name == p.name) {
            None => {
                let _ = writeln!(
                    text,
                    "  + policy {} (new, mode={}, {} prefixes, {} cgroups)",
                    p.name,
                    p.mode.as_str(),
                    p.entries.len(),
                    p.cgroups.len()
                );
                json.push(serde_json::json!({"policy": p.name, "change": "added", "prefixes_added": p.entries.len()}));
            }
            Some(o) => {
                let (eo, en) = (entries(o), entries(p));
                let added: Vec<&String> = en.difference(&eo).collect();
                let removed: Vec<&String> = eo.difference(&en).collect();
                let (co, cn) = (cgroups(o), cgroups(p));
                let cg_added: Vec<&String> = cn.difference(&co).collect();
                let cg_removed: Vec<&String> = co.difference(&cn).collect();
                let mode = (o.mode != p.mode)
                    .then(|| format!("{} -> {}", o.mode.as_str(), p.mode.as_str()));
                if added.is_empty()
                    && removed.is_empty()
                    && cg_added.is_empty()
                    && cg_removed.is_empty()
                    && mode.is_none()
                {
                    let _ = writeln!(text, "  = policy {} (unchanged)", p.name);
                    json.push(serde_json::json!({"policy": p.name, "change": "unchanged"}));
                    continue;
                }
                let _ = write!(
                    text,
                    "  ~ policy {}: +{} -{} prefixes",
                    p.name,
                    added.len(),
                    removed.len()
                );
                if let Some(m) = &mode {
                    let _ = write!(text, ", mode {m}");
                }
                if !cg_added.is_empty() || !cg_removed.is_empty() {
                    let _ = write!(text, ", cgroups +{} -{}", cg_added.len(), cg_removed.len());
                }
                text.push('\n');
                for e in added.iter().take(20) {
                    let _ = writeln!(text, "      + {e}");
                }
                for e in removed.iter().take(20) {
                    let _ = writeln!(text, "      - {e}");
                }
                if added.len() > 20 || removed.len() > 20 {
                    let _ = writeln!(text, "      ... (first 20 of each shown)");
                }
                json.push(serde_json::json!({
                    "policy": p.name, "change": "modified",
                    "prefixes_added": added.len(), "prefixes_removed": removed.len(),
                    "cgroups_added": cg_added, "cgroups_removed": cg_removed, "mode": mode,
                }));
            }
        }
    }
    for o in &old.policies {
        if !new.policies.iter().any(|p| p.name == o.name) {
            let _ = writeln!(
                text,
                "  - policy {} (removed, {} prefixes)",
                o.name,
                o.entries.len()
            );
            json.push(serde_json::json!({"policy": o.name, "change": "removed", "prefixes_removed": o.entries.len()}));
        }
    }
    if old.agent != new.agent || old.events != new.events {
        text.push_str(
            "  note: [agent] and [events] changes take effect when the agent restarts \
             (mask_addresses applies at once)\n",
        );
    }
    (text, serde_json::Value::Array(json))
}

/// Prefix counts of one policy, for `check` and the agent's start-up log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub allow_v4: usize,
    pub allow_v6: usize,
    pub deny_v4: usize,
    pub deny_v6: usize,
}

pub fn counts(policy: &PolicyConfig) -> Counts {
    let mut c = Counts::default();
    for e in &policy.entries {
        match (e.action, e.network.is_ipv4()) {
            (Action::Allow, true) => c.allow_v4 += 1,
            (Action::Allow, false) => c.allow_v6 += 1,
            (Action::Deny, true) => c.deny_v4 += 1,
            (Action::Deny, false) => c.deny_v6 += 1,
        }
    }
    c
}

/// A human summary of a config, printed by `check`.
pub fn summary(config: &Config) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: OK, {} policies",
        config.source,
        config.policies.len()
    );
    for p in &config.policies {
        let c = counts(p);
        let _ = writeln!(
            s,
            "  policy {:<20} mode={:<7} cgroups={} ipv4: allow={} deny={}  ipv6: allow={} deny={}",
            p.name,
            p.mode.as_str(),
            p.cgroups.len(),
            c.allow_v4,
            c.deny_v4,
            c.allow_v6,
            c.deny_v6
        );
        for cg in &p.cgroups {
            let _ = writeln!(s, "    cgroup {}", cg.path);
        }
        for (origin, read, kept) in &p.sources {
            let _ = writeln!(
                s,
                "    source {origin}: {read} prefixes, {kept} after aggregation"
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/16\", \"2001:db8::/32\"]\ndeny = [\"10.0.99.0/24\"]\n\
             [[policy]]\nname = \"b\"\nmode = \"audit\"\ncgroups = [\"y\"]\nallow = [\"198.51.100.7\"]\n",
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn keys_carry_policy_id_and_prefix() {
        let set = compile(&config(), &[0, 7], 1).unwrap();
        let specials_v4 = SPECIAL_DESTINATIONS
            .iter()
            .filter(|(p, _)| p.contains('.'))
            .count();
        let specials_v6 = SPECIAL_DESTINATIONS.len() - specials_v4;
        assert_eq!(set.v4.len(), 3 + 2 * specials_v4);
        assert_eq!(set.v6.len(), 1 + 2 * specials_v6);
        let (k, v) = &set.v4[0];
        let (prefix_len, data) = (k.prefix_len(), k.data());
        assert_eq!(prefix_len, 32 + 16);
        assert_eq!(
            data.policy,
            [1, 0, 0, 0],
            "slot 1 in the top byte, policy id 0"
        );
        assert_eq!(data.addr, [10, 0, 0, 0]);
        assert_eq!(
            *v,
            RuleValue {
                action: ACTION_ALLOW,
                rule: 0,
                ports_start: 0,
                ports_len: 0,
            }
        );
        let (k, v) = &set.v4[1];
        assert_eq!(k.prefix_len(), 32 + 24);
        assert_eq!(v.action, ACTION_DENY);
        assert_eq!(v.rule, 2);
        assert!(
            set.v4
                .iter()
                .any(|(k, _)| k.data().policy == [1, 0, 0, 7] && k.prefix_len() == 64)
        );
        let (k, _) = set
            .v6
            .iter()
            .find(|(k, _)| k.data().policy == [1, 0, 0, 0] && k.prefix_len() == 64)
            .unwrap();
        assert_eq!(&k.data().addr[..4], &[0x20, 0x01, 0x0d, 0xb8]);
    }

    fn target(addr: &str, proto: Option<u8>, port: Option<u16>) -> Target {
        Target {
            addr: addr.parse().unwrap(),
            protocol: proto,
            port,
        }
    }

    #[test]
    fn port_rules_decide_within_the_most_specific_prefix() {
        let c = Config::parse(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n\
             allow = [\"10.0.0.0/16 tcp/5432\", \"10.0.0.0/16 udp/53\", \"203.0.113.0/24 tcp/8000-8100\", \"10.0.0.0/8\", \"2001:db8::/32 tcp/443\"]\n\
             deny = [\"10.1.0.0/16 tcp/22\"]\n",
            "t.toml",
        )
        .unwrap();
        let set = compile(&c, &[0], 0).unwrap();
        let d = |a, p, port| decide(&set, 0, 0, &target(a, p, port)).0;
        assert!(d("10.0.1.1", Some(6), Some(5432)));
        assert!(
            d("10.0.1.1", Some(6), Some(5433)),
            "no bare entry at the /16: the /8 it sits in allows the other ports"
        );
        assert!(d("10.0.1.1", Some(17), Some(53)));
        assert!(d("203.0.113.5", Some(6), Some(8050)));
        assert!(!d("203.0.113.5", Some(6), Some(8101)), "outside the range");
        assert!(!d("203.0.113.5", Some(17), Some(8050)), "wrong protocol");
        assert!(
            !d("203.0.113.5", Some(6), None),
            "unknown port: no port allow"
        );
        assert!(
            !d("10.1.2.3", Some(6), Some(22)),
            "denied port inside an allowed /8"
        );
        assert!(d("10.1.2.3", Some(6), Some(23)), "other ports of the /8");
        assert!(
            !d("10.1.2.3", Some(6), None),
            "an unknown port may be the denied one"
        );
        assert!(d("2001:db8::1", Some(6), Some(443)));
        assert!(!d("2001:db8::1", Some(17), Some(443)));
    }

    #[test]
    fn port_only_prefixes_inherit_their_wider_prefix_default() {
        let c = Config::parse(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n\
             allow = [\"10.0.0.0/8\", \"10.9.0.0/16 tcp/5432\"]\n\
             [[policy]]\nname = \"b\"\ncgroups = [\"y\"]\n\
             allow = [\"10.9.0.0/16 tcp/5432\"]\n",
            "t.toml",
        )
        .unwrap();
        let set = compile(&c, &[0, 1], 0).unwrap();
        let d = |id, a, p, port| decide(&set, 0, id, &target(a, p, port)).0;
        assert!(
            d(0, "10.9.1.1", Some(17), Some(53)),
            "the /8 allows the rest"
        );
        assert!(d(0, "10.9.1.1", Some(6), Some(5432)));
        assert!(d(1, "10.9.1.1", Some(6), Some(5432)));
        assert!(
            !d(1, "10.9.1.1", Some(6), Some(5433)),
            "no wider prefix: denied"
        );
    }

    #[test]
    fn special_destinations_are_denied_unless_named() {
        let c = Config::parse(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n\
             allow = [\"0.0.0.0/0\", \"::/0\", \"64:ff9b::/96\"]\n",
            "t.toml",
        )
        .unwrap();
        let set = compile(&c, &[0], 0).unwrap();
        let d = |a| decide(&set, 0, 0, &target(a, Some(17), Some(53)));
        for a in [
            "224.0.0.251",
            "255.255.255.255",
            "::198.51.100.1",
            "2002:c633:6401::1",
            "2001:0:c633:6401::1",
            "ff02::1",
        ] {
            let (allowed, rule) = d(a);
            assert!(!allowed, "{a} must be denied");
            assert!(rule >= RULE_SPECIAL_BASE, "{a}: {rule}");
        }
        assert!(d("64:ff9b::c633:6401").0, "named explicitly");
        assert!(d("198.51.100.1").0);
        assert!(d("2001:db8::1").0);
        assert_eq!(
            describe_rule(c.policies.first(), d("2002::1").1),
            "special-deny:6to4:2002::/16"
        );
    }

    #[test]
    fn inherited_port_rules_are_bounded() {
        let mut allow: Vec<String> = (0..16).map(|p| format!("\"10.0.0.0/8 tcp/{p}\"")).collect();
        allow.push("\"10.1.0.0/16 udp/53\"".into());
        let c = Config::parse(
            &format!(
                "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [{}]\n",
                allow.join(", ")
            ),
            "t.toml",
        )
        .unwrap();
        let e = compile(&c, &[0], 0).err().expect("too many").to_string();
        assert!(
            e.contains("10.1.0.0/16 carries 17 protocol/port rules"),
            "{e}"
        );
    }

    #[test]
    fn rules_are_described_by_their_entry() {
        let c = config();
        assert_eq!(describe_rule(c.policies.first(), 2), "deny:10.0.99.0/24");
        assert_eq!(describe_rule(c.policies.first(), RULE_NONE), "default-deny");
        assert_eq!(describe_rule(None, 7), "rule-7");
    }

    #[test]
    fn diff_names_what_changes() {
        let old = config();
        let new = Config::parse(
            "[[policy]]\nname = \"a\"\nmode = \"audit\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/16\", \"203.0.113.0/24\"]\n\
             [[policy]]\nname = \"c\"\ncgroups = [\"z\"]\n",
            "t.toml",
        )
        .unwrap();
        let (text, json) = diff(&old, &new);
        assert!(
            text.contains("~ policy a: +1 -2 prefixes, mode enforce -> audit"),
            "{text}"
        );
        assert!(text.contains("+ allow:203.0.113.0/24"), "{text}");
        assert!(text.contains("- deny:10.0.99.0/24"), "{text}");
        assert!(text.contains("+ policy c (new"), "{text}");
        assert!(text.contains("- policy b (removed"), "{text}");
        assert_eq!(json.as_array().unwrap().len(), 3);
        assert!(diff(&old, &old).0.contains("= policy a (unchanged)"));
    }

    #[test]
    fn summary_counts_per_family() {
        let s = summary(&config());
        assert!(s.contains("2 policies"), "{s}");
        assert!(
            s.contains("ipv4: allow=1 deny=1  ipv6: allow=1 deny=0"),
            "{s}"
        );
        assert!(s.contains("mode=audit"), "{s}");
    }
}
