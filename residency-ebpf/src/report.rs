//! What the programs tell the agent: every verdict is counted per policy, verdict and
//! family; every call that is not allowed, and the first packet of every flow that is
//! not allowed, is put on the ring buffer as an event, within the per-CPU event rate
//! limit; and a state the agent should have prevented (no binding) is counted and
//! logged once per CPU.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns},
    },
};
use aya_log_ebpf::error;
use residency_common::{Event, Stat, TOKENS_PER_EVENT, Verdict, VerdictKey, counter_index};

use crate::maps::{COUNTERS, EVENTS, RATE, REPORTED, SETTINGS, STATS, bump, bump_first};

/// `BPF_NOEXIST`: the insert fails when the key is there.
const NOEXIST: u64 = 1;

/// True the first time a flow that is not allowed is reported (and remembers it), false
/// for its later packets: one connection attempt is one event, however many packets it
/// sends (SYN retransmissions; every segment of an audited connection). The counters
/// still count every packet. A full map forgets its least recent flow, which is then
/// at worst reported again, never silenced for good; a new policy epoch is a new key.
///
/// Looked up first: an LRU insert takes a node off the free list before it checks for
/// the key, which would cost a refused flood's every packet far more than a lookup.
#[inline(always)]
pub fn first_report(key: &VerdictKey) -> bool {
    // SAFETY: a lookup in a hash map of plain values; only its presence is used.
    if unsafe { REPORTED.get(key) }.is_some() {
        return false;
    }
    REPORTED.insert(key, 0, NOEXIST).is_ok()
}

/// Remembers a flow that a socket call reported, so that its packets are not reported
/// again.
#[inline(always)]
pub fn reported(key: &VerdictKey) {
    let _ = REPORTED.insert(key, 0, 0);
}

/// Counts a verdict of `policy` for an address family (4 or 6).
#[inline(always)]
pub fn count(policy: u32, verdict: Verdict, family: u8) {
    bump(
        &COUNTERS,
        counter_index(policy, verdict, u32::from(family != 4)),
    );
}

/// Takes one token from this CPU's event bucket; false when the rate limit is reached.
///
/// A block storm must not flood the ring buffer, the agent or the journal: events are
/// limited per CPU (no shared state, no atomics), while the per-packet counters stay
/// exact. Tokens refill at `events_per_second`, capped at `events_burst`.
#[inline(always)]
fn take_token(now: u64) -> bool {
    let Some(settings) = SETTINGS.get(0) else {
        return true;
    };
    let rate = settings.events_per_second as u64;
    if rate == 0 {
        return true;
    }
    let Some(bucket) = RATE.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: a per-CPU slot, touched only by programs running on this CPU.
    let bucket = unsafe { &mut *bucket };
    let cap = (settings.events_burst as u64).max(1) * TOKENS_PER_EVENT;
    // Clamp the idle time so `elapsed * rate` cannot overflow (10 s refills any bucket).
    let elapsed = now.saturating_sub(bucket.last_ns).min(10_000_000_000);
    bucket.last_ns = now;
    let tokens = (bucket.tokens + elapsed * rate).min(cap);
    if tokens < TOKENS_PER_EVENT {
        bucket.tokens = tokens;
        return false;
    }
    bucket.tokens = tokens - TOKENS_PER_EVENT;
    true
}

/// The current time for [`Event::timestamp_ns`].
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Puts one event on the ring buffer; a full buffer or an exhausted rate limit is
/// counted, never waited on. `fill` writes the event's fields.
#[inline(always)]
pub fn emit(fill: impl FnOnce(&mut Event)) {
    // The bucket runs on the coarse clock (a few ns, tick resolution): a blocked flood
    // pays for it on every packet, while the precise clock is read per event only.
    // SAFETY: helper without arguments.
    emit_at(unsafe { bpf_ktime_get_coarse_ns() }, fill)
}

/// [`emit`] for programs the kernel does not give the coarse clock (cgroup sockopt):
/// the bucket runs on the precise one, which a rare socket option can afford.
#[inline(always)]
pub fn emit_precise(fill: impl FnOnce(&mut Event)) {
    emit_at(now(), fill)
}

/// [`emit`] with the rate limiter's clock read by the caller.
#[inline(always)]
fn emit_at(clock: u64, fill: impl FnOnce(&mut Event)) {
    if !take_token(clock) {
        bump(&STATS, Stat::EventsRateLimited as u32);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump(&STATS, Stat::EventsLost as u32);
        return;
    };
    let mut e = Event {
        timestamp_ns: now(),
        cgroup_id: 0,
        policy: u32::MAX,
        rule: 0,
        uid: 0,
        pid: 0,
        dst_port: 0,
        src_port: 0,
        kind: 0,
        family: 0,
        protocol: 0,
        source: 0,
        icmp_type: 0,
        icmp_code: 0,
        _pad: [0; 2],
        count: 1,
        dst_addr: [0; 16],
        src_addr: [0; 16],
        comm: [0; 16],
    };
    fill(&mut e);
    entry.write(e);
    entry.submit(0);
}

/// Fills the calling process's identity into an event (socket calls run in the
/// caller's context; packets do not, so their events carry the socket's uid only).
#[inline(always)]
pub fn caller(e: &mut Event) {
    e.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    e.uid = bpf_get_current_uid_gid() as u32;
    e.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// Attached, but no policy found for this cgroup: the agent's maps and attachments
/// disagree. Counted and logged; the caller fails closed.
#[inline(always)]
pub fn no_binding<C: EbpfContext>(ctx: &C, cgroup_id: u64) {
    if bump_first(&STATS, Stat::NoBinding as u32) {
        error!(
            ctx,
            "residency: no policy binding for cgroup {}; refusing", cgroup_id
        );
    }
}
