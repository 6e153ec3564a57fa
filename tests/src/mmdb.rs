//! A small MaxMind DB writer for tests: IPv6 trees (IPv4 networks under `::/96`, as
//! MaxMind's own databases hold them), 24-bit records, and records of MaxMind's
//! GeoIP2 Country schema (`country`, `registered_country`, `continent`, each with the
//! `geoname_id` and `names` that real records carry and a reader must skip). Written
//! from the format's specification (<https://maxmind.github.io/MaxMind-DB/>), so that
//! the agent's reading of that schema is tested on a file it did not write itself.

use std::net::IpAddr;

/// One network of the database and its record.
pub struct Network {
    pub network: IpAddr,
    pub prefix: u8,
    /// `country.iso_code` (where it is) and `registered_country.iso_code`; `""`
    /// leaves the field out (a network MaxMind places by its continent alone).
    pub country: &'static str,
    pub registered: &'static str,
}

/// Data section values: only the types these records need.
enum Value {
    Map(Vec<(&'static str, Value)>),
    Str(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Array(Vec<Value>),
}

fn encode(v: &Value, out: &mut Vec<u8>) {
    // Control byte: type in the top 3 bits (extended types: 0, then type - 7 in the
    // next byte), size in the low 5 (all sizes here are < 29).
    let control = |out: &mut Vec<u8>, ty: u8, size: usize| {
        assert!(size < 29, "sizes this writer needs are small");
        if ty <= 7 {
            out.push((ty << 5) | size as u8);
        } else {
            out.push(size as u8);
            out.push(ty - 7);
        }
    };
    let uint = |out: &mut Vec<u8>, ty: u8, n: u64| {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        control(out, ty, 8 - skip);
        out.extend_from_slice(&bytes[skip..]);
    };
    match v {
        Value::Map(entries) => {
            control(out, 7, entries.len());
            for (k, v) in entries {
                encode(&Value::Str((*k).to_owned()), out);
                encode(v, out);
            }
        }
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::U16(n) => uint(out, 5, u64::from(*n)),
        Value::U32(n) => uint(out, 6, u64::from(*n)),
        Value::U64(n) => uint(out, 9, *n),
        Value::Array(items) => {
            control(out, 11, items.len());
            for i in items {
                encode(i, out);
            }
        }
    }
}

fn place(code: &str) -> Value {
    Value::Map(vec![
        ("geoname_id", Value::U32(2_921_044)),
        ("iso_code", Value::Str(code.to_owned())),
        (
            "names",
            Value::Map(vec![("en", Value::Str(format!("Country {code}")))]),
        ),
    ])
}

/// A trie node while building: children are nodes, data offsets or nothing.
#[derive(Clone, Copy)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

/// The bytes of a database holding `networks` (they must not overlap).
pub fn write(networks: &[Network]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Child; 2]> = vec![[Child::Empty; 2]];
    for n in networks {
        let offset = data.len();
        let mut record = vec![(
            "continent",
            Value::Map(vec![("code", Value::Str("EU".into()))]),
        )];
        if !n.country.is_empty() {
            record.push(("country", place(n.country)));
        }
        if !n.registered.is_empty() {
            record.push(("registered_country", place(n.registered)));
        }
        encode(&Value::Map(record), &mut data);
        let (bits, len) = match n.network {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 96 + u32::from(n.prefix)),
            IpAddr::V6(v6) => (u128::from(v6), u32::from(n.prefix)),
        };
        let mut node = 0;
        for depth in 0..len {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth + 1 == len {
                nodes[node][bit] = Child::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Child::Node(next) => next,
                    _ => {
                        nodes.push([Child::Empty; 2]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Child::Node(next);
                        next
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let record = |c: Child| -> u32 {
        match c {
            Child::Empty => count as u32,
            Child::Node(i) => i as u32,
            Child::Data(off) => (count + 16 + off) as u32,
        }
    };
    let mut out = Vec::new();
    for [left, right] in &nodes {
        out.extend_from_slice(&record(*left).to_be_bytes()[1..]);
        out.extend_from_slice(&record(*right).to_be_bytes()[1..]);
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    encode(
        &Value::Map(vec![
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(1_780_000_000)),
            ("database_type", Value::Str("GeoLite2-Country".into())),
            (
                "description",
                Value::Map(vec![("en", Value::Str("test database".into()))]),
            ),
            ("ip_version", Value::U16(6)),
            ("languages", Value::Array(vec![Value::Str("en".into())])),
            ("node_count", Value::U32(count as u32)),
            ("record_size", Value::U16(24)),
        ]),
        &mut out,
    );
    out
}
