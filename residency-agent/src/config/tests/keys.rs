//! Errors that name the key they are about, wherever it is written.

use super::super::*;

#[test]
fn errors_name_the_key_and_the_real_cause() {
    let e = Config::parse(
        "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n[[policy]]\nname = \"q\"\nname = \"r\"\ncgroups = [\"y\"]\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "t.toml:6:1: policy[1].name: duplicate key");
    let e = Config::parse("[agent]\npin_path = \"/a\"\npin_path = \"/b\"\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "t.toml:3:1: agent.pin_path: duplicate key");
    let e = Config::parse(
        "[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\nallow = [\"192.0.2.0 /24\"]\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("has a space before its prefix length: write \"192.0.2.0/24\""),
        "{e}"
    );
}

#[test]
fn duplicate_keys_are_named_in_commented_and_nested_tables() {
    let e = |t: &str| Config::parse(t, "t.toml").unwrap_err().to_string();
    assert!(
        e("[agent] # settings\npin_path = \"/a\"\npin_path = \"/b\"\n")
            .contains(": agent.pin_path: duplicate key")
    );
    assert!(e("[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n[[policy]] # second\nname = \"q\"\nname = \"r\"\n").contains(": policy[1].name: duplicate key"));
    assert!(e("[[policy]]\nname = \"p\"\n[policy.pod_selector.match_labels]\napp = \"x\"\napp = \"y\"\n").contains(": policy[0].pod_selector.match_labels.app: duplicate key"));
}

#[test]
fn interfaces_are_names_the_kernel_takes() {
    let parse = |list: &str| {
        Config::parse(
            &format!("[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\ninterfaces = {list}\n"),
            "t.toml",
        )
    };
    let c = parse("[\"wg0\", \"eth1\"]").unwrap();
    assert_eq!(c.policies[0].interfaces, ["wg0", "eth1"]);
    for bad in ["\"\"", "\"a-name-of-16-chr\"", "\"eth0/1\"", "\"eth 0\""] {
        let e = parse(&format!("[{bad}]")).unwrap_err().to_string();
        assert!(
            e.starts_with("t.toml:4:")
                && e.contains("policy \"p\".interfaces: ")
                && e.contains("is not an interface name"),
            "{bad}: {e}"
        );
    }
    let e = parse("[\"wg0\", \"wg0\"]").unwrap_err().to_string();
    assert!(e.contains("\"wg0\" is listed twice"), "{e}");
}
