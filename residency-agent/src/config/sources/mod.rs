//! Published IP-range files as policy entries: AWS `ip-ranges.json` (by region and
//! optionally service), Google Cloud `cloud.json` (by scope), Azure Service Tags JSON
//! (by region, optionally system service), plain lists (one prefix per line, `#`
//! comments), and country databases ([`geo`]: MaxMind DB files and start,end,country
//! CSV ranges, by country, continent or group).
//!
//! Prefixes from a source are aggregated before they reach the maps
//! ([`aggregate::aggregate`]), so a region's thousands of prefixes cost fewer trie
//! entries; a country database's prefixes keep the countries that put them there.

mod aggregate;
pub mod countries;
pub mod geo;
pub mod merge;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, path::Path};

use ipnetwork::IpNetwork;

pub use aggregate::aggregate;
use serde::Deserialize;

/// The format of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Aws,
    Gcp,
    Azure,
    Plain,
    Mmdb,
    CsvRanges,
}

impl Format {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Aws => "aws",
            Format::Gcp => "gcp",
            Format::Azure => "azure",
            Format::Plain => "plain",
            Format::Mmdb => "mmdb",
            Format::CsvRanges => "csv-ranges",
        }
    }

    /// A country database, selected by country rather than region.
    pub fn is_geo(self) -> bool {
        matches!(self, Format::Mmdb | Format::CsvRanges)
    }
}

impl SourceSpec {
    /// How output names the source: its format and its path as written.
    pub fn describe(&self) -> String {
        format!("{} {}", self.format.as_str(), self.path)
    }
}

/// One `allow_sources` / `deny_sources` entry, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub format: Format,
    pub path: String,
    /// AWS and Azure: regions to take (required for them).
    #[serde(default)]
    pub regions: Vec<String>,
    /// AWS: services (e.g. "EC2"); Azure: system services (e.g. "AzureStorage").
    #[serde(default)]
    pub services: Vec<String>,
    /// Google Cloud: scopes (e.g. "europe-west3"; required for it).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Country databases: ISO 3166-1 alpha-2 codes ("DE").
    #[serde(default)]
    pub countries: Vec<String>,
    /// Country databases: continent codes ("EU" is Europe).
    #[serde(default)]
    pub continents: Vec<String>,
    /// Country databases: named groups ("EU" is the European Union, "EEA", "EFTA").
    #[serde(default)]
    pub groups: Vec<String>,
    /// MaxMind DB files of the GeoIP2 schema: which country decides.
    #[serde(default)]
    pub country_field: Option<geo::CountryField>,
    /// How old (by modification time) the file may grow before the
    /// `ResidencySourceStale` alert fires ("8d", "36h"); no limit when absent.
    #[serde(default, with = "humantime_serde_opt")]
    pub max_age: Option<std::time::Duration>,
}

/// `max_age` as humantime writes durations ("8d"), without another crate.
mod humantime_serde_opt {
    use serde::{Deserialize as _, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<std::time::Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("max_age \"{text}\": {e}")))
    }
}

/// Prefixes read from one source, before and after aggregation.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub read: usize,
    /// As the file lists them (networks, mapped prefixes as IPv4): a deny source's
    /// own prefixes decide its conflicts, whatever aggregation made of them.
    pub listed: Vec<IpNetwork>,
    pub prefixes: Vec<IpNetwork>,
    /// Country databases: the country of each of `listed` (same order).
    pub listed_labels: Vec<&'static str>,
    /// Country databases: the countries of each of `prefixes` (same order: `DE`,
    /// or `AT+DE` for a prefix that aggregation merged); empty for other sources.
    pub labels: Vec<geo::Label>,
    /// Country databases: per country, prefixes read and the aggregated prefixes
    /// holding them.
    pub countries: geo::CountryCounts,
}

#[derive(Deserialize)]
struct Aws {
    #[serde(default)]
    prefixes: Vec<AwsV4>,
    #[serde(default)]
    ipv6_prefixes: Vec<AwsV6>,
}
#[derive(Deserialize)]
struct AwsV4 {
    ip_prefix: String,
    region: String,
    service: String,
}
#[derive(Deserialize)]
struct AwsV6 {
    ipv6_prefix: String,
    region: String,
    service: String,
}
#[derive(Deserialize)]
struct Gcp {
    prefixes: Vec<GcpPrefix>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GcpPrefix {
    ipv4_prefix: Option<String>,
    ipv6_prefix: Option<String>,
    scope: String,
}
#[derive(Deserialize)]
struct Azure {
    values: Vec<AzureValue>,
}
#[derive(Deserialize)]
struct AzureValue {
    properties: AzureProperties,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzureProperties {
    #[serde(default)]
    region: String,
    #[serde(default)]
    system_service: String,
    #[serde(default)]
    address_prefixes: Vec<String>,
}

/// Reads a source (its path relative to `base` unless absolute) and returns its
/// prefixes aggregated. Errors are plain reasons; the caller adds file and line.
pub fn load(spec: &SourceSpec, base: &Path) -> Result<Loaded, String> {
    let path = base.join(&spec.path);
    let geo_keys = !spec.countries.is_empty()
        || !spec.continents.is_empty()
        || !spec.groups.is_empty()
        || spec.country_field.is_some();
    if spec.format.is_geo() {
        if !spec.regions.is_empty() || !spec.services.is_empty() || !spec.scopes.is_empty() {
            return Err(format!(
                "`regions`, `services` and `scopes` do not apply to format \"{}\" (select by `countries`, `continents` or `groups`)",
                spec.format.as_str()
            ));
        }
        return load_geo(spec, &path);
    }
    if geo_keys {
        return Err(format!(
            "`countries`, `continents`, `groups` and `country_field` apply to formats \"mmdb\" and \"csv-ranges\", not \"{}\"",
            spec.format.as_str()
        ));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json =
        |e: serde_json::Error| format!("{} is not {:?} JSON: {e}", path.display(), spec.format);
    let wanted = |list: &[String], v: &str| list.is_empty() || list.iter().any(|w| w == v);
    let require = |list: &[String], key: &str| {
        if list.is_empty() {
            Err(format!("format {:?} needs `{key}`", spec.format))
        } else {
            Ok(())
        }
    };
    let raw: Vec<String> = match spec.format {
        Format::Aws => {
            require(&spec.regions, "regions")?;
            let f: Aws = serde_json::from_str(&text).map_err(json)?;
            let v4 = f
                .prefixes
                .into_iter()
                .filter(|p| wanted(&spec.regions, &p.region) && wanted(&spec.services, &p.service))
                .map(|p| p.ip_prefix);
            let v6 = f
                .ipv6_prefixes
                .into_iter()
                .filter(|p| wanted(&spec.regions, &p.region) && wanted(&spec.services, &p.service))
                .map(|p| p.ipv6_prefix);
            v4.chain(v6).collect()
        }
        Format::Gcp => {
            require(&spec.scopes, "scopes")?;
            let f: Gcp = serde_json::from_str(&text).map_err(json)?;
            f.prefixes
                .into_iter()
                .filter(|p| wanted(&spec.scopes, &p.scope))
                .flat_map(|p| p.ipv4_prefix.into_iter().chain(p.ipv6_prefix))
                .collect()
        }
        Format::Azure => {
            require(&spec.regions, "regions")?;
            let f: Azure = serde_json::from_str(&text).map_err(json)?;
            f.values
                .into_iter()
                .filter(|v| {
                    wanted(&spec.regions, &v.properties.region)
                        && wanted(&spec.services, &v.properties.system_service)
                })
                .flat_map(|v| v.properties.address_prefixes)
                .collect()
        }
        Format::Plain => text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        Format::Mmdb | Format::CsvRanges => unreachable!("read by load_geo"),
    };
    // Where an entry is in the file, for errors: its line (plain lists: the line it is
    // on; JSON: the first line holding it as a string).
    let line_of = |p: &str| -> usize {
        let at = match spec.format {
            Format::Plain => text
                .lines()
                .position(|l| l.split('#').next().unwrap_or("").trim() == p),
            _ => text
                .find(&format!("\"{p}\""))
                .map(|i| text[..i].matches('\n').count()),
        };
        at.map_or(0, |i| i + 1)
    };
    let mut prefixes = Vec::with_capacity(raw.len());
    for p in &raw {
        // Published files sometimes carry host bits; the network is what they mean.
        let n: IpNetwork = p.parse().map_err(|e| {
            format!(
                "{}:{}: \"{p}\" is not a prefix: {e}",
                path.display(),
                line_of(p)
            )
        })?;
        let n = IpNetwork::new(n.network(), n.prefix()).expect("valid prefix");
        prefixes.push(unmapped(n));
    }
    if prefixes.is_empty() {
        return Err(format!(
            "{} has no prefix for the selected regions/scopes/services",
            path.display()
        ));
    }
    let read = prefixes.len();
    Ok(Loaded {
        read,
        listed: prefixes.clone(),
        prefixes: aggregate(prefixes),
        labels: Vec::new(),
        listed_labels: Vec::new(),
        countries: BTreeMap::new(),
    })
}

/// [`load`] of a country database: the selected countries' prefixes, aggregated.
fn load_geo(spec: &SourceSpec, path: &Path) -> Result<Loaded, String> {
    let selected = geo::selection(spec)?;
    let unreadable = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let found = match spec.format {
        Format::Mmdb => geo::read_mmdb(
            std::fs::read(path).map_err(unreadable)?,
            path,
            spec.country_field.unwrap_or_default(),
            &selected,
            &spec.continents,
        )?,
        _ => geo::read_csv_ranges(
            &std::fs::read_to_string(path).map_err(unreadable)?,
            path,
            &selected,
        )?,
    };
    if found.is_empty() {
        return Err(format!(
            "{} has no prefix for the selected countries",
            path.display()
        ));
    }
    let read = found.len();
    // In place: a continent's million networks are 40 MB a copy.
    let mut listed: Vec<(IpNetwork, &'static str)> =
        found.into_iter().map(|(n, c)| (unmapped(n), c)).collect();
    // What the reader's doubling left over (up to half): given back, not copied.
    listed.shrink_to_fit();
    let prefixes = aggregate(listed.iter().map(|(n, _)| *n).collect());
    // Neighbouring countries' networks merge (a third fewer entries for the EU); each
    // merged prefix names every country inside it.
    let (labels, countries) = geo::label(&prefixes, &listed);
    let loaded = Loaded {
        read,
        listed_labels: listed.iter().map(|(_, c)| *c).collect(),
        listed: listed.into_iter().map(|(n, _)| n).collect(),
        prefixes,
        labels,
        countries,
    };
    Ok(loaded)
}

/// An IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d/n`, n >= 96) as the IPv4 prefix it
/// means: destinations in that form are judged as IPv4 (the socket-call hooks), so
/// kept as IPv6 it would match nothing. Other prefixes as they are.
fn unmapped(n: IpNetwork) -> IpNetwork {
    match n {
        IpNetwork::V6(v6) if v6.prefix() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNetwork::new(v4.into(), v6.prefix() - 96).expect("valid prefix"),
            None => n,
        },
        _ => n,
    }
}
