//! Published IP-range files as policy entries: AWS `ip-ranges.json` (by region and
//! optionally service), Google Cloud `cloud.json` (by scope), Azure Service Tags JSON
//! (by region, optionally system service), and plain lists (one prefix per line, `#`
//! comments).
//!
//! Prefixes from a source are aggregated before they reach the maps
//! ([`aggregate::aggregate`]), so a region's thousands of prefixes cost fewer trie
//! entries.

mod aggregate;

use std::path::Path;

use ipnetwork::IpNetwork;

pub use aggregate::aggregate;
use serde::Deserialize;

/// The format of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Aws,
    Gcp,
    Azure,
    Plain,
}

impl Format {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Aws => "aws",
            Format::Gcp => "gcp",
            Format::Azure => "azure",
            Format::Plain => "plain",
        }
    }
}

impl SourceSpec {
    /// How output names the source: its format and its path as written.
    pub fn describe(&self) -> String {
        format!("{} {}", self.format.as_str(), self.path)
    }
}

/// One `allow_sources` / `deny_sources` entry, as written.
#[derive(Debug, Clone, Deserialize)]
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
}

/// Prefixes read from one source, before and after aggregation.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub read: usize,
    /// As the file lists them (networks, mapped prefixes as IPv4): a deny source's
    /// own prefixes decide its conflicts, whatever aggregation made of them.
    pub listed: Vec<IpNetwork>,
    pub prefixes: Vec<IpNetwork>,
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
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(list: Vec<IpNetwork>) -> Vec<String> {
        list.into_iter().map(|n| n.to_string()).collect()
    }

    fn fixture(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("residency-sources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
        dir
    }

    fn spec(
        format: Format,
        path: &str,
        regions: &[&str],
        services: &[&str],
        scopes: &[&str],
    ) -> SourceSpec {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        SourceSpec {
            format,
            path: path.into(),
            regions: v(regions),
            services: v(services),
            scopes: v(scopes),
        }
    }

    #[test]
    fn reads_the_published_formats() {
        let dir = fixture(
            "ip-ranges.json",
            r#"{"syncToken":"1","createDate":"2026-11-01-00-00-00","prefixes":[
              {"ip_prefix":"3.5.136.0/22","region":"eu-central-1","service":"AMAZON","network_border_group":"eu-central-1"},
              {"ip_prefix":"3.5.140.0/22","region":"ap-northeast-2","service":"AMAZON","network_border_group":"ap-northeast-2"},
              {"ip_prefix":"3.5.136.0/22","region":"eu-central-1","service":"S3","network_border_group":"eu-central-1"}],
              "ipv6_prefixes":[{"ipv6_prefix":"2a05:d050:8000::/40","region":"eu-central-1","service":"AMAZON","network_border_group":"eu-central-1"}]}"#,
        );
        let l = load(
            &spec(Format::Aws, "ip-ranges.json", &["eu-central-1"], &[], &[]),
            &dir,
        )
        .unwrap();
        assert_eq!(l.read, 3);
        assert_eq!(
            strs(l.prefixes),
            vec!["3.5.136.0/22", "2a05:d050:8000::/40"]
        );
        let l = load(
            &spec(
                Format::Aws,
                "ip-ranges.json",
                &["eu-central-1"],
                &["S3"],
                &[],
            ),
            &dir,
        )
        .unwrap();
        assert_eq!(strs(l.prefixes), vec!["3.5.136.0/22"]);
        assert!(
            load(
                &spec(Format::Aws, "ip-ranges.json", &["mars-1"], &[], &[]),
                &dir
            )
            .unwrap_err()
            .contains("no prefix")
        );
        assert!(
            load(&spec(Format::Aws, "ip-ranges.json", &[], &[], &[]), &dir)
                .unwrap_err()
                .contains("needs `regions`")
        );

        let dir = fixture(
            "cloud.json",
            r#"{"syncToken":"1","creationTime":"2026-11-01T00:00:00","prefixes":[
              {"ipv4Prefix":"34.1.208.0/20","service":"Google Cloud","scope":"europe-west3"},
              {"ipv6Prefix":"2600:1900:4030::/44","service":"Google Cloud","scope":"europe-west3"},
              {"ipv4Prefix":"34.0.0.0/20","service":"Google Cloud","scope":"us-east1"}]}"#,
        );
        let l = load(
            &spec(Format::Gcp, "cloud.json", &[], &[], &["europe-west3"]),
            &dir,
        )
        .unwrap();
        assert_eq!(
            strs(l.prefixes),
            vec!["34.1.208.0/20", "2600:1900:4030::/44"]
        );

        let dir = fixture(
            "ServiceTags_Public.json",
            r#"{"changeNumber":1,"cloud":"Public","values":[
              {"name":"AzureCloud.germanywestcentral","id":"AzureCloud.germanywestcentral","properties":{"changeNumber":1,"region":"germanywestcentral","regionId":1,"platform":"Azure","systemService":"","addressPrefixes":["20.52.0.0/18","20.52.64.0/18","2603:1020:c00::/47"]}},
              {"name":"AzureCloud.eastus","id":"AzureCloud.eastus","properties":{"region":"eastus","systemService":"","addressPrefixes":["20.42.0.0/17"]}}]}"#,
        );
        let l = load(
            &spec(
                Format::Azure,
                "ServiceTags_Public.json",
                &["germanywestcentral"],
                &[],
                &[],
            ),
            &dir,
        )
        .unwrap();
        assert_eq!(l.read, 3);
        assert_eq!(
            strs(l.prefixes),
            vec!["20.52.0.0/17", "2603:1020:c00::/47"],
            "two /18 halves merged"
        );

        let dir = fixture(
            "eu.txt",
            "# EU ranges\n198.51.100.0/25\n198.51.100.128/25  # second half\n\n2001:db8::/32\n",
        );
        let l = load(&spec(Format::Plain, "eu.txt", &[], &[], &[]), &dir).unwrap();
        assert_eq!(
            (l.read, strs(l.prefixes)),
            (
                3,
                vec!["198.51.100.0/24".to_string(), "2001:db8::/32".to_string()]
            )
        );
        // Errors name the file's line, not the entry's position.
        let dir = fixture("bad.txt", "# ranges\n\n198.51.100.0/24\n198.51.100.0/33\n");
        let e = load(&spec(Format::Plain, "bad.txt", &[], &[], &[]), &dir).unwrap_err();
        assert!(e.contains("bad.txt:4: \"198.51.100.0/33\""), "{e}");
        let dir = fixture(
            "bad.json",
            "{\"prefixes\":[\n {\"ipv4Prefix\":\"8.8.8.0/24\",\"scope\":\"x\"},\n {\"ipv4Prefix\":\"8.8.9.0/99\",\"scope\":\"x\"}]}",
        );
        let e = load(&spec(Format::Gcp, "bad.json", &[], &[], &["x"]), &dir).unwrap_err();
        assert!(e.contains("bad.json:3: \"8.8.9.0/99\""), "{e}");
    }

    #[test]
    fn mapped_prefixes_in_a_source_mean_their_ipv4_range() {
        let dir = fixture("mapped.txt", "::ffff:198.51.100.0/120\n2001:db8::/32\n");
        let l = load(&spec(Format::Plain, "mapped.txt", &[], &[], &[]), &dir).unwrap();
        assert_eq!(
            strs(l.prefixes),
            vec!["198.51.100.0/24".to_string(), "2001:db8::/32".to_string()]
        );
    }
}
