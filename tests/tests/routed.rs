//! The routed leak topology itself, with no agent: frames reach the host they are
//! addressed to and only that one, both hosts answer, the workload has no way out but
//! its two links, and unprivileged workloads get exactly the capabilities asked for.
//! Without this, a leak test passing could mean a blind capture.

use std::path::Path;

use residency_tests::{
    PORT, Sandbox, output_within, require_root,
    routed::{
        ALLOWED_HOST_V4, ALLOWED_HOST_V6, FORBIDDEN_HOST_V4, FORBIDDEN_HOST_V6, NOBODY, Routed,
    },
};

/// One UDP datagram carrying ARGV[3] to ARGV[1]:ARGV[2], and its echo.
const UDP_SEND: &str = r#"
import errno, socket, sys
addr, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.5)
try:
    s.sendto(marker, (addr, port)); d, _ = s.recvfrom(2048)
    print("ok" if d == marker else "bad-reply")
except socket.timeout:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// Who the process is: uid, gid, supplementary group count, the capability sets and
/// its cgroup.
const WHOAMI: &str = r#"
import os
st = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
cg = open("/proc/self/cgroup").read().strip().split("::", 1)[1]
print(os.getuid(), os.getgid(), len(os.getgroups()),
      *(int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd")), cg)
"#;

/// Opens a raw IPv4 socket: "ok" or the errno name.
const RAW: &str = r#"
import errno, socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// One ICMP echo carrying ARGV[2] over an unprivileged ping socket (ping_group_range).
const PING_SOCKET: &str = r#"
import errno, socket, struct, sys
addr, marker = sys.argv[1], sys.argv[2].encode()
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    s.settimeout(1.5)
    s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + marker, (addr, 0))
    d = s.recv(2048)
    print("ok" if d[0] == 0 and d.endswith(marker) else "bad-reply")
except socket.timeout:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

const CAP_NET_RAW: u64 = 1 << 13;

/// Runs python `source` as nobody with `caps`; its stdout, trimmed.
fn as_nobody(
    sb: &Sandbox,
    cgroup: Option<&Path>,
    caps: &[&str],
    source: &str,
    args: &[&str],
) -> String {
    let mut full = vec!["-c", source];
    full.extend_from_slice(args);
    let out = output_within(
        &mut sb.command_as_nobody(cgroup, caps, "python3", &full),
        20,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{source} {args:?} as nobody with {caps:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The EtherTypes of the frames containing `marker`.
fn ethertypes_with(frames: &[Vec<u8>], marker: &[u8]) -> Vec<u16> {
    frames
        .iter()
        .filter(|f| f.windows(marker.len()).any(|w| w == marker))
        .map(|f| u16::from_be_bytes([f[12], f[13]]))
        .collect()
}

fn udp(sb: &Sandbox, addr: &str, marker: &str) -> String {
    as_nobody(sb, None, &[], UDP_SEND, &[addr, &PORT.to_string(), marker])
}

#[test]
fn routed_topology_captures_by_destination_and_runs_nobody_with_exact_capabilities() {
    if !require_root() {
        return;
    }
    let mut sb = Sandbox::bare().unwrap();
    let app = sb.cgroup("app").unwrap();
    let r: Routed = sb.routed().unwrap();

    // Each datagram reaches its own host, which answers, and no other host.
    assert_eq!(udp(&sb, FORBIDDEN_HOST_V4, "marker-to-forbidden"), "ok");
    assert_eq!(udp(&sb, FORBIDDEN_HOST_V6, "v6-mark-forbidden"), "ok");
    assert_eq!(udp(&sb, ALLOWED_HOST_V4, "marker-to-allowed"), "ok");
    assert!(r.forbidden_saw(b"marker-to-forbidden"));
    assert!(r.forbidden_saw(b"v6-mark-forbidden"));
    assert!(r.allowed_saw(b"marker-to-allowed"));
    assert!(!r.allowed_saw(b"marker-to-forbidden"));
    assert!(!r.allowed_saw(b"v6-mark-forbidden"));
    assert!(!r.forbidden_saw(b"marker-to-allowed"));
    // The frames are whole Ethernet frames of the right family, and only the request
    // is there (the host's own echo, outgoing, is not counted as having reached it).
    let frames = r.forbidden_frames();
    assert_eq!(ethertypes_with(&frames, b"marker-to-forbidden"), [0x0800]);
    assert_eq!(ethertypes_with(&frames, b"v6-mark-forbidden"), [0x86dd]);
    assert_eq!(
        ethertypes_with(&r.allowed_frames(), b"marker-to-allowed"),
        [0x0800]
    );

    // TCP echoes work both ways, from the workload as root.
    for addr in [
        ALLOWED_HOST_V4,
        ALLOWED_HOST_V6,
        FORBIDDEN_HOST_V4,
        FORBIDDEN_HOST_V6,
    ] {
        let o = sb.client(None, "tcp", addr);
        assert!(o.ok, "tcp to {addr}: {o:?}");
    }
    // No default route: anything off the two links cannot leave at all.
    assert_eq!(udp(&sb, "192.0.2.1", "marker-nowhere"), "ENETUNREACH");
    assert_eq!(udp(&sb, "2001:db8:2::1", "marker-nowhere"), "ENETUNREACH");

    // Nobody, in the cgroup, with no capability at all, or with exactly net_raw.
    let cgroup = sb.from_root(&app);
    for (caps, set) in [(&[][..], 0), (&["net_raw"][..], CAP_NET_RAW)] {
        let who = as_nobody(&sb, Some(&app), caps, WHOAMI, &[]);
        let expected = format!("{NOBODY} {NOBODY} 0 {set} {set} {set} {set} {set} {cgroup}");
        assert_eq!(who, expected, "uid gid groups inh prm eff amb bnd cgroup");
    }
    assert_eq!(as_nobody(&sb, None, &["net_raw"], RAW, &[]), "ok");
    assert_eq!(as_nobody(&sb, None, &[], RAW, &[]), "EPERM");

    // ping_group_range lets nobody ping without a capability.
    let o = as_nobody(
        &sb,
        None,
        &[],
        PING_SOCKET,
        &[FORBIDDEN_HOST_V4, "ping-to-forbidden"],
    );
    assert_eq!(o, "ok");
    assert!(r.forbidden_saw(b"ping-to-forbidden"));
    assert!(!r.allowed_saw(b"ping-to-forbidden"));
}
