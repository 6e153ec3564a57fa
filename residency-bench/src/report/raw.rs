//! The raw numbers (`results.json`) and the plot of packet rate against prefix count
//! (`rate-vs-prefixes.png`, drawn by gnuplot).

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::Context as _;
use serde_json::json;

use super::find;
use crate::{
    Results,
    datapath::{Filter, REAL},
    stats::median,
};

pub fn raw(r: &Results) -> serde_json::Value {
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
            "set": if p.real { r.allowlist.slug() } else { "synthetic".to_owned() },
            "below": p.below,
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
            "prefixes": if c.prefixes == REAL { serde_json::Value::from(r.allowlist.slug()) } else { c.prefixes.into() },
            "set_size": c.set_size,
            "udp_delivered_pps": c.udp,
            "udp_sent_pps": c.udp_sent,
            "tcp_rr_per_s": c.rr,
            "sendto_calls_per_s": c.sendto,
            "tcp_churn_per_s": c.churn,
            "setup_s": c.setup_s,
        })).collect::<Vec<_>>(),
        "geoip": r.geoip.as_ref().map(|g| json!({
            "ranges_ipv4": g.ranges.0,
            "ranges_ipv6": g.ranges.1,
            "ranges_changed": g.ranges_changed,
            "prefixes": g.prefixes,
            "apply_wall_ms": g.apply_wall_ms,
            "apply_in_force_ms": g.apply_in_force_ms,
            "apply_hwm_kib": g.apply_hwm_kib,
            "refresh_ms": g.refresh_ms,
            "refresh_in_force_ms": g.refresh_in_force_ms,
            "refresh_in_force_total_ms": g.refresh_in_force_total_ms,
            "refresh_hwm_kib": g.refresh_hwm_kib,
            "nft_load_ms": g.nft_load_ms,
            "nft_reload_ms": g.nft_reload_ms,
        })),
        "lookup": r.lookup.iter().map(|l| json!({
            "set": l.set,
            "prefixes": l.prefixes,
            "chunks": l.chunks,
            "table_bytes": l.table_bytes,
            "checked": l.checked,
            "empty_ns": l.empty,
            "trie_ns": l.trie,
            "table_ns": l.table,
            "trie_deep_ns": l.trie_deep,
            "table_deep_ns": l.table_deep,
        })).collect::<Vec<_>>(),
        "hooks": r.hooks.as_ref().map(|h| {
            std::iter::once(&h.empty).chain(&h.residency).map(|c| json!({
                "program": c.program,
                "runs": c.runs,
                "ns_per_run": c.ns_per_run,
            })).collect::<Vec<_>>()
        }),
        "reload": r.reload.as_ref().map(|rl| json!({
            "base_rss_kib": rl.base_rss_kib,
            "start_1m_s": rl.start_1m_s,
            "start_1m_rss_kib": rl.start_1m_rss_kib.0,
            "start_1m_hwm_kib": rl.start_1m_rss_kib.1,
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
            "lost_sink_backlog": e.lost_backlog,
            "agent_cpu_s": e.agent_cpu_s,
            "delivered_per_s": e.delivered_per_s(),
            "agent_cores": e.cores(),
        })).collect::<Vec<_>>(),
        "pods": r.pods.as_ref().map(|p| p.orders.iter().map(|o| json!({
            "order": o.name,
            "created_to_bound_ms": o.ms,
        })).collect::<Vec<_>>()),
    })
}

pub fn plot(r: &Results, out: &Path) -> anyhow::Result<()> {
    let base = find(&r.datapath, Filter::None, 0).map_or(f64::NAN, |c| median(&c.udp_sent));
    let mut series = Vec::new();
    for f in [Filter::Residency, Filter::Nftables, Filter::Iptables] {
        let mut data = String::new();
        // The real allowlist is no point on a prefix-count axis.
        for c in r
            .datapath
            .iter()
            .filter(|c| c.filter == f && c.prefixes != REAL)
        {
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
