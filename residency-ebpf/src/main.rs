//! The residency kernel program: a cgroup/skb egress filter.
//!
//! For every packet a socket in an attached cgroup sends, the program
//! 1. finds the policy bound to the socket's cgroup, or to its nearest bound ancestor
//!    (`binding`);
//! 2. reads the destination from the packet (`packet`);
//! 3. looks up `{policy, destination}` in the policy's LPM trie: the most specific
//!    matching prefix decides (allow or deny), and no match means not allowed;
//! 4. counts the verdict per policy, family and verdict, and puts an event on the ring
//!    buffer for every packet that is not allowed;
//! 5. drops the packet in enforce mode, passes it in audit mode.
//!
//! Errors fail closed: a packet the program cannot judge is dropped unless its policy is
//! known to be in audit mode.
#![no_std]
#![no_main]

mod maps;
mod packet;

use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_boot_ns, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use aya_log_ebpf::error;
use residency_common::{
    ACTION_ALLOW, Binding, BindingKey, EVENT_AUDIT, EVENT_BLOCK, Event, MAX_CGROUP_DEPTH,
    MODE_AUDIT, POLICY_KEY_BITS, RULE_ERROR, RULE_NONE, RuleKeyV4, RuleKeyV6, SOURCE_SKB, Stat,
    TOKENS_PER_EVENT, Verdict, counter_index, scope,
};

use aya_ebpf::maps::lpm_trie::Key;
use maps::{ACTIVE, BINDINGS, COUNTERS, EVENTS, RATE, RULES_V4, RULES_V6, SETTINGS, STATS, bump};
use packet::Packet;

/// cgroup/skb return values.
const PASS: i32 = 1;
const DROP: i32 = 0;

#[cgroup_skb(egress)]
pub fn residency_egress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the context pointer is the skb the kernel handed us.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    // Read once: every lookup below uses this slot, so a reload flipping it meanwhile
    // cannot judge this packet half by the old policy and half by the new.
    let slot = ACTIVE.get(0).copied().unwrap_or(0);
    let Some(binding) = find_binding(&ctx, cgroup_id, slot) else {
        // Attached, but no policy found for this socket's cgroup: the agent's maps and
        // attachments disagree. Fail closed.
        if bump(&STATS, Stat::NoBinding as u32) == 0 {
            error!(
                &ctx,
                "residency: no policy binding for cgroup {}; dropping", cgroup_id
            );
        }
        return DROP;
    };
    match packet::parse(&ctx) {
        Ok(p) => judge(&ctx, cgroup_id, slot, binding, &p),
        Err(_) => {
            if bump(&STATS, Stat::ParseErrors as u32) == 0 {
                error!(
                    &ctx,
                    "residency: unparsable egress packet (cgroup {})", cgroup_id
                );
            }
            let audit = binding.mode == MODE_AUDIT;
            // Report what we can: the packet's own addresses are unknown.
            let unknown = Packet {
                family: 0,
                protocol: 0,
                src: [0; 16],
                dst: [0; 16],
                src_port: 0,
                dst_port: 0,
                icmp_type: 0,
                icmp_code: 0,
            };
            emit(&ctx, cgroup_id, binding, &unknown, RULE_ERROR, audit);
            if audit { PASS } else { DROP }
        }
    }
}

/// The binding of the socket's cgroup, else of its nearest bound ancestor.
///
/// The agent attaches the program only to the topmost configured cgroups, so every
/// packet runs through it once; a configured cgroup below an attached one is found
/// here by climbing from the root down and keeping the deepest binding seen.
#[inline(always)]
fn find_binding(ctx: &SkBuffContext, cgroup_id: u64, slot: u32) -> Option<Binding> {
    let key = |cgroup_id| BindingKey {
        cgroup_id,
        slot,
        _pad: 0,
    };
    // SAFETY: lookups in a hash map of plain values.
    if let Some(b) = unsafe { BINDINGS.get(key(cgroup_id)) } {
        return Some(*b);
    }
    let mut found = None;
    for level in 0..MAX_CGROUP_DEPTH {
        // SAFETY: helper call on the program's own skb.
        let id = unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level as i32) };
        if id == 0 || id == cgroup_id {
            break;
        }
        if let Some(b) = unsafe { BINDINGS.get(key(id)) } {
            found = Some(*b);
        }
    }
    found
}

#[inline(always)]
fn judge(ctx: &SkBuffContext, cgroup_id: u64, slot: u32, binding: Binding, p: &Packet) -> i32 {
    let policy = scope(slot, binding.policy);
    let hit = match p.dst_v4() {
        Some(addr) => RULES_V4.get(Key::new(POLICY_KEY_BITS + 32, RuleKeyV4 { policy, addr })),
        None => RULES_V6.get(Key::new(
            POLICY_KEY_BITS + 128,
            RuleKeyV6 {
                policy,
                addr: p.dst,
            },
        )),
    };
    let family = if p.family == 4 { 0 } else { 1 };
    let (allowed, rule) = match hit {
        Some(v) => (v.action == ACTION_ALLOW, v.rule),
        None => (false, RULE_NONE),
    };
    let audit = binding.mode == MODE_AUDIT;
    let verdict = match (allowed, audit) {
        (true, _) => Verdict::Allowed,
        (false, true) => Verdict::Audited,
        (false, false) => Verdict::Blocked,
    };
    bump(&COUNTERS, counter_index(binding.policy, verdict, family));
    if allowed {
        return PASS;
    }
    emit(ctx, cgroup_id, binding, p, rule, audit);
    if audit { PASS } else { DROP }
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

/// Puts one event on the ring buffer; a full buffer or an exhausted rate limit is
/// counted, never waited on.
#[inline(always)]
fn emit(ctx: &SkBuffContext, cgroup_id: u64, binding: Binding, p: &Packet, rule: u32, audit: bool) {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if !take_token(now) {
        bump(&STATS, Stat::EventsRateLimited as u32);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump(&STATS, Stat::EventsLost as u32);
        return;
    };
    entry.write(Event {
        timestamp_ns: now,
        cgroup_id,
        policy: binding.policy,
        rule,
        uid: ctx.get_socket_uid(),
        pid: 0,
        dst_port: p.dst_port,
        src_port: p.src_port,
        kind: if audit { EVENT_AUDIT } else { EVENT_BLOCK },
        family: p.family,
        protocol: p.protocol,
        source: SOURCE_SKB,
        icmp_type: p.icmp_type,
        icmp_code: p.icmp_code,
        _pad: [0; 2],
        count: 1,
        dst_addr: p.dst,
        src_addr: p.src,
        comm: [0; 16],
    });
    entry.submit(0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
