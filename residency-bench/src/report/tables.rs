//! The markdown tables of the report, one function per section, each stating the
//! target that applies and PASS or MISS.

use std::fmt::Write as _;

use super::{find, int, kilo, mib, ms, paired, verdict};
use crate::{
    Results,
    allowlist::Allowlist,
    datapath::{Case, Filter},
    stats::{median, percentile},
};

pub fn program_table(r: &Results, s: &mut String) {
    let first = &r.program[0];
    let _ = writeln!(
        s,
        "## 1. Per-packet cost of the program (BPF_PROG_TEST_RUN)\n\n\
         ns per run as the kernel reports it, median and p99 over {} trials of {} runs \
         each, on one {}-byte UDP packet (IPv4: 20 + 8 + 64; IPv6: 40 + 8 + 64) — the same \
         packet every run, so caches are hot and this is a lower bound. The empty program \
         (`r0 = 1; exit`, cgroup_skb) runs interleaved with the others in the same process. \
         Hit: a destination inside a prefix in the middle of the set (allowed); miss: one \
         no prefix covers (dropped; its event is subject to the default rate limit). \
         Prefixes are disjoint, IPv4 mostly /16–/24 with some /8–/15 and /25–/32, IPv6 \
         /29–/64 mostly /32 and /48. Target: at 100k prefixes, ≤ 3× the empty program.\n\n\
         The program remembers verdicts per CPU (a direct-mapped cache keyed by socket (so cgroup), \
         policy version, destination, protocol and port), so a flow's packets after its \
         first skip the trie: the hit and miss columns are that steady state, which is \
         what the same packet repeated measures. The *first packet* columns run with the \
         cache off (`[agent] verdict_cache = false`): every run takes the trie path, as the \
         first packet of each new flow (or every packet of a flood of distinct \
         destinations) does.\n",
        first.empty.len(),
        first.repeat,
        first.packet_bytes
    );
    let _ = writeln!(
        s,
        "| family | prefixes | empty ns (median / p99) | hit ns (median / p99) | hit × empty | miss ns (median / p99) | miss × empty | first packet: hit / miss × empty | target |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for row in &r.program {
        let mp = |v: &[f64]| format!("{:.0} / {:.0}", median(v), percentile(v, 99.0));
        let (hr, mr) = (row.ratio(&row.hit), row.ratio(&row.miss));
        let target = if row.prefixes == 100_000 && row.below == 0 && !row.real {
            format!("≤ 3×: {}", verdict(hr <= 3.0 && mr <= 3.0))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| IPv{} | {} | {} | {} | {hr:.1}× | {} | {mr:.1}× | {:.1}× / {:.1}× | {target} |",
            row.family,
            if row.real {
                format!(
                    "{} (GeoLite2), {}",
                    r.allowlist.label(),
                    int(row.prefixes as f64)
                )
            } else if row.below == 0 {
                int(row.prefixes as f64)
            } else {
                format!(
                    "{}, socket {} cgroups below its binding",
                    int(row.prefixes as f64),
                    row.below
                )
            },
            mp(&row.empty),
            mp(&row.hit),
            mp(&row.miss),
            row.ratio(&row.hit_cold),
            row.ratio(&row.miss_cold),
        );
    }
    s.push('\n');
}

pub fn datapath_table(cases: &[Case], secs: u32, allow: &Allowlist, s: &mut String) {
    let base = find(cases, Filter::None, 0).expect("baseline measured");
    let _ = writeln!(
        s,
        "## 2. Datapath: sender in a cgroup, veth pair between two network namespaces\n\n\
         Small UDP: `iperf3 -u -b 0 -l 64` for {} s. *Sent* is the packets per second the \
         sender got through its egress path — the filter runs there, synchronously, in the \
         sender's system call — and is what the targets are judged on; *delivered* is what \
         the receiving iperf3 read, lower when its socket buffer overflows (a receiver-side \
         effect that varies from run to run). TCP RR: one-byte request/response \
         transactions per second over one connection. Sender and receiver are pinned to \
         CPU 0 and 1. Median over {} rounds (min–max in brackets); every round runs every \
         case. A ratio is the median over rounds of the case's rate divided by the \
         no-filter rate *of the same round* (and a comparison with nftables, of the two \
         rates of the same round): on a VM whose speed drifts by several percent from \
         minute to minute, pairing within a round cancels the drift that a ratio of two \
         medians would keep. The same prefixes in \
         every filter, the receiver's last (the last rule of the iptables chain). The empty \
         cgroup_skb program (`r0 = 1`, attached to the sender cgroup) shows what the \
         cgroup egress hook costs by itself; empty programs at the hooks residency \
         attaches (packets out and in, socket creation, bind, connect, sendmsg, \
         setsockopt; not its LSM socket guard, which runs once per socket created) show \
         the floor of its design where that guard does not load (where it loads, its \
         cost adds to residency's rows). Cases run in a different order each round. Setup: \
         agent start until ready, `nft -f`, or `iptables-restore`. Targets: residency at \
         100k prefixes ≥ 95% of the no-filter small-UDP rate, and at least the nftables \
         rate at every size.\n",
        secs,
        base.udp_sent.len()
    );
    let _ = writeln!(
        s,
        "| filter | prefixes | small UDP sent pps | × no filter | delivered pps | × no filter | TCP RR/s | × no filter | setup | target |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let mut rows: Vec<(Filter, usize)> = crate::datapath::CASES.to_vec();
    rows.push((Filter::Iptables, 100_000));
    for (f, n) in rows {
        match find(cases, f, n) {
            Some(c) => datapath_row(cases, base, c, allow, s),
            None => {
                let _ = writeln!(
                    s,
                    "| {} | {} | — | — | — | — | — | — | — | not run: a linear chain of {} rules |",
                    f.name(),
                    int(n as f64),
                    int(n as f64)
                );
            }
        }
    }
    s.push('\n');
}

/// Unconnected `sendto()` and TCP connection churn, per case, against no filter and
/// (for residency) nftables, paired within rounds.
pub fn paths_table(cases: &[Case], secs: u32, allow: &Allowlist, s: &mut String) {
    let base = find(cases, Filter::None, 0).expect("baseline measured");
    let _ = writeln!(
        s,
        "### 2b. Unconnected `sendto()` and TCP connection churn\n\n\
         The same rounds and cases as above. `sendto()`: one unconnected UDP socket sending \
         64-byte datagrams to the receiver as fast as one thread can for {secs} s, calls \
         the kernel accepted per second (each call is judged by residency's sendmsg hook, \
         then its packet by the egress hook). Churn: connect, one byte each way, close \
         (with a reset, so no TIME_WAIT), connections per second. Ratios paired within \
         rounds. The row of empty programs at residency's hooks is what a `sendto()` \
         pays for the sendmsg hook (the socket lock the kernel takes around it) and the \
         egress hook before either program does anything. Targets (issue 18): residency's `sendto()` ≥ 95% of no filter.\n"
    );
    let _ = writeln!(
        s,
        "| filter | prefixes | `sendto()` calls/s | × no filter | × nftables | TCP churn conn/s | × no filter | × nftables |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (f, n) in crate::datapath::CASES {
        let Some(c) = find(cases, f, n) else { continue };
        if c.sendto.is_empty() {
            continue;
        }
        let vs_nft =
            |mine: &[f64], pick: fn(&Case) -> &[f64]| match (f, find(cases, Filter::Nftables, n)) {
                (Filter::Residency, Some(nft)) => format!("{:.2}×", paired(mine, pick(nft))),
                _ => String::new(),
            };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0}% | {} | {} | {:.0}% | {} |",
            f.name(),
            if matches!(f, Filter::None | Filter::EmptyProgram | Filter::EmptyHooks) {
                "—".to_owned()
            } else {
                crate::datapath::label(c, allow)
            },
            int(median(&c.sendto)),
            100.0 * paired(&c.sendto, &base.sendto),
            vs_nft(&c.sendto, |c| &c.sendto),
            int(median(&c.churn)),
            100.0 * paired(&c.churn, &base.churn),
            vs_nft(&c.churn, |c| &c.churn),
        );
    }
    s.push('\n');
}

pub fn reload_table(rl: &crate::reload::Result, s: &mut String) {
    let _ = writeln!(
        s,
        "## 3. Reload\n\n\
         One agent, started with 10 IPv4 prefixes (RSS {}). Each step rewrites the config \
         and runs `residency-agent reload`: apply N (from 10), swap (a version of the same \
         size with one prefix changed: the whole version is written into the idle slot, \
         the active slot flips, the old one is deleted), remove (back to 10). Wall time is \
         the CLI's, from start to the agent's answer (read, validate, diff, write, flip, \
         grace period, delete); the agent's own time covers compile and write up to the flip \
         (the old version's deletion follows it). RSS is the \
         agent's VmRSS after the step (peak: VmHWM so far). Targets: 100k prefixes applied \
         in < 1 s, 1M in < 10 s (wall).\n",
        mib(rl.base_rss_kib)
    );
    let _ = writeln!(
        s,
        "| prefixes | step | `reload` wall time | agent apply time | agent RSS (peak) | target |\n| ---: | --- | ---: | ---: | ---: | --- |"
    );
    for row in &rl.rows {
        let target = match (row.action, row.prefixes) {
            ("apply", 100_000) => format!("< 1 s: {}", verdict(row.wall_ms < 1000.0)),
            ("apply", 1_000_000) => format!("< 10 s: {}", verdict(row.wall_ms < 10_000.0)),
            _ => String::new(),
        };
        let step = match row.action {
            "apply" => "apply (from 10)",
            "swap" => "swap generation",
            _ => "remove (back to 10)",
        };
        let _ = writeln!(
            s,
            "| {} | {step} | {} | {} | {} ({}) | {target} |",
            int(row.prefixes as f64),
            ms(row.wall_ms),
            ms(row.agent_ms),
            mib(row.rss_kib),
            mib(row.hwm_kib)
        );
    }
    let _ = writeln!(
        s,
        "\nAn agent started with 1M prefixes (config read, program loaded, version written, \
         attached, `/healthz` answering): {:.2} s; RSS then {} (peak {}).\n",
        rl.start_1m_s,
        mib(rl.start_1m_rss_kib.0),
        mib(rl.start_1m_rss_kib.1)
    );
}

pub fn events_table(storms: &[crate::events::Result], s: &mut String) {
    let _ = writeln!(
        s,
        "## 4. Event storm\n\n\
         Flooders in the sender cgroup send 64-byte UDP to a blocked address for {:.0} s: \
         one flooder, then one per CPU (the agent then competes with them for the CPUs). \
         The agent (10k prefixes, kernel rate limit off, aggregation off, `json` sink to \
         /dev/null) reports each blocked packet. Delivered/s and CPU are over flood start \
         to drained. Target: the agent uses less than one core, and no count is lost: \
         packets counted blocked = sends refused, and events delivered + events counted \
         lost = packets blocked.\n",
        storms[0].flood_s
    );
    let _ = writeln!(
        s,
        "| flooders | packets blocked (counted) | sends refused | events delivered | delivered/s | events lost: ring full / rate limited / sink error / sink backlog | agent CPU | target |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for e in storms {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} / {} / {} / {} | {:.2} cores | < 1 core: {}; counts exact: {} |",
            e.flooders,
            int(e.blocked as f64),
            int(e.refused as f64),
            int(e.written as f64),
            int(e.delivered_per_s()),
            int(e.lost_ring as f64),
            int(e.lost_rate as f64),
            int(e.lost_sink as f64),
            int(e.lost_backlog as f64),
            e.cores(),
            verdict(e.cores() < 1.0),
            verdict(e.counts_exact()),
        );
    }
    s.push('\n');
}

/// One measured case of the datapath table, its ratios paired with the no-filter
/// `base` (and nftables of the same size) round by round.
fn datapath_row(cases: &[Case], base: &Case, c: &Case, allow: &Allowlist, s: &mut String) {
    let (f, n) = (c.filter, c.prefixes);
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{} ({}–{})", int(median(v)), kilo(lo), kilo(hi))
    };
    let (ur, dr, rrr) = (
        paired(&c.udp_sent, &base.udp_sent),
        paired(&c.udp, &base.udp),
        paired(&c.rr, &base.rr),
    );
    let mut target = Vec::new();
    if f == Filter::Residency {
        if n == 100_000 {
            target.push(format!("≥ 95%: {}", verdict(ur >= 0.95)));
        }
        if let Some(nft) = find(cases, Filter::Nftables, n) {
            let vs = paired(&c.udp_sent, &nft.udp_sent);
            target.push(format!(
                "≥ nftables ({:.0}%; {:.2}× it): {}",
                100.0 * paired(&nft.udp_sent, &base.udp_sent),
                vs,
                verdict(vs >= 1.0)
            ));
        }
    }
    let _ = writeln!(
        s,
        "| {} | {} | {} | {:.0}% | {} | {:.0}% | {} | {:.0}% | {} | {} |",
        f.name(),
        if matches!(f, Filter::None | Filter::EmptyProgram | Filter::EmptyHooks) {
            "—".to_owned()
        } else {
            crate::datapath::label(c, allow)
        },
        range(&c.udp_sent),
        100.0 * ur,
        range(&c.udp),
        100.0 * dr,
        range(&c.rr),
        100.0 * rrr,
        if f == Filter::None {
            "—".to_owned()
        } else {
            format!("{:.2} s", median(&c.setup_s))
        },
        target.join("; ")
    );
}

pub fn pods_table(p: &crate::pods::Result, s: &mut String) {
    let _ = writeln!(
        s,
        "## 5. Pods: creation to own policy\n\n\
         One agent with `[kubernetes]` enabled watches an API stand-in; {} Burstable pods \
         per order get cgroups laid out as the kubelet's systemd driver lays them. Time from \
         the `mkdir` of the pod's cgroup to the agent's binding of it in the kernel's \
         bindings map (polled every 0.2 ms). Until then the pod has the default policy, \
         bound to the pod root, so it is never unjudged. API first: the API reports the pod \
         100 ms before its cgroup appears (the usual order). Together: both at once.\n",
        crate::pods::PODS
    );
    let _ = writeln!(
        s,
        "| order | pods | median | p90 | max |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for o in &p.orders {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            o.name,
            o.ms.len(),
            crate::stats::median(&o.ms),
            crate::stats::percentile(&o.ms, 90.0),
            o.ms.iter().cloned().fold(0.0, f64::max)
        );
    }
    s.push('\n');
}

pub fn geoip_table(g: &crate::geoip::Result, allow: &Allowlist, s: &mut String) {
    let _ = writeln!(
        s,
        "## 6. A real allowlist: {label} from GeoLite2 Country\n\n\
         The ranges of {label} in the GeoLite2 Country release `cargo xtask setup` installs: \
         {} IPv4 and {} IPv6 ranges, {} prefixes in force after residency's aggregation. \
         residency reads them as a `csv-ranges` source (`{keys}`): applied by \
         `reload` from a 10-prefix policy, then refreshed live after 1% of the ranges \
         were dropped from the file (written beside it and renamed over; no command), \
         timed from the rename to the swap (the agent's log says when it noticed; its \
         answer, how long it took from reading the config and its sources to the flip) \
         and to the refresh counted in its metrics (after the old version is retired). \
         nftables loads the same ranges as two interval sets with `nft -f`, then the \
         changed set again (an atomic table replacement). Targets: checked and applied \
         in < 1 s, a 1% refresh applied in < 0.5 s.\n",
        int(g.ranges.0 as f64),
        int(g.ranges.1 as f64),
        int(g.prefixes as f64),
        label = allow.label(),
        keys = allow.source_keys(),
    );
    let _ = writeln!(
        s,
        "| step | residency | residency read to swap | agent RSS peak | nftables `nft -f` | target |\n| --- | ---: | ---: | ---: | ---: | --- |"
    );
    let _ = writeln!(
        s,
        "| apply the {} allowlist | {} (`reload` wall) | {} | {} | {} | < 1 s: {} |",
        allow.label(),
        ms(g.apply_wall_ms),
        ms(g.apply_in_force_ms),
        mib(g.apply_hwm_kib),
        ms(g.nft_load_ms),
        verdict(g.apply_wall_ms < 1000.0)
    );
    let _ = writeln!(
        s,
        "| refresh, 1% changed ({} ranges) | {} (rename to swap; {} to counted) | {} | {} | {} | < 0.5 s: {} |",
        int(g.ranges_changed as f64),
        ms(g.refresh_in_force_total_ms),
        ms(g.refresh_ms),
        ms(g.refresh_in_force_ms),
        mib(g.refresh_hwm_kib),
        ms(g.nft_reload_ms),
        verdict(g.refresh_in_force_total_ms < 500.0)
    );
    s.push('\n');
}
