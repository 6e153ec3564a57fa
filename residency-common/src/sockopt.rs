//! The socket options enforce policies refuse (cgroup/setsockopt), shared so that the
//! kernel program judges and the agent names the same list.
//!
//! Each one lets a workload get data to a host its policy does not allow while every
//! packet's destination still looks allowed: a source address that is not the host's
//! own (replies and errors go to whoever owns it), an outgoing interface chosen by hand
//! (an allowed address sent out of a link that faces another network), or a header
//! written by hand (routed by one address, judged by another). Numbers are from
//! include/uapi/linux/in.h, in6.h and asm-generic/socket.h.

use crate::{RULE_DEVICE_BINDING, RULE_RAW_SOCKET, RULE_SPOOFED_SOURCE};

pub const SOL_IP: i32 = 0;
pub const SOL_SOCKET: i32 = 1;
pub const SOL_IPV6: i32 = 41;

pub const SO_BINDTODEVICE: i32 = 25;
pub const SO_BINDTOIFINDEX: i32 = 62;
pub const IP_HDRINCL: i32 = 3;
pub const IP_FREEBIND: i32 = 15;
pub const IP_TRANSPARENT: i32 = 19;
pub const IP_UNICAST_IF: i32 = 50;
pub const IPV6_HDRINCL: i32 = 36;
pub const IPV6_PKTINFO: i32 = 50;
pub const IPV6_TRANSPARENT: i32 = 75;
pub const IPV6_UNICAST_IF: i32 = 76;
pub const IPV6_FREEBIND: i32 = 78;

/// How much of the option's value decides whether it is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// An int: refused when it is not 0 (0 turns the option off, or unbinds).
    Int,
    /// An interface name: refused when it is not empty (empty unbinds).
    Name,
    /// A `struct in6_pktinfo`: refused when its interface index (bytes 16..20) is not 0.
    /// Its address is checked by the kernel, which refuses a foreign one unless a
    /// refused option (`IPV6_FREEBIND`, `IPV6_TRANSPARENT`) allowed it.
    Pktinfo6,
}

/// The rule that refuses option `optname` at `level`, and which part of its value
/// decides; `None` for every other option, which the program lets through untouched.
#[inline(always)]
pub const fn guarded(level: i32, optname: i32) -> Option<(u32, Value)> {
    match (level, optname) {
        (SOL_SOCKET, SO_BINDTODEVICE) => Some((RULE_DEVICE_BINDING, Value::Name)),
        (SOL_SOCKET, SO_BINDTOIFINDEX) => Some((RULE_DEVICE_BINDING, Value::Int)),
        (SOL_IP, IP_UNICAST_IF) | (SOL_IPV6, IPV6_UNICAST_IF) => {
            Some((RULE_DEVICE_BINDING, Value::Int))
        }
        (SOL_IPV6, IPV6_PKTINFO) => Some((RULE_DEVICE_BINDING, Value::Pktinfo6)),
        (SOL_IP, IP_FREEBIND | IP_TRANSPARENT) | (SOL_IPV6, IPV6_FREEBIND | IPV6_TRANSPARENT) => {
            Some((RULE_SPOOFED_SOURCE, Value::Int))
        }
        (SOL_IP, IP_HDRINCL) | (SOL_IPV6, IPV6_HDRINCL) => Some((RULE_RAW_SOCKET, Value::Int)),
        _ => None,
    }
}

/// The option's name as a C program spells it, for events (`option=IPV6_FREEBIND`).
pub const fn name(level: i32, optname: i32) -> Option<&'static str> {
    Some(match (level, optname) {
        (SOL_SOCKET, SO_BINDTODEVICE) => "SO_BINDTODEVICE",
        (SOL_SOCKET, SO_BINDTOIFINDEX) => "SO_BINDTOIFINDEX",
        (SOL_IP, IP_UNICAST_IF) => "IP_UNICAST_IF",
        (SOL_IPV6, IPV6_UNICAST_IF) => "IPV6_UNICAST_IF",
        (SOL_IPV6, IPV6_PKTINFO) => "IPV6_PKTINFO",
        (SOL_IP, IP_FREEBIND) => "IP_FREEBIND",
        (SOL_IP, IP_TRANSPARENT) => "IP_TRANSPARENT",
        (SOL_IPV6, IPV6_FREEBIND) => "IPV6_FREEBIND",
        (SOL_IPV6, IPV6_TRANSPARENT) => "IPV6_TRANSPARENT",
        (SOL_IP, IP_HDRINCL) => "IP_HDRINCL",
        (SOL_IPV6, IPV6_HDRINCL) => "IPV6_HDRINCL",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guarded_option_has_a_name_and_nothing_else_is_guarded() {
        for level in [SOL_IP, SOL_SOCKET, SOL_IPV6, 6, 17] {
            for opt in 0..256 {
                assert_eq!(guarded(level, opt).is_some(), name(level, opt).is_some());
            }
        }
        assert_eq!(guarded(SOL_SOCKET, 2), None, "SO_REUSEADDR passes");
        assert_eq!(
            guarded(SOL_IPV6, IPV6_FREEBIND),
            Some((RULE_SPOOFED_SOURCE, Value::Int))
        );
    }
}
