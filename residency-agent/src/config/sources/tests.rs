//! Reading each source format, from fixtures and from the real country databases
//! `cargo xtask setup` installs.

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
        countries: vec![],
        continents: vec![],
        groups: vec![],
        country_field: None,
        max_age: None,
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

/// The real databases `cargo xtask setup` installs (`residency_tests::geoip`).
const GEOIP: &str = "/usr/local/lib/residency/geoip";

fn geo_spec(format: Format, path: &str, groups: &[&str], countries: &[&str]) -> SourceSpec {
    let mut s = spec(format, path, &[], &[], &[]);
    s.groups = groups.iter().map(|g| g.to_string()).collect();
    s.countries = countries.iter().map(|c| c.to_string()).collect();
    s
}

/// Addresses covered by `prefixes` as merged ranges (IPv4 as `::ffff:a.b.c.d`).
fn covered(prefixes: &[IpNetwork]) -> Vec<(u128, u128)> {
    let mut r: Vec<(u128, u128)> = prefixes
        .iter()
        .map(|n| {
            let (first, last) = match n {
                IpNetwork::V4(v) => (
                    u128::from(v.network().to_ipv6_mapped()),
                    u128::from(v.broadcast().to_ipv6_mapped()),
                ),
                IpNetwork::V6(v) => (u128::from(v.network()), u128::from(v.broadcast())),
            };
            (first, last)
        })
        .collect();
    r.sort();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn contains(ranges: &[(u128, u128)], x: u128) -> bool {
    let i = ranges.partition_point(|r| r.1 < x);
    ranges.get(i).is_some_and(|r| r.0 <= x)
}

#[test]
fn a_country_database_in_both_formats_gives_the_same_addresses_as_a_lookup() {
    let dir = std::path::Path::new(GEOIP);
    let mmdb = load(
        &geo_spec(
            Format::Mmdb,
            "geolite2-country-mmdb/geolite2-country.mmdb",
            &["EU"],
            &[],
        ),
        dir,
    )
    .expect("the GeoLite2 database `cargo xtask setup` installs");
    let v4 = load(
        &geo_spec(
            Format::CsvRanges,
            "geolite2-country/geolite2-country-ipv4.csv",
            &["EU"],
            &[],
        ),
        dir,
    )
    .unwrap();
    let v6 = load(
        &geo_spec(
            Format::CsvRanges,
            "geolite2-country/geolite2-country-ipv6.csv",
            &["EU"],
            &[],
        ),
        dir,
    )
    .unwrap();
    // A real EU-27 allowlist: both families, every member state, aggregated.
    assert_eq!(mmdb.countries.len(), 27, "{:?}", mmdb.countries.keys());
    let (n4, n6) =
        mmdb.prefixes.iter().fold(
            (0, 0),
            |(a, b), p| {
                if p.is_ipv4() { (a + 1, b) } else { (a, b + 1) }
            },
        );
    assert!(n4 > 50_000 && n6 > 50_000, "{n4} IPv4, {n6} IPv6");
    assert_eq!(mmdb.labels.len(), mmdb.prefixes.len());
    // The two formats of one release cover exactly the same addresses.
    let from_mmdb = covered(&mmdb.prefixes);
    let mut csv = v4.prefixes.clone();
    csv.extend(v6.prefixes.iter().copied());
    assert!(from_mmdb == covered(&csv), "MMDB and CSV differ");
    // And agree with the reader's own lookup of addresses spread over the space.
    let reader =
        maxminddb::Reader::open_readfile(dir.join("geolite2-country-mmdb/geolite2-country.mmdb"))
            .unwrap();
    let eu = countries::group("EU").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut inside, mut checked) = (0, 0);
    for i in 0..20_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ip: std::net::IpAddr = if i % 2 == 0 {
            std::net::Ipv4Addr::from(x as u32).into()
        } else {
            // 2000::/3, where the allocations are.
            std::net::Ipv6Addr::from((0x2u128 << 124) | (u128::from(x) << 60) | u128::from(x >> 7))
                .into()
        };
        let r = reader.lookup(ip).unwrap();
        let code: Option<String> = r
            .decode_path(&[maxminddb::PathElement::Key("country_code")])
            .unwrap();
        let want = code.is_some_and(|c| eu.contains(&c.as_str()));
        let key = match ip {
            std::net::IpAddr::V4(v) => u128::from(v.to_ipv6_mapped()),
            std::net::IpAddr::V6(v) => u128::from(v),
        };
        assert_eq!(contains(&from_mmdb, key), want, "{ip}");
        inside += usize::from(want);
        checked += 1;
    }
    assert!(inside > 100, "{inside} of {checked} samples in the EU");
    // Aggregation merges neighbouring countries; each prefix names those inside it.
    assert!(
        mmdb.prefixes.len() < mmdb.read * 9 / 10,
        "{} of {}",
        mmdb.prefixes.len(),
        mmdb.read
    );
    let holding_de = mmdb
        .labels
        .iter()
        .filter(|c| c.split('+').any(|c| c == "DE"))
        .count();
    assert_eq!(mmdb.countries["DE"].1, holding_de);
    assert!(mmdb.labels.iter().any(|c| c == "DE") && mmdb.labels.iter().any(|c| c.contains('+')));
}

#[test]
fn countries_continents_and_groups_are_checked_and_ranges_become_exact_prefixes() {
    let mut s = geo_spec(Format::Mmdb, "x.mmdb", &[], &["DE", "XX"]);
    assert!(
        geo::selection(&s)
            .unwrap_err()
            .contains("`countries`: \"XX\" is not an ISO 3166-1"),
    );
    s.countries = vec![];
    s.groups = vec!["EUR".into()];
    assert!(
        geo::selection(&s)
            .unwrap_err()
            .contains("`groups`: \"EUR\" is not a group (EU, EEA, EFTA)")
    );
    s.groups = vec![];
    s.continents = vec!["EU".into()];
    let europe = geo::selection(&s).unwrap();
    assert!(europe.contains("CH") && europe.contains("GB") && !europe.contains("TR"));
    s.continents = vec![];
    assert!(
        geo::selection(&s)
            .unwrap_err()
            .contains("needs `countries`, `continents` or `groups`")
    );
    let mut aws = spec(Format::Aws, "x.json", &["eu-central-1"], &[], &[]);
    aws.countries = vec!["DE".into()];
    assert!(
        load(&aws, std::path::Path::new("/"))
            .unwrap_err()
            .contains("apply to formats")
    );

    let p = |a: &str, b: &str| {
        geo::range_prefixes(a.parse().unwrap(), b.parse().unwrap())
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(p("1.0.1.0", "1.0.3.255"), ["1.0.1.0/24", "1.0.2.0/23"]);
    assert_eq!(p("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
    assert_eq!(p("10.0.0.5", "10.0.0.5"), ["10.0.0.5/32"]);
    assert_eq!(p("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
    assert_eq!(
        p("2001:218::", "2001:218:4000:5:ffff:ffff:ffff:ffff"),
        [
            "2001:218::/34",
            "2001:218:4000::/62",
            "2001:218:4000:4::/63"
        ]
    );
    assert!(
        geo::range_prefixes("10.0.0.9".parse().unwrap(), "10.0.0.1".parse().unwrap()).is_none()
    );

    // A file's German and Austrian ranges.
    let de_at = |name: &str, text: &str| {
        let dir = fixture(name, text);
        load(&geo_spec(Format::CsvRanges, name, &[], &["DE", "AT"]), &dir).unwrap()
    };
    let l = de_at(
        "ranges.csv",
        "start,end,country\n\"1.0.1.0\",\"1.0.3.255\",\"DE\"\n1.0.4.0,1.0.7.255,AU\n1.0.8.0,1.0.8.255,at\n",
    );
    assert_eq!(
        strs(l.prefixes.clone()),
        ["1.0.1.0/24", "1.0.2.0/23", "1.0.8.0/24"]
    );
    assert_eq!(l.labels, ["DE", "DE", "AT"]);
    assert_eq!(l.countries["DE"], (2, 2));
    // Neighbours merged by aggregation: the prefix names both, in order, once each.
    let l = de_at(
        "merged.csv",
        "1.0.0.0,1.0.0.127,DE\n1.0.0.128,1.0.0.255,DE\n1.0.1.0,1.0.1.255,AT\n1.0.2.0,1.0.2.255,DE\n",
    );
    assert_eq!(strs(l.prefixes.clone()), ["1.0.0.0/23", "1.0.2.0/24"]);
    assert_eq!(l.labels, ["AT+DE", "DE"]);
    assert_eq!(l.countries["DE"], (3, 2));
    assert_eq!(l.countries["AT"], (1, 1));
    let dir = fixture("bad.csv", "1.0.1.0,1.0.3.255,DE\n1.0.4.0,nope,DE\n");
    let e = load(&geo_spec(Format::CsvRanges, "bad.csv", &[], &["DE"]), &dir).unwrap_err();
    assert!(e.contains("bad.csv:2: \"1.0.4.0,nope,DE\""), "{e}");
}
