//! The kernel log, for operators migrating from an iptables
//! `LOG --log-prefix "RESIDENCY_EGRESS_BLOCK: "` lockdown: `dmesg | grep
//! RESIDENCY_EGRESS_BLOCK` and `journalctl -k` keep working.
//!
//! The kernel rate-limits writes to /dev/kmsg unless `printk.devkmsg=on`; lines it
//! drops are not visible to the agent. The journal and metrics stay exact.

use std::{fs::File, io::Write as _};

use crate::{config::SinkKind, events::model::BlockEvent};

pub struct Kmsg {
    file: File,
}

impl Kmsg {
    pub fn open() -> std::io::Result<Kmsg> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .map_err(|e| std::io::Error::new(e.kind(), format!("/dev/kmsg: {e}")))?;
        Ok(Kmsg { file })
    }
}

impl super::Sink for Kmsg {
    fn kind(&self) -> SinkKind {
        SinkKind::Kmsg
    }

    fn write(&mut self, event: &BlockEvent) -> std::io::Result<()> {
        // <4> warning, <5> notice; one write() is one kernel log record.
        let level = if event.audit { 5 } else { 4 };
        let line = event.line();
        let rest = line.strip_prefix(event.tag()).unwrap_or(&line);
        self.file
            .write_all(format!("<{level}>{}:{rest}\n", event.tag()).as_bytes())
    }
}
