//! The loaded kernel program: loading the embedded object ([`load`]), attaching it
//! to cgroups ([`attach`]), its maps ([`maps`]), counters ([`counters`]), the packet
//! socket guard ([`socket_guard`]) and the pinned state that outlives the agent
//! ([`pins`]).
//!
//! The object is built from `residency-ebpf` by `build.rs` and embedded, so the agent
//! binary is all a host needs. Programs, all attached to each topmost configured
//! cgroup:
//! - `residency_egress` (cgroup/skb egress): every packet, the backstop;
//! - `residency_connect4/6`, `residency_sendmsg4/6` (cgroup sock_addr): `connect()` and
//!   `sendto()` fail with EPERM at once;
//! - `residency_socket_create` (lsm_cgroup/socket_create): packet sockets are refused.
//!   It needs the BPF LSM (`bpf` in `/sys/kernel/security/lsm`) and kernel BTF; where
//!   they are missing, the agent reports the gap (or refuses to start, if told to).
//!
//! # Minimum kernel version
//! 6.0 (cgroup LSM programs; 5.8 for the rest: BPF ring buffer, cgroup BPF links,
//! `bpf_skb_ancestor_cgroup_id`); developed and tested on 6.18.

pub mod attach;
pub mod counters;
pub mod error;
pub mod layout;
pub mod load;
pub mod maps;
pub mod names;
pub mod pins;
pub mod socket_guard;

pub use attach::short_name;
pub use counters::{KernelCounters, PacketCounts};
pub use error::BpfError;
pub use load::{Loaded, load, open};
pub use maps::PolicyMaps;
