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
use residency_agent::config::sources::countries;
use residency_tests::{geoip, http_get, stdout_of};

use crate::{
    agent::{Agent, rss_kib},
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

/// The real allowlist of a run (`--countries`, the EU-27 by default): countries and
/// groups as a policy's `countries` and `groups` name them, read from the GeoLite2
/// Country release `cargo xtask setup` installs.
#[derive(Clone, Debug)]
pub struct Allowlist {
    /// As given: group names (`EU`, `EEA`, `EFTA`) and ISO 3166-1 alpha-2 codes.
    names: Vec<String>,
}

/// The EU-27.
impl Default for Allowlist {
    fn default() -> Self {
        Self {
            names: vec!["EU".to_owned()],
        }
    }
}

impl Allowlist {
    /// The allowlist of `names`, each a group or a country code (case ignored).
    pub fn new(names: &[String]) -> anyhow::Result<Self> {
        let names: Vec<String> = names.iter().map(|n| n.trim().to_uppercase()).collect();
        if names.is_empty() {
            bail!("--countries: name at least one country or group");
        }
        for n in &names {
            if countries::group(n).is_none() && !countries::is_country(n) {
                bail!(
                    "--countries: {n:?} is neither a group ({}) nor an ISO 3166-1 alpha-2 code",
                    countries::GROUPS.join(", ")
                );
            }
        }
        Ok(Self { names })
    }

    /// Every country it holds.
    fn countries(&self) -> Vec<&str> {
        let mut all = Vec::new();
        for n in &self.names {
            match countries::group(n) {
                Some(members) => all.extend(members),
                None => all.push(n.as_str()),
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Its name in the tables: `EU-27` for the EU, else the names given (`US`, `DE+FR`).
    pub fn label(&self) -> String {
        if self.names == ["EU"] {
            "EU-27".to_owned()
        } else {
            self.names.join("+")
        }
    }

    /// Its name in file names and the raw results: `eu27`, `us`, `de-fr`.
    pub fn slug(&self) -> String {
        if self.names == ["EU"] {
            "eu27".to_owned()
        } else {
            self.names.join("-").to_lowercase()
        }
    }

    /// The keys of a `csv-ranges` source that select it (`groups = [..]`,
    /// `countries = [..]`).
    pub fn source_keys(&self) -> String {
        let list = |group: bool| -> Vec<String> {
            self.names
                .iter()
                .filter(|n| countries::group(n).is_some() == group)
                .map(|n| format!("\"{n}\""))
                .collect()
        };
        let mut keys = Vec::new();
        for (key, group) in [("groups", true), ("countries", false)] {
            let names = list(group);
            if !names.is_empty() {
                keys.push(format!("{key} = [{}]", names.join(", ")));
            }
        }
        keys.join(", ")
    }

    /// Its ranges of a CSV file (`start,end,country` lines), as the lines.
    fn ranges(&self, path: &Path) -> anyhow::Result<Vec<String>> {
        let wanted = self.countries();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: run `cargo xtask setup`", path.display()))?;
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.rsplit(',').next().is_some_and(|c| wanted.contains(&c)))
            .map(str::to_owned)
            .collect();
        if lines.is_empty() {
            bail!("{}: no range of {}", path.display(), self.label());
        }
        Ok(lines)
    }

    /// Its IPv4 ranges as CIDR prefixes (each range cut into the fewest aligned blocks),
    /// for the datapath, where residency and nftables take the same prefix list.
    pub fn ipv4_cidrs(&self) -> anyhow::Result<Vec<String>> {
        self.cidrs(false)
    }

    /// The same for IPv6 (`v6`) or IPv4.
    pub fn cidrs(&self, v6: bool) -> anyhow::Result<Vec<String>> {
        let (v4_csv, v6_csv) = geoip::csv();
        let csv = if v6 { v6_csv } else { v4_csv };
        let mut out = Vec::new();
        for line in self.ranges(&csv)? {
            let mut c = line.split(',');
            let (Some(lo), Some(hi)) = (c.next(), c.next()) else {
                bail!("{}: malformed line {line}", csv.display());
            };
            let parse = |a: &str| -> anyhow::Result<u128> {
                let ip = a
                    .parse::<std::net::IpAddr>()
                    .with_context(|| format!("{}: {a} in {line}", csv.display()))?;
                Ok(match ip {
                    std::net::IpAddr::V4(a) if !v6 => u128::from(u32::from(a)),
                    std::net::IpAddr::V6(a) if v6 => u128::from(a),
                    _ => bail!("{}: {a} of the other family in {line}", csv.display()),
                })
            };
            cidrs_of(parse(lo)?, parse(hi)?, if v6 { 128 } else { 32 }, &mut out);
        }
        Ok(out)
    }
}

/// The aligned blocks covering `lo..=hi` of a `width`-bit space, largest first at
/// each step (nothing when `lo > hi`).
fn cidrs_of(lo: u128, hi: u128, width: u32, out: &mut Vec<String>) {
    // The last offset of a block of `bits` host bits.
    let span = |bits: u32| u128::MAX.checked_shr(128 - bits).unwrap_or(0);
    if lo > hi {
        return;
    }
    let mut start = lo;
    loop {
        let mut bits = start.trailing_zeros().min(width);
        while bits > 0 && hi - start < span(bits) {
            bits -= 1;
        }
        let addr = if width == 32 {
            std::net::IpAddr::from(std::net::Ipv4Addr::from(start as u32))
        } else {
            std::net::IpAddr::from(std::net::Ipv6Addr::from(start))
        };
        out.push(format!("{addr}/{}", width - bits));
        // The block's last address; the range ends with it at the space's top.
        let last = start + span(bits);
        if last >= hi {
            break;
        }
        start = last + 1;
    }
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

#[cfg(test)]
mod tests {
    use super::{Allowlist, cidrs_of};

    #[test]
    fn an_allowlist_is_named_and_selected_as_a_policy_would_select_it() {
        let list = |names: &[&str]| {
            Allowlist::new(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        };
        let eu = list(&["eu"]).unwrap();
        assert_eq!((eu.label(), eu.slug()), ("EU-27".into(), "eu27".into()));
        assert_eq!(eu.source_keys(), r#"groups = ["EU"]"#);
        assert_eq!(eu.countries().len(), 27);
        let mixed = list(&["EEA", "ch", "NO"]).unwrap();
        assert_eq!(
            (mixed.label(), mixed.slug()),
            ("EEA+CH+NO".into(), "eea-ch-no".into())
        );
        assert_eq!(
            mixed.source_keys(),
            r#"groups = ["EEA"], countries = ["CH", "NO"]"#
        );
        // Norway once, though both name it.
        assert_eq!(mixed.countries().len(), 31);
        assert!(list(&["XX"]).is_err() && list(&[]).is_err());
    }

    #[test]
    fn ranges_become_the_fewest_aligned_blocks() {
        let mut out = Vec::new();
        cidrs_of(0x0A00_0001, 0x0A00_0006, 32, &mut out);
        assert_eq!(
            out,
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        out.clear();
        cidrs_of(0, u128::from(u32::MAX), 32, &mut out);
        assert_eq!(out, ["0.0.0.0/0"]);
        out.clear();
        cidrs_of(0xC0A8_0000, 0xC0A8_FFFF, 32, &mut out);
        assert_eq!(out, ["192.168.0.0/16"]);
        out.clear();
        let a = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        cidrs_of(
            a("2001:db8::"),
            a("2001:db8:1:ffff:ffff:ffff:ffff:ffff"),
            128,
            &mut out,
        );
        assert_eq!(out, ["2001:db8::/47"]);
        out.clear();
        cidrs_of(a("2001:db8::1"), a("2001:db8::2"), 128, &mut out);
        assert_eq!(out, ["2001:db8::1/128", "2001:db8::2/128"]);
        out.clear();
        cidrs_of(a("ff00::"), u128::MAX, 128, &mut out);
        assert_eq!(out, ["ff00::/8"]);
        out.clear();
        cidrs_of(0, u128::MAX, 128, &mut out);
        assert_eq!(out, ["::/0"]);
        out.clear();
        cidrs_of(5, 4, 32, &mut out);
        assert!(out.is_empty());
    }
}
