//! The residency agent as a library: the binary (`main.rs`) dispatches the CLI into
//! it, and the end-to-end tests and the benchmark crate drive the real kernel program
//! through it (loading, filling maps, test runs) without a copy of its code.
//!
//! Modules in dependency order (each uses only those above it):
//!
//! | module | what it is | answers |
//! | --- | --- | --- |
//! | [`sys`] | the system calls no kept crate wraps, and thin wrappers of those it does | |
//! | [`config`] | TOML → validated [`config::Config`]; reads files, never the host | |
//! | [`policy`] | pure functions of a config: compile, decide, explain, diff | where a config key becomes a map entry: `policy/compile.rs` |
//! | [`host`] | cgroup v2 hierarchy, resolving a config's cgroups, inotify | |
//! | [`kubernetes`] | pods as workloads: kubelet cgroup layout, selection, the API watch | which pod has which policy: `kubernetes/state.rs` |
//! | [`kernel`] | the loaded program: load, attach, maps, counters, pins | |
//! | [`generations`] | the policy in force and its atomic replacement | where a reload happens: `generations/apply.rs` |
//! | [`events`] | ring buffer → decoded event → sinks | where an event becomes a journal entry: `events/sinks/journal.rs` |
//! | [`metrics`] | the Prometheus collector and endpoint | |
//! | [`control`] | the control socket: protocol, server, client | |
//! | [`daemon`] | `run`: start-up steps, main loop, rescan, reload, status | |
//! | [`cmd`], [`cli`] | the subcommands and their command line | |
//! | [`log`] | the agent's own log: journald under systemd, priority-prefixed lines elsewhere | |
//!
//! Where a packet is judged is the kernel program's `residency-ebpf/src/programs/egress.rs`.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod control;
pub mod daemon;
pub mod events;
pub mod generations;
pub mod host;
pub mod kernel;
pub mod kubernetes;
pub mod log;
pub mod metrics;
pub mod netns;
pub mod policy;
pub mod sys;
#[cfg(test)]
mod testing;
