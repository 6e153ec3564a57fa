//! The residency agent as a library: the binary (`main.rs`) dispatches the CLI into it,
//! and the end-to-end tests and the benchmark crate drive the real kernel program
//! through it (loading, filling maps, test runs) without a copy of its code.

pub mod aggregate;
pub mod bpf;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod events;
pub mod explain;
pub mod generations;
pub mod metrics;
pub mod notify;
pub mod pins;
pub mod policy;
pub mod rcu;
pub mod sinks;
pub mod sources;
pub mod watch;
