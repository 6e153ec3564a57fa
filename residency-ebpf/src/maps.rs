//! The programs' maps, and the two ways they are read everywhere: the policy epoch
//! ([`epoch`]) and the per-CPU counters ([`bump`]).
//!
//! Names, sizes and value layouts come from `residency-common`, so the agent and the
//! kernel agree on them by construction.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use residency_common::{
    BINDING_MEMO_SLOTS, Binding, BindingKey, BindingMemo, COUNTER_SLOTS, CacheSlot,
    DEFAULT_RULE_CAPACITY, EVENTS_RING_BYTES, GENERATION_SLOTS, InterfaceKey, KernelLayout,
    LOCAL_ADDR_CAPACITY, LocalAddrKey, MAX_BINDINGS, MAX_INTERFACES, NETNS_ASK_RING_BYTES,
    PORT_RULE_SLOTS, PortRule, REPORTED_FLOWS, RateBucket, RuleKeyV4, RuleKeyV6, RuleValue,
    STAT_SLOTS, Settings, TABLE_ROOTS_LEN, TableChunk, VERDICT_CACHE_SLOTS, VerdictKey,
};

/// `{cgroup id, generation slot}` -> policy binding, filled by the agent for every
/// configured cgroup; room for both slots during a reload.
#[map(name = "RES_BINDINGS")]
pub static BINDINGS: HashMap<BindingKey, Binding> =
    HashMap::with_max_entries(MAX_BINDINGS * GENERATION_SLOTS, 0);

/// The binding each recent cgroup's lookup found, per CPU and direct-mapped
/// (`binding.rs`).
#[map(name = "RES_BINDING_MEMO")]
pub static BINDING_MEMO: PerCpuArray<BindingMemo> =
    PerCpuArray::with_max_entries(BINDING_MEMO_SLOTS, 0);

/// `{policy scope, interface name}`: the interfaces a policy lets its workloads bind
/// sockets to (`SO_BINDTODEVICE`), filled by the agent per generation slot.
#[map(name = "RES_INTERFACES")]
pub static INTERFACES: HashMap<InterfaceKey, u8> =
    HashMap::with_max_entries(MAX_INTERFACES * GENERATION_SLOTS, 0);

/// The epoch packets are judged by; its low bit is the generation slot
/// (`residency_common::slot_of`).
#[map(name = "RES_ACTIVE")]
pub static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// The policy epoch: read once, so that every lookup of one packet or call uses one
/// version even when a reload flips it meanwhile.
#[inline(always)]
pub fn epoch() -> u32 {
    ACTIVE.get(0).copied().unwrap_or(0)
}

/// `{policy, IPv4 prefix}` -> allow/deny. `LpmTrie` sets `BPF_F_NO_PREALLOC`, which the
/// kernel requires for LPM tries: entries are allocated as they are inserted.
#[map(name = "RES_RULES_V4")]
pub static RULES_V4: LpmTrie<RuleKeyV4, RuleValue> =
    LpmTrie::with_max_entries(DEFAULT_RULE_CAPACITY, 0);

/// `{policy, IPv6 prefix}` -> allow/deny.
#[map(name = "RES_RULES_V6")]
pub static RULES_V6: LpmTrie<RuleKeyV6, RuleValue> =
    LpmTrie::with_max_entries(DEFAULT_RULE_CAPACITY, 0);

/// The IPv4 lookup tables' chunks, both generation slots (`table.rs`); sized by the
/// agent (`[agent] ipv4_table_chunks`).
#[map(name = "RES_TABLE_V4")]
pub static TABLE_V4: Array<TableChunk> = Array::with_max_entries(1, 0);

/// Per generation slot and policy id: the policy's first-level chunk + 1 (0: no tables).
#[map(name = "RES_TABLE_ROOTS")]
pub static TABLE_ROOTS: Array<u32> = Array::with_max_entries(TABLE_ROOTS_LEN, 0);

/// The epoch the lookup tables were written for (`residency_common::maps::TABLE_EPOCH`):
/// they are read only while it is the epoch judged by.
#[map(name = "RES_TABLE_EPOCH")]
pub static TABLE_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// The IPv6 lookup tables' chunks, as [`TABLE_V4`]'s (`[agent] ipv6_table_chunks`).
#[map(name = "RES_TABLE_V6")]
pub static TABLE_V6: Array<TableChunk> = Array::with_max_entries(1, 0);

/// The IPv6 tables' roots, as [`TABLE_ROOTS`].
#[map(name = "RES_TABLE_ROOTS_V6")]
pub static TABLE_ROOTS_V6: Array<u32> = Array::with_max_entries(TABLE_ROOTS_LEN, 0);

/// Protocol/port rules of the rule entries (`RuleValue::ports_start`).
#[map(name = "RES_PORTS")]
pub static PORTS: Array<PortRule> = Array::with_max_entries(PORT_RULE_SLOTS, 0);

/// Verdicts already computed (`cache.rs`), per CPU and direct-mapped: no locks, no
/// shared cache lines, and a lookup the verifier inlines.
#[map(name = "RES_VERDICTS")]
pub static VERDICTS: PerCpuArray<CacheSlot> = PerCpuArray::with_max_entries(VERDICT_CACHE_SLOTS, 0);

/// Per-CPU packet counters by policy, verdict and family: exact, never sampled.
#[map(name = "RES_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Per-CPU health counters (`residency_common::Stat`: lost and rate-limited events,
/// parse errors, missing bindings, trie lookups, refused socket calls).
#[map(name = "RES_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_SLOTS, 0);

/// Blocked and audited packets and refused calls, one `residency_common::Event` each.
#[map(name = "RES_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Settings from the agent (event rate limit, verdict cache switch).
#[map(name = "RES_SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Flows not allowed that were reported already (`report::first_report`): one event
/// per connection attempt, not per packet. Shared by all CPUs, since a flow's packets
/// and its socket call need not run on one.
#[map(name = "RES_REPORTED")]
pub static REPORTED: LruHashMap<VerdictKey, u8> = LruHashMap::with_max_entries(REPORTED_FLOWS, 0);

/// Where the kernel keeps the socket flags and sysctls the source check reads
/// (`local.rs`), written by the agent from the kernel's BTF.
#[map(name = "RES_LAYOUT")]
pub static LAYOUT: Array<KernelLayout> = Array::with_max_entries(1, 0);

/// `{netns cookie, address prefix}`: each watched namespace's own addresses, filled by
/// the agent from rtnetlink.
#[map(name = "RES_LOCAL_ADDRS")]
pub static LOCAL_ADDRS: LpmTrie<LocalAddrKey, u8> =
    LpmTrie::with_max_entries(LOCAL_ADDR_CAPACITY, 0);

/// Namespaces whose addresses the agent should learn, with a process inside each.
#[map(name = "RES_NETNS_ASKS")]
pub static NETNS_ASKS: RingBuf = RingBuf::with_byte_size(NETNS_ASK_RING_BYTES, 0);

/// Per-CPU token bucket of the event rate limiter.
#[map(name = "RES_RATE")]
pub static RATE: PerCpuArray<RateBucket> = PerCpuArray::with_max_entries(1, 0);

/// Adds one to a per-CPU counter, atomically: a program in a softirq can nest inside
/// one in process context on the same CPU, and neither may lose the other's count.
#[inline(always)]
pub fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: an aligned per-CPU u64 slot; BPF_ATOMIC add (its result unused, as
        // the base instruction set requires).
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                slot, 1,
            );
        }
    }
}

/// [`bump`], telling whether this CPU's counter was zero before: the first occurrence,
/// worth a log line. (The read is not atomic with the add; a nested occurrence may
/// log twice or not at all, which only a log line depends on.)
#[inline(always)]
pub fn bump_first(map: &PerCpuArray<u64>, index: u32) -> bool {
    // SAFETY: a read of a per-CPU u64 slot.
    let first = map
        .get_ptr(index)
        .is_some_and(|slot| unsafe { core::ptr::read_volatile(slot) } == 0);
    bump(map, index);
    first
}
