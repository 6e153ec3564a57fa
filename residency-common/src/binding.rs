//! Bindings: which policy judges a cgroup, in which mode.
//!
//! The agent binds every configured cgroup in the generation slot being written; the
//! programs find the binding of the sending socket's cgroup, or of its nearest bound
//! ancestor, climbing at most [`MAX_CGROUP_DEPTH`] levels.

#[cfg(feature = "user")]
mod user;

/// Highest number of cgroups bound to a policy.
pub const MAX_BINDINGS: u32 = 16384;
/// How many cgroup levels the program climbs to find the nearest bound ancestor.
pub const MAX_CGROUP_DEPTH: u32 = 32;

/// Enforcement mode of a policy ([`Binding::mode`]).
pub const MODE_ENFORCE: u8 = 1;
/// Audit mode: packets that enforce mode would drop pass and are reported.
pub const MODE_AUDIT: u8 = 2;

/// [`Binding::flags`]: the policy lets its workloads create packet sockets (AF_PACKET).
pub const BINDING_ALLOW_PACKET_SOCKETS: u8 = 1;
/// [`Binding::flags`]: the policy lets its workloads create raw IP sockets (`SOCK_RAW`
/// in AF_INET/AF_INET6, other than `IPPROTO_RAW`).
pub const BINDING_ALLOW_RAW_SOCKETS: u8 = 2;
/// [`Binding::flags`]: the policy judges inbound connection attempts (TCP SYNs) by
/// their source address, and refuses those it does not allow.
pub const BINDING_JUDGE_INBOUND: u8 = 4;
/// [`Binding::flags`]: the policy names the interfaces its workloads may bind sockets
/// to (`SO_BINDTODEVICE`), in [`maps::INTERFACES`](crate::maps::INTERFACES).
pub const BINDING_NAMED_INTERFACES: u8 = 8;

/// Interfaces named by every policy together, per generation slot.
pub const MAX_INTERFACES: u32 = 1024;

/// Key of [`maps::INTERFACES`](crate::maps::INTERFACES): an interface a policy lets its
/// workloads bind sockets to, by name as `SO_BINDTODEVICE` takes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceKey {
    /// [`scope`](crate::scope) of the policy: generation slot and policy id.
    pub scope: [u8; 4],
    /// The name, NUL-padded (`IFNAMSIZ` is 16 with the NUL, so 15 characters at most).
    pub name: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<InterfaceKey>() == 20);

/// A policy's mode, typed: [`Binding::mode`] holds [`Mode::value`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Drop what the policy does not allow.
    Enforce = MODE_ENFORCE,
    /// Pass everything; report what enforce mode would drop.
    Audit = MODE_AUDIT,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 2] = [Mode::Enforce, Mode::Audit];

    /// The value in [`Binding::mode`].
    #[inline(always)]
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// The mode a [`Binding::mode`] value stands for.
    #[inline(always)]
    pub const fn from_value(value: u8) -> Option<Mode> {
        match value {
            MODE_ENFORCE => Some(Mode::Enforce),
            MODE_AUDIT => Some(Mode::Audit),
            _ => None,
        }
    }
}

/// Key of [`maps::BINDINGS`](crate::maps::BINDINGS): a cgroup in one generation slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BindingKey {
    pub cgroup_id: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// A cgroup bound to a policy: value of [`maps::BINDINGS`](crate::maps::BINDINGS).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Policy id, below [`MAX_POLICIES`](crate::MAX_POLICIES). The agent keeps a
    /// policy's id for its name across reloads; it is not the policy's position in the
    /// config. With the generation slot it makes the [`scope`](crate::scope) that starts
    /// every rule key of this policy.
    pub policy: u32,
    /// [`MODE_ENFORCE`] or [`MODE_AUDIT`].
    pub mode: u8,
    /// [`BINDING_ALLOW_PACKET_SOCKETS`], [`BINDING_ALLOW_RAW_SOCKETS`],
    /// [`BINDING_JUDGE_INBOUND`], [`BINDING_NAMED_INTERFACES`].
    pub flags: u8,
    pub _pad: u16,
}

/// Slots of [`maps::BINDING_MEMO`](crate::maps::BINDING_MEMO) on each CPU (a power
/// of two): the cgroups whose packets and calls a CPU judges at a time.
pub const BINDING_MEMO_SLOTS: u32 = 1 << 8;

/// [`BindingMemo::found`]: a binding was found (`binding` holds it), or none was.
pub const MEMO_FOUND: u32 = 1;
pub const MEMO_NONE: u32 = 2;

/// One slot of the per-CPU binding memo: the binding a cgroup's lookup found under one
/// policy epoch (the cgroup's own, or its nearest bound ancestor's, a walk of up to
/// [`MAX_CGROUP_DEPTH`] hash lookups). The epoch changes whenever a binding does (a
/// reload, a cgroup bound or unbound), so a memo never outlives the bindings it read.
/// Guarded like [`CacheSlot`](crate::CacheSlot): `seq` odd while written, `tag` a hash
/// of the rest. A zeroed slot's tag is valid (the hash of zeros is zero), so it is
/// `found == 0`, neither [`MEMO_FOUND`] nor [`MEMO_NONE`], that keeps it from matching
/// cgroup id 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingMemo {
    pub seq: u32,
    pub epoch: u32,
    pub cgroup_id: u64,
    pub binding: Binding,
    /// [`MEMO_FOUND`] or [`MEMO_NONE`].
    pub found: u32,
    pub tag: u32,
}

const _: () = assert!(core::mem::size_of::<Binding>() == 8);
const _: () = assert!(core::mem::size_of::<BindingMemo>() == 32);
const _: () = assert!(core::mem::size_of::<BindingKey>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_values_round_trip() {
        for m in Mode::ALL {
            assert_eq!(Mode::from_value(m.value()), Some(m));
        }
        assert_eq!(Mode::from_value(0), None);
    }
}
