//! Section 6: a real allowlist ([`Allowlist`], `--countries`). By default the EU-27
//! of the GeoLite2 Country release `cargo xtask setup` installs
//! (`residency_tests::geoip`), IPv4 and IPv6, as residency reads it (`format =
//! "csv-ranges"` over the release's CSV files, `groups = ["EU"]`: about 350,000
//! networks, 200,000 after aggregation) and as nftables loads the same ranges (two
//! interval sets, `nft -f`, the way GeoIP sets are loaded there).
//!
//! Steps, residency: apply (a `reload` from a 10-prefix policy to the allowlist;
//! wall time of the CLI and the agent's own read-to-swap time), then a live refresh:
//! 1% of the allowlist's ranges dropped from the file, written beside it and renamed over, no
//! command — timed from the rename until the agent's metrics count the refresh. The
//! agent's peak RSS (VmHWM) after each. nftables: the initial `nft -f`, then the
//! changed set loaded again (`nft -f` replaces a table atomically; an update job does
//! the same).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use residency_tests::{geoip, http_get, stdout_of};

use crate::{
    agent::{Agent, rss_kib},
    allowlist::Allowlist,
    prefixes,
    sandbox::Bench,
};

pub struct Result {
    /// The allowlist's ranges in the CSV files (IPv4, IPv6) and after the 1% change.
    pub ranges: (usize, usize),
    pub ranges_changed: usize,
    /// Prefixes residency applied (after aggregation).
    pub prefixes: usize,
    /// `reload` wall time and the agent's read-to-swap time, ms.
    pub apply_wall_ms: f64,
    pub apply_in_force_ms: f64,
    pub apply_hwm_kib: u64,
    /// From the rename to the refresh counted in the metrics (after the old version
    /// is retired), ms; the agent's own read-to-swap time; the rename to the swap
    /// (the agent noticing the change, from its log, plus its read to swap).
    pub refresh_ms: f64,
    pub refresh_in_force_ms: f64,
    pub refresh_in_force_total_ms: f64,
    pub refresh_hwm_kib: u64,
    /// `nft -f` of the whole set, then of the changed set, ms.
    pub nft_load_ms: f64,
    pub nft_reload_ms: f64,
}

fn nft_file(v4: &[String], v6: &[String]) -> String {
    let set = |lines: &[String]| -> String {
        lines
            .iter()
            .filter_map(|l| {
                let mut c = l.split(',');
                Some(format!("{}-{}", c.next()?, c.next()?))
            })
            .collect::<Vec<_>>()
            .join(",\n")
    };
    format!(
        "table inet geo\ndelete table inet geo\ntable inet geo {{\n\
         set allow4 {{ type ipv4_addr; flags interval; elements = {{ {} }} }}\n\
         set allow6 {{ type ipv6_addr; flags interval; elements = {{ {} }} }}\n\
         chain out {{ type filter hook output priority 0; policy accept;\n\
         ip daddr @allow4 counter accept\nip6 daddr @allow6 counter accept\n}}\n}}\n",
        set(v4),
        set(v6)
    )
}

/// Seconds since midnight (UTC) of a log line's RFC 3339 timestamp
/// (`<6>2026-12-06T04:04:01.372169Z  INFO …`).
fn time_of_day(line: &str) -> Option<f64> {
    let (_, rest) = line.split_once('T')?;
    let clock = rest.split('Z').next()?;
    let mut parts = clock.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Prefixes and read-to-swap milliseconds of a reload's first line: `reloaded:
/// generation N in force (P prefixes applied in X ms; Y ms from reading …)`.
fn parse_answer(line: &str) -> anyhow::Result<(usize, f64)> {
    let parsed = (|| {
        let (_, rest) = line.split_once(" in force (")?;
        let prefixes = rest.split_whitespace().next()?.parse().ok()?;
        let (_, rest) = rest.split_once("; ")?;
        Some((prefixes, rest.split_whitespace().next()?.parse().ok()?))
    })();
    parsed.with_context(|| format!("unexpected reload answer: {line}"))
}

fn nft_load(sb: &Bench, file: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    stdout_of(sb.tx_cmd("nft").arg("-f").arg(file)).context("nft -f")?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

pub fn run(sb: &Bench, bin: &Path, allow: &Allowlist) -> anyhow::Result<Result> {
    let (v4_csv, v6_csv) = geoip::csv();
    let (v4, v6) = (allow.ranges(&v4_csv)?, allow.ranges(&v6_csv)?);
    // 1% of the ranges dropped: every hundredth of each family.
    let keep = |l: &[String]| -> Vec<String> {
        l.iter()
            .enumerate()
            .filter(|(i, _)| i % 100 != 50)
            .map(|(_, s)| s.clone())
            .collect()
    };
    let (v4_changed, v6_changed) = (keep(&v4), keep(&v6));
    let csv = sb.dir.join("allowlist.csv");
    std::fs::write(&csv, format!("{}\n{}\n", v4.join("\n"), v6.join("\n")))?;

    eprintln!("bench: geoip, starting the agent with 10 prefixes");
    let name = "geoip";
    let base = prefixes::ipv4(10).cidrs;
    let config = |pins: &Path, metrics: std::net::SocketAddr, sources: bool| {
        let mut text = crate::agent::config_text(
            &sb.dir,
            pins,
            metrics,
            &crate::agent::AgentSetup {
                name,
                cgroup_rel: &sb.sender_rel,
                allow: &base,
                events: "",
            },
        );
        if sources {
            text.push_str(&format!(
                "allow_sources = [{{ format = \"csv-ranges\", path = \"{}\", {} }}]\n",
                csv.display(),
                allow.source_keys()
            ));
        }
        text.replace("[agent]\n", "[agent]\nself_verify = false\n")
    };
    let agent = Agent::start_with(bin, &sb.dir, name, |pins, metrics| {
        config(pins, metrics, false)
    })?;
    std::fs::write(
        &agent.config,
        config(&sb.dir.join(format!("pins-{name}")), agent.metrics, true),
    )?;
    eprintln!("bench: geoip, reload to the {} allowlist", allow.label());
    let started = Instant::now();
    let out = stdout_of(
        Command::new(bin)
            .args(["reload", "--config"])
            .arg(&agent.config),
    )?;
    let apply_wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let first = out.lines().next().unwrap_or_default().to_owned();
    let (prefixes, apply_in_force_ms) = parse_answer(&first)?;
    let apply_hwm_kib = rss_kib(agent.pid())?.1;

    eprintln!("bench: geoip, a live refresh changing 1%");
    let refreshed = |agent: &Agent| -> anyhow::Result<bool> {
        let (_, body) = http_get(agent.metrics, "/metrics")?;
        Ok(body.lines().any(|l| {
            l.starts_with("residency_source_refreshes_total{")
                && l.contains("result=\"applied\"")
                && !l.ends_with(" 0")
        }))
    };
    let tmp = sb.dir.join("allowlist.csv.new");
    std::fs::write(
        &tmp,
        format!("{}\n{}\n", v4_changed.join("\n"), v6_changed.join("\n")),
    )?;
    let started = Instant::now();
    let renamed_at = std::time::SystemTime::now();
    std::fs::rename(&tmp, &csv)?;
    while !refreshed(&agent)? {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the agent did not refresh the changed source within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let refresh_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = stdout_of(
        Command::new(bin)
            .args(["status", "--json", "--socket"])
            .arg(sb.dir.join(format!("{name}.sock"))),
    )?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let last = status["reload_history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|r| r["summary"].as_str())
        .unwrap_or_default()
        .to_owned();
    let (_, refresh_in_force_ms) = parse_answer(&last)?;
    // When the agent noticed the change, from its log: rename to in force is that
    // and the read-to-swap time.
    let log = std::fs::read_to_string(sb.dir.join(format!("{name}.log")))?;
    let noticed = log
        .lines()
        .find(|l| l.contains("source file changed"))
        .and_then(time_of_day)
        .context("no \"source file changed\" line in the agent's log")?;
    let renamed = renamed_at
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64()
        .rem_euclid(86_400.0);
    let detect_ms = (noticed - renamed).rem_euclid(86_400.0) * 1000.0;
    let refresh_in_force_total_ms = detect_ms + refresh_in_force_ms;
    let refresh_hwm_kib = rss_kib(agent.pid())?.1;
    agent.stop()?;

    eprintln!("bench: geoip, nftables loading the same ranges");
    let file = sb.dir.join("geo.nft");
    std::fs::write(&file, nft_file(&v4, &v6))?;
    let nft_load_ms = nft_load(sb, &file)?;
    std::fs::write(&file, nft_file(&v4_changed, &v6_changed))?;
    let nft_reload_ms = nft_load(sb, &file)?;
    let _ = stdout_of(sb.tx_cmd("nft").args(["delete", "table", "inet", "geo"]));
    Ok(Result {
        ranges: (v4.len(), v6.len()),
        ranges_changed: v4_changed.len() + v6_changed.len(),
        prefixes,
        apply_wall_ms,
        apply_in_force_ms,
        apply_hwm_kib,
        refresh_ms,
        refresh_in_force_ms,
        refresh_in_force_total_ms,
        refresh_hwm_kib,
        nft_load_ms,
        nft_reload_ms,
    })
}
