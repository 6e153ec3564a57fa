//! The benchmark's output: markdown tables (stdout and `results.md`), the raw numbers
//! (`results.json`) and a plot of packet rate against prefix count
//! (`rate-vs-prefixes.png`, drawn by gnuplot). Each table states the target that
//! applies to it and PASS or MISS.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::Context as _;
use serde_json::json;

use super::{
    Results,
    datapath::{Case, Filter},
    stats::{median, percentile},
};

pub fn write(r: &Results, out: &Path) -> anyhow::Result<()> {
    let md = markdown(r);
    print!("{md}");
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&raw(r))? + "\n",
    )?;
    if !r.datapath.is_empty() {
        plot(r, out)?;
        println!(
            "\nwritten: {0}/results.md, {0}/results.json, {0}/rate-vs-prefixes.png",
            out.display()
        );
    } else {
        println!("\nwritten: {0}/results.md, {0}/results.json", out.display());
    }
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// 1234567 -> "1,234,567".
fn int(v: f64) -> String {
    if !v.is_finite() {
        return "—".to_owned();
    }
    let s = format!("{:.0}", v.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// 284123 -> "284k".
fn kilo(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "# residency benchmark results\n");
    let _ = writeln!(s, "- command: `{}` (as root), {}", m.command, m.started);
    let _ = writeln!(
        s,
        "- machine: {} CPUs, {}, Linux {}",
        m.cpus, m.cpu_model, m.kernel
    );
    let _ = writeln!(
        s,
        "- load average (1/5/15 min) at start: {}; at end: {}",
        first3(&m.loadavg_start),
        first3(&m.loadavg_end)
    );
    let _ = writeln!(s, "- tools: {}", m.tools.join("; "));
    let _ = writeln!(s, "- run time: {:.0} s\n", m.duration_s);
    if !r.program.is_empty() {
        program_table(r, &mut s);
    }
    if !r.datapath.is_empty() {
        datapath_table(&r.datapath, m.secs, &mut s);
    }
    if let Some(rl) = &r.reload {
        reload_table(rl, &mut s);
    }
    if !r.events.is_empty() {
        events_table(&r.events, &mut s);
    }
    s
}

fn first3(loadavg: &str) -> String {
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn program_table(r: &Results, s: &mut String) {
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
        let target = if row.prefixes == 100_000 {
            format!("≤ 3×: {}", verdict(hr <= 3.0 && mr <= 3.0))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| IPv{} | {} | {} | {} | {hr:.1}× | {} | {mr:.1}× | {:.1}× / {:.1}× | {target} |",
            row.family,
            int(row.prefixes as f64),
            mp(&row.empty),
            mp(&row.hit),
            mp(&row.miss),
            row.ratio(&row.hit_cold),
            row.ratio(&row.miss_cold),
        );
    }
    s.push('\n');
}

fn find(cases: &[Case], f: Filter, n: usize) -> Option<&Case> {
    cases.iter().find(|c| c.filter == f && c.prefixes == n)
}

/// Median over rounds of `a[i] / b[i]`: two cases compared within each round.
pub fn paired(a: &[f64], b: &[f64]) -> f64 {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&r)
}

fn datapath_table(cases: &[Case], secs: u32, s: &mut String) {
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
         cgroup egress hook costs by itself. Cases run in a different order each round. Setup: \
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
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{} ({}–{})", int(median(v)), kilo(lo), kilo(hi))
    };
    let mut rows: Vec<(Filter, usize)> = super::datapath::CASES.to_vec();
    rows.push((Filter::Iptables, 100_000));
    for (f, n) in rows {
        let Some(c) = find(cases, f, n) else {
            let _ = writeln!(
                s,
                "| {} | {} | — | — | — | — | — | — | — | not run: a linear chain of {} rules |",
                f.name(),
                int(n as f64),
                int(n as f64)
            );
            continue;
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
            if matches!(f, Filter::None | Filter::EmptyProgram) {
                "—".to_owned()
            } else {
                int(n as f64)
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
    s.push('\n');
}

fn reload_table(rl: &super::reload::Result, s: &mut String) {
    let _ = writeln!(
        s,
        "## 3. Reload\n\n\
         One agent, started with 10 IPv4 prefixes (RSS {}). Each step rewrites the config \
         and runs `residency-agent reload`: apply N (from 10), swap (a version of the same \
         size with one prefix changed: the whole version is written into the idle slot, \
         the active slot flips, the old one is deleted), remove (back to 10). Wall time is \
         the CLI's, from start to the agent's answer (read, validate, diff, write, flip, \
         grace period, delete); the agent's own time covers write to delete. RSS is the \
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
    s.push('\n');
}

fn events_table(storms: &[super::events::Result], s: &mut String) {
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
        "| flooders | packets blocked (counted) | sends refused | events delivered | delivered/s | events lost: ring full / rate limited / sink error | agent CPU | target |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for e in storms {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} / {} / {} | {:.2} cores | < 1 core: {}; counts exact: {} |",
            e.flooders,
            int(e.blocked as f64),
            int(e.refused as f64),
            int(e.written as f64),
            int(e.delivered_per_s()),
            int(e.lost_ring as f64),
            int(e.lost_rate as f64),
            int(e.lost_sink as f64),
            e.cores(),
            verdict(e.cores() < 1.0),
            verdict(e.counts_exact()),
        );
    }
    s.push('\n');
}

fn raw(r: &Results) -> serde_json::Value {
    let m = &r.machine;
    json!({
        "machine": {
            "cpus": m.cpus,
            "cpu_model": m.cpu_model,
            "kernel": m.kernel,
            "loadavg_start": m.loadavg_start,
            "loadavg_end": m.loadavg_end,
            "started": m.started,
            "duration_s": m.duration_s,
            "command": m.command,
            "tools": m.tools,
        },
        "program": r.program.iter().map(|p| json!({
            "family": p.family,
            "prefixes": p.prefixes,
            "repeat": p.repeat,
            "packet_bytes": p.packet_bytes,
            "apply_ms": p.apply_ms,
            "empty_ns": p.empty,
            "hit_ns": p.hit,
            "miss_ns": p.miss,
            "hit_ratio": p.ratio(&p.hit),
            "miss_ratio": p.ratio(&p.miss),
            "hit_first_packet_ns": p.hit_cold,
            "miss_first_packet_ns": p.miss_cold,
            "hit_first_packet_ratio": p.ratio(&p.hit_cold),
            "miss_first_packet_ratio": p.ratio(&p.miss_cold),
        })).collect::<Vec<_>>(),
        "datapath": r.datapath.iter().map(|c| json!({
            "filter": c.filter.key(),
            "prefixes": c.prefixes,
            "udp_delivered_pps": c.udp,
            "udp_sent_pps": c.udp_sent,
            "tcp_rr_per_s": c.rr,
            "setup_s": c.setup_s,
        })).collect::<Vec<_>>(),
        "reload": r.reload.as_ref().map(|rl| json!({
            "base_rss_kib": rl.base_rss_kib,
            "steps": rl.rows.iter().map(|row| json!({
                "prefixes": row.prefixes,
                "action": row.action,
                "wall_ms": row.wall_ms,
                "agent_ms": row.agent_ms,
                "rss_kib": row.rss_kib,
                "hwm_kib": row.hwm_kib,
            })).collect::<Vec<_>>(),
        })),
        "events": r.events.iter().map(|e| json!({
            "flooders": e.flooders,
            "flood_s": e.flood_s,
            "total_s": e.total_s,
            "sends_refused": e.refused,
            "sends_accepted": e.accepted,
            "packets_blocked": e.blocked,
            "events_delivered": e.written,
            "events_received": e.received,
            "lost_ring_full": e.lost_ring,
            "lost_rate_limited": e.lost_rate,
            "lost_sink_error": e.lost_sink,
            "agent_cpu_s": e.agent_cpu_s,
            "delivered_per_s": e.delivered_per_s(),
            "agent_cores": e.cores(),
        })).collect::<Vec<_>>(),
    })
}

fn plot(r: &Results, out: &Path) -> anyhow::Result<()> {
    let base = find(&r.datapath, Filter::None, 0).map_or(f64::NAN, |c| median(&c.udp_sent));
    let mut series = Vec::new();
    for f in [Filter::Residency, Filter::Nftables, Filter::Iptables] {
        let mut data = String::new();
        for c in r.datapath.iter().filter(|c| c.filter == f) {
            let _ = writeln!(data, "{} {}", c.prefixes, median(&c.udp_sent));
        }
        let file = format!("plot-{}.dat", f.key());
        std::fs::write(out.join(&file), data)?;
        series.push((file, f.name()));
    }
    let mut gp = String::from(
        "set terminal pngcairo size 960,600 font ',11'\n\
         set output 'rate-vs-prefixes.png'\n\
         set title 'Small-UDP packet rate (64-byte payload) vs allowlist size — sender in a cgroup, veth pair'\n\
         set logscale x\nset xrange [5:200000]\nset yrange [0:*]\n\
         set format x '10^{%L}'\nset xlabel 'prefixes in the allowlist'\n\
         set ylabel 'packets per second sent through the filter (median)'\n\
         set key bottom left\nset grid\n",
    );
    let _ = write!(
        gp,
        "plot {base} with lines dashtype 2 lw 2 title 'no filter'"
    );
    if let Some(c) = find(&r.datapath, Filter::EmptyProgram, 0) {
        let _ = write!(
            gp,
            ", {} with lines dashtype 3 lw 2 title 'empty cgroup\\_skb program'",
            median(&c.udp_sent)
        );
    }
    for (i, (file, name)) in series.iter().enumerate() {
        let _ = write!(
            gp,
            ", '{file}' using 1:2 with linespoints lw 2 pt {} ps 1.5 title '{name}'",
            [7, 5, 9][i]
        );
    }
    gp.push('\n');
    std::fs::write(out.join("rate-vs-prefixes.gp"), gp)?;
    let status = Command::new("gnuplot")
        .arg("rate-vs-prefixes.gp")
        .current_dir(out)
        .status()
        .context("running gnuplot")?;
    anyhow::ensure!(status.success(), "gnuplot failed: {status}");
    Ok(())
}
