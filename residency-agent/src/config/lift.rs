//! Long `allow` / `deny` lists lifted out of the TOML text before toml reads it.
//!
//! A policy can list a million prefixes. The toml crate builds a token list and a
//! document tree of the whole file before serde sees a value, about 240 bytes per
//! listed prefix: 300 MB for a million, on every node the agent runs on. A list of
//! plain strings needs none of that, so a small scanner finds every `allow = [` and
//! `deny = [` written at the start of a line of a table (never inside a string, a
//! comment or another value), reads its strings where they are, and blanks the list's
//! contents in the text toml reads (same length: every span toml reports stays true,
//! and lines and columns are counted in the original text). toml then sees `allow = [   ]` in the
//! same place, so an unknown or duplicated key, a list in the wrong table, or any
//! other error is still found and reported by toml itself.
//!
//! Only what is certainly a list of plain strings is lifted: an escape sequence, a
//! multi-line string, a value of another type or anything the scanner does not expect
//! leaves the list to toml, as it was.

use std::{collections::HashMap, ops::Range};

/// The text toml reads, and the lifted lists' items.
pub(crate) struct Lifted {
    /// The original text with each lifted list's contents blanked.
    pub text: String,
    /// By the byte offset of a lifted list's `[`: where its strings start in the
    /// text (their opening quotes; each ends at the next quote of its kind).
    lists: HashMap<usize, Vec<u32>>,
}

impl Lifted {
    /// The text for toml, taken out: it is not needed once toml has read it.
    pub(crate) fn take_text(&mut self) -> String {
        std::mem::take(&mut self.text)
    }

    /// Where the strings of the list whose `[` is at byte `start` start, if it was
    /// lifted ([`item`]).
    pub(crate) fn list(&self, start: usize) -> Option<&[u32]> {
        self.lists.get(&start).map(Vec::as_slice)
    }

    /// How many lists were lifted.
    #[cfg(test)]
    pub(crate) fn lists_len(&self) -> usize {
        self.lists.len()
    }
}

/// Keys whose lists are lifted.
const KEYS: [&[u8]; 2] = [b"allow", b"deny"];

/// Finds and lifts the plain-string `allow` / `deny` lists of `text`.
pub(crate) fn lift(text: &str) -> Lifted {
    let b = text.as_bytes();
    let mut lists = HashMap::new();
    let mut blank: Vec<Range<usize>> = Vec::new();
    // Offsets are kept in 32 bits; a larger file is left to toml as a whole.
    if b.len() >= u32::MAX as usize {
        return Lifted {
            text: text.to_owned(),
            lists,
        };
    }
    let mut i = 0;
    // Open arrays and inline tables of the value being read: keys are found only
    // where none is open.
    let mut depth = 0usize;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line_start = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let at_key = line_start && depth == 0;
        line_start = false;
        match c {
            b'#' => i = end_of_line(b, i),
            b'"' | b'\'' => i = skip_string(b, i),
            b'[' if at_key => i = skip_header(b, i),
            b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ if at_key => {
                let key_end = i + b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
                    .count();
                if KEYS.contains(&&b[i..key_end])
                    && let Some(open) = list_after_key(b, key_end)
                    && let Some((close, items)) = read_list(b, open)
                {
                    lists.insert(open, items);
                    blank.push(open + 1..close);
                    i = close + 1;
                } else {
                    i = key_end.max(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    if blank.is_empty() {
        return Lifted {
            text: text.to_owned(),
            lists,
        };
    }
    let mut out = text.as_bytes().to_vec();
    // Newlines too: toml's lexer makes a token of every line break and every run of
    // blanks between them, while one run of spaces is one token. Lines are counted in
    // the original text (`Locator`), never in this one.
    for r in blank {
        out[r].fill(b' ');
    }
    // Whole UTF-8 sequences were replaced by spaces, never parts of one: only bytes
    // between an ASCII `[` and `]` were touched.
    let text = String::from_utf8(out).expect("blanking keeps UTF-8 whole");
    Lifted { text, lists }
}

/// The lifted string starting at byte `start` of `text`: its span, quotes included
/// (as toml spans a string), and its contents.
pub(crate) fn item(text: &str, start: u32) -> (Range<usize>, &str) {
    let start = start as usize;
    let quote = text.as_bytes()[start];
    let len = text.as_bytes()[start + 1..]
        .iter()
        .position(|c| *c == quote)
        .expect("a lifted string is closed");
    (start..start + len + 2, &text[start + 1..start + 1 + len])
}

/// The offset of the newline ending the line at `i` (or the end of the text).
fn end_of_line(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|c| *c == b'\n')
        .map_or(b.len(), |n| i + n)
}

/// Past the string starting at `i` (any of TOML's four kinds). An unterminated
/// string runs to its line's end (single-line) or the text's end (multi-line): toml
/// reports it.
fn skip_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let multi = b[i..].starts_with(if q == b'"' { b"\"\"\"" } else { b"'''" });
    let mut j = if multi { i + 3 } else { i + 1 };
    while j < b.len() {
        let c = b[j];
        if c == b'\\' && q == b'"' {
            j += 2;
            continue;
        }
        if c == b'\n' && !multi {
            return j;
        }
        if c == q {
            if !multi {
                return j + 1;
            }
            if b[j..].starts_with(&[q, q, q]) {
                // Up to two more quotes belong to the string's content.
                let run = b[j..].iter().take_while(|c| **c == q).count().min(5);
                return j + run;
            }
        }
        j += 1;
    }
    b.len()
}

/// Past a table header (`[a]`, `[[a."b]"]]`): its line, strings read as strings.
fn skip_header(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        match b[i] {
            b'"' | b'\'' => i = skip_string(b, i),
            b'#' => return end_of_line(b, i),
            _ => i += 1,
        }
    }
    i
}

/// After a key ending at `i`: ` = [` on the same line gives the `[`'s offset.
fn list_after_key(b: &[u8], mut i: usize) -> Option<usize> {
    let blank = |b: &[u8], mut i: usize| {
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    i = blank(b, i);
    if b.get(i) != Some(&b'=') {
        return None;
    }
    i = blank(b, i + 1);
    (b.get(i) == Some(&b'[')).then_some(i)
}

/// Reads the list whose `[` is at `open` if it is nothing but plain strings, commas,
/// whitespace and comments, in TOML's order (a comma between items, one optional
/// trailing comma): its `]`'s offset and where the strings start.
fn read_list(b: &[u8], open: usize) -> Option<(usize, Vec<u32>)> {
    let mut items = Vec::new();
    let mut i = open + 1;
    // Whether an item was read since the last comma (or the `[`).
    let mut item = false;
    let mut after_comma = false;
    loop {
        match *b.get(i)? {
            b' ' | b'\t' | b'\n' => i += 1,
            b'\r' if b.get(i + 1) == Some(&b'\n') => i += 1,
            b'#' => {
                let end = end_of_line(b, i);
                // TOML allows no control character but tab in a comment; a carriage
                // return only as part of the line's CRLF.
                let body = b[i..end].strip_suffix(b"\r").unwrap_or(&b[i..end]);
                if body
                    .iter()
                    .any(|c| (*c < 0x20 && *c != b'\t') || *c == 0x7f)
                {
                    return None;
                }
                i = end;
            }
            b',' if item => {
                item = false;
                after_comma = true;
                i += 1;
            }
            b']' if item || after_comma || items.is_empty() => return Some((i, items)),
            q @ (b'"' | b'\'') if !item => {
                // A plain string: no escape, no multi-line form, no control character.
                if b.get(i + 1) == Some(&q) {
                    // `""`: empty, or the start of a multi-line string. An empty item
                    // is left to toml and the entry parser alike: not lifted.
                    return None;
                }
                let len = b[i + 1..].iter().position(|c| *c == q)?;
                let body = &b[i + 1..i + 1 + len];
                if body
                    .iter()
                    .any(|c| *c == b'\\' || (*c < 0x20 && *c != b'\t') || *c == 0x7f)
                {
                    return None;
                }
                let end = i + len + 2;
                items.push(i as u32);
                item = true;
                after_comma = false;
                i = end;
            }
            _ => return None,
        }
    }
}
