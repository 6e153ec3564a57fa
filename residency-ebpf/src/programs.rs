//! The programs, one file per hook family. Each entry point is thin: it reads what its
//! hook gives (a packet, a `sockaddr`, socket arguments) and runs the shared steps
//! (`binding`, `verdict`, `cache`, `report`) in its own order.

pub mod bind;
pub mod egress;
pub mod ingress;
pub mod message;
pub mod raw_socket;
pub mod sock_addr;
pub mod socket_create;
pub mod sockopt;

/// cgroup sock_addr and lsm_cgroup return values: 0 makes the call fail with EPERM.
pub const ALLOW_CALL: i32 = 1;
pub const DENY_CALL: i32 = 0;

/// `AF_INET` and `AF_INET6` (include/linux/socket.h) as an event's family, 4 or 6 (0
/// for any other family).
#[inline(always)]
pub fn family_of(af: u32) -> u8 {
    match af {
        2 => 4,
        10 => 6,
        _ => 0,
    }
}
