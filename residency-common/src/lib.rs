//! Types and constants shared by the kernel program (`residency-ebpf`) and the agent.
//!
//! Everything that crosses the kernel/userspace boundary is defined here once: map
//! names and sizes, the layout of map keys and values, and the event the kernel puts on
//! the ring buffer. Every type is `#[repr(C)]`, `Copy`, and has no implicit padding
//! (explicit `_pad` fields and size assertions below), because uninitialised padding
//! bytes inside a map key make lookups miss and leak kernel stack into events.
#![no_std]

/// Map names, as they appear in the object file and under the pin directory.
pub mod maps {
    /// `HASH`: [`super::BindingKey`] -> [`super::Binding`].
    pub const BINDINGS: &str = "RES_BINDINGS";
    /// `ARRAY` of one u32: the generation slot (0 or 1) every packet is judged by.
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
}

/// Name of the cgroup/skb egress program in the object file.
pub const PROGRAM_EGRESS: &str = "residency_egress";
/// cgroup/connect4: a forbidden `connect()` on an IPv4 socket fails with EPERM.
pub const PROGRAM_CONNECT4: &str = "residency_connect4";
/// cgroup/connect6: the same for IPv6 sockets (IPv4-mapped destinations judged as IPv4).
pub const PROGRAM_CONNECT6: &str = "residency_connect6";
/// cgroup/sendmsg4: a forbidden `sendto()`/`sendmsg()` on an unconnected IPv4 socket.
pub const PROGRAM_SENDMSG4: &str = "residency_sendmsg4";
/// cgroup/sendmsg6: the same for IPv6 sockets.
pub const PROGRAM_SENDMSG6: &str = "residency_sendmsg6";
/// lsm_cgroup/socket_create: packet sockets (AF_PACKET) skip the IP egress hook, so
/// enforce policies deny creating them.
pub const PROGRAM_SOCKET_CREATE: &str = "residency_socket_create";

/// Port rules one rule entry may carry, its inherited ones included (the kernel walks
/// them in a bounded loop).
pub const MAX_PORT_RULES_PER_PREFIX: u32 = 16;
/// Capacity of [`maps::PORTS`]: half per generation slot.
pub const PORT_RULE_SLOTS: u32 = 1 << 16;
/// Slots of [`maps::VERDICTS`] on each CPU (a power of two).
pub const VERDICT_CACHE_SLOTS: u32 = 1 << 12;

/// Highest number of policies one agent can load (policy ids are `0..MAX_POLICIES`).
pub const MAX_POLICIES: u32 = 1024;
/// Highest number of cgroups bound to a policy.
pub const MAX_BINDINGS: u32 = 16384;
/// Default capacity of each rule trie (IPv4 and IPv6); the agent may change it before
/// load. Tries are created with `BPF_F_NO_PREALLOC`, so unused capacity costs nothing.
pub const DEFAULT_RULE_CAPACITY: u32 = 1 << 20;
/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;
/// How many cgroup levels the program climbs to find the nearest bound ancestor.
pub const MAX_CGROUP_DEPTH: u32 = 32;

/// Generation slots: a reload writes the new policy into the slot not in use, flips
/// [`maps::ACTIVE`], waits for programs still running on the old slot, then clears it.
/// Each packet reads the slot once, so it is judged wholly by one version.
pub const GENERATION_SLOTS: u32 = 2;

/// The 32-bit scope that starts every rule key: the generation slot in the top byte,
/// the policy id below, big-endian (LPM tries compare keys bytewise).
#[inline(always)]
pub const fn scope(slot: u32, policy: u32) -> [u8; 4] {
    ((slot << 24) | policy).to_be_bytes()
}

/// Rule key prefix bits taken by the scope (see [`RuleKeyV4`]).
pub const POLICY_KEY_BITS: u32 = 32;

/// Enforcement mode of a policy ([`Binding::mode`]).
pub const MODE_ENFORCE: u8 = 1;
/// Audit mode: packets that enforce mode would drop pass and are reported.
pub const MODE_AUDIT: u8 = 2;

/// [`RuleValue::action`]: the prefix is allowed.
pub const ACTION_ALLOW: u32 = 1;
/// [`RuleValue::action`]: the prefix is denied (a carve-out inside a wider allow).
pub const ACTION_DENY: u32 = 2;

/// [`RuleValue::rule`] / [`Event::rule`] when no entry matched (default deny).
pub const RULE_NONE: u32 = u32::MAX;
/// [`Event::rule`] when the packet was dropped because the program could not judge it.
pub const RULE_ERROR: u32 = u32::MAX - 1;

/// [`Binding::flags`]: the policy lets its workloads create packet sockets (AF_PACKET).
pub const BINDING_ALLOW_PACKET_SOCKETS: u8 = 1;

/// The generation slot an [`maps::ACTIVE`] value selects. The value is an epoch: a
/// reload adds one (flipping the slot), binding a late cgroup adds two (same slot), and
/// every change gives cached verdicts ([`VerdictKey::epoch`]) a new key space.
#[inline(always)]
pub const fn slot_of(epoch: u32) -> u32 {
    epoch & 1
}

/// Key of [`maps::BINDINGS`]: a cgroup in one generation slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BindingKey {
    pub cgroup_id: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// A cgroup bound to a policy: value of [`maps::BINDINGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Policy id: the first 32 bits of every rule key of this policy.
    pub policy: u32,
    /// [`MODE_ENFORCE`] or [`MODE_AUDIT`].
    pub mode: u8,
    /// [`BINDING_ALLOW_PACKET_SOCKETS`].
    pub flags: u8,
    pub _pad: u16,
}

/// Data part of an IPv4 rule key. The trie key is `{ prefix_len: u32, data }` with
/// `prefix_len = 32 + cidr_len`: the policy id is matched exactly and the address by
/// its longest prefix, so one trie serves every policy.
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
    /// Index of the deciding entry in the policy's compiled rule list, so that an event
    /// can name the config entry that decided it.
    pub rule: u32,
    /// First of this entry's [`PortRule`]s in [`maps::PORTS`].
    pub ports_start: u32,
    /// Number of port rules (at most [`MAX_PORT_RULES_PER_PREFIX`]).
    pub ports_len: u32,
}

/// [`RuleValue::action`]: no default at this prefix; traffic no port rule matches is
/// not allowed.
pub const ACTION_NONE: u32 = 0;

/// One protocol/port rule of a prefix: value of [`maps::PORTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PortRule {
    /// First and last destination port (host byte order). `0..=65535` matches every
    /// port, including packets whose port is unknown.
    pub port_lo: u16,
    pub port_hi: u16,
    /// IP protocol number; every rule names one.
    pub protocol: u8,
    /// [`ACTION_ALLOW`] or [`ACTION_DENY`] (as u8).
    pub action: u8,
    pub _pad: u16,
    /// Index of the entry in the policy's compiled rule list.
    pub rule: u32,
}

/// Key of [`maps::VERDICTS`]: everything a verdict depends on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictKey {
    /// Cookie of the sending socket. A socket's cgroup is fixed when it is created, so
    /// the cookie stands for the cgroup (and the binding it finds) without the
    /// pointer chase to the cgroup's id on every packet.
    pub socket: u64,
    /// The [`maps::ACTIVE`] epoch the verdict was computed under.
    pub epoch: u32,
    /// Destination port, or 0 when unknown.
    pub dst_port: u16,
    pub protocol: u8,
    /// 4 or 6: the family the address is judged as (IPv4-mapped IPv6 is 4); bit 7 set
    /// when the port is known.
    pub family: u8,
    /// Destination as judged, network byte order; IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}

/// A cached verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictValue {
    pub policy: u32,
    pub rule: u32,
    /// The binding's mode.
    pub mode: u8,
    /// 1 when allowed.
    pub allowed: u8,
    pub _pad: u16,
}

/// One slot of the per-CPU verdict cache ([`maps::VERDICTS`]). `seq` is odd while the
/// slot is being written (a writer that finds it odd leaves the slot alone), and `tag`
/// binds value to key: a program interrupted on its CPU (a softirq sending a packet in
/// the middle of a process's send) never reads a half-written slot as valid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSlot {
    pub seq: u32,
    pub _pad: u32,
    pub key: VerdictKey,
    pub value: VerdictValue,
    /// A hash of `key` and `value` together: a slot torn by two writers (or read
    /// half-old, half-new by a preempted reader) fails it and reads as a miss.
    pub tag: u32,
}

/// Verdicts counted per policy and family.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed = 0,
    Blocked = 1,
    Audited = 2,
}

/// Number of verdicts in [`Verdict`].
pub const VERDICTS: u32 = 3;
/// Address families counted: index 0 is IPv4, 1 is IPv6.
pub const FAMILIES: u32 = 2;
/// Size of [`maps::COUNTERS`].
pub const COUNTER_SLOTS: u32 = MAX_POLICIES * VERDICTS * FAMILIES;

/// Index into [`maps::COUNTERS`] for one policy, verdict and family (0 = IPv4, 1 = IPv6).
#[inline(always)]
pub const fn counter_index(policy: u32, verdict: Verdict, family: u32) -> u32 {
    (policy * VERDICTS + verdict as u32) * FAMILIES + family
}

/// Program health counters, indexes into [`maps::STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// An event could not be reserved on the full ring buffer (the packet was still
    /// judged and counted).
    EventsLost = 0,
    /// The program could not parse a packet and applied the error verdict.
    ParseErrors = 1,
    /// No bound cgroup was found for a packet (dropped: fail closed).
    NoBinding = 2,
    /// An event was not emitted because its CPU's event rate limit was reached (the
    /// packet was still judged and counted).
    EventsRateLimited = 3,
    /// Packets judged from the rule tries: not answered by [`maps::VERDICTS`] (a flow's
    /// first packet, or every packet with the cache off). Counted on the slow path so
    /// that the hot path writes nothing but the packet counter.
    TrieLookups = 4,
    /// `connect()`/`sendmsg()` calls and packet socket creations refused at the socket
    /// layer (audit mode lets calls through without counting them here).
    SocketDenials = 5,
}

/// Size of [`maps::STATS`].
pub const STAT_SLOTS: u32 = 6;

/// Program settings the agent writes before attaching: value of [`maps::SETTINGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// Events each CPU may emit per second; 0 means unlimited.
    pub events_per_second: u32,
    /// Events each CPU may emit in a burst above that rate.
    pub events_burst: u32,
    /// [`SETTINGS_NO_VERDICT_CACHE`].
    pub flags: u32,
    pub _pad: u32,
}

/// [`Settings::flags`]: judge every packet from the trie (`[agent] verdict_cache = false`).
pub const SETTINGS_NO_VERDICT_CACHE: u32 = 1;

/// Per-CPU token bucket of the event rate limiter: value of [`maps::RATE`]. Tokens are
/// counted in nanosecond-scaled units (one event costs 10^9) so that refilling needs
/// no division on the packet path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateBucket {
    pub tokens: u64,
    pub last_ns: u64,
}

/// Cost of one event in [`RateBucket::tokens`] units.
pub const TOKENS_PER_EVENT: u64 = 1_000_000_000;

/// [`Event::kind`]: a packet was dropped.
pub const EVENT_BLOCK: u8 = 1;
/// [`Event::kind`]: a packet that enforce mode would drop passed (audit mode).
pub const EVENT_AUDIT: u8 = 2;

/// [`Event::source`]: the cgroup/skb egress program.
pub const SOURCE_SKB: u8 = 1;
/// [`Event::source`]: a `connect()` (cgroup/connect4 or connect6).
pub const SOURCE_CONNECT: u8 = 2;
/// [`Event::source`]: a `sendto()`/`sendmsg()` (cgroup/sendmsg4 or sendmsg6).
pub const SOURCE_SENDMSG: u8 = 3;
/// [`Event::source`]: creating a packet socket (lsm_cgroup/socket_create);
/// `protocol` holds the address family (17, AF_PACKET, or 44, AF_XDP).
pub const SOURCE_SOCKET: u8 = 4;

/// One blocked or audited packet, as put on [`maps::EVENTS`] by the kernel program.
///
/// Designed for every sink: the journal's structured fields, syslog, JSON lines and
/// metrics labels are all derived from these fields. Addresses are in network byte
/// order; an IPv4 address takes the first 4 bytes of its 16-byte field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_boot_ns()` when the packet was judged.
    pub timestamp_ns: u64,
    /// Cgroup v2 id of the sending socket.
    pub cgroup_id: u64,
    /// Policy id that judged the packet, or `u32::MAX` when none was found.
    pub policy: u32,
    /// Index of the deciding entry, [`RULE_NONE`] (default deny) or [`RULE_ERROR`].
    pub rule: u32,
    /// Owner uid of the sending socket (`bpf_get_socket_uid`).
    pub uid: u32,
    /// Process id where the kernel gives it (connect-time hooks); 0 otherwise.
    pub pid: u32,
    /// Destination port (host byte order), or 0.
    pub dst_port: u16,
    /// Source port (host byte order), or 0.
    pub src_port: u16,
    /// [`EVENT_BLOCK`] or [`EVENT_AUDIT`].
    pub kind: u8,
    /// 4 or 6.
    pub family: u8,
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...).
    pub protocol: u8,
    /// Which program produced the event ([`SOURCE_SKB`], ...).
    pub source: u8,
    /// ICMP type and code when `protocol` is ICMP or ICMPv6.
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: [u8; 2],
    /// Number of packets this event stands for (1 from the kernel; the agent
    /// aggregates repeats).
    pub count: u32,
    pub dst_addr: [u8; 16],
    pub src_addr: [u8; 16],
    /// Command name where the kernel gives it, NUL-padded.
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<Binding>() == 8);
const _: () = assert!(core::mem::size_of::<BindingKey>() == 16);
const _: () = assert!(MAX_POLICIES < (1 << 24));
const _: () = assert!(core::mem::size_of::<RuleKeyV4>() == 8);
const _: () = assert!(core::mem::size_of::<RuleKeyV6>() == 20);
const _: () = assert!(core::mem::size_of::<RuleValue>() == 16);
const _: () = assert!(core::mem::size_of::<PortRule>() == 12);
const _: () = assert!(core::mem::size_of::<VerdictKey>() == 32);
const _: () = assert!(core::mem::size_of::<VerdictValue>() == 12);
const _: () = assert!(core::mem::size_of::<CacheSlot>() == 56);
const _: () = assert!(core::mem::size_of::<Event>() == 96);
const _: () = assert!(core::mem::size_of::<Settings>() == 16);
const _: () = assert!(core::mem::size_of::<RateBucket>() == 16);

#[cfg(feature = "user")]
mod user {
    //! `aya::Pod` for the shared types: they hold no padding and every bit pattern is
    //! a valid value, which is what `Pod` promises.
    use super::*;

    unsafe impl aya::Pod for Binding {}
    unsafe impl aya::Pod for BindingKey {}
    unsafe impl aya::Pod for RuleKeyV4 {}
    unsafe impl aya::Pod for RuleKeyV6 {}
    unsafe impl aya::Pod for RuleValue {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for RateBucket {}
    unsafe impl aya::Pod for PortRule {}
    unsafe impl aya::Pod for VerdictKey {}
    unsafe impl aya::Pod for VerdictValue {}
    unsafe impl aya::Pod for CacheSlot {}
}
