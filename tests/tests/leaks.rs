//! Leak attempts of a workload that wants its data on a forbidden host, judged by where
//! frames arrive: the workload's namespace is routed to an allowed and a forbidden
//! host, each capturing every frame that reaches it (`residency_tests::routed`). The
//! workload runs as nobody, with `CAP_NET_RAW` only where a case needs it.
//!
//! Each attempt runs twice: from a cgroup no policy binds (the control: the data must
//! reach the forbidden host there, or the attempt proves nothing), and from the
//! enforced cgroup, where it must not, and where the refusal is reported with its rule.

use std::path::Path;

use residency_tests::{
    PORT, Sandbox, agent_binary, output_within, require_root,
    routed::{
        ALLOWED_HOST_V4, ALLOWED_HOST_V6, FORBIDDEN_HOST_V4, FORBIDDEN_HOST_V6, Routed,
        TO_FORBIDDEN, WORKLOAD_ALLOWED_V4, WORKLOAD_ALLOWED_V6, WORKLOAD_FORBIDDEN_V4,
    },
    sh,
};

const CONFIG: &str = r#"
[agent]
pin_path = "{pins}"
metrics_address = "{metrics}"

[events]
sinks = ["text"]
aggregate_window_ms = 0
rate_limit_per_cpu = 0

[[policy]]
name = "eu"
cgroups = ["{cg}/app"]
allow = ["198.51.100.0/24", "2001:db8:1::/48"]

[[policy]]
name = "eu-raw"
cgroups = ["{cg}/raw"]
allow = ["198.51.100.0/24", "2001:db8:1::/48"]
allow_raw_sockets = true

[[policy]]
name = "eu-inbound"
cgroups = ["{cg}/inbound"]
allow = ["198.51.100.0/24", "2001:db8:1::/48"]
judge_inbound = true

[[policy]]
name = "eu-named"
cgroups = ["{cg}/named"]
allow = ["198.51.100.0/24", "2001:db8:1::/48"]
interfaces = ["to-allowed"]
"#;

/// Prints "ok", "timeout" or the errno name of what failed, for every script below.
const PRELUDE: &str = r#"
import errno, socket, struct, sys
def run(f):
    try:
        f(); print("ok")
    except socket.timeout:
        print("timeout")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// `DEV ADDR PORT MARKER OPTION`: an echo to ADDR:PORT through interface DEV chosen
/// with OPTION: a TCP session with `SO_BINDTODEVICE`, a UDP datagram with
/// `IP_UNICAST_IF` (which TCP does not use).
const THROUGH_DEVICE: &str = r#"
dev, addr, port, marker, option = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode(), sys.argv[5]
def f():
    tcp = option == "SO_BINDTODEVICE"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    s.settimeout(1.5)
    if tcp:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
        s.connect((addr, port)); s.sendall(marker); s.recv(64)
    else:
        s.setsockopt(socket.IPPROTO_IP, 50, struct.pack("!I", socket.if_nametoindex(dev)))
        s.sendto(marker, (addr, port)); s.recv(64)
run(f)
"#;

/// `SOURCE DST MARKER`: a UDP datagram from the foreign address SOURCE (bound with
/// IP_FREEBIND / IPV6_FREEBIND) to a closed port of DST, an allowed address of this
/// host: the kernel answers the forged source with an ICMP error quoting the data.
const FREEBIND_REFLECT: &str = r#"
src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def f():
    v6 = ":" in src
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, 78, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, 15, 1)
    s.bind((src, 0)); s.sendto(marker, (dst, 9))
run(f)
"#;

/// `SOURCE DST MARKER`: an ICMPv6 echo over a ping socket bound (IPV6_FREEBIND) to
/// the foreign SOURCE, to DST on this host: the echo reply carries the data to SOURCE.
const PING_REFLECT: &str = r#"
src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def f():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, 78, 1)
    s.bind((src, 0))
    s.sendto(struct.pack("!BBHHH", 128, 0, 0, 0, 1) + marker, (dst, 0))
run(f)
"#;

/// `SOURCE DST MARKER`: an IPv6 datagram whose source is chosen per message
/// (IPV6_PKTINFO), to a closed port of DST.
const PKTINFO_SOURCE: &str = r#"
src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def f():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    info = socket.inet_pton(socket.AF_INET6, src) + struct.pack("=I", 0)
    s.sendmsg([marker], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0, (dst, 9))
run(f)
"#;

/// `HEADER_SRC HEADER_DST ROUTE_TO MARKER`: an IPv4 header written by hand on an
/// IPPROTO_RAW socket, sent with sendto(ROUTE_TO), which is where the kernel routes it.
const HEADER_VS_ROUTE: &str = r#"
hsrc, hdst, route, marker = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].encode()
def f():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(marker), 0) + marker
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(hsrc), socket.inet_aton(hdst))
    s.sendto(ip + udp, (route, 0))
run(f)
"#;

/// `HEADER_SRC DST MARKER`: IP_HDRINCL on a raw UDP socket, forging the source.
const HDRINCL: &str = r#"
hsrc, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def f():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(marker), 0) + marker
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(hsrc), socket.inet_aton(dst))
    s.sendto(ip + udp, (dst, 0))
run(f)
"#;

/// `ADDR MARKER`: an ICMP echo on a raw socket (no header written by hand).
const RAW_ICMP: &str = r#"
addr, marker = sys.argv[1], sys.argv[2].encode()
def f():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + marker, (addr, 0))
run(f)
"#;

/// `ADDR PORT MARKER`: TCP Fast Open, the data in the SYN.
const FAST_OPEN: &str = r#"
addr, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
def f():
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.5)
    s.sendto(marker, 0x20000000, (addr, port)); s.recv(64)
run(f)
"#;

/// `ADDR PORT MARKER SIZE`: one UDP datagram of SIZE bytes (fragmented when large)
/// starting with MARKER, on an IPv6 socket when ADDR is IPv4-mapped.
const DATAGRAM: &str = r#"
addr, port, marker, size = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
def f():
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(marker + b"x" * (size - len(marker)), (addr, port))
run(f)
"#;

struct Lab {
    sb: Sandbox,
    net: Routed,
    app: std::path::PathBuf,
    raw: std::path::PathBuf,
    free: std::path::PathBuf,
    inbound: std::path::PathBuf,
    named: std::path::PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let mut sb = Sandbox::bare().unwrap();
        let net = sb.routed().unwrap();
        let app = sb.cgroup("app").unwrap();
        let raw = sb.cgroup("raw").unwrap();
        let free = sb.cgroup("free").unwrap();
        let inbound = sb.cgroup("inbound").unwrap();
        let named = sb.cgroup("named").unwrap();
        // The forbidden network answers for the allowed host's address too, as a
        // network an attacker controls would: a frame sent to the allowed address
        // through the forbidden link reaches a host that takes it.
        for (addr, extra) in [
            (format!("{ALLOWED_HOST_V4}/32"), None),
            (format!("{ALLOWED_HOST_V6}/128"), Some("nodad")),
        ] {
            let mut c = std::process::Command::new("ip");
            c.args(["-n", &net.forbidden_ns, "addr", "add", &addr, "dev", "lo"]);
            c.args(extra);
            sh(&mut c).unwrap();
        }
        let bin = agent_binary();
        let cfg = sb.write_config("residency.toml", CONFIG);
        sb.start_agent(&bin, &cfg).unwrap();
        // The kernel holds what the config means, guards and interfaces included.
        let (ok, out) = sb.verify(&bin, &cfg);
        assert!(ok && out.contains("kernel state = config"), "{out}");
        let lab = Lab {
            sb,
            net,
            app,
            raw,
            free,
            inbound,
            named,
        };
        // Resolve every neighbour first: a kernel-made reply (an ICMP error) to a
        // neighbour not yet resolved can be lost, and a control must not fail by luck.
        let port = PORT.to_string();
        for addr in [
            FORBIDDEN_HOST_V4,
            FORBIDDEN_HOST_V6,
            ALLOWED_HOST_V4,
            ALLOWED_HOST_V6,
        ] {
            let r = lab.attempt(&lab.free, &[], DATAGRAM, &[addr, &port, "warm-up", "16"]);
            assert_eq!(r, "ok", "warm-up to {addr}");
        }
        lab
    }

    /// Runs `script` as nobody in `cgroup` with `caps`; what it printed.
    fn attempt(&self, cgroup: &Path, caps: &[&str], script: &str, args: &[&str]) -> String {
        let source = format!("{PRELUDE}{script}");
        let mut all = vec!["-c", source.as_str()];
        all.extend_from_slice(args);
        let out = output_within(
            &mut self
                .sb
                .command_as_nobody(Some(cgroup), caps, "python3", &all),
            20,
        );
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success() && !stdout.is_empty(),
            "{script} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The attempt reaches the forbidden host from the unbound cgroup (so it is a real
    /// way out and the capture sees it), and not from `enforced`, where the call fails
    /// with `refused` (`"*"`: whatever the call says, as a ping socket does not pass a
    /// dropped packet's error on). `args` holds `{marker}` where the marker goes.
    fn leak_closed(
        &self,
        enforced: &Path,
        caps: &[&str],
        script: &str,
        args: &[&str],
        refused: &str,
    ) {
        let with =
            |m: &str| -> Vec<String> { args.iter().map(|a| a.replace("{marker}", m)).collect() };
        let tag = format!("{:08x}", fastrand_u32());
        // The control may take a second try: a reply the kernel makes (an ICMP error)
        // can be lost once while a neighbour entry settles.
        let mut seen = None;
        for attempt in 0..3 {
            let control = format!("leak-control-{tag}-{attempt}");
            let args_c = with(&control);
            let r = self.attempt(
                &self.free,
                caps,
                script,
                &args_c.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            if self.net.forbidden_saw(control.as_bytes()) {
                seen = Some(r);
                break;
            }
        }
        assert!(
            seen.is_some(),
            "control: {script} {args:?} did not reach the forbidden host from an unbound cgroup: the case proves nothing"
        );
        let marker = format!("leak-attempt-{tag}");
        let args_e = with(&marker);
        let r = self.attempt(
            enforced,
            caps,
            script,
            &args_e.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(
            !self.net.forbidden_saw(marker.as_bytes()),
            "LEAK: {script} {args:?} reached the forbidden host from the enforced cgroup ({r})"
        );
        if refused != "*" {
            assert_eq!(r, refused, "{script} {args:?}");
        }
    }

    /// The attempt never reaches the forbidden host from `enforced`.
    fn no_leak(&self, enforced: &Path, caps: &[&str], script: &str, args: &[&str]) -> String {
        let marker = format!("leak-attempt-{:08x}", fastrand_u32());
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{marker}", &marker))
            .collect();
        let r = self.attempt(
            enforced,
            caps,
            script,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(
            !self.net.forbidden_saw(marker.as_bytes()),
            "LEAK: {script} {args:?} reached the forbidden host ({r})"
        );
        r
    }

    fn event(&mut self, needles: &[&str]) -> String {
        self.sb
            .agent()
            .wait_event(needles)
            .unwrap_or_else(|| panic!("no event with {needles:?}: {:#?}", self.sb.agent().events()))
    }
}

/// A different marker per attempt, so that no case can see another's frames.
fn fastrand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    t ^ N.fetch_add(0x9e37_79b9, Ordering::Relaxed)
}

#[test]
fn a_chosen_interface_cannot_carry_an_allowed_address_to_a_forbidden_network() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new();
    let port = PORT.to_string();
    // Without a capability: the whole TCP session goes to whoever answers for the
    // allowed address on the forbidden link.
    for option in ["SO_BINDTODEVICE", "IP_UNICAST_IF"] {
        lab.leak_closed(
            &lab.app.clone(),
            &[],
            THROUGH_DEVICE,
            &[TO_FORBIDDEN, ALLOWED_HOST_V4, &port, "{marker}", option],
            "EPERM",
        );
        let e = lab.event(&["policy=eu", "hook=setsockopt", &format!("option={option} ")]);
        assert!(e.contains("rule=device-binding"), "{e}");
        assert!(
            e.contains(r#"comm="python3""#) && e.contains("uid=65534 "),
            "{e}"
        );
    }
    // A policy that names an interface lets its workloads bind to that one, by name.
    let named = lab.named.clone();
    let to_allowed = residency_tests::routed::TO_ALLOWED;
    let r = lab.no_leak(
        &named,
        &[],
        THROUGH_DEVICE,
        &[
            to_allowed,
            ALLOWED_HOST_V4,
            &port,
            "{marker}",
            "SO_BINDTODEVICE",
        ],
    );
    assert_eq!(r, "ok", "SO_BINDTODEVICE to a named interface");
    lab.leak_closed(
        &named,
        &[],
        THROUGH_DEVICE,
        &[
            TO_FORBIDDEN,
            ALLOWED_HOST_V4,
            &port,
            "{marker}",
            "SO_BINDTODEVICE",
        ],
        "EPERM",
    );
    // An index names no interface the policy can check: refused even for a named one.
    let r = lab.no_leak(
        &named,
        &[],
        THROUGH_DEVICE,
        &[
            to_allowed,
            ALLOWED_HOST_V4,
            &port,
            "{marker}",
            "IP_UNICAST_IF",
        ],
    );
    assert_eq!(r, "EPERM", "IP_UNICAST_IF under a policy naming interfaces");
    // An interface named per message (no socket option involved): the kernel sends
    // the allowed address out of it as if on that link.
    // (IPv6 finds no route through a link that has none for the address, so only
    // IPv4 gets out in the control; both are refused.)
    lab.leak_closed(
        &lab.app.clone(),
        &[],
        PKTINFO_INTERFACE,
        &[TO_FORBIDDEN, ALLOWED_HOST_V4, &port, "{marker}"],
        "EPERM",
    );
    let r = lab.no_leak(
        &lab.app.clone(),
        &[],
        PKTINFO_INTERFACE,
        &[TO_FORBIDDEN, ALLOWED_HOST_V6, &port, "{marker}"],
    );
    assert_eq!(r, "EPERM");
    // A policy that names an interface lets a message name it too: the kernel knows
    // the name behind the index.
    let r = lab.no_leak(
        &named,
        &[],
        PKTINFO_INTERFACE,
        &[to_allowed, ALLOWED_HOST_V4, &port, "{marker}"],
    );
    assert_eq!(r, "ok", "IP_PKTINFO naming an interface the policy names");
    lab.leak_closed(
        &named,
        &[],
        PKTINFO_INTERFACE,
        &[TO_FORBIDDEN, ALLOWED_HOST_V4, &port, "{marker}"],
        "EPERM",
    );
    // A ping socket's message goes by no cgroup sendmsg hook: its packet is judged by
    // the route made for it.
    lab.leak_closed(
        &lab.app.clone(),
        &[],
        PKTINFO_INTERFACE,
        &[TO_FORBIDDEN, ALLOWED_HOST_V4, "0", "{marker}"],
        "EPERM",
    );
    lab.event(&[
        "policy=eu",
        "hook=packet",
        "proto=icmp",
        "rule=device-binding",
        ALLOWED_HOST_V4,
    ]);
    // A ping the ordinary way still gets its answer.
    let r = lab.attempt(&lab.app.clone(), &[], PING_ECHO, &[ALLOWED_HOST_V4]);
    assert_eq!(r, "ok");
    for host in [ALLOWED_HOST_V4, ALLOWED_HOST_V6] {
        let e = lab.event(&["policy=eu", "hook=sendmsg", "rule=device-binding", host]);
        assert!(e.contains("uid=65534 "), "{e}");
    }
    // Naming the interface the route takes anyway changes nothing the policy sees,
    // but an index is still refused: the policy cannot tell one from another.
    let r = lab.no_leak(
        &lab.app.clone(),
        &[],
        PKTINFO_INTERFACE,
        &[to_allowed, ALLOWED_HOST_V4, &port, "{marker}"],
    );
    assert_eq!(r, "EPERM");
    // The allowed host is still reached the ordinary way.
    let r = lab.no_leak(
        &lab.app.clone(),
        &[],
        DATAGRAM,
        &[ALLOWED_HOST_V4, &port, "{marker}", "64"],
    );
    assert_eq!(r, "ok");
}

#[test]
fn a_foreign_source_cannot_have_this_host_reflect_data_to_it() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new();
    // An ICMPv6 error from this host's kernel, quoting the datagram, goes to the
    // forged source: no capability needed.
    lab.leak_closed(
        &lab.app.clone(),
        &[],
        FREEBIND_REFLECT,
        &[FORBIDDEN_HOST_V6, WORKLOAD_ALLOWED_V6, "{marker}"],
        "EPERM",
    );
    let e = lab.event(&["policy=eu", "option=IPV6_FREEBIND "]);
    assert!(e.contains("rule=spoofed-source"), "{e}");
    // IPv4 sends from a foreign source only with IP_TRANSPARENT (CAP_NET_ADMIN) or a
    // written header, but IP_FREEBIND is refused all the same.
    let r = lab.no_leak(
        &lab.app.clone(),
        &[],
        FREEBIND_REFLECT,
        &[FORBIDDEN_HOST_V4, WORKLOAD_ALLOWED_V4, "{marker}"],
    );
    assert_eq!(r, "EPERM");
    let e = lab.event(&["policy=eu", "option=IP_FREEBIND "]);
    assert!(e.contains("rule=spoofed-source"), "{e}");
    // An echo reply carries a ping socket's data to the forged source.
    lab.leak_closed(
        &lab.app.clone(),
        &[],
        PING_REFLECT,
        &[FORBIDDEN_HOST_V6, WORKLOAD_ALLOWED_V6, "{marker}"],
        "EPERM",
    );
    // A per-message source is refused by the kernel itself once FREEBIND is.
    let r = lab.no_leak(
        &lab.app.clone(),
        &[],
        PKTINFO_SOURCE,
        &[FORBIDDEN_HOST_V6, WORKLOAD_ALLOWED_V6, "{marker}"],
    );
    assert_ne!(r, "ok", "a foreign IPV6_PKTINFO source was accepted");
}

/// `DEV ADDR PORT MARKER`: a UDP datagram to ADDR:PORT whose outgoing interface DEV is
/// named per message (`ipi_ifindex` of IP_PKTINFO, `ipi6_ifindex` of IPV6_PKTINFO).
const PKTINFO_INTERFACE: &str = r#"
dev, addr, port, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
def f():
    index = socket.if_nametoindex(dev)
    # Port 0: a ping socket, the marker riding in an echo request.
    ping = port == 0
    data = struct.pack("!BBHHH", 128 if ":" in addr else 8, 0, 0, 0, 1) + marker if ping else marker
    if ":" in addr:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6 if ping else 0)
        info = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, bytes(16) + struct.pack("=I", index))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP if ping else 0)
        info = (socket.IPPROTO_IP, 8, struct.pack("=I4s4s", index, bytes(4), bytes(4)))
    s.sendmsg([data], [info], 0, (addr, port))
run(f)
"#;

/// `ADDR`: an ICMP echo over a ping socket, twice; "ok" once an answer is back.
const PING_ECHO: &str = r#"
addr = sys.argv[1]
def f():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    s.settimeout(1.5)
    for seq in (1, 2):
        s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, seq) + b"ping", (addr, 0))
        s.recv(64)
run(f)
"#;

/// `SOURCE DST MARKER`: a datagram from a socket bound to SOURCE with a plain `bind()`,
/// which the kernel allows for any address where `ip_nonlocal_bind` is set, to a
/// closed port of DST on this host: the ICMP error quoting it goes to SOURCE.
const NONLOCAL_REFLECT: &str = r#"
src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def f():
    s = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.sendto(marker, (dst, 9))
run(f)
"#;

/// `SOURCE DST MARKER`: an ICMPv6 echo over a ping socket bound to SOURCE with a plain
/// `bind()`; the echo reply carries the data to SOURCE.
const NONLOCAL_PING: &str = r#"
src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def f():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
    s.bind((src, 0))
    s.sendto(struct.pack("!BBHHH", 128, 0, 0, 0, 1) + marker, (dst, 0))
run(f)
"#;

/// `SOURCE DST MARKER`: a UDP datagram on a raw IPv6 socket (`CAP_NET_RAW`), its source
/// chosen per message (IPV6_PKTINFO): no socket call hook sees a raw socket's send, so
/// only the packet program can judge its source.
const RAW_PKTINFO: &str = r#"
src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def f():
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.setsockopt(socket.IPPROTO_IPV6, 7, 6)  # IPV6_CHECKSUM at the UDP checksum
    info = socket.inet_pton(socket.AF_INET6, src) + struct.pack("=I", 0)
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(marker), 0) + marker
    s.sendmsg([udp], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0, (dst, 0))
run(f)
"#;

/// `SOURCE DST PORT MARKER`: a UDP echo to DST:PORT from a socket bound to SOURCE; "ok"
/// once the answer is back.
const BOUND_ECHO: &str = r#"
src, dst, port, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
def f():
    s = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.5)
    s.bind((src, 0)); s.sendto(marker, (dst, port)); s.recv(64)
run(f)
"#;

#[test]
fn where_sockets_may_bind_anywhere_sources_are_still_judged() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new();
    // Root's choice for the namespace, not the workload's: any address binds.
    let ns = lab.sb.netns.clone();
    for key in ["net.ipv4.ip_nonlocal_bind=1", "net.ipv6.ip_nonlocal_bind=1"] {
        sh(std::process::Command::new("ip").args(["netns", "exec", &ns, "sysctl", "-qw", key]))
            .unwrap();
    }
    // A plain bind to the forbidden host's address, reflected by this host's ICMPv6
    // error: refused at bind().
    lab.leak_closed(
        &lab.app.clone(),
        &[],
        NONLOCAL_REFLECT,
        &[FORBIDDEN_HOST_V6, WORKLOAD_ALLOWED_V6, "{marker}"],
        "EPERM",
    );
    let e = lab.event(&["policy=eu", "hook=bind", "rule=spoofed-source"]);
    assert!(e.contains(FORBIDDEN_HOST_V6), "{e}");
    let r = lab.no_leak(
        &lab.app.clone(),
        &[],
        NONLOCAL_REFLECT,
        &[FORBIDDEN_HOST_V4, WORKLOAD_ALLOWED_V4, "{marker}"],
    );
    assert_eq!(r, "EPERM");
    lab.event(&[
        "policy=eu",
        "hook=bind",
        "rule=spoofed-source",
        FORBIDDEN_HOST_V4,
    ]);
    // A per-message source, which the kernel now accepts: refused at sendmsg().
    lab.leak_closed(
        &lab.app.clone(),
        &[],
        PKTINFO_SOURCE,
        &[FORBIDDEN_HOST_V6, WORKLOAD_ALLOWED_V6, "{marker}"],
        "EPERM",
    );
    lab.event(&["policy=eu", "hook=sendmsg", "rule=spoofed-source"]);
    // A ping socket's bind() reaches no cgroup hook (ping has its own): its packet is
    // judged by its source.
    lab.leak_closed(
        &lab.app.clone(),
        &[],
        NONLOCAL_PING,
        &[FORBIDDEN_HOST_V6, WORKLOAD_ALLOWED_V6, "{marker}"],
        "*",
    );
    lab.event(&[
        "policy=eu",
        "hook=packet",
        "proto=icmpv6",
        "rule=spoofed-source",
    ]);
    // A raw socket's send reaches no socket call hook: its packet is dropped.
    lab.leak_closed(
        &lab.raw.clone(),
        &["net_raw"],
        RAW_PKTINFO,
        &[FORBIDDEN_HOST_V6, WORKLOAD_ALLOWED_V6, "{marker}"],
        "EPERM",
    );
    lab.event(&["policy=eu-raw", "hook=packet", "rule=spoofed-source"]);
    // The namespace's own addresses still work, an address added later too (the
    // agent follows the namespace's changes), and one taken away stops working.
    let port = PORT.to_string();
    let own = |lab: &Lab, src: &str| {
        lab.attempt(
            &lab.app,
            &[],
            BOUND_ECHO,
            &[src, ALLOWED_HOST_V6, &port, "own-source"],
        )
    };
    assert_eq!(own(&lab, WORKLOAD_ALLOWED_V6), "ok");
    let added = "2001:db8:1::77";
    let addr = |op: &str| {
        sh(std::process::Command::new("ip")
            .args([
                "-n",
                &ns,
                "addr",
                op,
                &format!("{added}/128"),
                "dev",
                "to-allowed",
            ])
            .args((op == "add").then_some("nodad")))
        .unwrap()
    };
    addr("add");
    assert_eq!(eventually(|| own(&lab, added)), "ok");
    addr("del");
    assert_eq!(
        eventually(|| {
            let r = own(&lab, added);
            if r == "ok" { "still".into() } else { r }
        }),
        "EPERM"
    );
}

/// Tries `f` up to five times, 100 ms apart, until it says "ok" or "EPERM"; the last
/// answer. (The agent takes a few milliseconds to see an address come or go.)
fn eventually(f: impl Fn() -> String) -> String {
    let mut r = f();
    for _ in 0..4 {
        if r == "ok" || r == "EPERM" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        r = f();
    }
    r
}

#[test]
fn raw_sockets_are_refused_and_a_written_header_never_decides_the_route() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new();
    // A policy that does not allow raw sockets refuses them (CAP_NET_RAW or not).
    let r = lab.no_leak(
        &lab.app.clone(),
        &["net_raw"],
        RAW_ICMP,
        &[FORBIDDEN_HOST_V4, "{marker}"],
    );
    assert_eq!(r, "EPERM");
    let e = lab.event(&["policy=eu", "hook=socket", "rule=raw-socket"]);
    assert!(e.contains("proto=icmp ") && e.contains("uid=65534 "), "{e}");
    // Where they are allowed, their packets are judged by the address the kernel
    // routes to...
    let r = lab.no_leak(
        &lab.raw.clone(),
        &["net_raw"],
        RAW_ICMP,
        &[ALLOWED_HOST_V4, "{marker}"],
    );
    assert_eq!(r, "ok");
    lab.leak_closed(
        &lab.raw.clone(),
        &["net_raw"],
        RAW_ICMP,
        &[FORBIDDEN_HOST_V4, "{marker}"],
        "EPERM",
    );
    // ...and a header written by hand is refused: the header says allowed, the kernel
    // routes by the sendto() address to the forbidden host.
    lab.leak_closed(
        &lab.raw.clone(),
        &["net_raw"],
        HEADER_VS_ROUTE,
        &[
            WORKLOAD_ALLOWED_V4,
            ALLOWED_HOST_V4,
            FORBIDDEN_HOST_V4,
            "{marker}",
        ],
        "EPERM",
    );
    // IP_HDRINCL forging the source, reflected by this host's kernel.
    lab.leak_closed(
        &lab.raw.clone(),
        &["net_raw"],
        HDRINCL,
        &[FORBIDDEN_HOST_V4, WORKLOAD_ALLOWED_V4, "{marker}"],
        "EPERM",
    );
    let e = lab.event(&["policy=eu-raw", "option=IP_HDRINCL "]);
    assert!(e.contains("rule=raw-socket"), "{e}");
}

#[test]
fn the_ways_out_already_held_stay_held_by_what_arrives() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let port = PORT.to_string();
    let app = lab.app.clone();
    // TCP Fast Open: the data would ride in the SYN.
    for addr in [FORBIDDEN_HOST_V4, FORBIDDEN_HOST_V6] {
        assert_eq!(
            lab.no_leak(&app, &[], FAST_OPEN, &[addr, &port, "{marker}"]),
            "EPERM",
            "TFO to {addr}"
        );
    }
    // An IPv4-mapped destination on an IPv6 socket; a fragmented datagram.
    let mapped = format!("::ffff:{FORBIDDEN_HOST_V4}");
    for (addr, size) in [
        (mapped.as_str(), "64"),
        (FORBIDDEN_HOST_V4, "4000"),
        (FORBIDDEN_HOST_V6, "4000"),
    ] {
        assert_eq!(
            lab.no_leak(&app, &[], DATAGRAM, &[addr, &port, "{marker}", size]),
            "EPERM",
            "{addr}, {size} bytes"
        );
    }
    // A send through io_uring passes by the same socket hooks.
    for addr in [FORBIDDEN_HOST_V4, FORBIDDEN_HOST_V6] {
        lab.leak_closed(&app, &[], IO_URING, &[addr, &port, "{marker}"], "EPERM");
    }
    let r = lab.no_leak(&app, &[], IO_URING, &[ALLOWED_HOST_V4, &port, "{marker}"]);
    assert_eq!(r, "ok", "io_uring to the allowed host");
    // Multicast out of the forbidden link.
    lab.leak_closed(
        &app,
        &[],
        MULTICAST,
        &[WORKLOAD_FORBIDDEN_V4, "239.1.2.3", &port, "{marker}"],
        "EPERM",
    );
    // A raw socket's datagram behind an extension header, where raw sockets are allowed.
    lab.leak_closed(
        &lab.raw.clone(),
        &["net_raw"],
        EXTENSION_HEADER,
        &[FORBIDDEN_HOST_V6, "{marker}"],
        "EPERM",
    );
    // And the allowed host, mapped or fragmented, is still reached.
    let mapped_ok = format!("::ffff:{ALLOWED_HOST_V4}");
    for (addr, size) in [(mapped_ok.as_str(), "64"), (ALLOWED_HOST_V6, "4000")] {
        assert_eq!(
            lab.no_leak(&app, &[], DATAGRAM, &[addr, &port, "{marker}", size]),
            "ok",
            "{addr}, {size} bytes"
        );
    }
}

/// `ADDR PORT MARKER`: one UDP datagram sent through io_uring (`IORING_OP_SENDMSG`),
/// the ring set up with raw system calls: no `sendto()` system call at all.
const IO_URING: &str = r#"
import ctypes, mmap
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
addr, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
def f():
    params = ctypes.create_string_buffer(120)
    ring = libc.syscall(425, 4, params)
    if ring < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup")
    p = params.raw
    sq_entries, cq_entries = struct.unpack_from("II", p, 0)
    sq_head, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("7I", p, 40)
    cq_head, cq_tail, cq_mask, _, _, cqes = struct.unpack_from("6I", p, 80)
    size = max(sq_array + sq_entries * 4, cqes + cq_entries * 16)
    rings = mmap.mmap(ring, size, offset=0)
    sqes = mmap.mmap(ring, sq_entries * 64, offset=0x10000000)
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        name = struct.pack("!HHI16sI", socket.AF_INET6, port, 0, socket.inet_pton(family, addr), 0)
        name = struct.pack("=H", socket.AF_INET6) + name[2:]
    else:
        name = struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(addr))
    name_buf = ctypes.create_string_buffer(name, len(name))
    data = ctypes.create_string_buffer(marker, len(marker))
    iov = struct.pack("QQ", ctypes.addressof(data), len(marker))
    iov_buf = ctypes.create_string_buffer(iov, len(iov))
    msg = struct.pack("QI4xQQQQi4x", ctypes.addressof(name_buf), len(name), ctypes.addressof(iov_buf), 1, 0, 0, 0)
    msg_buf = ctypes.create_string_buffer(msg, len(msg))
    # IORING_OP_SENDMSG (9): fd, addr = msghdr, len = 1.
    sqe = struct.pack("BBHiQQIIQ", 9, 0, 0, s.fileno(), 0, ctypes.addressof(msg_buf), 1, 0, 7)
    sqes[0:64] = sqe.ljust(64, b"\0")
    tail = struct.unpack_from("I", rings, sq_tail)[0]
    struct.pack_into("I", rings, sq_array + (tail & sq_mask) * 4, 0)
    struct.pack_into("I", rings, sq_tail, tail + 1)
    n = libc.syscall(426, ring, 1, 1, 1, None, 0)
    if n < 0:
        raise OSError(ctypes.get_errno(), "io_uring_enter")
    head = struct.unpack_from("I", rings, cq_head)[0]
    res = struct.unpack_from("i", rings, cqes + (head & cq_mask) * 16 + 8)[0]
    if res < 0:
        raise OSError(-res, "sendmsg through io_uring")
run(f)
"#;

/// `IFADDR GROUP PORT MARKER`: a multicast datagram to GROUP, sent out of the link
/// whose address is IFADDR (`IP_MULTICAST_IF`).
const MULTICAST: &str = r#"
ifaddr, group, port, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
def f():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
    s.sendto(marker, (group, port))
run(f)
"#;

/// `ADDR MARKER`: a UDP datagram on a raw IPv6 socket (`CAP_NET_RAW`) behind a
/// destination options header (IPV6_DSTOPTS, one PadN option).
const EXTENSION_HEADER: &str = r#"
addr, marker = sys.argv[1], sys.argv[2].encode()
def f():
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.setsockopt(socket.IPPROTO_IPV6, 7, 6)  # IPV6_CHECKSUM at the UDP checksum
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(marker), 0) + marker
    opts = bytes([0, 0, 1, 4, 0, 0, 0, 0])
    s.sendmsg([udp], [(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, opts)], 0, (addr, 0))
run(f)
"#;

/// `PORT`: a TCP echo listener (IPv4 and IPv6); prints "ready" once listening.
const LISTENER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(64); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.settimeout(2)
    try:
        c.sendall(c.recv(64))
    except OSError:
        pass
    c.close()
"#;

/// `ADDR PORT MARKER`: one TCP echo, from a peer host.
const CONNECT: &str = r#"
addr, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
def f():
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect((addr, port)); s.sendall(marker); s.recv(64)
run(f)
"#;

/// Whether any frame is a TCP SYN-ACK from `port` (IPv4, or IPv6 without extension
/// headers).
fn syn_ack_from(frames: &[Vec<u8>], port: u16) -> bool {
    frames.iter().any(|f| {
        let tcp = match (f.get(12..14), f.get(14)) {
            (Some([0x08, 0x00]), Some(v)) if f.get(23) == Some(&6) => {
                14 + usize::from(v & 0x0f) * 4
            }
            (Some([0x86, 0xdd]), _) if f.get(20) == Some(&6) => 54,
            _ => return false,
        };
        f.len() > tcp + 13
            && u16::from_be_bytes([f[tcp], f[tcp + 1]]) == port
            && f[tcp + 13] & 0x12 == 0x12
    })
}

impl Lab {
    /// Starts [`LISTENER`] on `port` as nobody in `cgroup`.
    fn listen(&mut self, cgroup: &Path, port: u16) {
        use std::io::BufRead as _;
        let p = port.to_string();
        let mut child = self
            .sb
            .command_as_nobody(Some(cgroup), &[], "python3", &["-c", LISTENER, &p])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "listener on {port}");
        self.sb.adopt(child);
    }

    /// [`CONNECT`] from the peer namespace `ns`, as root.
    fn connect_from(&self, ns: &str, addr: &str, port: u16, marker: &str) -> String {
        let source = format!("{PRELUDE}{CONNECT}");
        let out = output_within(
            self.sb.command_in(ns, None, "python3").args([
                "-c",
                &source,
                addr,
                &port.to_string(),
                marker,
            ]),
            20,
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

#[test]
fn judge_inbound_refuses_forbidden_syns_before_anything_answers_them() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new();
    // SYN cookies for every SYN: the SYN-ACK then leaves without a socket, where no
    // egress hook sees it. Only refusing the SYN keeps it from the forbidden host.
    sh(std::process::Command::new("ip").args([
        "netns",
        "exec",
        &lab.sb.netns,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_syncookies=2",
    ]))
    .unwrap();
    let (judged, control) = (9001, 9002);
    lab.listen(&lab.inbound.clone(), judged);
    lab.listen(&lab.free.clone(), control);
    let forbidden = lab.net.forbidden_ns.clone();
    let allowed = lab.net.allowed_ns.clone();
    for (workload, from) in [
        (
            residency_tests::routed::WORKLOAD_FORBIDDEN_V4,
            FORBIDDEN_HOST_V4,
        ),
        (
            residency_tests::routed::WORKLOAD_FORBIDDEN_V6,
            FORBIDDEN_HOST_V6,
        ),
    ] {
        // The control: a listener no policy binds answers the forbidden host.
        assert_eq!(lab.connect_from(&forbidden, workload, control, "c"), "ok");
        assert!(syn_ack_from(&lab.net.forbidden_frames(), control));
        // The judged listener never answers it: no SYN-ACK, cookie or not.
        assert_eq!(
            lab.connect_from(&forbidden, workload, judged, "j"),
            "timeout",
            "a forbidden peer connected to {workload}"
        );
        assert!(
            !syn_ack_from(&lab.net.forbidden_frames(), judged),
            "a SYN-ACK reached the forbidden host from {workload}"
        );
        let e = lab.event(&["policy=eu-inbound", "hook=inbound", &format!("src={from} ")]);
        assert!(
            e.contains("sport=") && e.contains("rule=default-deny"),
            "{e}"
        );
    }
    // An allowed peer connects as before.
    for workload in [WORKLOAD_ALLOWED_V4, WORKLOAD_ALLOWED_V6] {
        assert_eq!(
            lab.connect_from(&allowed, workload, judged, "a"),
            "ok",
            "{workload}"
        );
    }
}
