//! The agent's pinned maps changed by hand, as a root user would with `bpftool`: the
//! tampering `verify` must name. Keys and values are given as bytes and passed as
//! `hex` pairs; every call must succeed.

use std::{path::Path, process::Command};

/// Runs `bpftool <args>`; panics with its error output when it fails.
pub fn bpftool(args: &[&str]) {
    let o = Command::new("bpftool").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's pinned map `name` under `pin_path`.
pub fn map(pin_path: &Path, name: &str) -> String {
    pin_path.join("v3/maps").join(name).display().to_string()
}

/// `bpftool map update pinned <map> key hex … value hex …`.
pub fn update(map: &str, key: &[u8], value: &[u8]) {
    let (key, value) = (hex(key), hex(value));
    let mut args = vec!["map", "update", "pinned", map, "key", "hex"];
    args.extend(key.iter().map(String::as_str));
    args.extend(["value", "hex"]);
    args.extend(value.iter().map(String::as_str));
    bpftool(&args);
}

/// `bpftool map delete pinned <map> key hex …`.
pub fn delete(map: &str, key: &[u8]) {
    let key = hex(key);
    let mut args = vec!["map", "delete", "pinned", map, "key", "hex"];
    args.extend(key.iter().map(String::as_str));
    bpftool(&args);
}

/// `bpftool map lookup pinned <map> key hex …`: the value's bytes.
pub fn lookup(map: &str, key: &[u8]) -> Vec<u8> {
    let key = hex(key);
    let mut args = vec!["map", "lookup", "pinned", map, "key", "hex"];
    args.extend(key.iter().map(String::as_str));
    args.push("-j");
    let o = Command::new("bpftool").args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Without BTF, bpftool prints bytes: ["0x01", "0x00", ...].
    v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|b| {
            let b = b.as_str().unwrap_or_else(|| panic!("{v}"));
            u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap()
        })
        .collect()
}

/// The entries of pinned map `map` (`bpftool map dump`).
pub fn entries(map: &str) -> usize {
    let o = Command::new("bpftool")
        .args(["map", "dump", "pinned", map, "-j"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array().unwrap_or_else(|| panic!("{v}")).len()
}

/// The generation slot in force (the low bit of `RES_ACTIVE`'s epoch).
pub fn active_slot(pin_path: &Path) -> u8 {
    let o = Command::new("bpftool")
        .args(["map", "lookup", "pinned", &map(pin_path, "RES_ACTIVE")])
        .args(["key", "0", "0", "0", "0", "-j"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Without BTF, bpftool prints bytes: ["0x01", "0x00", ...].
    let low = v["value"][0].as_str().unwrap_or_else(|| panic!("{v}"));
    u8::from_str_radix(low.trim_start_matches("0x"), 16).unwrap() & 1
}
