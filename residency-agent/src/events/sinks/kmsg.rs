//! The kernel log, for operators migrating from an iptables
//! `LOG --log-prefix "RESIDENCY_EGRESS_BLOCK: "` lockdown: `dmesg | grep
//! RESIDENCY_EGRESS_BLOCK` and `journalctl -k` keep working.
//!
//! The kernel rate-limits writes to /dev/kmsg unless `printk.devkmsg=on`; lines it
//! drops are not visible to the agent. The journal and metrics stay exact. A record
//! longer than the kernel takes (976 bytes, the least of the kernels supported) would be refused whole, so a long cgroup
//! path is shortened to its end (`cgroup=…/deepest/dirs`), never the event dropped.

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
        self.file.write_all(record(event).as_bytes())
    }
}

/// The largest write /dev/kmsg accepts as one record on every kernel the agent runs
/// on: `LOG_LINE_MAX` (1024 - 32) less the caller-id room of `CONFIG_PRINTK_CALLER`
/// on the kernels before `PRINTKRB_RECORD_MAX` (1024) took its place.
const RECORD_MAX: usize = 976;

/// One kernel log record: `<4>` warning or `<5>` notice, the tag, the event line,
/// within [`RECORD_MAX`].
pub fn record(event: &BlockEvent) -> String {
    let render = |e: &BlockEvent| {
        let level = if e.audit { 5 } else { 4 };
        let line = e.line();
        let rest = line.strip_prefix(e.tag()).unwrap_or(&line).to_owned();
        format!("<{level}>{}:{rest}\n", e.tag())
    };
    let mut out = render(event);
    if out.len() > RECORD_MAX
        && let Some(path) = &event.cgroup
    {
        // Keep the path's end: the workload's own directories are the deepest ones.
        let over = out.len() - RECORD_MAX + "…".len();
        let mut cut = over.min(path.len());
        while !path.is_char_boundary(cut) {
            cut += 1;
        }
        let mut short = event.clone();
        short.cgroup = Some(format!("…{}", &path[cut..]));
        out = render(&short);
    }
    if out.len() > RECORD_MAX {
        let mut end = RECORD_MAX - 1;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('\n');
    }
    out
}
