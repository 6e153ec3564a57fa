//! Where a config error is: byte offsets turned into `file:line:column`, with the key
//! and the reason. A residency config is edited by hand under pressure, and "invalid
//! config" helps nobody.

use std::ops::Range;

/// A configuration error, located in its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {key}: {reason}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        key: String,
        reason: String,
    },
}

/// Turns byte offsets into `file:line:column` errors.
pub(crate) struct Locator<'a> {
    text: &'a str,
    file: &'a str,
    /// Byte offset where each line starts: every entry's line is looked up, and a
    /// 100,000-prefix policy must not cost a scan of the text per entry. 32 bits: a
    /// million-line file's index is 4 MB (a config never nears 4 GiB; offsets past it
    /// count as the last line).
    line_starts: Vec<u32>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str, file: &'a str) -> Locator<'a> {
        let lines = text.bytes().filter(|b| *b == b'\n').count() + 1;
        let mut line_starts = Vec::with_capacity(lines);
        line_starts.extend(
            std::iter::once(0).chain(
                text.bytes()
                    .enumerate()
                    .filter(|(_, b)| *b == b'\n')
                    .map_while(|(i, _)| u32::try_from(i + 1).ok()),
            ),
        );
        Locator {
            text,
            file,
            line_starts,
        }
    }

    /// The text located in.
    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    pub(crate) fn line(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|start| *start as usize <= offset)
            .max(1)
    }

    /// [`Locator::line`] as entries keep it (a file of 4 billion lines reads as
    /// ending there).
    pub(crate) fn line32(&self, offset: usize) -> u32 {
        u32::try_from(self.line(offset)).unwrap_or(u32::MAX)
    }

    /// [`Locator::line32`] of offsets that mostly come in file order (a list's
    /// items): `cursor` is the line found last, and the search walks forward from it
    /// (one step per line, against twenty for a search of a million-line index).
    pub(crate) fn line_from(&self, cursor: &mut usize, offset: usize) -> u32 {
        let starts = &self.line_starts;
        let behind = starts.get(*cursor).is_none_or(|s| *s as usize > offset);
        if behind {
            *cursor = self.line(offset) - 1;
        } else {
            while starts
                .get(*cursor + 1)
                .is_some_and(|s| *s as usize <= offset)
            {
                *cursor += 1;
            }
        }
        u32::try_from(*cursor + 1).unwrap_or(u32::MAX)
    }

    pub(crate) fn column(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        let start = (self.line_starts[self.line(offset) - 1] as usize).min(offset);
        self.text[start..offset].chars().count() + 1
    }

    pub(crate) fn error(&self, span: Range<usize>, key: &str, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: self.line(span.start),
            column: self.column(span.start),
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    }
}
