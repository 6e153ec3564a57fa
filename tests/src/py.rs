//! The Python programs the sandbox runs inside its namespace (servers and clients),
//! kept as real files under `tests/py/` and embedded here. Each runs as
//! `python3 -c <source> <args...>`: nothing needs to find the checkout at run time, and
//! a client run as another user needs no access to it.

/// TCP and UDP echo server: `server.py PORT`, prints `ready` once bound.
pub const SERVER: &str = include_str!("../py/server.py");
/// One TCP or UDP echo: `client.py tcp|udp ADDR PORT`.
pub const CLIENT: &str = include_str!("../py/client.py");
/// UDP datagrams as fast as one socket can: `burst.py ADDR PORT COUNT`.
pub const BURST: &str = include_str!("../py/burst.py");
/// Continuous prober of two destinations: `probe.py STOP BOTH NEITHER PORT`.
pub const PROBE: &str = include_str!("../py/probe.py");
/// One ICMP echo over a raw socket: `ping.py ADDR`.
pub const PING: &str = include_str!("../py/ping.py");
/// Every frame arriving on one interface, as hex lines: `capture.py IFNAME OUTFILE`,
/// prints `ready` once bound.
pub const CAPTURE: &str = include_str!("../py/capture.py");
/// Unconnected UDP `sendto()` to each destination twice: `sendto.py`, destinations
/// as `ADDR PORT` lines on stdin, one `ERRNO ERRNO` line out per destination.
pub const SENDTO: &str = include_str!("../py/sendto.py");
