//! `json` (one JSON object per line, for Kubernetes log collectors) and `text` (logfmt)
//! on standard output.

use std::io::Write as _;

use crate::{config::SinkKind, events::BlockEvent};

pub struct Stdout {
    pub json: bool,
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
        let line = if self.json {
            event.json().to_string()
        } else {
            event.line()
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    }
}
