//! Settings the agent writes for the programs ([`maps::SETTINGS`](crate::maps::SETTINGS))
//! and the state of the event rate limiter ([`maps::RATE`](crate::maps::RATE)).

/// Program settings the agent writes before attaching: value of
/// [`maps::SETTINGS`](crate::maps::SETTINGS).
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

/// Per-CPU token bucket of the event rate limiter: value of
/// [`maps::RATE`](crate::maps::RATE). Tokens are counted in nanosecond-scaled units
/// (one event costs 10^9) so that refilling needs no division on the packet path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateBucket {
    pub tokens: u64,
    pub last_ns: u64,
}

/// Cost of one event in [`RateBucket::tokens`] units.
pub const TOKENS_PER_EVENT: u64 = 1_000_000_000;

const _: () = assert!(core::mem::size_of::<Settings>() == 16);
const _: () = assert!(core::mem::size_of::<RateBucket>() == 16);

/// `skb->mark` of the packets `verify` drives the live egress program with (through
/// `BPF_PROG_TEST_RUN`, whose own socket has type 0): the program returns its bare
/// decision for them, whatever the mode, and counts, caches and reports nothing.
pub const PROBE_MARK: u32 = 0x7265_7376;
