//! `json` (one JSON object per line, for Kubernetes log collectors) and `text` (logfmt)
//! on standard output.

use std::io::Write as _;

use crate::{config::SinkKind, events::model::BlockEvent};

pub struct Stdout {
    pub json: bool,
    /// Lines not yet written: one `write(2)` per drain of the ring buffer (Rust's
    /// stdout would write every line on its own).
    buf: Vec<u8>,
}

/// Buffered bytes that trigger a write even within one drain.
const FLUSH_AT: usize = 256 * 1024;

impl Stdout {
    pub fn new(json: bool) -> Stdout {
        Stdout {
            json,
            buf: Vec::with_capacity(FLUSH_AT),
        }
    }
}

impl super::Sink for Stdout {
    fn kind(&self) -> SinkKind {
        if self.json {
            SinkKind::Json
        } else {
            SinkKind::Text
        }
    }

    fn write(&mut self, event: &BlockEvent) -> std::io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.buf, &event.json())?;
        } else {
            self.buf.extend_from_slice(event.line().as_bytes());
        }
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let result = out.write_all(&self.buf).and_then(|()| out.flush());
        self.buf.clear();
        result
    }
}
