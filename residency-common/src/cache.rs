//! The verdict cache's key, value and slot ([`maps::VERDICTS`](crate::maps::VERDICTS)):
//! a flow's packets after its first are judged without the trie.

/// Slots of [`maps::VERDICTS`](crate::maps::VERDICTS) on each CPU (a power of two).
pub const VERDICT_CACHE_SLOTS: u32 = 1 << 12;

/// Flows remembered in [`maps::REPORTED`](crate::maps::REPORTED), an LRU hash: when it
/// is full the least recently reported flow is forgotten, and at worst reported again.
pub const REPORTED_FLOWS: u32 = 1 << 14;

/// Key of [`maps::VERDICTS`](crate::maps::VERDICTS): everything a verdict depends on.
///
/// Also the key of [`maps::REPORTED`](crate::maps::REPORTED): a flow that is not allowed
/// is reported once per socket, destination, protocol and port under one policy epoch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictKey {
    /// Cookie of the sending socket. A socket's cgroup is fixed when it is created, so
    /// the cookie stands for the cgroup (and the binding it finds) without the
    /// pointer chase to the cgroup's id on every packet.
    pub socket: u64,
    /// The [`maps::ACTIVE`](crate::maps::ACTIVE) epoch the verdict was computed under.
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
    /// The cgroup whose binding judged: the sending socket's. A socket call whose
    /// caller is in the same cgroup has the same binding under the same epoch, so it
    /// takes a cached allowed verdict without looking its binding up.
    pub cgroup: u64,
    pub policy: u32,
    pub rule: u32,
    /// The binding's mode.
    pub mode: u8,
    /// 1 when allowed.
    pub allowed: u8,
    pub _pad: [u8; 6],
}

/// One slot of the per-CPU verdict cache ([`maps::VERDICTS`](crate::maps::VERDICTS)).
/// `seq` is odd while the slot is being written (a writer that finds it odd leaves the
/// slot alone), and `tag` binds value to key: a program interrupted on its CPU (a
/// softirq sending a packet in the middle of a process's send) never reads a
/// half-written slot as valid.
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
    pub _tail: u32,
}

const _: () = assert!(core::mem::size_of::<VerdictKey>() == 32);
const _: () = assert!(core::mem::size_of::<VerdictValue>() == 24);
const _: () = assert!(core::mem::size_of::<CacheSlot>() == 72);
