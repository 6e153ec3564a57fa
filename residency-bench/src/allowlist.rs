//! The real allowlist of a run (`--countries`, the EU-27 by default): countries and
//! groups of the GeoLite2 Country release `cargo xtask setup` installs, named and
//! selected as a policy names them, and their ranges cut into CIDR prefixes for the
//! sections that take a prefix list (per-packet cost, lookup tables, datapath);
//! section 6 (`geoip.rs`) gives the agent the ranges themselves.

use std::path::Path;

use anyhow::{Context as _, bail};
use residency_agent::config::sources::countries;
use residency_tests::geoip;

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
    pub fn ranges(&self, path: &Path) -> anyhow::Result<Vec<String>> {
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
