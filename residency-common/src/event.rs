//! The event: one blocked or audited packet or call, as the kernel puts it on the ring
//! buffer ([`maps::EVENTS`](crate::maps::EVENTS)).

/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;

/// [`Event::kind`]: a packet was dropped (or a call refused).
pub const EVENT_BLOCK: u8 = 1;
/// [`Event::kind`]: a packet that enforce mode would drop passed (audit mode).
pub const EVENT_AUDIT: u8 = 2;

/// One blocked or audited packet or call, as put on
/// [`maps::EVENTS`](crate::maps::EVENTS) by the kernel programs.
///
/// Designed for every sink: the journal's structured fields, syslog, JSON lines and
/// metrics labels are all derived from these fields. Addresses are in network byte
/// order; an IPv4 address takes the first 4 bytes of its 16-byte field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_boot_ns()` when the packet was judged.
    pub timestamp_ns: u64,
    /// Cgroup v2 id of the sending socket (socket calls: of the calling task).
    pub cgroup_id: u64,
    /// Policy id that judged the packet ([`Binding::policy`](crate::Binding::policy)),
    /// or `u32::MAX` when none was found.
    pub policy: u32,
    /// Rule number of what decided ([`Rule`](crate::rule::Rule)): the index of the
    /// deciding entry, a special destination's number, [`RULE_NONE`](crate::RULE_NONE)
    /// (default deny) or [`RULE_ERROR`](crate::RULE_ERROR).
    pub rule: u32,
    /// Owner uid of the sending socket (`bpf_get_socket_uid`); for socket calls, the
    /// calling task's uid.
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
    /// IP protocol number ([`Protocol`](crate::protocol::Protocol): 6 tcp, 17 udp,
    /// 1 icmp, 58 icmpv6, ...); for [`SOURCE_SOCKET`](crate::SOURCE_SOCKET) the socket
    /// family ([`SocketFamily`](crate::source::SocketFamily)).
    pub protocol: u8,
    /// Which program produced the event ([`Source`](crate::source::Source):
    /// [`SOURCE_SKB`](crate::SOURCE_SKB), ...).
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

const _: () = assert!(core::mem::size_of::<Event>() == 96);
