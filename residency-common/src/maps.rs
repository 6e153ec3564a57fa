//! Map names, as they appear in the object file and under the pin directory.
//!
//! The agent pins every map as `<pin_path>/v3/maps/<name>` (pin layout `v3`; its links
//! sit beside them as `<pin_path>/v3/links/<instance>/link-<cgroup id>-<program>`, one
//! per program per attach point), so a name here is also part of the pinned state a
//! later agent adopts: renaming one is a change of pin layout.

/// `HASH`: [`super::BindingKey`] -> [`super::Binding`].
pub const BINDINGS: &str = "RES_BINDINGS";
/// `ARRAY` of one u32: the policy epoch every packet and call is judged by. Its low bit
/// is the generation slot ([`super::slot_of`]); every change of it gives cached
/// verdicts a new key space.
pub const ACTIVE: &str = "RES_ACTIVE";
/// `LPM_TRIE`: [`super::RuleKeyV4`] -> [`super::RuleValue`].
pub const RULES_V4: &str = "RES_RULES_V4";
/// `LPM_TRIE`: [`super::RuleKeyV6`] -> [`super::RuleValue`].
pub const RULES_V6: &str = "RES_RULES_V6";
/// `PERCPU_ARRAY` of u64: per-policy packet counters, see [`super::counter_index`].
pub const COUNTERS: &str = "RES_COUNTERS";
/// `PERCPU_ARRAY` of u64: program health counters, indexed by [`super::Stat`].
pub const STATS: &str = "RES_STATS";
/// `RINGBUF` of [`super::Event`].
pub const EVENTS: &str = "RES_EVENTS";
/// `ARRAY` of one [`super::Settings`], written by the agent.
pub const SETTINGS: &str = "RES_SETTINGS";
/// `PERCPU_ARRAY` of one [`super::RateBucket`]: the event rate limiter's state.
pub const RATE: &str = "RES_RATE";
/// `ARRAY` of [`super::PortRule`]: the port and protocol rules of the rule entries,
/// one half per generation slot.
pub const PORTS: &str = "RES_PORTS";
/// `PERCPU_ARRAY` of [`super::CacheSlot`]: a direct-mapped cache of verdicts
/// already computed, so that a flow's later packets skip the trie.
pub const VERDICTS: &str = "RES_VERDICTS";
/// `PERCPU_ARRAY` of [`super::BindingMemo`]: the binding each recent cgroup's lookup
/// found, so that a flow's first packet and every unconnected `sendto()` skip the
/// binding hash (and, for a cgroup below its bound one, the ancestor walk). Not
/// pinned, like the cache.
pub const BINDING_MEMO: &str = "RES_BINDING_MEMO";
/// `LRU_HASH`: [`super::VerdictKey`] -> u8. Flows not allowed that were already
/// reported, so that one connection attempt is one event however many packets it
/// sends (a TCP handshake's retransmissions, an audited connection's every segment).
/// Not pinned, like the cache: forgetting it only means a flow is reported again.
pub const REPORTED: &str = "RES_REPORTED";
/// `HASH`: [`super::InterfaceKey`] -> u8. The interfaces each policy lets its workloads
/// bind sockets to, per generation slot.
pub const INTERFACES: &str = "RES_INTERFACES";
/// `ARRAY` of one [`super::KernelLayout`]: where the programs read the kernel's
/// socket flags and sysctls, written by the agent at load. Not pinned: each agent
/// writes its own.
pub const LAYOUT: &str = "RES_LAYOUT";
/// `LPM_TRIE`: [`super::LocalAddrKey`] -> u8. The addresses and local routes of the
/// network namespaces the agent watches. Not pinned: a new agent learns them again.
pub const LOCAL_ADDRS: &str = "RES_LOCAL_ADDRS";
/// `RINGBUF` of [`super::NetnsAsk`]: namespaces a program met with a source it could
/// not vouch for, for the agent to learn their addresses (it wakes on each).
pub const NETNS_ASKS: &str = "RES_NETNS_ASKS";
/// IPv4 lookup tables: chunks of both generation slots (`table.rs`).
pub const TABLE_V4: &str = "RES_TABLE_V4";
/// Per slot and policy id: its first-level chunk + 1, or 0 (`table.rs`).
pub const TABLE_ROOTS: &str = "RES_TABLE_ROOTS";
/// `ARRAY` of one u32: the policy epoch the lookup tables were written for. The
/// programs read the tables only while it equals the epoch they judge by ([`ACTIVE`]):
/// the agent writes it before each change of the epoch it makes, so an agent that does
/// not know the tables (an older one, after a downgrade) changes the epoch alone, and
/// the tables it never rewrote go unread until an agent that knows them writes again.
pub const TABLE_EPOCH: &str = "RES_TABLE_EPOCH";
/// IPv6 lookup tables: chunks of both generation slots (`table.rs`).
pub const TABLE_V6: &str = "RES_TABLE_V6";
/// The IPv6 tables' roots, as [`TABLE_ROOTS`] for IPv4.
pub const TABLE_ROOTS_V6: &str = "RES_TABLE_ROOTS_V6";
