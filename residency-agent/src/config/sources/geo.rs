//! Country databases as sources: MaxMind DB files (`format = "mmdb"`, read with the
//! `maxminddb` crate) and start,end,country CSV ranges (`format = "csv-ranges"`, as
//! DB-IP lite and ip-location-db publish them), narrowed to the countries a policy
//! selects by `countries`, `continents` and `groups` ([`super::countries`]).
//!
//! Two MMDB schemas are read: MaxMind's GeoIP2/GeoLite2 country schema
//! (`country.iso_code`, `registered_country.iso_code`) and the flat `country_code` of
//! the ip-location-db builds. Every prefix comes back with the country that put it
//! there, so that `explain` and `check --verbose` can say so.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    path::Path,
};

use ipnetwork::IpNetwork;
use maxminddb::{Reader, WithinOptions};
use serde::Deserialize;

use super::{SourceSpec, countries};

/// Which country of a network decides (MaxMind's GeoIP2 schema has both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountryField {
    /// Where the network is (`country`): the default.
    #[default]
    Located,
    /// Where its holder registered it (`registered_country`).
    Registered,
}

/// The country codes a geo source selects, from its `countries`, `continents` and
/// `groups`; an unknown code is an error naming the key.
pub fn selection(spec: &SourceSpec) -> Result<BTreeSet<&'static str>, String> {
    let mut out = BTreeSet::new();
    for c in &spec.countries {
        let code = c.to_ascii_uppercase();
        let known = country(&code).ok_or_else(|| {
            format!("`countries`: \"{c}\" is not an ISO 3166-1 alpha-2 country code")
        })?;
        out.insert(known);
    }
    for c in &spec.continents {
        let list = countries::continent(&c.to_ascii_uppercase()).ok_or_else(|| {
            format!("`continents`: \"{c}\" is not a continent code (AF, AN, AS, EU, NA, OC, SA)")
        })?;
        out.extend(list.iter().copied());
    }
    for g in &spec.groups {
        let list = countries::group(&g.to_ascii_uppercase()).ok_or_else(|| {
            format!(
                "`groups`: \"{g}\" is not a group ({})",
                countries::GROUPS.join(", ")
            )
        })?;
        out.extend(list);
    }
    if out.is_empty() {
        return Err(format!(
            "format \"{}\" needs `countries`, `continents` or `groups`",
            spec.format.as_str()
        ));
    }
    Ok(out)
}

/// `code` as the table's own string (so labels cost no allocation).
fn country(code: &str) -> Option<&'static str> {
    ["AF", "AN", "AS", "EU", "NA", "OC", "SA"]
        .iter()
        .filter_map(|c| countries::continent(c))
        .flat_map(|l| l.iter())
        .find(|c| **c == code)
        .copied()
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    continent: Option<Continent<'a>>,
    #[serde(borrow, default)]
    country: Option<Named<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<Named<'a>>,
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Continent<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

/// How a network placed by its continent alone is labelled (MaxMind's databases
/// have such networks: a record with `continent` and no `country`, for a block
/// registered to a whole region).
const CONTINENT_ONLY: &[(&str, &str)] = &[
    ("AF", "continent AF"),
    ("AN", "continent AN"),
    ("AS", "continent AS"),
    ("EU", "continent EU"),
    ("NA", "continent NA"),
    ("OC", "continent OC"),
    ("SA", "continent SA"),
];

/// The networks of `bytes` (an MMDB file) whose deciding country is selected, each
/// with that country; and, with `continents` selected, the networks of the GeoIP2
/// schema that have a continent and no located country, labelled by the continent.
pub fn read_mmdb(
    bytes: Vec<u8>,
    path: &Path,
    field: CountryField,
    selected: &BTreeSet<&'static str>,
    continents: &[String],
) -> Result<Vec<(IpNetwork, &'static str)>, String> {
    let bad = |e: maxminddb::MaxMindDbError| format!("{}: not a MaxMind DB: {e}", path.display());
    let reader = Reader::from_source(bytes).map_err(bad)?;
    // Records are shared by many networks: decide each record once.
    let mut decided: HashMap<usize, Option<&'static str>> = HashMap::new();
    let mut out = Vec::new();
    for item in reader.networks(WithinOptions::default()).map_err(bad)? {
        let item = item.map_err(bad)?;
        let Some(offset) = item.offset() else {
            continue;
        };
        let code = match decided.get(&offset) {
            Some(c) => *c,
            None => {
                let record: Option<Record<'_>> = item.decode().map_err(bad)?;
                let code = match &record {
                    None => None,
                    Some(r) => decide(r, field).map_err(|e| format!("{}: {e}", path.display()))?,
                };
                let code = match code {
                    Some(c) => selected.get(c.to_ascii_uppercase().as_str()).copied(),
                    // No located country: its continent decides, if one is selected.
                    None if field == CountryField::Located => record
                        .as_ref()
                        .and_then(|r| r.continent.as_ref()?.code)
                        .map(str::to_ascii_uppercase)
                        .filter(|c| continents.iter().any(|w| w.eq_ignore_ascii_case(c)))
                        .and_then(|c| {
                            CONTINENT_ONLY
                                .iter()
                                .find(|(k, _)| *k == c)
                                .map(|(_, l)| *l)
                        }),
                    None => None,
                };
                decided.insert(offset, code);
                code
            }
        };
        if let Some(code) = code {
            out.push((item.network().map_err(bad)?, code));
        }
    }
    Ok(out)
}

/// The country of a record by `field`.
fn decide<'a>(r: &Record<'a>, field: CountryField) -> Result<Option<&'a str>, String> {
    if let Some(code) = r.country_code {
        if field == CountryField::Registered {
            return Err(
                "`country_field = \"registered\"`: this database has one country per network (`country_code`), no registered country"
                    .to_owned(),
            );
        }
        return Ok(Some(code));
    }
    let named = match field {
        CountryField::Located => &r.country,
        CountryField::Registered => &r.registered_country,
    };
    Ok(named.as_ref().and_then(|n| n.iso_code))
}

/// The ranges of `text` (lines `start,end,country`, optionally quoted, further
/// columns ignored, `#` comments and a header line skipped) whose country is
/// selected, turned into the exact prefixes that cover each range.
pub fn read_csv_ranges(
    text: &str,
    path: &Path,
    selected: &BTreeSet<&'static str>,
) -> Result<Vec<(IpNetwork, &'static str)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split(',').map(|c| c.trim().trim_matches('"'));
        let (start, end, code) = (cols.next(), cols.next(), cols.next());
        let at = || format!("{}:{}", path.display(), i + 1);
        let (Some(start), Some(end), Some(code)) = (start, end, code) else {
            return Err(format!("{}: \"{line}\" is not start,end,country", at()));
        };
        let (Ok(start), Ok(end)) = (start.parse::<IpAddr>(), end.parse::<IpAddr>()) else {
            if i == 0 {
                continue; // a header
            }
            return Err(format!(
                "{}: \"{line}\" does not start with two addresses",
                at()
            ));
        };
        let Some(code) = selected.get(code.to_ascii_uppercase().as_str()).copied() else {
            continue;
        };
        let prefixes = range_prefixes(start, end).ok_or_else(|| {
            format!(
                "{}: \"{line}\" is not a range (families differ, or end < start)",
                at()
            )
        })?;
        out.extend(prefixes.into_iter().map(|p| (p, code)));
    }
    Ok(out)
}

/// The fewest prefixes that cover `start..=end` exactly; `None` when the two are of
/// different families or `end` is below `start`.
pub fn range_prefixes(start: IpAddr, end: IpAddr) -> Option<Vec<IpNetwork>> {
    let (s, e, bits) = match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => (u128::from(u32::from(s)), u128::from(u32::from(e)), 32),
        (IpAddr::V6(s), IpAddr::V6(e)) => (u128::from(s), u128::from(e), 128),
        _ => return None,
    };
    if e < s {
        return None;
    }
    // The last offset of a block of 2^log addresses.
    let span = |log: u32| {
        if log >= 128 {
            u128::MAX
        } else {
            (1u128 << log) - 1
        }
    };
    let mut out = Vec::new();
    let mut at = s;
    loop {
        // The largest block aligned at `at` that does not pass `end` (an aligned
        // block never wraps, so the sum cannot overflow).
        let mut log = at.trailing_zeros().min(bits);
        while log > 0 && at + span(log) > e {
            log -= 1;
        }
        let addr = if bits == 32 {
            IpAddr::V4((at as u32).into())
        } else {
            IpAddr::V6(at.into())
        };
        out.push(IpNetwork::new(addr, (bits - log) as u8).expect("a valid prefix"));
        let last = at + span(log);
        if last >= e {
            return Some(out);
        }
        at = last + 1;
    }
}

/// The countries of one prefix: `DE`, or `AT+DE` for a prefix aggregation merged.
pub type Label = Cow<'static, str>;

/// Per country, its listed prefixes and the aggregated prefixes holding them.
pub type CountryCounts = BTreeMap<&'static str, (usize, usize)>;

/// The countries inside each of `aggregated` (disjoint prefixes that cover every one
/// of `listed`), joined with `+`; and per country, its listed prefixes and the
/// aggregated prefixes holding them. A label of one country is the table's own
/// string: a country's set is hundreds of thousands of prefixes, and a set or a
/// string of its own per prefix cost a country-sized source more memory than the
/// rest of its compile (77 MB of tree nodes for the United States).
pub fn label(
    aggregated: &[IpNetwork],
    listed: &[(IpNetwork, &'static str)],
) -> (Vec<Label>, CountryCounts) {
    let key = |n: &IpNetwork| -> u128 {
        match n {
            IpNetwork::V4(v) => u128::from(v.network().to_ipv6_mapped()),
            IpNetwork::V6(v) => u128::from(v.network()),
        }
    };
    let mut order: Vec<u32> = (0..aggregated.len() as u32).collect();
    order.sort_unstable_by_key(|i| key(&aggregated[*i as usize]));
    let starts: Vec<u128> = order
        .iter()
        .map(|i| key(&aggregated[*i as usize]))
        .collect();
    // (aggregated prefix, country) for every listed prefix, then each pair once.
    let mut inside: Vec<(u32, &'static str)> = Vec::with_capacity(listed.len());
    let mut read: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (n, code) in listed {
        *read.entry(code).or_default() += 1;
        // The aggregated prefix starting at or before it is the one holding it.
        let at = starts.partition_point(|s| *s <= key(n));
        if let Some(i) = at.checked_sub(1) {
            inside.push((order[i], code));
        }
    }
    drop(starts);
    inside.sort_unstable();
    inside.dedup();
    let mut holding: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut labels = vec![Cow::Borrowed(""); aggregated.len()];
    for held in inside.chunk_by(|a, b| a.0 == b.0) {
        for (_, c) in held {
            *holding.entry(c).or_default() += 1;
        }
        labels[held[0].0 as usize] = match held {
            [(_, c)] => Cow::Borrowed(*c),
            _ => Cow::Owned(held.iter().map(|(_, c)| *c).collect::<Vec<_>>().join("+")),
        };
    }
    let counts = read
        .into_iter()
        .map(|(c, r)| (c, (r, holding.get(c).copied().unwrap_or(0))))
        .collect();
    (labels, counts)
}
