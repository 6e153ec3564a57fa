//! Generations: how one policy version replaces another without a window.
//!
//! Rule keys, port rules and bindings carry a generation slot (0 or 1). The agent
//! writes a new version into the slot not in use, then advances the epoch in
//! [`maps::ACTIVE`](crate::maps::ACTIVE); the programs read the epoch once per packet
//! or call, so each is judged wholly by one version.

/// Generation slots: a reload writes the new policy into the slot not in use, advances
/// the epoch in [`maps::ACTIVE`](crate::maps::ACTIVE) by one (flipping the slot),
/// waits for programs still running on the old slot, then clears it. Each packet reads
/// the epoch once, so it is judged wholly by one version.
pub const GENERATION_SLOTS: u32 = 2;

/// The generation slot an [`maps::ACTIVE`](crate::maps::ACTIVE) value selects. The
/// value is an epoch: a reload adds one (flipping the slot), binding a late cgroup adds
/// two (same slot), and every change gives cached verdicts
/// ([`VerdictKey::epoch`](crate::VerdictKey::epoch)) a new key space.
#[inline(always)]
pub const fn slot_of(epoch: u32) -> u32 {
    epoch & 1
}
