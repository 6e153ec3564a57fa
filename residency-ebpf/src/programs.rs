//! The programs, one file per hook family. Each entry point is thin: it reads what its
//! hook gives (a packet, a `sockaddr`, socket arguments) and runs the shared steps
//! (`binding`, `verdict`, `cache`, `report`) in its own order.

pub mod egress;
pub mod sock_addr;
pub mod socket_create;

/// cgroup sock_addr and lsm_cgroup return values: 0 makes the call fail with EPERM.
pub const ALLOW_CALL: i32 = 1;
pub const DENY_CALL: i32 = 0;
