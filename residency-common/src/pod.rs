//! `aya::Pod` for the shared types: they hold no padding and every bit pattern is a
//! valid value, which is what `Pod` promises. In one place, so that a new map type is
//! checked against that promise here.

use crate::{
    Binding, BindingKey, CacheSlot, Event, InterfaceKey, KernelLayout, LocalAddrKey, NetnsAsk,
    PortRule, RateBucket, RuleKeyV4, RuleKeyV6, RuleValue, Settings, VerdictKey, VerdictValue,
};

// SAFETY (each): `#[repr(C)]`, plain integer and byte-array fields, explicit padding
// (the size assertions next to each type rule out implicit padding).
unsafe impl aya::Pod for Binding {}
unsafe impl aya::Pod for BindingKey {}
unsafe impl aya::Pod for InterfaceKey {}
unsafe impl aya::Pod for RuleKeyV4 {}
unsafe impl aya::Pod for RuleKeyV6 {}
unsafe impl aya::Pod for RuleValue {}
unsafe impl aya::Pod for Event {}
unsafe impl aya::Pod for Settings {}
unsafe impl aya::Pod for RateBucket {}
unsafe impl aya::Pod for PortRule {}
unsafe impl aya::Pod for VerdictKey {}
unsafe impl aya::Pod for VerdictValue {}
unsafe impl aya::Pod for CacheSlot {}
unsafe impl aya::Pod for LocalAddrKey {}
unsafe impl aya::Pod for KernelLayout {}
unsafe impl aya::Pod for NetnsAsk {}
