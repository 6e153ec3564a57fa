//! A policy's IP-range sources merged into its entries: each source read and
//! aggregated, never overriding an entry written by hand (nor an earlier source) for
//! the same prefix, and a deny source winning over an allow source for a prefix it
//! lists (reported). Country databases' entries cite their countries.

use std::path::Path;

use toml::Spanned;

use crate::config::{
    ConfigError,
    entry::{Action, Entry, OriginId},
    locate::Locator,
    taken::Taken,
};

/// What one IP-range source contributed to a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    /// Its format and path as written (`mmdb GeoLite2-Country.mmdb`).
    pub description: String,
    /// Its file, resolved against the config's directory.
    pub path: std::path::PathBuf,
    /// Prefixes read (selected) and after aggregation.
    pub read: usize,
    pub kept: usize,
    /// Country databases: per country, prefixes read and after aggregation.
    pub countries: std::collections::BTreeMap<String, (usize, usize)>,
    /// `max_age`: the age past which the file is stale.
    pub max_age: Option<std::time::Duration>,
    /// The entry as written, to read the source again (`explain`).
    pub spec: super::SourceSpec,
}

/// The origins a policy's entries cite, each once ([`OriginId`]).
struct Origins {
    texts: Vec<String>,
    ids: foldhash::HashMap<String, OriginId>,
    /// At most this many ([`OriginId::MAX`]; less in tests).
    limit: usize,
}

impl Origins {
    fn new(limit: usize) -> Origins {
        Origins {
            texts: Vec::new(),
            ids: foldhash::HashMap::default(),
            limit: limit.min(OriginId::MAX),
        }
    }

    /// The id of `text`, added if new; `None` once the table is full (a database cut
    /// into that many country combinations: its entries then cite their source without
    /// the countries, whose id was taken before any label's).
    fn cite(&mut self, text: &str) -> Option<OriginId> {
        if let Some(id) = self.ids.get(text) {
            return Some(*id);
        }
        if self.texts.len() >= self.limit {
            return None;
        }
        let id = OriginId::new(self.texts.len())?;
        self.texts.push(text.to_owned());
        self.ids.insert(text.to_owned(), id);
        Some(id)
    }

    fn text(&self, id: OriginId) -> &str {
        &self.texts[id.index()]
    }
}

/// A policy's entries with its sources' merged in.
pub(in crate::config) struct Merged {
    /// The entries written by hand, then the sources'.
    pub entries: Vec<Entry>,
    /// What each source contributed.
    pub sources: Vec<SourceSummary>,
    /// What the sources' entries cite ([`OriginId`]).
    pub origins: Vec<String>,
}

/// IP-range sources: aggregated, and never overriding an entry written by hand (nor
/// an earlier source) for the same prefix. Returns the entries with the sources'
/// appended, what each source contributed, and the origins the entries cite.
pub(in crate::config) fn add_sources(
    at: &Locator<'_>,
    key: &str,
    seen: &mut Taken,
    mut entries: Vec<Entry>,
    lists: [(Action, Vec<Spanned<super::SourceSpec>>); 2],
    file: &str,
    notes: &mut Vec<String>,
) -> Result<Merged, ConfigError> {
    let mut sources = Vec::new();
    let mut origins = Origins::new(OriginId::MAX);
    // Every source's own origin gets its id before any country label takes one, so
    // that a full table always leaves an entry its source to cite.
    for item in lists.iter().flat_map(|(_, list)| list) {
        if origins.cite(&item.get_ref().describe()).is_none() {
            return Err(at.error(
                item.span(),
                key,
                &format!("more than {} IP-range sources", OriginId::MAX),
            ));
        }
    }
    let base = Path::new(file)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for (action, list) in lists {
        let entry_key = format!("{key}.{}_sources", action.as_str());
        for item in list {
            let spec = item.get_ref();
            let loaded = super::load(spec, base)
                .map_err(|reason| at.error(item.span(), &entry_key, &reason))?;
            let line = at.line32(item.span().start);
            let origin = spec.describe();
            let plain = origins
                .cite(&origin)
                .expect("every source's own origin was cited first");
            sources.push(SourceSummary {
                description: origin.clone(),
                path: base.join(&spec.path),
                read: loaded.read,
                kept: loaded.prefixes.len(),
                countries: loaded
                    .countries
                    .iter()
                    .map(|(c, n)| ((*c).to_owned(), *n))
                    .collect(),
                max_age: spec.max_age,
                spec: spec.clone(),
            });

            if action == Action::Deny {
                // Between sources a deny wins (fail closed), judged on the prefixes
                // the deny source lists, and reported. An entry written by hand wins
                // over both, reported too.
                // An entry with an origin came from a source; an allow one from an
                // allow source (a deny source's own prefix that equals it wins).
                for network in &loaded.listed {
                    let Some(i) = seen.get(&entries, *network, None) else {
                        continue;
                    };
                    if let Some(cited) = entries[i].origin {
                        let e = &mut entries[i];
                        if e.action == Action::Allow {
                            notes.push(format!(
                                "{file}:{line}: {key}: {network} is in allow source \"{}\" (line {}) and in deny source \"{origin}\": denied (between sources a deny wins)",
                                origins.text(cited),
                                e.line
                            ));
                            e.action = Action::Deny;
                            e.line = line;
                            e.origin = Some(plain);
                        }
                    } else if entries[i].action == Action::Allow {
                        let hand_line = entries[i].line;
                        notes.push(format!(
                            "{file}:{line}: {key}: {network} is in deny source \"{origin}\" but allowed by hand on line {hand_line}: allowed (an entry written by hand wins)"
                        ));
                    }
                }
            }
            // A country database's entries cite their countries too; each distinct
            // citation is made once and shared.
            // Labels repeat (a country's many networks): looked up by label, not by text.
            let mut citations: foldhash::HashMap<&str, OriginId> = foldhash::HashMap::default();
            seen.reserve(loaded.prefixes.len(), &entries);
            entries.reserve(loaded.prefixes.len());
            for (i, network) in loaded.prefixes.iter().copied().enumerate() {
                if seen.get(&entries, network, None).is_some() {
                    continue;
                }
                let cited = match loaded.labels.get(i) {
                    Some(countries) => *citations.entry(countries.as_ref()).or_insert_with(|| {
                        origins
                            .cite(&format!("{origin}: {countries}"))
                            .unwrap_or(plain)
                    }),
                    None => plain,
                };
                entries.push(Entry {
                    action,
                    network,
                    ports: None,
                    line,
                    origin: Some(cited),
                });
                seen.take(&entries, entries.len() - 1);
            }
        }
    }
    Ok(Merged {
        entries,
        sources,
        origins: origins.texts,
    })
}

#[cfg(test)]
mod tests {
    use super::Origins;

    #[test]
    fn a_full_table_of_origins_cites_nothing_new_and_keeps_what_it_has() {
        let mut o = Origins::new(2);
        let a = o.cite("plain a.txt").unwrap();
        let b = o.cite("mmdb b.mmdb: DE").unwrap();
        assert_ne!(a, b);
        assert_eq!(o.cite("mmdb b.mmdb: FR"), None, "full");
        assert_eq!(o.cite("plain a.txt"), Some(a), "what is there is found");
        assert_eq!(o.text(b), "mmdb b.mmdb: DE");
    }
}
