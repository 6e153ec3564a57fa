//! Names of the kernel programs in the object file.
//!
//! The agent finds each program by this name, and names its pinned links after it
//! without the `residency_` prefix (`link-<cgroup id>-egress`).

/// Name of the cgroup/skb egress program in the object file.
pub const PROGRAM_EGRESS: &str = "residency_egress";
/// cgroup/connect4: a forbidden `connect()` on an IPv4 socket fails with EPERM.
pub const PROGRAM_CONNECT4: &str = "residency_connect4";
/// cgroup/connect6: the same for IPv6 sockets (IPv4-mapped destinations judged as IPv4).
pub const PROGRAM_CONNECT6: &str = "residency_connect6";
/// cgroup/sendmsg4: a forbidden `sendto()`/`sendmsg()` on an unconnected IPv4 socket.
pub const PROGRAM_SENDMSG4: &str = "residency_sendmsg4";
/// cgroup/sendmsg6: the same for IPv6 sockets.
pub const PROGRAM_SENDMSG6: &str = "residency_sendmsg6";
/// lsm_cgroup/socket_create: packet sockets (AF_PACKET) skip the IP egress hook, so
/// enforce policies deny creating them.
pub const PROGRAM_SOCKET_CREATE: &str = "residency_socket_create";
/// cgroup/sock_create: raw IP sockets (SOCK_RAW in AF_INET/AF_INET6) write their own
/// headers or skip the socket calls, so enforce policies refuse creating them unless
/// they allow it, and always refuse `IPPROTO_RAW`.
pub const PROGRAM_SOCK_CREATE: &str = "residency_sock_create";
/// cgroup/setsockopt: socket options that send from a foreign source, through a chosen
/// interface, or with a hand-written header are refused in enforce policies.
pub const PROGRAM_SETSOCKOPT: &str = "residency_setsockopt";
/// cgroup/skb ingress: inbound connection attempts (TCP SYNs) from sources a policy with
/// `judge_inbound` does not allow are dropped before the kernel answers them, SYN
/// cookies included.
pub const PROGRAM_INGRESS: &str = "residency_ingress";
/// cgroup/bind4: an IPv4 `bind()` to an address that is not the namespace's own, where
/// the kernel would allow it (`ip_nonlocal_bind`, a socket set to bind anywhere), is
/// refused in enforce policies.
pub const PROGRAM_BIND4: &str = "residency_bind4";
/// cgroup/bind6: the same for IPv6 sockets.
pub const PROGRAM_BIND6: &str = "residency_bind6";
