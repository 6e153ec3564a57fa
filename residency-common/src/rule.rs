//! Rules: the keys and values of the rule tries and the port rule array, and what a
//! rule number stands for.
//!
//! One trie per family serves every policy: a key starts with the [`scope`]
//! (generation slot and policy id, matched exactly) and continues with the destination
//! prefix (matched by its longest prefix). The matching entry's port rules are walked
//! in order, then its default decides. Every verdict carries a rule number ([`Rule`])
//! so that an event can name what decided it.

#[cfg(feature = "user")]
mod user;

/// Highest number of policies one agent can load (policy ids are `0..MAX_POLICIES`).
pub const MAX_POLICIES: u32 = 1024;
/// Default capacity of each rule trie (IPv4 and IPv6); the agent may change it before
/// load. Tries are created with `BPF_F_NO_PREALLOC`, so unused capacity costs nothing.
pub const DEFAULT_RULE_CAPACITY: u32 = 1 << 20;
/// Port rules one rule entry may carry, its inherited ones included (the kernel walks
/// them in a bounded loop).
pub const MAX_PORT_RULES_PER_PREFIX: u32 = 16;
/// Capacity of [`maps::PORTS`](crate::maps::PORTS): half per generation slot.
pub const PORT_RULE_SLOTS: u32 = 1 << 16;

/// The 32-bit scope that starts every rule key: the generation slot in the top byte,
/// the policy id below, big-endian (LPM tries compare keys bytewise).
#[inline(always)]
pub const fn scope(slot: u32, policy: u32) -> [u8; 4] {
    ((slot << 24) | policy).to_be_bytes()
}

/// Rule key prefix bits taken by the scope (see [`RuleKeyV4`]).
pub const POLICY_KEY_BITS: u32 = 32;

/// [`RuleValue::action`]: no default at this prefix; traffic no port rule matches is
/// not allowed.
pub const ACTION_NONE: u32 = 0;
/// [`RuleValue::action`]: the prefix is allowed.
pub const ACTION_ALLOW: u32 = 1;
/// [`RuleValue::action`]: the prefix is denied (a carve-out inside a wider allow).
pub const ACTION_DENY: u32 = 2;

/// [`RuleValue::rule`] / [`Event::rule`](crate::Event::rule) when no entry matched
/// (default deny).
pub const RULE_NONE: u32 = u32::MAX;
/// [`Event::rule`](crate::Event::rule) when the packet was dropped because the
/// program could not judge it.
pub const RULE_ERROR: u32 = u32::MAX - 1;
/// [`Event::rule`](crate::Event::rule): a raw IP socket, or a header written by the
/// workload (`IP_HDRINCL`, `IPV6_HDRINCL`, `IPPROTO_RAW`), refused: the kernel routes
/// such a packet by one address while its header may name another.
pub const RULE_RAW_SOCKET: u32 = u32::MAX - 2;
/// [`Event::rule`](crate::Event::rule): a way to send from an address that is not the
/// host's own (`IP_FREEBIND`, `IPV6_FREEBIND`, `IP_TRANSPARENT`, `IPV6_TRANSPARENT`)
/// refused: replies and errors to such a source reach whoever owns it.
pub const RULE_SPOOFED_SOURCE: u32 = u32::MAX - 3;
/// [`Event::rule`](crate::Event::rule): a choice of outgoing interface
/// (`SO_BINDTODEVICE`, `SO_BINDTOIFINDEX`, `IP_UNICAST_IF`, `IPV6_UNICAST_IF`, a sticky
/// `IPV6_PKTINFO` interface) refused: a forced interface sends an allowed address out of
/// a link that faces another network.
pub const RULE_DEVICE_BINDING: u32 = u32::MAX - 4;
/// Rule number of the first special destination: the agent denies each destination of
/// its table of special destinations in every policy that does not name it, with rule
/// number `RULE_SPECIAL_BASE + index`. Entry indexes stay below it.
pub const RULE_SPECIAL_BASE: u32 = u32::MAX - 64;

/// An entry's action, typed: [`RuleValue::action`] and [`PortRule::action`] hold
/// [`Action::value`] (the latter as u8).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Allow = ACTION_ALLOW,
    Deny = ACTION_DENY,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 2] = [Action::Allow, Action::Deny];

    /// The value in [`RuleValue::action`].
    #[inline(always)]
    pub const fn value(self) -> u32 {
        self as u32
    }

    /// The action an action value stands for; `None` for [`ACTION_NONE`] and unknown
    /// values.
    #[inline(always)]
    pub const fn from_value(value: u32) -> Option<Action> {
        match value {
            ACTION_ALLOW => Some(Action::Allow),
            ACTION_DENY => Some(Action::Deny),
            _ => None,
        }
    }
}

/// What a rule number ([`RuleValue::rule`], [`PortRule::rule`],
/// [`Event::rule`](crate::Event::rule)) stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Index of the deciding entry in the policy's compiled rule list.
    Entry(u32),
    /// The implicit deny of the special destination at this index of the agent's
    /// table (rule number [`RULE_SPECIAL_BASE`] + index).
    Special(u32),
    /// No entry matched: not allowed ([`RULE_NONE`]).
    DefaultDeny,
    /// The program could not judge the packet ([`RULE_ERROR`]).
    Unparsable,
    /// A raw IP socket or a hand-written header ([`RULE_RAW_SOCKET`]).
    RawSocket,
    /// A non-local source address ([`RULE_SPOOFED_SOURCE`]).
    SpoofedSource,
    /// A chosen outgoing interface ([`RULE_DEVICE_BINDING`]).
    DeviceBinding,
}

impl Rule {
    /// The meaning of a rule number.
    #[inline(always)]
    pub const fn from_raw(raw: u32) -> Rule {
        match raw {
            RULE_NONE => Rule::DefaultDeny,
            RULE_ERROR => Rule::Unparsable,
            RULE_RAW_SOCKET => Rule::RawSocket,
            RULE_SPOOFED_SOURCE => Rule::SpoofedSource,
            RULE_DEVICE_BINDING => Rule::DeviceBinding,
            i if i >= RULE_SPECIAL_BASE => Rule::Special(i - RULE_SPECIAL_BASE),
            i => Rule::Entry(i),
        }
    }

    /// The rule number, as the maps and events carry it.
    #[inline(always)]
    pub const fn raw(self) -> u32 {
        match self {
            Rule::Entry(i) => i,
            Rule::Special(k) => RULE_SPECIAL_BASE.wrapping_add(k),
            Rule::DefaultDeny => RULE_NONE,
            Rule::Unparsable => RULE_ERROR,
            Rule::RawSocket => RULE_RAW_SOCKET,
            Rule::SpoofedSource => RULE_SPOOFED_SOURCE,
            Rule::DeviceBinding => RULE_DEVICE_BINDING,
        }
    }
}

/// Data part of an IPv4 rule key. The trie key is `{ prefix_len: u32, data }` with
/// `prefix_len = 32 + cidr_len`: the scope (generation slot and policy id) is matched
/// exactly and the address by its longest prefix, so one trie serves every policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleKeyV4 {
    /// [`scope`]: generation slot and policy id, big-endian.
    pub policy: [u8; 4],
    /// Destination address in network byte order.
    pub addr: [u8; 4],
}

/// Data part of an IPv6 rule key; see [`RuleKeyV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleKeyV6 {
    /// [`scope`]: generation slot and policy id, big-endian.
    pub policy: [u8; 4],
    /// Destination address in network byte order.
    pub addr: [u8; 16],
}

/// Value of a rule trie entry: the port rules of the most specific matching prefix
/// (its own, then those it inherits from wider prefixes), walked in order, first match
/// wins; then the prefix's default.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleValue {
    /// Default for traffic no port rule matches: [`ACTION_ALLOW`], [`ACTION_DENY`], or
    /// [`ACTION_NONE`] (not allowed, [`RULE_NONE`]).
    pub action: u32,
    /// Rule number of the default ([`Rule`]): the index of the deciding entry in the
    /// policy's compiled rule list, or a special destination's number, so that an event
    /// can name what decided it.
    pub rule: u32,
    /// First of this entry's [`PortRule`]s in [`maps::PORTS`](crate::maps::PORTS).
    pub ports_start: u32,
    /// Number of port rules (at most [`MAX_PORT_RULES_PER_PREFIX`]).
    pub ports_len: u32,
}

/// One protocol/port rule of a prefix: value of [`maps::PORTS`](crate::maps::PORTS).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PortRule {
    /// First and last destination port (host byte order). `0..=65535` matches every
    /// port, including packets whose port is unknown.
    pub port_lo: u16,
    pub port_hi: u16,
    /// IP protocol number ([`Protocol`](crate::protocol::Protocol)); every rule names
    /// one.
    pub protocol: u8,
    /// [`ACTION_ALLOW`] or [`ACTION_DENY`] (as u8).
    pub action: u8,
    pub _pad: u16,
    /// Index of the entry in the policy's compiled rule list.
    pub rule: u32,
}

const _: () = assert!(MAX_POLICIES < (1 << 24));
const _: () = assert!(core::mem::size_of::<RuleKeyV4>() == 8);
const _: () = assert!(core::mem::size_of::<RuleKeyV6>() == 20);
const _: () = assert!(core::mem::size_of::<RuleValue>() == 16);
const _: () = assert!(core::mem::size_of::<PortRule>() == 12);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_numbers_round_trip() {
        for raw in [
            0,
            1,
            RULE_SPECIAL_BASE - 1,
            RULE_SPECIAL_BASE,
            RULE_SPECIAL_BASE + 8,
            RULE_ERROR,
            RULE_NONE,
            RULE_RAW_SOCKET,
            RULE_SPOOFED_SOURCE,
            RULE_DEVICE_BINDING,
        ] {
            assert_eq!(Rule::from_raw(raw).raw(), raw);
        }
        assert_eq!(Rule::from_raw(RULE_NONE), Rule::DefaultDeny);
        assert_eq!(Rule::from_raw(RULE_ERROR), Rule::Unparsable);
        assert_eq!(Rule::from_raw(RULE_SPECIAL_BASE + 2), Rule::Special(2));
        assert_eq!(Rule::from_raw(7), Rule::Entry(7));
    }

    #[test]
    fn action_values_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_value(a.value()), Some(a));
        }
        assert_eq!(Action::from_value(ACTION_NONE), None);
    }
}
