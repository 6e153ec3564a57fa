//! Region sources against each other and against entries written by hand.

use super::super::*;

#[test]
fn between_sources_a_deny_wins_and_is_reported_and_names_stay_as_written() {
    let dir = std::env::temp_dir().join(format!("residency-src-conflict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("EU-Partners.txt"),
        "198.51.100.0/25\n198.51.100.128/25\n",
    )
    .unwrap();
    std::fs::write(dir.join("Blocked.txt"), "198.51.100.0/24\n").unwrap();
    let file = dir.join("residency.toml");
    let text = "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n\
                allow_sources = [{ format = \"plain\", path = \"EU-Partners.txt\" }]\n\
                deny_sources = [{ format = \"plain\", path = \"Blocked.txt\" }]\n";
    let c = Config::parse(text, &file.display().to_string()).unwrap();
    let p = &c.policies[0];
    // The allow source's two halves aggregate to the /24 the deny source lists.
    let e: Vec<_> = p
        .entries
        .iter()
        .filter(|e| e.network.to_string() == "198.51.100.0/24")
        .collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].action, Action::Deny);
    assert_eq!(p.origin_of(e[0]), Some("plain Blocked.txt"));
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].contains(":5: policy \"p\": 198.51.100.0/24 is in allow source \"plain EU-Partners.txt\" (line 4) and in deny source \"plain Blocked.txt\": denied"),
        "{}",
        w[0]
    );
    assert_eq!(p.sources[0].description, "plain EU-Partners.txt");
}

#[test]
fn a_deny_source_wins_by_its_own_prefixes_and_a_hand_written_allow_is_reported() {
    let dir = std::env::temp_dir().join(format!("residency-src-listed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The deny source's two halves aggregate to a /24; the allow source lists one half.
    std::fs::write(dir.join("allow.txt"), "198.51.100.0/25\n").unwrap();
    std::fs::write(
        dir.join("deny.txt"),
        "198.51.100.0/25\n198.51.100.128/25\n203.0.113.0/24\n",
    )
    .unwrap();
    let file = dir.join("residency.toml");
    let text = "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [\"203.0.113.0/24\"]\n\
                allow_sources = [{ format = \"plain\", path = \"allow.txt\" }]\n\
                deny_sources = [{ format = \"plain\", path = \"deny.txt\" }]\n";
    let c = Config::parse(text, &file.display().to_string()).unwrap();
    let half = c.policies[0]
        .entries
        .iter()
        .find(|e| e.network.to_string() == "198.51.100.0/25")
        .unwrap();
    assert_eq!(
        half.action,
        Action::Deny,
        "the deny file lists that /25 itself"
    );
    let w = c.warnings();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w.iter()
            .any(|l| l.contains("198.51.100.0/25 is in allow source"))
    );
    assert!(w.iter().any(|l| l.contains(
        "203.0.113.0/24 is in deny source \"plain deny.txt\" but allowed by hand on line 4"
    )));
}
