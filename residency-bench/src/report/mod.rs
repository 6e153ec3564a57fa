//! The benchmark's output: markdown tables (stdout and `results.md`), the raw numbers
//! (`results.json`) and a plot of packet rate against prefix count
//! (`rate-vs-prefixes.png`, drawn by gnuplot). Each table states the target that
//! applies to it and PASS or MISS.

mod raw;
mod tables;

use std::{fmt::Write as _, path::Path};

use crate::{
    Results,
    datapath::{Case, Filter},
    stats::median,
};

pub fn write(r: &Results, out: &Path) -> anyhow::Result<()> {
    let md = markdown(r);
    print!("{md}");
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&raw::raw(r))? + "\n",
    )?;
    if !r.datapath.is_empty() {
        raw::plot(r, out)?;
        println!(
            "\nwritten: {0}/results.md, {0}/results.json, {0}/rate-vs-prefixes.png",
            out.display()
        );
    } else {
        println!("\nwritten: {0}/results.md, {0}/results.json", out.display());
    }
    Ok(())
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// 1234567 -> "1,234,567".
pub(crate) fn int(v: f64) -> String {
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
pub(crate) fn kilo(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(crate) fn ms(v: f64) -> String {
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
        tables::program_table(r, &mut s);
    }
    if !r.lookup.is_empty() {
        crate::lookup::table(&r.lookup, &mut s);
    }
    if !r.datapath.is_empty() {
        tables::datapath_table(&r.datapath, m.secs, &r.allowlist, &mut s);
        tables::paths_table(&r.datapath, m.secs, &r.allowlist, &mut s);
    }
    if let Some(h) = &r.hooks {
        crate::hooks::table(h, m.secs, &mut s);
    }
    if let Some(rl) = &r.reload {
        tables::reload_table(rl, &mut s);
    }
    if !r.events.is_empty() {
        tables::events_table(&r.events, &mut s);
    }
    if let Some(p) = &r.pods {
        tables::pods_table(p, &mut s);
    }
    if let Some(g) = &r.geoip {
        tables::geoip_table(g, &r.allowlist, &mut s);
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

pub(crate) fn find(cases: &[Case], f: Filter, n: usize) -> Option<&Case> {
    cases.iter().find(|c| c.filter == f && c.prefixes == n)
}

/// Median over rounds of `a[i] / b[i]`: two cases compared within each round.
pub fn paired(a: &[f64], b: &[f64]) -> f64 {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&r)
}
