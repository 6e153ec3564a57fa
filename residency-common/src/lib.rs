//! Types and constants shared by the kernel programs (`residency-ebpf`) and the agent.
//!
//! Everything that crosses the kernel/userspace boundary is defined here once: map
//! names and sizes, the layout of map keys and values, the event the kernel puts on the
//! ring buffer, and the numbers both sides give a meaning (protocols, rule numbers,
//! hooks, modes). Every map and event type is `#[repr(C)]`, `Copy`, and has no implicit
//! padding (explicit `_pad` fields and a size assertion beside each type), because
//! uninitialised padding bytes inside a map key make lookups miss and leak kernel stack
//! into events.
//!
//! Each concern is one module; the names userspace prints and parses live in its
//! `user.rs`, compiled with the `user` feature only, so the kernel object carries no
//! strings it does not use. Every item of the map and event layout is re-exported at
//! the crate root.
#![no_std]

pub mod binding;
pub mod cache;
pub mod counters;
pub mod event;
pub mod generation;
pub mod local;
pub mod maps;
#[cfg(feature = "user")]
mod names;
#[cfg(feature = "user")]
mod pod;
pub mod programs;
pub mod protocol;
pub mod rule;
pub mod settings;
pub mod sockopt;
pub mod source;
#[cfg(feature = "user")]
pub mod special;
pub mod table;

pub use binding::{
    BINDING_ALLOW_PACKET_SOCKETS, BINDING_ALLOW_RAW_SOCKETS, BINDING_JUDGE_INBOUND,
    BINDING_MEMO_SLOTS, BINDING_NAMED_INTERFACES, Binding, BindingKey, BindingMemo, InterfaceKey,
    MAX_BINDINGS, MAX_CGROUP_DEPTH, MAX_INTERFACES, MEMO_FOUND, MEMO_NONE, MODE_AUDIT,
    MODE_ENFORCE,
};
pub use cache::{CacheSlot, REPORTED_FLOWS, VERDICT_CACHE_SLOTS, VerdictKey, VerdictValue};
pub use counters::{
    COUNTER_SLOTS, FAMILIES, Family, STAT_SLOTS, Stat, VERDICTS, Verdict, counter_index,
};
pub use event::{EVENT_AUDIT, EVENT_BLOCK, EVENTS_RING_BYTES, Event};
pub use generation::{GENERATION_SLOTS, slot_of};
pub use local::{
    KernelLayout, LAYOUT_KNOWN, LOCAL_ADDR_CAPACITY, LocalAddrKey, NETNS_ASK_RING_BYTES, NetnsAsk,
};
#[cfg(feature = "user")]
pub use names::UnknownName;
pub use programs::{
    PROGRAM_BIND4, PROGRAM_BIND6, PROGRAM_CONNECT4, PROGRAM_CONNECT6, PROGRAM_EGRESS,
    PROGRAM_INGRESS, PROGRAM_SENDMSG4, PROGRAM_SENDMSG6, PROGRAM_SETSOCKOPT, PROGRAM_SOCK_CREATE,
    PROGRAM_SOCKET_CREATE,
};
pub use rule::{
    ACTION_ALLOW, ACTION_DENY, ACTION_NONE, DEFAULT_RULE_CAPACITY, MAX_POLICIES,
    MAX_PORT_RULES_PER_PREFIX, POLICY_KEY_BITS, PORT_RULE_SLOTS, PortRule, RULE_DEVICE_BINDING,
    RULE_ERROR, RULE_NONE, RULE_RAW_SOCKET, RULE_SPECIAL_BASE, RULE_SPOOFED_SOURCE, RuleKeyV4,
    RuleKeyV6, RuleValue, scope,
};
pub use settings::{PROBE_MARK, RateBucket, SETTINGS_NO_VERDICT_CACHE, Settings, TOKENS_PER_EVENT};
pub use source::{
    SOURCE_BIND, SOURCE_CONNECT, SOURCE_INBOUND, SOURCE_SENDMSG, SOURCE_SKB, SOURCE_SOCKET,
    SOURCE_SOCKOPT,
};
pub use table::{
    DEFAULT_TABLE_CHUNKS, TABLE_ASK_TRIE, TABLE_CHUNK, TABLE_CHUNK_LEN, TABLE_LEVELS_V4,
    TABLE_LEVELS_V6, TABLE_ROOTS_LEN, TableChunk, TableEntry,
};
