//! The verdict for one destination under one policy: the most specific matching prefix
//! of the policy's trie (its lookup tables first: `table.rs`) decides, through its port
//! rules first (its own, then those it inherits from wider prefixes; the agent flattens
//! them), then its default. No matching prefix means not allowed.

use aya_ebpf::maps::lpm_trie::Key;
use residency_common::{
    ACTION_ALLOW, ACTION_DENY, ACTION_NONE, MAX_PORT_RULES_PER_PREFIX, POLICY_KEY_BITS, RULE_NONE,
    RuleKeyV4, RuleKeyV6, Verdict, scope, slot_of,
};

use crate::{
    maps::{PORTS, RULES_V4, RULES_V6},
    table,
};

/// What is judged: the destination as the policy sees it.
pub struct Target {
    /// The IPv4 address judged (IPv4, or IPv4-mapped IPv6), else `None`.
    pub v4: Option<[u8; 4]>,
    /// The destination as sent (IPv6 judged here when `v4` is `None`).
    pub v6: [u8; 16],
    pub protocol: u8,
    /// Destination port, host byte order.
    pub port: u16,
    /// Whether `port` was read; a port rule never allows a packet whose port is unknown.
    pub port_known: bool,
}

/// A verdict and the entry that decided it.
#[derive(Clone, Copy)]
pub struct Decision {
    pub allowed: bool,
    pub rule: u32,
}

/// What is counted: an allowed packet, or one that is not allowed, dropped or (audit
/// mode) passed.
#[inline(always)]
pub fn verdict_of(allowed: bool, audit: bool) -> Verdict {
    match (allowed, audit) {
        (true, _) => Verdict::Allowed,
        (false, true) => Verdict::Audited,
        (false, false) => Verdict::Blocked,
    }
}

/// The verdict of `policy` under `epoch` (its generation slot's) for `t`.
#[inline(always)]
pub fn decide(epoch: u32, policy: u32, t: &Target) -> Decision {
    let scope = scope(slot_of(epoch), policy);
    let hit = match t.v4 {
        // The tables answer a prefix's default without the trie walk; a prefix with
        // port rules (or, IPv6, longer than /64), or a policy without tables, goes on
        // to the trie.
        Some(addr) if let Some(d) = table::v4(epoch, policy, addr) => return d,
        Some(addr) => RULES_V4.get(Key::new(
            POLICY_KEY_BITS + 32,
            RuleKeyV4 {
                policy: scope,
                addr,
            },
        )),
        None if let Some(d) = table::v6(epoch, policy, &t.v6) => return d,
        None => RULES_V6.get(Key::new(
            POLICY_KEY_BITS + 128,
            RuleKeyV6 {
                policy: scope,
                addr: t.v6,
            },
        )),
    };
    let Some(v) = hit else {
        return Decision {
            allowed: false,
            rule: RULE_NONE,
        };
    };
    let (start, len) = (v.ports_start, v.ports_len);
    for i in 0..MAX_PORT_RULES_PER_PREFIX {
        if i >= len {
            break;
        }
        let Some(r) = PORTS.get(start + i) else {
            break;
        };
        if r.protocol != t.protocol {
            continue;
        }
        let every_port = r.port_lo == 0 && r.port_hi == u16::MAX;
        if !every_port {
            if !t.port_known {
                // A port we could not read may be the denied one: fail closed. It is
                // never the allowed one.
                if u32::from(r.action) == ACTION_DENY {
                    return Decision {
                        allowed: false,
                        rule: r.rule,
                    };
                }
                continue;
            }
            if t.port < r.port_lo || t.port > r.port_hi {
                continue;
            }
        }
        return Decision {
            allowed: u32::from(r.action) == ACTION_ALLOW,
            rule: r.rule,
        };
    }
    Decision {
        allowed: v.action == ACTION_ALLOW,
        rule: if v.action == ACTION_NONE {
            RULE_NONE
        } else {
            v.rule
        },
    }
}
