//! Probes: the live egress program driven through `BPF_PROG_TEST_RUN` with packets
//! made from the policy itself, each verdict compared with the offline one
//! (`policy::decide::Index`, the twin of the kernel's).
//!
//! For every prefix of a policy: its first and last address and the addresses just
//! outside it, each with UDP/53, TCP/443 and ICMP, and with both sides of every edge of
//! every protocol/port rule. The packets carry `PROBE_MARK`, so the program returns its
//! bare decision (whatever the mode) and counts, caches and reports nothing. The run
//! judges by the calling process's cgroup, so the probes of a policy run from a cgroup
//! of `verify`'s own, bound to the policy for the time of its probes ([`Joined`]).

use std::{
    collections::BTreeSet,
    io::ErrorKind,
    net::IpAddr,
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use residency_common::{
    PROBE_MARK, PortRule,
    protocol::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    policy::decide::{Index, Target, mask},
    sys::bpf,
};

/// What the probes of one policy found.
#[derive(Default)]
pub struct Probed {
    pub probes: usize,
    pub mismatches: Vec<String>,
}

/// This process in a cgroup of its own for as long as it lives, then back where it
/// was. The probes of a policy run with that cgroup bound to the policy for a moment
/// (`verify` writes and removes the binding), so no workload's cgroup is touched.
pub struct Joined {
    home: PathBuf,
    dir: PathBuf,
    /// The cgroup's id, as the program's binding lookup sees it.
    pub id: u64,
}

impl Joined {
    /// Creates `residency-verify-<pid>` at the top of the hierarchy and moves this
    /// process into it.
    pub fn private(mount: &Path) -> anyhow::Result<Joined> {
        use std::os::unix::fs::MetadataExt as _;
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .context("this process has no cgroup v2 path")?;
        let home = mount.join(rel.trim_start_matches('/'));
        let pid = std::process::id().to_string();
        let dir = mount.join(format!("residency-verify-{pid}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).context(format!("creating {}", dir.display())),
        }
        let id = std::fs::metadata(&dir)?.ino();
        let joined = Joined { home, dir, id };
        std::fs::write(joined.dir.join("cgroup.procs"), &pid)
            .with_context(|| format!("joining {}", joined.dir.display()))?;
        Ok(joined)
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Probes policy `id` (named `name`) through program `prog`, from the cgroup this
/// process is in. `prefixes` are the policy's entries: address, length, port rules.
pub fn probe(
    prog: BorrowedFd<'_>,
    index: &Index<'_>,
    id: u32,
    name: &str,
    prefixes: &[(IpAddr, u8, Vec<PortRule>)],
    sample: usize,
) -> anyhow::Result<Probed> {
    // At most `sample` prefixes, evenly spread over the policy.
    let step = prefixes.len().div_ceil(sample).max(1);
    let mut out = Probed::default();
    let mut seen = BTreeSet::new();
    for (addr, len, ports) in prefixes.iter().step_by(step) {
        let mut combos: Vec<(u8, u16)> = vec![(IPPROTO_UDP, 53), (IPPROTO_TCP, 443)];
        combos.push((
            if addr.is_ipv4() {
                IPPROTO_ICMP
            } else {
                IPPROTO_ICMPV6
            },
            0,
        ));
        for r in ports {
            for p in [
                r.port_lo.checked_sub(1),
                Some(r.port_lo),
                Some(r.port_hi),
                r.port_hi.checked_add(1),
            ]
            .into_iter()
            .flatten()
            {
                combos.push((r.protocol, p));
            }
        }
        for a in edges(*addr, *len) {
            for (protocol, port) in &combos {
                if !seen.insert((a, *protocol, *port)) {
                    continue;
                }
                let ported = matches!(*protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP);
                let target = Target {
                    addr: a,
                    protocol: Some(*protocol),
                    port: ported.then_some(*port),
                };
                let (want, _) = index.decide(id, &target);
                let got = bpf::test_run_skb(prog, &frame(a, *protocol, *port), PROBE_MARK)
                    .context("BPF_PROG_TEST_RUN on the live egress program")?;
                out.probes += 1;
                if (got == 1) != want {
                    let what = if ported {
                        format!("{} {a} port {port}", proto_name(*protocol))
                    } else {
                        format!("{} {a}", proto_name(*protocol))
                    };
                    out.mismatches.push(format!(
                        "policy \"{name}\": {what}: the kernel {}, the config {}",
                        if got == 1 { "allows" } else { "refuses" },
                        if want { "allows" } else { "refuses" }
                    ));
                }
            }
        }
    }
    Ok(out)
}

fn proto_name(p: u8) -> String {
    crate::events::decode::protocol_name(p)
}

/// The first and last address of `addr/len` and the two just outside it.
fn edges(addr: IpAddr, len: u8) -> Vec<IpAddr> {
    let first = mask(addr, len);
    match first {
        IpAddr::V4(a) => {
            let f = u32::from(a);
            let host = if len >= 32 { 0 } else { u32::MAX >> len };
            let l = f | host;
            [Some(f), Some(l), f.checked_sub(1), l.checked_add(1)]
                .into_iter()
                .flatten()
                .map(|x| IpAddr::V4(x.into()))
                .collect()
        }
        IpAddr::V6(a) => {
            let f = u128::from(a);
            let host = if len >= 128 { 0 } else { u128::MAX >> len };
            let l = f | host;
            [Some(f), Some(l), f.checked_sub(1), l.checked_add(1)]
                .into_iter()
                .flatten()
                .map(|x| IpAddr::V6(x.into()))
                .collect()
        }
    }
}

/// An Ethernet frame carrying one packet to `dst`: IPv4 or IPv6, then a TCP, UDP or
/// SCTP header with `port` as its destination, an ICMP echo request, or 8 bytes of
/// another protocol's header.
fn frame(dst: IpAddr, protocol: u8, port: u16) -> Vec<u8> {
    let transport: Vec<u8> = match protocol {
        IPPROTO_TCP => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&40000u16.to_be_bytes());
            t[2..4].copy_from_slice(&port.to_be_bytes());
            t[12] = 0x50;
            t[13] = 0x02;
            t
        }
        IPPROTO_UDP => {
            let mut t = vec![0u8; 8];
            t[0..2].copy_from_slice(&40000u16.to_be_bytes());
            t[2..4].copy_from_slice(&port.to_be_bytes());
            t[4..6].copy_from_slice(&8u16.to_be_bytes());
            t
        }
        IPPROTO_SCTP => {
            let mut t = vec![0u8; 12];
            t[0..2].copy_from_slice(&40000u16.to_be_bytes());
            t[2..4].copy_from_slice(&port.to_be_bytes());
            t
        }
        IPPROTO_ICMP => vec![8, 0, 0, 0, 0, 1, 0, 1],
        IPPROTO_ICMPV6 => vec![128, 0, 0, 0, 0, 1, 0, 1],
        _ => vec![0u8; 8],
    };
    let mut f = vec![0u8; 12];
    match dst {
        IpAddr::V4(d) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = (20 + transport.len()) as u16;
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
            f.extend_from_slice(&[192, 0, 2, 1]);
            f.extend_from_slice(&d.octets());
        }
        IpAddr::V6(d) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(transport.len() as u16).to_be_bytes());
            f.extend_from_slice(&[protocol, 64]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&d.octets());
        }
    }
    f.extend_from_slice(&transport);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_the_prefix_bounds_and_their_neighbours() {
        let e = edges("198.51.100.7".parse().unwrap(), 24);
        let want: Vec<IpAddr> = [
            "198.51.100.0",
            "198.51.100.255",
            "198.51.99.255",
            "198.51.101.0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(e, want);
        let e = edges("0.0.0.0".parse().unwrap(), 0);
        assert_eq!(e.len(), 2, "nothing outside 0/0");
        let e = edges("2001:db8::".parse().unwrap(), 128);
        assert_eq!(e.len(), 4, "first and last are the one address");
        assert_eq!(e[0], e[1]);
    }
}
