//! Policy ids: stable by name across versions, so counters and events keep their
//! meaning when policies are added, removed or reordered.

use std::collections::BTreeMap;

use residency_common::MAX_POLICIES;

use crate::config::Config;

/// Policy ids by name, stable across versions.
#[derive(Debug, Clone, Default)]
pub struct PolicyIds(BTreeMap<String, u32>);

impl PolicyIds {
    /// Ids for `config`'s policies, in config order: kept for known names, the lowest
    /// id for new ones that neither this version nor the previous one uses. An id is
    /// never handed straight from a removed policy to a new one: events still in the
    /// ring when the swap happens must not name the newcomer.
    pub fn assign(&self, config: &Config) -> (PolicyIds, Vec<u32>) {
        let mut next = BTreeMap::new();
        let mut ids = Vec::with_capacity(config.policies.len());
        for p in &config.policies {
            if let Some(id) = self.0.get(&p.name) {
                next.insert(p.name.clone(), *id);
            }
        }
        for p in &config.policies {
            let id = match next.get(&p.name) {
                Some(id) => *id,
                None => {
                    let used: std::collections::BTreeSet<u32> =
                        next.values().chain(self.0.values()).copied().collect();
                    let id = (0..MAX_POLICIES)
                        .find(|i| !used.contains(i))
                        .expect("validated count");
                    next.insert(p.name.clone(), id);
                    id
                }
            };
            ids.push(id);
        }
        (PolicyIds(next), ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(names: &[&str]) -> Config {
        let text: String = names
            .iter()
            .map(|n| format!("[[policy]]\nname = \"{n}\"\ncgroups = [\"{n}\"]\n"))
            .collect();
        Config::parse(&text, "t").unwrap()
    }

    #[test]
    fn ids_are_stable_by_name() {
        let (ids, list) = PolicyIds::default().assign(&config(&["a", "b", "c"]));
        assert_eq!(list, vec![0, 1, 2]);
        let (ids, list) = ids.assign(&config(&["c", "d", "a"]));
        assert_eq!(
            list,
            vec![2, 3, 0],
            "c and a keep theirs; d does not take b's id at once"
        );
        let (_, list) = ids.assign(&config(&["e", "a"]));
        assert_eq!(list, vec![1, 0], "b's id is free again one version later");
    }
}
