//! Kubernetes label selectors in the config (`namespace_selector`, `pod_selector`):
//! `match_labels` and `match_expressions` with the API's semantics
//! (`k8s.io/apimachinery/pkg/labels`): every term must hold; `In` needs the key with
//! one of the values, `NotIn` holds when the key is absent or has another value,
//! `Exists` / `DoesNotExist` test the key only; an empty selector selects everything.
//!
//! Also whether two selectors can select the same object ([`LabelSelector::overlaps`]),
//! so that `check` can report policies that may both claim a pod.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, locate::Locator};

/// A selector as written; the camelCase spellings of a Kubernetes manifest are
/// accepted too.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSelector {
    #[serde(default, alias = "matchLabels")]
    pub match_labels: BTreeMap<String, Spanned<String>>,
    #[serde(default, alias = "matchExpressions")]
    pub match_expressions: Vec<Spanned<RawRequirement>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default)]
    pub values: Vec<String>,
}

/// A `match_expressions` operator, spelt as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: BTreeSet<String>,
}

/// A validated label selector: `match_labels` as `In` terms of one value, then the
/// expressions, all of which must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl LabelSelector {
    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether some set of labels satisfies both selectors: per key, the terms of
    /// both must admit a common state (absent, or a value).
    pub fn overlaps(&self, other: &LabelSelector) -> bool {
        let terms: Vec<&Requirement> = self
            .requirements
            .iter()
            .chain(&other.requirements)
            .collect();
        let keys: BTreeSet<&str> = terms.iter().map(|r| r.key.as_str()).collect();
        keys.into_iter().all(|key| {
            let on_key: Vec<&&Requirement> = terms.iter().filter(|r| r.key == key).collect();
            // Absent satisfies every term but In and Exists.
            let absent_ok = on_key
                .iter()
                .all(|r| matches!(r.operator, Operator::NotIn | Operator::DoesNotExist));
            if absent_ok {
                return true;
            }
            if on_key.iter().any(|r| r.operator == Operator::DoesNotExist) {
                return false;
            }
            // Present: a value in every In set and in no NotIn set. Without an In
            // term any value outside the NotIn sets will do, and there always is one.
            let mut allowed: Option<BTreeSet<&String>> = None;
            for r in on_key.iter().filter(|r| r.operator == Operator::In) {
                let set: BTreeSet<&String> = r.values.iter().collect();
                allowed = Some(match allowed {
                    None => set,
                    Some(a) => a.intersection(&set).copied().collect(),
                });
            }
            match allowed {
                None => true,
                Some(a) => a.iter().any(|v| {
                    !on_key
                        .iter()
                        .any(|r| r.operator == Operator::NotIn && r.values.contains(*v))
                }),
            }
        })
    }
}

/// Validates a selector written under `key`.
pub(crate) fn parse_selector(
    at: &Locator<'_>,
    key: &str,
    raw: Spanned<RawSelector>,
) -> Result<LabelSelector, ConfigError> {
    let raw = raw.into_inner();
    let mut requirements = Vec::new();
    for (k, v) in raw.match_labels {
        let here = format!("{key}.match_labels");
        label_key(&k).map_err(|r| at.error(v.span(), &here, &r))?;
        label_value(v.get_ref()).map_err(|r| at.error(v.span(), &here, &r))?;
        requirements.push(Requirement {
            key: k,
            operator: Operator::In,
            values: BTreeSet::from([v.into_inner()]),
        });
    }
    for e in raw.match_expressions {
        let here = format!("{key}.match_expressions");
        let e_span = e.span();
        let e = e.into_inner();
        let fail = |reason: String| at.error(e_span.clone(), &here, &reason);
        label_key(&e.key).map_err(&fail)?;
        for v in &e.values {
            label_value(v).map_err(&fail)?;
        }
        match (e.operator, e.values.is_empty()) {
            (Operator::In | Operator::NotIn, true) => {
                return Err(fail(format!(
                    "operator {:?} on \"{}\" needs at least one value",
                    e.operator, e.key
                )));
            }
            (Operator::Exists | Operator::DoesNotExist, false) => {
                return Err(fail(format!(
                    "operator {:?} on \"{}\" takes no values",
                    e.operator, e.key
                )));
            }
            _ => {}
        }
        requirements.push(Requirement {
            key: e.key,
            operator: e.operator,
            values: e.values.into_iter().collect(),
        });
    }
    Ok(LabelSelector { requirements })
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters (alphanumerics, `-`, `_`, `.`; alphanumeric at both ends).
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!("\"{key}\": the prefix is not a DNS subdomain"));
        }
    }
    if name.is_empty() || !label_name_chars(name) {
        return Err(format!(
            "\"{key}\" is not a label key (a name of at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends, after an optional DNS prefix and '/')"
        ));
    }
    Ok(())
}

/// A label value: empty, or as a label name.
fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_name_chars(value) {
        Ok(())
    } else {
        Err(format!(
            "\"{value}\" is not a label value (at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends)"
        ))
    }
}

fn label_name_chars(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn sel(r: Vec<Requirement>) -> LabelSelector {
        LabelSelector { requirements: r }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let app = labels(&[("app", "api"), ("tier", "web")]);
        let none = labels(&[]);
        assert!(
            sel(vec![]).matches(&none),
            "the empty selector selects everything"
        );
        let s = sel(vec![req("app", Operator::In, &["api", "db"])]);
        assert!(s.matches(&app) && !s.matches(&none));
        let s = sel(vec![req("tier", Operator::NotIn, &["db"])]);
        assert!(
            s.matches(&app) && s.matches(&none),
            "NotIn holds without the key"
        );
        let s = sel(vec![req("tier", Operator::NotIn, &["web"])]);
        assert!(!s.matches(&app));
        assert!(sel(vec![req("app", Operator::Exists, &[])]).matches(&app));
        assert!(!sel(vec![req("app", Operator::Exists, &[])]).matches(&none));
        assert!(sel(vec![req("x", Operator::DoesNotExist, &[])]).matches(&app));
        assert!(!sel(vec![req("app", Operator::DoesNotExist, &[])]).matches(&app));
        let both = sel(vec![
            req("app", Operator::In, &["api"]),
            req("tier", Operator::In, &["db"]),
        ]);
        assert!(!both.matches(&app), "every term must hold");
    }

    #[test]
    fn overlap_is_decided_per_key() {
        let api = sel(vec![req("app", Operator::In, &["api"])]);
        let db = sel(vec![req("app", Operator::In, &["db"])]);
        let any = sel(vec![]);
        assert!(!api.overlaps(&db));
        assert!(api.overlaps(&any) && any.overlaps(&any));
        let not_api = sel(vec![req("app", Operator::NotIn, &["api"])]);
        assert!(!api.overlaps(&not_api));
        assert!(db.overlaps(&not_api));
        let no_app = sel(vec![req("app", Operator::DoesNotExist, &[])]);
        assert!(!api.overlaps(&no_app) && not_api.overlaps(&no_app));
        let api_or_db = sel(vec![req("app", Operator::In, &["api", "db"])]);
        let db_or_x = sel(vec![req("app", Operator::In, &["db", "x"])]);
        assert!(api_or_db.overlaps(&db_or_x));
        let tier = sel(vec![req("tier", Operator::Exists, &[])]);
        assert!(api.overlaps(&tier), "different keys never conflict");
    }

    #[test]
    fn label_syntax_is_checked() {
        assert!(label_key("app").is_ok());
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("kubernetes.io/metadata.name").is_ok());
        assert!(label_key("-app").is_err());
        assert!(label_key("Bad_Prefix/app").is_err());
        assert!(label_key(&"a".repeat(64)).is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("eu-central-1").is_ok());
        assert!(label_value("eu central").is_err());
    }
}
