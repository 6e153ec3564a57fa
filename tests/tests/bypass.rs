//! The bypass matrix: every way out of a cgroup that a residency policy must judge,
//! against the real agent in a sandbox namespace. Port and protocol rules, connect-time
//! and sendto-time denial (EPERM at once, with the process named), raw IP sockets with
//! hand-written headers, IPv4-mapped destinations with ports, destinations that embed
//! IPv4 addresses or reach many hosts, packet sockets, and a process that moves between
//! cgroups with a socket open.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::Stdio,
};

use residency_tests::{PORT, Sandbox, agent_binary, http_get, require_root, sample};

const A4: &str = "198.51.100.7";
const CARVED_V4: &str = "198.51.100.99";
const RANGE_V4: &str = "203.0.113.9";
const FORBIDDEN_V4: &str = "192.0.2.1";
const A6: &str = "2001:db8:1::7";
const ADDRS: &[&str] = &[A4, CARVED_V4, RANGE_V4, FORBIDDEN_V4, A6];
const DNS_PORT: u16 = 5353;
const OTHER_PORT: u16 = 9090;

const CONFIG: &str = r#"
[agent]
pin_path = "{pins}"
metrics_address = "{metrics}"

[events]
sinks = ["text"]
aggregate_window_ms = 0
rate_limit_per_cpu = 0

[[policy]]
name = "ports"
cgroups = ["{cg}/app"]
allow = [
  "198.51.100.0/24 tcp/8080",
  "198.51.100.0/24 udp/5353",
  "203.0.113.0/24 tcp/8000-8100",
  "2001:db8:1::/48 tcp/8080",
  "198.51.100.7/32 icmp",
]
deny = ["198.51.100.99/32 tcp/8080"]
allow_raw_sockets = true

[[policy]]
name = "open"
cgroups = ["{cg}/open"]
allow = ["0.0.0.0/0", "::/0"]

[[policy]]
name = "capture"
cgroups = ["{cg}/capture"]
allow = ["198.51.100.0/24"]
allow_packet_sockets = true
"#;

/// connect() (tcp) or sendto() (udp) once, timed inside the process: prints the
/// result (ok or the errno name) and the milliseconds the call took.
const TIMED: &str = r#"
import errno, socket, sys, time
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(3)
t = time.monotonic()
try:
    if proto == "tcp":
        s.connect((addr, port))
    else:
        s.sendto(b"residency", (addr, port))
    r = "ok"
except socket.timeout:
    r = "timeout"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
print(r, int((time.monotonic() - t) * 1000))
"#;

/// A UDP datagram with a hand-written IPv4 header through a raw IP_HDRINCL socket.
const RAW: &str = r#"
import errno, socket, struct, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = b"residency"
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(ip + udp, (dst, 0)); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// A raw UDP socket: the kernel writes the IP header (to the `sendto()` address), the
/// program writes the UDP header, with source port 40000.
const RAW_UDP: &str = r#"
import errno, socket, struct, sys
dst, port = sys.argv[1], int(sys.argv[2])
payload = b"residency"
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.sendto(udp, (dst, 0)); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// Creates a packet socket (AF_PACKET), as a sniffer or a raw-frame sender would.
const PACKET: &str = r#"
import errno, socket
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// Opens a UDP socket (and, given a third argument, sends from it first, so that the
/// kernel has its verdict cached), waits while the test moves it to another cgroup,
/// opens a second one, and sends from both.
const MOVER: &str = r#"
import errno, os, socket, sys
dst, port = sys.argv[1], int(sys.argv[2])
old = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def send(s):
    try:
        s.sendto(b"residency", (dst, port)); return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
warm = send(old) if len(sys.argv) > 3 else "-"
print(os.getpid(), warm, flush=True)
sys.stdin.readline()
new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(send(old), send(new), flush=True)
"#;

/// The sandbox of every test here: echo servers on `ports` besides [`PORT`], and the
/// cgroups `app`, `open` and `capture` of [`CONFIG`].
struct Setup {
    sb: Sandbox,
    app: PathBuf,
    open: PathBuf,
    capture: PathBuf,
    config: PathBuf,
}

fn setup(ports: &[u16]) -> Setup {
    let mut sb = Sandbox::new(ADDRS).unwrap();
    for p in ports {
        sb.serve(*p).unwrap();
    }
    let app = sb.cgroup("app").unwrap();
    let open = sb.cgroup("open").unwrap();
    let capture = sb.cgroup("capture").unwrap();
    let config = sb.write_config("residency.toml", CONFIG);
    Setup {
        sb,
        app,
        open,
        capture,
        config,
    }
}

/// [`setup`] with the agent running.
fn started(ports: &[u16]) -> Setup {
    let mut s = setup(ports);
    s.sb.start_agent(&agent_binary(), &s.config).unwrap();
    let (ok, out) = s.sb.verify(&agent_binary(), &s.config);
    assert!(ok && out.contains("kernel state = config"), "{out}");
    s
}

fn run(sb: &Sandbox, cgroup: &Path, script: &str, args: &[&str]) -> String {
    let mut all = vec!["-c", script];
    all.extend_from_slice(args);
    let out = sb
        .command(Some(cgroup), "python3", &all)
        .stderr(Stdio::inherit())
        .output()
        .expect("running python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// (result, milliseconds) of one timed connect() or sendto().
fn timed(sb: &Sandbox, cgroup: &Path, proto: &str, addr: &str, port: u16) -> (String, u64) {
    let out = run(sb, cgroup, TIMED, &[proto, addr, &port.to_string()]);
    let (r, ms) = out.split_once(' ').expect("result and time");
    (r.to_owned(), ms.parse().expect("milliseconds"))
}

#[test]
fn port_protocol_and_connect_time_matrix() {
    if !require_root() {
        return;
    }
    let Setup {
        mut sb,
        app,
        config,
        ..
    } = setup(&[DNS_PORT, OTHER_PORT]);

    // Without the agent every case below passes: what fails later is the agent's doing.
    for (proto, addr, port) in [
        ("tcp", A4, OTHER_PORT),
        ("udp", A4, PORT),
        ("tcp", RANGE_V4, OTHER_PORT),
        ("udp", A6, PORT),
    ] {
        let o = sb.client_to(Some(&app), proto, addr, port);
        assert!(o.ok, "baseline {proto} {addr}:{port}: {o:?}");
    }
    assert_eq!(run(&sb, &app, RAW, &[A4, FORBIDDEN_V4, "5353"]), "ok");

    sb.start_agent(&agent_binary(), &config).unwrap();

    // (protocol, destination, port, allowed?, why)
    let mapped = format!("::ffff:{A4}");
    let cases: &[(&str, &str, u16, bool, &str)] = &[
        ("tcp", A4, PORT, true, "tcp/8080 allowed on the /24"),
        ("tcp", A4, OTHER_PORT, false, "allowed prefix, wrong port"),
        (
            "udp",
            A4,
            PORT,
            false,
            "allowed prefix and port, wrong protocol",
        ),
        ("udp", A4, DNS_PORT, true, "udp/5353 allowed on the /24"),
        ("tcp", A4, DNS_PORT, false, "udp port, tcp protocol"),
        ("tcp", CARVED_V4, PORT, false, "tcp/8080 denied on the /32"),
        (
            "udp",
            CARVED_V4,
            DNS_PORT,
            true,
            "the /32 inherits the /24's udp/5353",
        ),
        ("tcp", RANGE_V4, PORT, true, "inside tcp/8000-8100"),
        ("tcp", RANGE_V4, OTHER_PORT, false, "outside tcp/8000-8100"),
        (
            "tcp",
            &mapped,
            PORT,
            true,
            "IPv4-mapped, judged as IPv4 with its port",
        ),
        ("tcp", &mapped, OTHER_PORT, false, "IPv4-mapped, wrong port"),
        ("udp", &mapped, DNS_PORT, true, "IPv4-mapped udp/5353"),
        ("udp", &mapped, PORT, false, "IPv4-mapped, wrong protocol"),
        ("tcp", A6, PORT, true, "IPv6 tcp/8080"),
        ("udp", A6, PORT, false, "IPv6, wrong protocol"),
        ("tcp", FORBIDDEN_V4, PORT, false, "no entry: default deny"),
    ];
    for (proto, addr, port, allowed, why) in cases {
        let o = sb.client_to(Some(&app), proto, addr, *port);
        if *allowed {
            assert!(o.ok, "{proto} {addr}:{port} ({why}) was refused: {o:?}");
        } else {
            // Refused at the socket call, not by a timeout.
            assert_eq!(o.detail, "EPERM", "{proto} {addr}:{port} ({why})");
        }
    }

    // ICMP is a protocol of its own: allowed to the /32 that names it, not elsewhere.
    assert!(sb.ping(Some(&app), A4).ok, "icmp allowed to {A4}");
    assert!(
        !sb.ping(Some(&app), RANGE_V4).ok,
        "icmp not allowed to {RANGE_V4}"
    );

    // A forbidden connect() fails with EPERM at once (a dropped SYN would hang for the
    // whole 3 s timeout); so does a UDP sendto().
    for (proto, addr) in [("tcp", FORBIDDEN_V4), ("udp", FORBIDDEN_V4), ("tcp", A6)] {
        let port = if proto == "tcp" && addr == A6 {
            OTHER_PORT
        } else {
            PORT
        };
        let (r, ms) = timed(&sb, &app, proto, addr, port);
        assert_eq!(r, "EPERM", "{proto} to {addr}:{port}");
        assert!(
            ms < 250,
            "{proto} to {addr}:{port} took {ms} ms to be refused"
        );
    }

    // A raw IP socket (the policy allows them) is judged by the packet program, ports
    // included.
    assert_eq!(run(&sb, &app, RAW_UDP, &[A4, "5353"]), "ok", "raw udp/5353");
    assert_eq!(
        run(&sb, &app, RAW_UDP, &[A4, "9090"]),
        "EPERM",
        "raw udp/9090"
    );
    assert_eq!(
        run(&sb, &app, RAW_UDP, &[FORBIDDEN_V4, "5353"]),
        "EPERM",
        "raw udp to a forbidden address"
    );
    // One that writes its own IP header is refused even so: the kernel routes it by
    // the sendto() address, whatever its header says.
    assert_eq!(
        run(&sb, &app, RAW, &[A4, A4, "5353"]),
        "EPERM",
        "IPPROTO_RAW"
    );

    // What the operator sees: the refused call with the process that made it.
    let agent = sb.agent();
    let connect = agent
        .wait_event(&[
            "policy=ports",
            "proto=tcp",
            &format!("dst={FORBIDDEN_V4} "),
            "hook=connect",
        ])
        .expect("connect event");
    assert!(
        connect.contains(" pid=") && connect.contains(r#"comm="python3""#),
        "{connect}"
    );
    assert!(connect.contains("rule=default-deny"), "{connect}");
    let port_event = agent
        .wait_event(&[
            "proto=tcp",
            &format!("dst={A4} "),
            &format!("dport={OTHER_PORT} "),
        ])
        .expect("wrong-port event");
    assert!(port_event.contains("hook=connect"), "{port_event}");
    let carve = agent
        .wait_event(&[&format!("dst={CARVED_V4} "), "dport=8080 "])
        .expect("carve-out event");
    assert!(
        carve.contains("rule=deny:198.51.100.99/32 tcp/8080"),
        "{carve}"
    );
    let sendto = agent
        .wait_event(&["proto=udp", &format!("dst={FORBIDDEN_V4} "), "hook=sendmsg"])
        .expect("sendto event");
    assert!(sendto.contains(r#"comm="python3""#), "{sendto}");
    let raw = agent
        .wait_event(&[
            "proto=udp",
            &format!("dst={A4} "),
            "dport=9090 ",
            "hook=packet",
        ])
        .expect("raw packet event");
    assert!(raw.contains("sport=40000"), "{raw}");
    let hdrincl = agent
        .wait_event(&["policy=ports", "hook=socket", "rule=raw-socket"])
        .expect("IPPROTO_RAW socket event");
    assert!(hdrincl.contains("proto=255 "), "{hdrincl}");

    // The same denials, counted.
    let (_, text) = http_get(sb.metrics, "/metrics").unwrap();
    let denials = sample(&text, "residency_socket_denials_total").unwrap_or(0.0);
    assert!(denials >= 10.0, "socket denials counted: {denials}");
    let blocked = sample(
        &text,
        r#"residency_packets_total{policy="ports",verdict="blocked",family="ipv4"}"#,
    )
    .unwrap_or(0.0);
    assert!(blocked >= 10.0, "blocked counted: {blocked}\n{text}");
}

#[test]
fn embedded_ipv4_multicast_and_broadcast_are_denied_unless_named() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let Setup {
        mut sb,
        open,
        config,
        ..
    } = started(&[]);

    // The policy allows 0.0.0.0/0 and ::/0 ...
    assert!(sb.client(Some(&open), "udp", RANGE_V4).ok);
    assert!(sb.client(Some(&open), "tcp", A6).ok);
    // ... but not the IPv4 hosts behind these, nor many hosts at once.
    for (addr, rule) in [
        ("::198.51.100.7", "special-deny:ipv4-compatible:::/96"),
        ("2002:c633:6407::1", "special-deny:6to4:2002::/16"),
        ("2001:0:c633:6407::1", "special-deny:teredo:2001::/32"),
        ("64:ff9b::c633:6407", "special-deny:nat64:64:ff9b::/96"),
        ("ff0e::1", "special-deny:multicast:ff00::/8"),
        ("224.0.0.251", "special-deny:multicast:224.0.0.0/4"),
        (
            "255.255.255.255",
            "special-deny:broadcast:255.255.255.255/32",
        ),
    ] {
        let (r, _) = timed(&sb, &open, "udp", addr, DNS_PORT);
        assert_eq!(r, "EPERM", "udp to {addr}");
        // As the agent writes addresses (::198.51.100.7 is shown as ::c633:6407).
        let shown = addr.parse::<std::net::IpAddr>().unwrap().to_string();
        let e = sb
            .agent()
            .wait_event(&["policy=open", &format!("dst={shown} ")])
            .unwrap_or_else(|| panic!("no event for {addr}"));
        assert!(e.contains(&format!("rule={rule}")), "{e}");
    }
    let out = residency_tests::output_within(
        std::process::Command::new(&bin)
            .args(["explain", "--config"])
            .arg(&config)
            .args(["2002:c633:6407::1", "udp/53"]),
        30,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BLOCKED by policy open") && text.contains("6to4"),
        "{text}"
    );
}

#[test]
fn packet_sockets_are_denied_or_the_gap_is_reported() {
    if !require_root() {
        return;
    }
    let bin = agent_binary();
    let Setup {
        mut sb,
        app,
        capture,
        config,
        ..
    } = started(&[]);

    assert_eq!(
        run(&sb, &capture, PACKET, &[]),
        "ok",
        "allowed by its policy"
    );
    let gap = sb
        .agent()
        .stderr()
        .into_iter()
        .find(|l| l.contains("packet sockets (AF_PACKET, AF_XDP) are NOT denied"));
    match gap {
        // This kernel refuses BPF LSM programs: the agent says so, naming each exposed
        // enforce policy (and not the one that allows packet sockets).
        Some(line) => {
            let all = sb
                .agent()
                .stderr()
                .into_iter()
                .filter(|l| l.contains("NOT denied"))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(line.contains("ERROR"), "{line}");
            assert!(
                all.contains("policy=ports") && all.contains("policy=open"),
                "{all}"
            );
            assert!(!all.contains("policy=capture"), "{all}");
            assert_eq!(run(&sb, &app, PACKET, &[]), "ok", "the documented gap");
            // With the strict setting, the same kernel makes the agent refuse to run
            // (the first agent steps aside; its pinned enforcement stays).
            sb.agent().signal(libc::SIGTERM);
            // It also changes a policy: its version is written while its programs load,
            // and must never go in force when it refuses.
            let strict = sb.write_config(
                "strict.toml",
                &CONFIG
                    .replace("[agent]\n", "[agent]\nrequire_packet_socket_guard = true\n")
                    .replace(
                        "allow = [\"198.51.100.0/24\"]\nallow_packet_sockets",
                        "allow = [\"192.0.2.0/24\"]\nallow_packet_sockets",
                    ),
            );
            let out = residency_tests::output_within(
                std::process::Command::new(&bin)
                    .args(["check", "--config"])
                    .arg(&strict),
                30,
            );
            assert!(out.status.success(), "check accepts the key");
            let out = residency_tests::output_within(
                std::process::Command::new(&bin)
                    .args(["run", "--config"])
                    .arg(&strict),
                30,
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "strict agent started: {err}");
            assert!(
                err.contains("require_packet_socket_guard") && err.contains("\"ports\""),
                "{err}"
            );
            let (ok, out) = sb.verify(&bin, &config);
            assert!(
                ok && out.contains("kernel state = config"),
                "the refused agent's version went in force: {out}"
            );
            let (ok, out) = sb.verify(&bin, &strict);
            assert!(!ok && out.contains("192.0.2.0/24"), "{out}");
        }
        None => {
            assert_eq!(
                run(&sb, &app, PACKET, &[]),
                "EPERM",
                "packet socket in enforce"
            );
            let e = sb
                .agent()
                .wait_event(&["policy=ports", "proto=packet-socket", "hook=socket"])
                .expect("packet socket event");
            assert!(e.contains(r#"comm="python3""#), "{e}");
        }
    }
}

/// Moves the MOVER process from `from` to `to` between its two sockets; returns what
/// the old and the new socket saw.
fn move_between(sb: &Sandbox, from: &Path, to: &Path, dst: &str, port: u16) -> (String, String) {
    let (_, old, new) = mover(sb, from, to, dst, port, false);
    (old, new)
}

/// [`move_between`], the old socket sending once before the move when `warm`: (that
/// send's result or "-", the old socket's after the move, the new one's).
fn mover(
    sb: &Sandbox,
    from: &Path,
    to: &Path,
    dst: &str,
    port: u16,
    warm: bool,
) -> (String, String, String) {
    let port = port.to_string();
    let mut args = vec!["-c", MOVER, dst, &port];
    if warm {
        args.push("warm");
    }
    let mut child = sb
        .command(Some(from), "python3", &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the mover");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next().expect("pid line").expect("read");
    let (pid, warmed) = first.split_once(' ').expect("pid and the first send");
    std::fs::write(to.join("cgroup.procs"), pid.trim()).expect("moving the process");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"go\n")
        .expect("resuming the mover");
    let result = lines.next().expect("result line").expect("read");
    child.wait().expect("mover exit");
    let (old, new) = result.split_once(' ').expect("two results");
    (warmed.to_owned(), old.to_owned(), new.to_owned())
}

/// A socket keeps the cgroup it was created in: its packets are judged by that
/// cgroup's policy, while connect() and sendto() are judged by the calling process's
/// policy. Moving a process never widens what an open socket may reach: both policies
/// must allow.
#[test]
fn a_process_moved_between_cgroups_with_an_open_socket() {
    if !require_root() {
        return;
    }
    let Setup {
        mut sb, app, open, ..
    } = started(&[OTHER_PORT]);

    // udp/9090 to RANGE_V4: "open" allows it, "ports" does not.
    let (old, new) = move_between(&sb, &app, &open, RANGE_V4, OTHER_PORT);
    assert_eq!(
        old, "EPERM",
        "socket from app: its packets stay under app's policy"
    );
    assert_eq!(new, "ok", "a socket created after the move is open's");
    let (old, new) = move_between(&sb, &open, &app, RANGE_V4, OTHER_PORT);
    assert_eq!(
        old, "EPERM",
        "the sendto() is judged by the mover's new policy"
    );
    assert_eq!(new, "EPERM");
    // The same after the socket's packets were judged, allowed and cached under open's
    // binding: the call is still judged by the mover's new policy, not by the cache.
    let (warmed, old, _) = mover(&sb, &open, &app, RANGE_V4, OTHER_PORT, true);
    assert_eq!(warmed, "ok", "open allows it before the move");
    assert_eq!(
        old, "EPERM",
        "a cached verdict of the socket's cgroup answered the mover's call"
    );

    // Out to a cgroup no policy binds: the socket's packets stay judged by app's
    // policy, and what app allows still passes.
    let free = sb.cgroup("free").unwrap();
    let (old, new) = move_between(&sb, &app, &free, RANGE_V4, OTHER_PORT);
    assert_eq!(old, "EPERM", "app's socket: its packets are still app's");
    assert_eq!(new, "ok", "an unbound cgroup's own socket is not judged");
    sb.serve(DNS_PORT).unwrap();
    let (old, _) = move_between(&sb, &app, &free, A4, DNS_PORT);
    assert_eq!(old, "ok", "what app allows still passes");
    // The documented gap: a socket created where no policy binds is never judged,
    // even when a process of a bound cgroup uses it.
    let (old, new) = move_between(&sb, &free, &app, RANGE_V4, OTHER_PORT);
    assert_eq!(old, "ok", "documented: unbound sockets are not judged");
    assert_eq!(new, "EPERM");
}
