//! The sandbox the end-to-end tests, the demo and the benchmark run in: a fresh cgroup
//! v2 subtree, a fresh network namespace holding every destination (documentation
//! addresses on its loopback, with TCP/UDP echo servers), and the real
//! `residency-agent` binary.
//!
//! Nothing here sends a packet outside a namespace it made. Everything is torn down on
//! drop — agent, pinned programs, bpffs mount, servers, namespaces, cgroups — on every
//! path, failing tests included.
//!
//! - [`host`]: what the host must provide (root, the agent binary, the cgroup mount);
//! - [`sandbox`]: the cgroups, namespaces and scratch directory;
//! - [`routed`]: the workload routed to an allowed and a forbidden host, each capturing
//!   every frame that reaches it, and commands run as nobody;
//! - [`agent`]: the agent process and the sandbox's agent commands;
//! - [`clients`]: TCP/UDP/ICMP clients run inside the sandbox, on [`py`]'s programs;
//! - [`programs`]: what `bpftool` sees attached;
//! - [`journal`], [`http`]: reading what the agent reported;
//! - [`commands`]: running commands with deadlines, in cgroups;
//! - [`helm`]: the Helm chart rendered, and the plain manifests made from it;
//! - `kube_api` (feature `kubernetes`): a Kubernetes API stand-in (list and watch);
//! - `kernel` (feature `kernel`): the kernel program loaded in-process for test runs.

pub mod agent;
pub mod clients;
pub mod commands;
pub mod geoip;
pub mod helm;
pub mod host;
pub mod http;
pub mod journal;
#[cfg(feature = "kernel")]
pub mod kernel;
#[cfg(feature = "kubernetes")]
pub mod kube_api;
pub mod mmdb;
pub mod pinned;
pub mod programs;
pub mod py;
pub mod random;
pub mod routed;
pub mod sandbox;
pub mod seccomp;
pub mod wait;

pub use agent::{Agent, Launch, release_pins};
pub use clients::{Outcome, Probe, ProbeResult};
pub use commands::{join_cgroup, output_within, sh, stdout_of};
pub use host::{agent_binary, cgroup2_mount, require_root};
pub use http::{assert_promtool_accepts, free_port, http_get, sample};
pub use journal::{ensure_journald, journal_entries};
pub use programs::PROGRAMS;
pub use sandbox::{PORT, Sandbox};
pub use wait::eventually;
