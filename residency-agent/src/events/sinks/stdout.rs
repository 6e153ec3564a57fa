//! `json` (one JSON object per line, for Kubernetes log collectors) and `text` (logfmt)
//! on standard output.
//!
//! Lines are buffered and written with one `write(2)` per batch, straight to file
//! descriptor 1 (not through Rust's line-buffered stdout, whose errors surface late),
//! so that a failed write is known exactly: the lines written whole count as
//! delivered, the rest as lost. A line cut by a failed write (a full disk) is removed
//! again when stdout is a file, or ended with a newline before the next write
//! otherwise, so that no later line is spliced into it.

use std::os::fd::AsFd as _;

use super::Flushed;
use crate::{config::SinkKind, events::model::BlockEvent};

pub struct Stdout {
    pub json: bool,
    /// Lines not yet written.
    buf: Vec<u8>,
    /// Where each buffered line ends in `buf`.
    ends: Vec<usize>,
    /// The last write cut a line that could not be removed: end it first.
    cut: bool,
    /// Delivered and lost counts of flushes made inside `write` (a full buffer).
    report: Flushed,
}

/// Held while a sink writes its batch to standard output.
static STDOUT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Buffered bytes that trigger a write even within one batch.
const FLUSH_AT: usize = 256 * 1024;

impl Stdout {
    pub fn new(json: bool) -> Stdout {
        Stdout {
            json,
            buf: Vec::with_capacity(FLUSH_AT),
            ends: Vec::new(),
            cut: false,
            report: Flushed::default(),
        }
    }

    fn write_out(&mut self) -> Flushed {
        let mut f = Flushed::default();
        if self.buf.is_empty() {
            return f;
        }
        // `json` and `text` may both write to stdout, each on its thread: one batch
        // at a time, so lines do not interleave and a cut is this sink's own.
        let _stdout = STDOUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.cut {
            match write_fd(b"\n") {
                Ok(_) => self.cut = false,
                Err(e) => {
                    f.lost = self.ends.len() as u64;
                    f.error = Some(e);
                    self.buf.clear();
                    self.ends.clear();
                    return f;
                }
            }
        }
        let mut off = 0;
        while off < self.buf.len() {
            match write_fd(&self.buf[off..]) {
                Ok(0) => {
                    f.error = Some(std::io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    f.error = Some(e);
                    break;
                }
            }
        }
        let whole = self.ends.iter().take_while(|&&end| end <= off).count();
        f.delivered = whole as u64;
        f.lost = (self.ends.len() - whole) as u64;
        let line_start = if whole == 0 { 0 } else { self.ends[whole - 1] };
        let partial = off - line_start;
        if partial > 0 && !unwrite(partial) {
            self.cut = true;
        }
        self.buf.clear();
        self.ends.clear();
        f
    }
}

/// One `write(2)` to standard output.
fn write_fd(bytes: &[u8]) -> std::io::Result<usize> {
    nix::unistd::write(std::io::stdout().as_fd(), bytes).map_err(std::io::Error::from)
}

/// Removes the last `n` bytes written when standard output is a regular file (the
/// part of a line a full disk cut). Whether it could.
fn unwrite(n: usize) -> bool {
    use nix::{
        sys::stat::{SFlag, fstat},
        unistd::{Whence, ftruncate, lseek},
    };
    use std::os::fd::AsRawFd as _;
    let out = std::io::stdout();
    let fd = out.as_raw_fd();
    let Ok(st) = fstat(fd) else {
        return false;
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return false;
    }
    let Ok(pos) = lseek(fd, 0, Whence::SeekCur) else {
        return false;
    };
    let keep = pos - n as i64;
    keep >= 0 && ftruncate(out.as_fd(), keep).is_ok() && lseek(fd, keep, Whence::SeekSet).is_ok()
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
            event.write_json(&mut self.buf)?;
        } else {
            self.buf.extend_from_slice(event.line().as_bytes());
        }
        self.buf.push(b'\n');
        self.ends.push(self.buf.len());
        if self.buf.len() >= FLUSH_AT {
            let f = self.write_out();
            self.report.delivered += f.delivered;
            self.report.lost += f.lost;
            if f.error.is_some() {
                self.report.error = f.error;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Flushed {
        let mut f = self.write_out();
        let earlier = std::mem::take(&mut self.report);
        f.delivered += earlier.delivered;
        f.lost += earlier.lost;
        if f.error.is_none() {
            f.error = earlier.error;
        }
        f
    }

    fn buffered(&self) -> bool {
        true
    }
}
