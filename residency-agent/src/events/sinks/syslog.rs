//! RFC 5424 syslog: to a local datagram socket (`/dev/log`), over UDP (RFC 5426, one
//! message per datagram) or TCP (RFC 6587 octet counting).
//!
//! ```text
//! <28>1 2026-11-24T12:00:00.000000Z host residency-agent 4242 BLOCK [residency@32473 policy="eu-central" ...] RESIDENCY_EGRESS_BLOCK policy=...
//! ```
//! Facility daemon (3); severity warning (4) for blocks, notice (5) for audits.
//! 32473 is the example enterprise number of RFC 5612.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream, UdpSocket},
    os::unix::net::UnixDatagram,
    time::SystemTime,
};

use crate::{
    config::{SinkKind, SyslogTarget},
    events::model::BlockEvent,
};

enum Conn {
    Unix(UnixDatagram, std::path::PathBuf),
    Udp(UdpSocket, SocketAddr),
    Tcp(Option<TcpStream>, SocketAddr),
}

pub struct Syslog {
    conn: Conn,
    hostname: String,
}

impl Syslog {
    pub fn open(target: &SyslogTarget) -> std::io::Result<Syslog> {
        let conn = match target {
            SyslogTarget::Unix(path) => Conn::Unix(UnixDatagram::unbound()?, path.clone()),
            SyslogTarget::Udp(addr) => {
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .expect("literal");
                Conn::Udp(UdpSocket::bind(bind)?, *addr)
            }
            // Connected lazily, and again after an error.
            SyslogTarget::Tcp(addr) => Conn::Tcp(None, *addr),
        };
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "-".into());
        Ok(Syslog { conn, hostname })
    }
}

/// Escapes an SD-PARAM value (RFC 5424 section 6.3.3: `"`, `\` and `]`).
fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Formats one RFC 5424 message.
pub fn format(event: &BlockEvent, hostname: &str, pid: u32, now: SystemTime) -> String {
    let severity = if event.audit { 5 } else { 4 };
    let pri = 3 * 8 + severity;
    let msgid = if event.audit { "AUDIT" } else { "BLOCK" };
    let mut sd = String::from("[residency@32473");
    for (k, v) in event.fields() {
        sd.push_str(&format!(" {}=\"{}\"", k.short, sd_escape(&v)));
    }
    sd.push(']');
    format!(
        "<{pri}>1 {} {hostname} residency-agent {pid} {msgid} {sd} {}",
        humantime::format_rfc3339_micros(now),
        event.line()
    )
}

impl super::Sink for Syslog {
    fn kind(&self) -> SinkKind {
        SinkKind::Syslog
    }

    fn write(&mut self, event: &BlockEvent) -> std::io::Result<()> {
        let msg = format(event, &self.hostname, std::process::id(), SystemTime::now());
        match &mut self.conn {
            Conn::Unix(sock, path) => sock.send_to(msg.as_bytes(), &*path).map(|_| ()),
            Conn::Udp(sock, addr) => sock.send_to(msg.as_bytes(), *addr).map(|_| ()),
            Conn::Tcp(stream, addr) => {
                if stream.is_none() {
                    let s = TcpStream::connect_timeout(addr, std::time::Duration::from_secs(2))?;
                    s.set_write_timeout(Some(std::time::Duration::from_secs(2)))?;
                    *stream = Some(s);
                }
                let s = stream.as_mut().expect("connected above");
                let r = s.write_all(format!("{} {msg}", msg.len()).as_bytes());
                if r.is_err() {
                    *stream = None;
                }
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_sd_values() {
        assert_eq!(sd_escape(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    }
}
