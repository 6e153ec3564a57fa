//! Events — where an event becomes a journal entry: the kernel's ring-buffer record
//! is decoded ([`decode`]) into a [`BlockEvent`] ([`model`]), repeats are aggregated
//! ([`aggregate`]), and each sink writes it in its format ([`format`], [`sinks`]),
//! all driven by the reader task ([`reader`]).
//!
//! An event's readable form is one line that starts with `RESIDENCY_EGRESS_BLOCK`
//! (audit mode: `RESIDENCY_EGRESS_AUDIT`) followed by `key=value` fields (logfmt); the
//! same fields exist as journal fields, syslog structured data and JSON keys.

pub mod aggregate;
pub mod decode;
pub mod format;
pub mod model;
pub mod reader;
pub mod sinks;
#[cfg(test)]
pub(crate) mod tests;
pub mod workload;

pub use decode::protocol_name;
pub use model::{BlockEvent, Field};
pub use reader::{readable, run};
pub use workload::{Namer, Workload};
