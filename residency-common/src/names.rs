//! The error of every name lookup in this crate (`from_str` of [`Protocol`],
//! [`Action`], [`Mode`], [`Source`], [`SocketFamily`]).
//!
//! [`Protocol`]: crate::protocol::Protocol
//! [`Action`]: crate::rule::Action
//! [`Mode`]: crate::binding::Mode
//! [`Source`]: crate::source::Source
//! [`SocketFamily`]: crate::source::SocketFamily

use core::fmt;

/// A name that is none of its kind's names. Callers that list the valid names (the
/// config's error messages) take them from the type's `ALL` and `as_str`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownName {
    /// What was looked up: `protocol`, `action`, `mode`, `hook`, `socket family`.
    pub kind: &'static str,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a known {} name", self.kind)
    }
}

impl core::error::Error for UnknownName {}
