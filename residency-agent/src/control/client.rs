//! The CLI's side of the control socket: one request, one answer, bounded in time.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{Request, Response};

/// The CLI side: sends one request and returns the daemon's answer.
pub fn call(socket: &PathBuf, request: &Request) -> anyhow::Result<Response> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the agent at {} (is `residency-agent run` running?)",
            socket.display()
        )
    })?;
    // A reload of a large policy takes a while; a wedged daemon must not hang the CLI.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(300)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer)
        .with_context(|| format!("unreadable answer from the agent: {answer:?}"))
}
