//! Counters: exact per-CPU packet counts by policy, verdict and family
//! ([`maps::COUNTERS`](crate::maps::COUNTERS)), and the programs' health counters
//! ([`maps::STATS`](crate::maps::STATS)).

use crate::MAX_POLICIES;

/// Verdicts counted per policy and family.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Allowed = 0,
    Blocked = 1,
    Audited = 2,
}

impl Verdict {
    /// Every verdict, in counter order.
    pub const ALL: [Verdict; 3] = [Verdict::Allowed, Verdict::Blocked, Verdict::Audited];

    /// The name in metrics labels, status and logs (`verdict="blocked"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Blocked => "blocked",
            Verdict::Audited => "audited",
        }
    }
}

/// The address family a packet is counted under.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4 = 0,
    Ipv6 = 1,
}

impl Family {
    /// Both families, in counter order.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The family's index in [`counter_index`].
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The name in metrics labels and logs (`family="ipv6"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// Number of verdicts in [`Verdict`].
pub const VERDICTS: u32 = Verdict::ALL.len() as u32;
/// Address families counted ([`Family`]): index 0 is IPv4, 1 is IPv6.
pub const FAMILIES: u32 = Family::ALL.len() as u32;
/// Size of [`maps::COUNTERS`](crate::maps::COUNTERS).
pub const COUNTER_SLOTS: u32 = MAX_POLICIES * VERDICTS * FAMILIES;

/// Index into [`maps::COUNTERS`](crate::maps::COUNTERS) for one policy, verdict and
/// family (0 = IPv4, 1 = IPv6).
#[inline(always)]
pub const fn counter_index(policy: u32, verdict: Verdict, family: u32) -> u32 {
    (policy * VERDICTS + verdict as u32) * FAMILIES + family
}

/// Program health counters, indexes into [`maps::STATS`](crate::maps::STATS).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// An event could not be reserved on the full ring buffer (the packet was still
    /// judged and counted).
    EventsLost = 0,
    /// The program could not parse a packet and applied the error verdict.
    ParseErrors = 1,
    /// No bound cgroup was found for a packet or a packet socket creation (refused:
    /// fail closed).
    NoBinding = 2,
    /// An event was not emitted because its CPU's event rate limit was reached (the
    /// packet was still judged and counted).
    EventsRateLimited = 3,
    /// Packets judged from the policy (its IPv4 lookup tables, else the rule tries):
    /// not answered by
    /// [`maps::VERDICTS`](crate::maps::VERDICTS) (a flow's first packet, or every
    /// packet with the cache off). Counted on the slow path so that the hot path
    /// writes nothing but the packet counter.
    TrieLookups = 4,
    /// `connect()`/`sendmsg()` calls and packet socket creations refused at the socket
    /// layer (audit mode lets calls through without counting them here).
    SocketDenials = 5,
}

/// Size of [`maps::STATS`](crate::maps::STATS).
pub const STAT_SLOTS: u32 = 6;
