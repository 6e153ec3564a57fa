//! The systemd journal, through its native protocol (libsystemd's `journal_send`):
//! `MESSAGE` is the event's readable line; every field is also a `RESIDENCY_*` journal
//! field, so `journalctl -t residency-agent RESIDENCY_POLICY=eu-central` selects them.

use libsystemd::logging::{Priority, journal_send};

use crate::{config::SinkKind, events::model::BlockEvent};

/// `MESSAGE_ID` of block events (`journalctl MESSAGE_ID=...`); fixed forever.
pub const MESSAGE_ID_BLOCK: &str = "5d1a8c0e3f7b4c2a9e6d1b0f4a7c3e21";
/// `MESSAGE_ID` of audit events.
pub const MESSAGE_ID_AUDIT: &str = "a3c94e5b7d204f1e8b6a0c2d9f1e7b54";

pub struct Journal;

impl super::Sink for Journal {
    fn kind(&self) -> SinkKind {
        SinkKind::Journal
    }

    fn write(&mut self, event: &BlockEvent) -> std::io::Result<()> {
        // Blocks are warnings; audits are notices (nothing was stopped).
        let priority = if event.audit {
            Priority::Notice
        } else {
            Priority::Warning
        };
        let message_id = if event.audit {
            MESSAGE_ID_AUDIT
        } else {
            MESSAGE_ID_BLOCK
        };
        let mut fields: Vec<(&str, std::borrow::Cow<'_, str>)> = vec![
            ("SYSLOG_IDENTIFIER", "residency-agent".into()),
            ("MESSAGE_ID", message_id.into()),
        ];
        for (k, v) in event.fields() {
            fields.push((k.journal, v));
        }
        // journald adds the process's own OBJECT_* fields (command line, unit, ...)
        // when the sender is privileged and the process still runs. Not under
        // `mask_addresses`: a command line often holds the very address masked.
        if event.pid != 0 && !event.masked {
            fields.push(("OBJECT_PID", event.pid.to_string().into()));
        }
        journal_send(priority, &event.line(), fields.into_iter()).map_err(std::io::Error::other)
    }
}
