//! Lists lifted out of the text before toml reads it (`config::lift`) read exactly as
//! toml reads them, and everything else is still toml's to read and to reject.

use super::super::{Locator, deserialize, lift::lift};

/// One list's items: span and text.
type Items = Vec<(std::ops::Range<usize>, String)>;

/// Each policy's `allow` and `deny` items, `(span, text)`, read the way `parse` reads
/// them (lifted where possible), and as toml alone reads them; and how many lists
/// were lifted. Both reads must agree on success or on the error.
fn both(text: &str) -> (usize, Result<Vec<Items>, String>) {
    let at = Locator::new(text, "test.toml");
    let lifted = lift(text);
    assert_eq!(lifted.text.len(), text.len());
    let read = |raw: super::super::raw::RawConfig, lifted: Option<&super::super::lift::Lifted>| {
        let mut out = Vec::new();
        for p in raw.policy {
            for list in [p.allow, p.deny] {
                let Some(list) = list else {
                    out.push(Vec::new());
                    continue;
                };
                let items = match lifted.and_then(|l| l.list(list.span().start)) {
                    Some(starts) => starts
                        .iter()
                        .map(|s| {
                            let (span, item) = super::super::lift::item(text, *s);
                            (span, item.to_owned())
                        })
                        .collect(),
                    None => list
                        .into_inner()
                        .into_iter()
                        .map(|i| (i.span(), i.into_inner()))
                        .collect(),
                };
                out.push(items);
            }
        }
        out
    };
    let via_lift = deserialize(&at, &lifted.text)
        .map(|raw| read(raw, Some(&lifted)))
        .map_err(|e| e.to_string());
    let plain = deserialize(&at, text)
        .map(|raw| read(raw, None))
        .map_err(|e| e.to_string());
    assert_eq!(via_lift, plain, "{text}");
    (lifted.lists_len(), plain)
}

fn policy(body: &str) -> String {
    format!(
        "[agent]\npin_path = \"/sys/fs/bpf/x\"\n\n[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n{body}"
    )
}

#[test]
fn plain_lists_are_lifted_and_read_alike() {
    let text = policy(
        "allow = [\n  \"10.0.0.0/8\", # é comment, with \"quotes\" and ] [\n  '192.0.2.0/24 tcp/443',\n\n  \"2001:db8::/32\",\n]\ndeny=[\"10.1.0.0/16\"]\n",
    );
    let (lifted, items) = both(&text);
    assert_eq!(lifted, 2);
    let items = items.unwrap();
    assert_eq!(items[0].len(), 3);
    assert_eq!(items[0][1].1, "192.0.2.0/24 tcp/443");
    assert_eq!(items[1][0].1, "10.1.0.0/16");
}

#[test]
fn crlf_empty_and_trailing_comma() {
    for body in [
        "allow = []\r\n",
        "allow = [ ]\r\ndeny = [\r\n  \"10.0.0.0/8\",\r\n]\r\n",
        "allow = [\"10.0.0.0/8\",]\n",
    ] {
        let (lifted, items) = both(&policy(body));
        assert!(lifted >= 1, "{body}");
        assert!(items.is_ok(), "{body}");
    }
}

#[test]
fn what_is_not_plain_is_left_to_toml() {
    for body in [
        // An escape, a multi-line string, an empty string: read by toml.
        "allow = [\"10.0.0.0\\u002f8\"]\n",
        "allow = [\"\"\"10.0.0.0/8\"\"\"]\n",
        "allow = [\"\"]\n",
        // Not a list of strings, or not a list.
        "allow = [1, 2]\n",
        "allow = [[\"10.0.0.0/8\"]]\n",
        "allow = \"10.0.0.0/8\"\n",
        // Missing or doubled commas.
        "allow = [\"10.0.0.0/8\" \"10.1.0.0/16\"]\n",
        "allow = [\"10.0.0.0/8\",,]\n",
        "allow = [,]\n",
        // Unterminated.
        "allow = [\"10.0.0.0/8\"\n",
        // A carriage return in a comment that is not the line's CRLF.
        "allow = [\"10.0.0.0/8\", # x\ry\n \"10.1.0.0/16\"]\n",
    ] {
        let (lifted, _) = both(&policy(body));
        assert_eq!(lifted, 0, "{body}");
    }
}

#[test]
fn keys_in_strings_headers_and_other_values_are_not_lifted() {
    for body in [
        // Inside a multi-line string (a policy name cannot hold it, but toml must
        // still be the one to say so).
        "interfaces = [\"\"\"\nallow = [\"10.0.0.0/8\"]\n\"\"\"]\n",
        "interfaces = ['''\nallow = [\"10.0.0.0/8\"]\n''']\n",
        // Inside another list spread over lines.
        "interfaces = [\n\"eth0\",\nallow = [\"10.0.0.0/8\"]]\n",
    ] {
        let (lifted, _) = both(&policy(body));
        assert_eq!(lifted, 0, "{body}");
    }
}

#[test]
fn errors_around_lifted_lists_are_toml_errors_as_before() {
    for body in [
        // Twice the same key.
        "allow = [\"10.0.0.0/8\"]\nallow = [\"10.1.0.0/16\"]\n",
        // In a table that has no such key.
        "[policy.x]\nallow = [\"10.0.0.0/8\"]\n",
        // A header whose quoted name holds brackets, then a list in it.
        "[\"a]b\"]\nallow = [\"10.0.0.0/8\"]\n",
    ] {
        let (lifted, result) = both(&policy(body));
        assert!(lifted >= 1, "{body}");
        assert!(result.is_err(), "{body}");
    }
    let text = "[agent]\nallow = [\"10.0.0.0/8\"]\n";
    let (lifted, result) = both(text);
    assert_eq!(lifted, 1);
    let e = result.unwrap_err();
    assert!(e.starts_with("test.toml:2:"), "{e}");
}

#[test]
fn lines_found_from_a_cursor_are_the_lines_searched() {
    let text = "a\n\nbb\nccc\n\n\ndddd\ne";
    let at = Locator::new(text, "test.toml");
    let mut cursor = 0;
    // In order, backwards, repeated, past the end: always what a search finds.
    for offset in [0, 1, 2, 3, 7, 7, 14, 2, 0, 9, 17, 16, 40] {
        assert_eq!(
            at.line_from(&mut cursor, offset),
            at.line32(offset),
            "offset {offset}"
        );
    }
}
