//! Country databases as allowlists, end to end, on the real GeoLite2 data `cargo
//! xtask setup` installs (`residency_tests::geoip`): an EU-27 policy read from the
//! MMDB file enforces by where addresses are (a German address reachable, a US one
//! not), `explain` and `check --verbose` name the country, and a source file that
//! changes is applied live — no reload asked — while a bad one is rejected with the
//! policy in force kept, as status, metrics and the log say; a refresh under traffic
//! never mixes versions; and MaxMind's own GeoIP2 schema (a database written by
//! `residency_tests::mmdb`) is read by located or registered country.
//!
//! The addresses are real ones (German and US networks as the pinned database places
//! them), put on the loopback of a namespace the test makes: nothing leaves the host.

use std::{process::Command, time::Duration};

use residency_tests::{
    Sandbox, agent_binary, eventually, geoip, http_get, output_within, require_root, sample,
};

/// In Germany (v4 and v6) and in the United States, per the pinned database.
const DE_V4: &str = "85.214.0.1";
const DE_V6: &str = "2a01:4f8::1";
const US_V4: &str = "23.0.0.1";
const US_V6: &str = "2600::1";
/// A documentation range the refresh test adds to the CSV as German.
const LATER: &str = "203.0.113.9";

fn run(args: &[&str]) -> (bool, String) {
    let o = output_within(Command::new(agent_binary()).args(args), 60);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn an_eu_allowlist_from_a_country_database_enforces_by_country() {
    if !require_root() {
        return;
    }
    let mut sb = Sandbox::new(&[DE_V4, DE_V6, US_V4, US_V6]).unwrap();
    let app = sb.cgroup("app").unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        &format!(
            "[agent]\npin_path = \"{{pins}}\"\nmetrics_address = \"{{metrics}}\"\n\
             [[policy]]\nname = \"eu-only\"\ncgroups = [\"{{cg}}/app\"]\n\
             allow_sources = [{{ format = \"mmdb\", path = \"{}\", groups = [\"EU\"] }}]\n",
            geoip::mmdb().display()
        ),
    );
    let (ok, out) = run(&["check", "--verbose", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("prefixes, 200") && out.contains("after aggregation"),
        "{out}"
    );
    assert!(
        out.contains("      DE: ") && out.contains("      AT: "),
        "{out}"
    );
    let (_, out) = run(&["explain", "--config", cfg.to_str().unwrap(), DE_V6]);
    // Aggregation merged German and Finnish networks into the deciding entry; the
    // address's own country is named.
    assert!(out.contains("ALLOWED") && out.contains(": DE"), "{out}");
    assert!(
        out.contains(&format!("{DE_V6} is in ")) && out.trim_end().ends_with(": DE"),
        "{out}"
    );

    sb.start_agent(&agent_binary(), &cfg).unwrap();
    for de in [DE_V4, DE_V6] {
        assert!(sb.client(Some(&app), "tcp", de).ok, "{de} is in Germany");
    }
    for us in [US_V4, US_V6] {
        assert!(!sb.client(Some(&app), "tcp", us).ok, "{us} is in the US");
    }
    // The kernel holds exactly the 200,000-prefix allowlist the database means.
    let (ok, out) = sb.verify(&agent_binary(), &cfg);
    assert!(ok, "{out}");
}

#[test]
fn a_changed_source_file_is_applied_live_and_a_bad_one_is_rejected() {
    if !require_root() {
        return;
    }
    let mut sb = Sandbox::new(&[DE_V4, US_V4, LATER]).unwrap();
    let app = sb.cgroup("app").unwrap();
    let (v4, _) = geoip::csv();
    let csv = sb.dir.join("country-ipv4.csv");
    let original = std::fs::read_to_string(&v4).unwrap();
    std::fs::write(&csv, &original).unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\n\
         [[policy]]\nname = \"de-only\"\ncgroups = [\"{cg}/app\"]\n\
         allow_sources = [{ format = \"csv-ranges\", path = \"country-ipv4.csv\", countries = [\"DE\"], max_age = \"30d\" }]\n",
    );
    sb.start_agent(&agent_binary(), &cfg).unwrap();
    assert!(sb.client(Some(&app), "tcp", DE_V4).ok);
    assert!(!sb.client(Some(&app), "tcp", LATER).ok);
    let metric = |sb: &Sandbox, series: &str| {
        let (_, body) = http_get(sb.metrics, "/metrics").unwrap();
        sample(&body, series)
    };
    let labels = "policy=\"de-only\",source=\"csv-ranges country-ipv4.csv\"";
    assert_eq!(
        metric(
            &sb,
            &format!("residency_source_max_age_seconds{{{labels}}}")
        ),
        Some(2_592_000.0)
    );
    assert!(metric(&sb, &format!("residency_source_age_seconds{{{labels}}}")).is_some());

    // The database is updated (written beside and renamed over, as a downloader
    // does): one more German range. No reload is asked for.
    let tmp = sb.dir.join("country-ipv4.csv.new");
    std::fs::write(&tmp, format!("{original}203.0.113.0,203.0.113.255,DE\n")).unwrap();
    std::fs::rename(&tmp, &csv).unwrap();
    eventually(
        "the refreshed source in force",
        Duration::from_secs(30),
        || sb.client(Some(&app), "tcp", LATER).ok,
    );
    assert!(sb.client(Some(&app), "tcp", DE_V4).ok);
    assert!(!sb.client(Some(&app), "tcp", US_V4).ok);
    assert_eq!(
        metric(
            &sb,
            &format!("residency_source_refreshes_total{{{labels},result=\"applied\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &sb,
            &format!("residency_source_last_refresh_prefixes{{{labels},change=\"added\"}}")
        ),
        Some(1.0)
    );
    let status = sb.ctl(&agent_binary(), &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("source csv-ranges country-ipv4.csv: ")
            && text.contains("(max 30days)")
            && text.contains("last refresh +1 -0 prefixes"),
        "{text}"
    );
    let history = sb.ctl(&agent_binary(), &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let by = v["reload_history"].as_array().unwrap().last().unwrap()["by"].clone();
    assert!(by.as_str().unwrap().starts_with("source watch: "), "{v}");

    // A broken file (a download cut short) is rejected; the version in force stays.
    std::fs::write(&tmp, "1.0.1.0,1.0.3.255,DE\n1.0.4.0,garbage\n").unwrap();
    std::fs::rename(&tmp, &csv).unwrap();
    eventually("the rejection counted", Duration::from_secs(30), || {
        metric(
            &sb,
            &format!("residency_source_refreshes_total{{{labels},result=\"rejected\"}}"),
        ) == Some(1.0)
    });
    assert!(
        sb.client(Some(&app), "tcp", LATER).ok,
        "the policy in force was kept"
    );
    assert!(sb.client(Some(&app), "tcp", DE_V4).ok);
    let status = sb.ctl(&agent_binary(), &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("last refresh REJECTED"), "{text}");
    let log = sb.agent().stderr().join("\n");
    assert!(
        log.contains("source change rejected") && log.contains("country-ipv4.csv:2"),
        "{log}"
    );
}

/// Sends a datagram to each of two addresses in turn, unconnected, for a while;
/// prints `x1`/`x0`, `y1`/`y0` per send (sent, refused).
const ALTERNATE: &str = r#"
import socket, sys, time
x, y, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out, end = [], time.time() + secs
while time.time() < end:
    for tag, addr in (("x", x), ("y", y)):
        try:
            s.sendto(b"p", (addr, 9))
            out.append(tag + "1")
        except PermissionError:
            out.append(tag + "0")
print(" ".join(out))
"#;

#[test]
fn a_live_refresh_under_traffic_never_mixes_versions() {
    if !require_root() {
        return;
    }
    // Version A allows X and not Y; version B the other way round. A mix of the two
    // (X already gone, Y not yet there, or both) would show as a send judged by B
    // followed by one judged by A.
    const X: &str = "203.0.113.9";
    const Y: &str = "198.51.100.7";
    let mut sb = Sandbox::new(&[X, Y]).unwrap();
    let app = sb.cgroup("app").unwrap();
    let (v4, _) = geoip::csv();
    let german = std::fs::read_to_string(&v4).unwrap();
    let a = format!("{german}203.0.113.0,203.0.113.255,DE\n");
    let b = format!("{german}198.51.100.0,198.51.100.255,DE\n");
    let csv = sb.dir.join("ranges.csv");
    std::fs::write(&csv, &a).unwrap();
    let cfg = sb.write_config(
        "residency.toml",
        "[agent]\npin_path = \"{pins}\"\nmetrics_address = \"{metrics}\"\n\
         [[policy]]\nname = \"de-only\"\ncgroups = [\"{cg}/app\"]\n\
         allow_sources = [{ format = \"csv-ranges\", path = \"ranges.csv\", countries = [\"DE\"] }]\n",
    );
    sb.start_agent(&agent_binary(), &cfg).unwrap();
    let sender = sb
        .command(Some(&app), "python3", &["-c", ALTERNATE, X, Y, "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let tmp = sb.dir.join("ranges.csv.new");
    std::fs::write(&tmp, &b).unwrap();
    std::fs::rename(&tmp, &csv).unwrap();
    let out = sender.wait_with_output().unwrap();
    let sends: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .split_whitespace()
        .collect();
    // Each send says which version judged it: A (x1, y0) or B (x0, y1).
    let b_from = sends
        .iter()
        .position(|s| matches!(*s, "x0" | "y1"))
        .unwrap_or_else(|| panic!("the refresh never took effect: {} sends", sends.len()));
    assert!(b_from > 100, "too few sends before the refresh: {b_from}");
    assert!(
        sends.len() - b_from > 100,
        "too few sends after the refresh: {}",
        sends.len() - b_from
    );
    if let Some(i) = sends[b_from..]
        .iter()
        .position(|s| matches!(*s, "x1" | "y0"))
    {
        panic!(
            "send {} was judged by the old version after send {b_from} was judged by the new: {:?}",
            b_from + i,
            &sends[b_from.saturating_sub(4)..(b_from + i + 4).min(sends.len())]
        );
    }
    eprintln!(
        "{} sends, {} under the old version, {} under the new",
        sends.len(),
        b_from,
        sends.len() - b_from
    );
}

#[test]
fn maxminds_own_schema_is_read_by_located_or_registered_country() {
    use residency_tests::mmdb::{Network, write};
    let dir = std::env::temp_dir().join(format!("residency-geoip2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let net = |n: &str, prefix, country, registered| Network {
        network: n.parse().unwrap(),
        prefix,
        country,
        registered,
    };
    std::fs::write(
        dir.join("GeoLite2-Country.mmdb"),
        write(&[
            net("198.51.100.0", 24, "DE", "US"),
            net("203.0.113.0", 24, "US", "DE"),
            net("2001:db8:1::", 48, "FR", "FR"),
            // Placed in Europe, no country: a continent selects it, countries do not.
            net("192.0.2.0", 24, "", ""),
        ]),
    )
    .unwrap();
    let config = |field: &str| {
        let path = dir.join(format!("{field}.toml"));
        std::fs::write(
            &path,
            format!(
                "[[policy]]\nname = \"eu\"\ncgroups = [\"residency-geoip2-test\"]\n\
                 allow_sources = [{{ format = \"mmdb\", path = \"GeoLite2-Country.mmdb\", countries = [\"DE\", \"FR\"], country_field = \"{field}\" }}]\n"
            ),
        )
        .unwrap();
        path
    };
    let explain = |cfg: &std::path::Path, addr: &str| {
        run(&["explain", "--config", cfg.to_str().unwrap(), addr]).1
    };
    let located = config("located");
    let out = explain(&located, "198.51.100.7");
    assert!(out.contains("ALLOWED") && out.contains(": DE,"), "{out}");
    assert!(explain(&located, "203.0.113.9").contains("BLOCKED"));
    assert!(explain(&located, "2001:db8:1::5").contains(": FR,"));
    let (ok, out) = run(&["check", "--verbose", "--config", located.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("GeoLite2-Country.mmdb: 2 prefixes, 2 after aggregation")
            && out.contains("      DE: 1 prefixes")
            && out.contains("      FR: 1 prefixes"),
        "{out}"
    );
    assert!(explain(&located, "192.0.2.1").contains("BLOCKED"));
    let europe = dir.join("europe.toml");
    std::fs::write(
        &europe,
        "[[policy]]\nname = \"eu\"\ncgroups = [\"residency-geoip2-test\"]\n\
         allow_sources = [{ format = \"mmdb\", path = \"GeoLite2-Country.mmdb\", continents = [\"EU\"] }]\n",
    )
    .unwrap();
    let out = explain(&europe, "192.0.2.1");
    assert!(
        out.contains("ALLOWED") && out.contains(": continent EU,"),
        "{out}"
    );
    assert!(explain(&europe, "198.51.100.7").contains(": DE,"));
    assert!(explain(&europe, "203.0.113.9").contains("BLOCKED"));
    let registered = config("registered");
    assert!(explain(&registered, "198.51.100.7").contains("BLOCKED"));
    let out = explain(&registered, "203.0.113.9");
    assert!(out.contains("ALLOWED") && out.contains(": DE,"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
