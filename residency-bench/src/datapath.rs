//! Section 2: the datapath. A sender in its own cgroup and network namespace sends to a
//! receiver namespace over a veth pair; the same two measurements run with no filter,
//! with residency (the real agent, enforcing on the sender's cgroup), with an nftables
//! interval set in the sender's output hook, and with an iptables chain, each holding
//! the same prefixes ([`crate::prefixes::ipv4`]; the receiver's prefix last):
//!
//! - small UDP: `iperf3 -u -b 0 -l 64` for `secs`, packets per second delivered to the
//!   receiver (sent and delivered both kept in the JSON);
//! - TCP request/response: transactions per second, one byte each way
//!   ([`crate::helpers`]);
//! - unconnected UDP `sendto()`: 64-byte datagrams to one destination, calls the
//!   kernel accepted per second (DNS clients, statsd, QUIC servers: every call is
//!   judged by the sendmsg hook, then its packet by the egress hook);
//! - TCP connection churn: connect, one byte each way, close; connections per second.
//!
//! All cases run once per round, and the rounds repeat the whole list, so that slow
//! drift of the machine's load touches every case alike; the tables report the median
//! over rounds and ratios to the no-filter baseline of the same run.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use residency_tests::stdout_of;

use crate::{
    agent::{Agent, AgentSetup},
    allowlist::Allowlist,
    empty::EmptyProgram,
    options::Options,
    prefixes,
    sandbox::{ALLOWED, BLOCKED, Bench, DISCARD_PORT, IPERF_PORT, RR_PORT},
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Filter {
    None,
    /// An empty cgroup_skb program ([`crate::empty`]) on the sender cgroup: the hook's
    /// own cost.
    EmptyProgram,
    /// Empty programs at the cgroup hooks residency uses (packets both ways, socket
    /// creation, bind, connect, sendmsg, setsockopt; not the LSM socket guard): the
    /// floor of residency's design, before any program does anything.
    EmptyHooks,
    Residency,
    Nftables,
    Iptables,
}

impl Filter {
    pub fn name(self) -> &'static str {
        match self {
            Filter::None => "no filter",
            Filter::EmptyProgram => "empty cgroup_skb program",
            Filter::EmptyHooks => "empty programs, residency's hooks",
            Filter::Residency => "residency",
            Filter::Nftables => "nftables interval set",
            Filter::Iptables => "iptables chain",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Filter::None => "none",
            Filter::EmptyProgram => "empty_program",
            Filter::EmptyHooks => "empty_hooks",
            Filter::Residency => "residency",
            Filter::Nftables => "nftables",
            Filter::Iptables => "iptables",
        }
    }
}

/// iptables chains are linear: beyond 10k rules a run would take minutes per case.
/// In place of a prefix count: the real allowlist of the run (`--countries`, the EU-27
/// of the installed GeoLite2 release by default; IPv4, as CIDR prefixes,
/// [`Allowlist::ipv4_cidrs`]), the receiver's prefix added — a real country set beside
/// the synthetic ones.
pub const REAL: usize = usize::MAX;

pub const CASES: [(Filter, usize); 13] = [
    (Filter::None, 0),
    (Filter::EmptyProgram, 0),
    (Filter::EmptyHooks, 0),
    (Filter::Residency, 10),
    (Filter::Residency, 10_000),
    (Filter::Residency, 100_000),
    (Filter::Residency, REAL),
    (Filter::Nftables, 10),
    (Filter::Nftables, 10_000),
    (Filter::Nftables, 100_000),
    (Filter::Nftables, REAL),
    (Filter::Iptables, 10),
    (Filter::Iptables, 10_000),
];

/// The results of one case over all rounds.
pub struct Case {
    pub filter: Filter,
    /// The set's size, or [`REAL`].
    pub prefixes: usize,
    /// Prefixes in the set (the real allowlist's too).
    pub set_size: usize,
    /// Small-UDP packets per second delivered to the receiver, per round.
    pub udp: Vec<f64>,
    /// Small-UDP packets per second the sender got out, per round.
    pub udp_sent: Vec<f64>,
    /// TCP transactions per second, per round.
    pub rr: Vec<f64>,
    /// Unconnected `sendto()` calls accepted per second, per round.
    pub sendto: Vec<f64>,
    /// TCP connections (connect, one byte each way, close) per second, per round.
    pub churn: Vec<f64>,
    /// Seconds to put the filter in place (agent start to ready, `nft -f`,
    /// `iptables-restore`), per round.
    pub setup_s: Vec<f64>,
}

pub fn run(
    sb: &Bench,
    bin: &Path,
    helper: &Path,
    opts: &Options,
    allow: &Allowlist,
) -> anyhow::Result<Vec<Case>> {
    let mut sets: Vec<(usize, Vec<String>)> = [10, 10_000, 100_000]
        .into_iter()
        .map(|n| (n, prefixes::ipv4(n).cidrs))
        .collect();
    let mut real = allow.ipv4_cidrs()?;
    real.push(prefixes::V4_TARGET.to_owned());
    sets.push((REAL, real));
    let set = |n: usize| &sets.iter().find(|s| s.0 == n).expect("generated").1;
    let mut cases: Vec<Case> = CASES
        .iter()
        .map(|(filter, prefixes)| Case {
            filter: *filter,
            prefixes: *prefixes,
            set_size: if matches!(
                filter,
                Filter::None | Filter::EmptyProgram | Filter::EmptyHooks
            ) {
                0
            } else {
                set(*prefixes).len()
            },
            udp: Vec::new(),
            udp_sent: Vec::new(),
            rr: Vec::new(),
            sendto: Vec::new(),
            churn: Vec::new(),
            setup_s: Vec::new(),
        })
        .collect();
    for round in 1..=opts.rounds {
        // A different order each round (the same each run): whatever one case leaves
        // behind (a large set being freed, a cooling cache) lands on different cases.
        let mut order: Vec<usize> = (0..cases.len()).collect();
        let mut seed = 0x9e37_79b9_u64.wrapping_mul(u64::from(round));
        for i in (1..order.len()).rev() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
        for &i in &order {
            let case = &mut cases[i];
            eprintln!(
                "bench: datapath round {round}/{}: {} {}",
                opts.rounds,
                case.filter.name(),
                short_name(case.prefixes)
            );
            let started = Instant::now();
            let guard = match case.filter {
                Filter::None => Active::Nothing,
                Filter::EmptyProgram => Active::Empty(EmptyProgram::attach(&sb.sender)?),
                Filter::EmptyHooks => Active::Empty(EmptyProgram::attach_every_hook(&sb.sender)?),
                Filter::Residency => Active::Agent(Agent::start(
                    bin,
                    &sb.dir,
                    &AgentSetup {
                        name: &format!("datapath-{}", short_name(case.prefixes)),
                        cgroup_rel: &sb.sender_rel,
                        allow: set(case.prefixes),
                        events: "",
                    },
                )?),
                Filter::Nftables => {
                    nftables(sb, set(case.prefixes))?;
                    Active::Rules
                }
                Filter::Iptables => {
                    iptables(sb, set(case.prefixes))?;
                    Active::Rules
                }
            };
            case.setup_s.push(started.elapsed().as_secs_f64());
            let measured = check(
                sb,
                helper,
                !matches!(
                    case.filter,
                    Filter::None | Filter::EmptyProgram | Filter::EmptyHooks
                ),
            )
            .and_then(|()| measure(sb, helper, opts.secs));
            let cleared = guard.clear(sb);
            let m = measured?;
            cleared?;
            case.udp.push(m.delivered);
            case.udp_sent.push(m.sent);
            case.rr.push(m.rr);
            case.sendto.push(m.sendto);
            case.churn.push(m.churn);
        }
    }
    Ok(cases)
}

/// A case's set in file and agent names.
pub fn short_name(prefixes: usize) -> String {
    if prefixes == REAL {
        "real".to_owned()
    } else {
        prefixes.to_string()
    }
}

/// A case's set in the tables: its size, or the allowlist's name with its size.
pub fn label(c: &Case, allow: &Allowlist) -> String {
    if c.prefixes == REAL {
        format!(
            "{} (GeoLite2), {}",
            allow.label(),
            crate::report::int(c.set_size as f64)
        )
    } else {
        crate::report::int(c.prefixes as f64)
    }
}

/// What is in force in the sender's namespace, removed by [`Active::clear`].
enum Active {
    Nothing,
    /// Attached while it lives.
    Empty(EmptyProgram),
    Agent(Agent),
    Rules,
}

impl Active {
    fn clear(self, sb: &Bench) -> anyhow::Result<()> {
        match self {
            Active::Nothing => Ok(()),
            Active::Empty(program) => {
                // Its link (and so the attachment) goes with it.
                drop(program);
                Ok(())
            }
            Active::Agent(a) => a.stop(),
            Active::Rules => {
                let _ = stdout_of(sb.tx_cmd("iptables").args(["-F", "OUTPUT"]));
                let _ = stdout_of(sb.tx_cmd("iptables").args(["-F", "RB"]));
                let _ = stdout_of(sb.tx_cmd("iptables").args(["-X", "RB"]));
                stdout_of(sb.tx_cmd("nft").args(["flush", "ruleset"])).map(drop)
            }
        }
    }
}

/// An nftables table in the sender's namespace: an interval set of the prefixes, and
/// an output chain dropping what is not in it.
fn nftables(sb: &Bench, cidrs: &[String]) -> anyhow::Result<()> {
    let mut s = String::with_capacity(cidrs.len() * 20 + 512);
    s.push_str(
        "table ip residency_bench {\n  set allowed {\n    type ipv4_addr\n    flags interval\n    elements = {\n",
    );
    for c in cidrs {
        let _ = writeln!(s, "      {c},");
    }
    s.push_str(
        "    }\n  }\n  chain out {\n    type filter hook output priority filter; policy accept;\n    ip daddr != @allowed drop\n  }\n}\n",
    );
    let file = sb.dir.join("nft.conf");
    std::fs::write(&file, s)?;
    stdout_of(sb.tx_cmd("nft").arg("-f").arg(&file)).context("loading the nftables set")?;
    Ok(())
}

/// An iptables chain in the sender's namespace: one ACCEPT rule per prefix (the
/// receiver's last), then DROP.
fn iptables(sb: &Bench, cidrs: &[String]) -> anyhow::Result<()> {
    let mut s = String::with_capacity(cidrs.len() * 32 + 256);
    s.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:RB - [0:0]\n-A OUTPUT -j RB\n");
    for c in cidrs {
        let _ = writeln!(s, "-A RB -d {c} -j ACCEPT");
    }
    s.push_str("-A RB -j DROP\nCOMMIT\n");
    let file = sb.dir.join("iptables.rules");
    std::fs::write(&file, s)?;
    stdout_of(sb.tx_cmd("iptables-restore").arg(&file)).context("loading the iptables chain")?;
    Ok(())
}

/// The receiver's allowed address is reachable from the sender cgroup, and — when a
/// filter is in force — the blocked one is refused: the filter is really there.
pub(crate) fn check(sb: &Bench, helper: &Path, filtered: bool) -> anyhow::Result<()> {
    let send = |addr: &str| -> anyhow::Result<String> {
        Ok(stdout_of(sb.sender_cmd(helper).args([
            "helper",
            "udp-send",
            "--addr",
            &format!("{addr}:{DISCARD_PORT}"),
            "--count",
            "3",
        ]))?
        .trim()
        .to_owned())
    };
    let allowed = send(ALLOWED)?;
    ensure!(
        allowed == "3 0",
        "sending to {ALLOWED}: {allowed} (accepted refused)"
    );
    let blocked = send(BLOCKED)?;
    let want = if filtered { "0 3" } else { "3 0" };
    ensure!(
        blocked == want,
        "sending to {BLOCKED} (filter in force: {filtered}): {blocked}, expected {want}"
    );
    Ok(())
}

/// One round's rates of one case.
struct Measured {
    delivered: f64,
    sent: f64,
    rr: f64,
    sendto: f64,
    churn: f64,
}

/// Runs a helper in the sender namespace (pinned to the sender CPU) that prints
/// `<count> <seconds>` or `<accepted> <refused>` for `secs`; count per second.
fn rate(sb: &Bench, helper: &Path, args: &[&str], secs: u32, timed: bool) -> anyhow::Result<f64> {
    let mut cmd = sb.sender_cmd(helper);
    cmd.arg("helper").args(args);
    if let Some((tx, _)) = sb.cpus {
        cmd.args(["--cpu", &tx.to_string()]);
    }
    let out = stdout_of(&mut cmd)?;
    let (a, b) = out.trim().split_once(' ').context("helper output")?;
    let count = a.parse::<f64>()?;
    if timed {
        Ok(count / b.parse::<f64>()?)
    } else {
        ensure!(
            b == "0",
            "{args:?}: {b} sends refused to an allowed address"
        );
        Ok(count / f64::from(secs))
    }
}

/// The workloads of one round, their rates unused ([`crate::hooks`] reads what the
/// programs cost meanwhile).
pub(crate) fn workloads(sb: &Bench, helper: &Path, secs: u32) -> anyhow::Result<()> {
    measure(sb, helper, secs).map(drop)
}

fn measure(sb: &Bench, helper: &Path, secs: u32) -> anyhow::Result<Measured> {
    std::thread::sleep(Duration::from_millis(300));
    let sender_cpu = sb.cpus.map(|(tx, _)| tx.to_string());
    let mut iperf = sb.sender_cmd("iperf3");
    if let Some(cpu) = &sender_cpu {
        iperf.args(["-A", cpu]);
    }
    let json = stdout_of(iperf.args([
        "-c",
        ALLOWED,
        "-p",
        &IPERF_PORT.to_string(),
        "-u",
        "-b",
        "0",
        "-l",
        "64",
        "-t",
        &secs.to_string(),
        "-J",
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&json).context("iperf3 -J output")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let recv = &v["end"]["sum_received"];
    let sent = &v["end"]["sum_sent"];
    let delivered = recv["bytes"].as_f64().context("sum_received.bytes")?
        / 64.0
        / recv["seconds"].as_f64().context("sum_received.seconds")?;
    let sent = sent["packets"].as_f64().context("sum_sent.packets")?
        / sent["seconds"].as_f64().context("sum_sent.seconds")?;

    let mut rr = sb.sender_cmd(helper);
    rr.args([
        "helper",
        "rr-client",
        "--addr",
        &format!("{ALLOWED}:{RR_PORT}"),
        "--secs",
        &secs.to_string(),
    ]);
    if let Some(cpu) = &sender_cpu {
        rr.args(["--cpu", cpu]);
    }
    let out = stdout_of(&mut rr)?;
    let (count, elapsed) = out.trim().split_once(' ').context("rr-client output")?;
    let rr = count.parse::<f64>()? / elapsed.parse::<f64>()?;
    let secs_text = secs.to_string();
    let sendto = rate(
        sb,
        helper,
        &[
            "udp-flood",
            "--addr",
            &format!("{ALLOWED}:{DISCARD_PORT}"),
            "--secs",
            &secs_text,
        ],
        secs,
        false,
    )?;
    let churn = rate(
        sb,
        helper,
        &[
            "churn-client",
            "--addr",
            &format!("{ALLOWED}:{RR_PORT}"),
            "--secs",
            &secs_text,
        ],
        secs,
        true,
    )?;
    Ok(Measured {
        delivered,
        sent,
        rr,
        sendto,
        churn,
    })
}
