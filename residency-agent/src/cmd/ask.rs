//! `residency-agent reload` and `status`, the CLI side: ask the running agent over
//! its control socket and print the answer.

use std::path::Path;

use anyhow::bail;

use anyhow::Context as _;

use crate::{
    config::AgentConfig,
    control::{self, Request},
};

/// The control socket a config file names, read without validating the rest: a
/// config that the agent will reject must still reach it (`reload` of a bad file is
/// refused, counted and logged by the agent, and the CLI prints the agent's reason).
fn socket_of(config: &Path) -> anyhow::Result<std::path::PathBuf> {
    Ok(agent_path(config, "control_socket")?
        .unwrap_or_else(|| AgentConfig::default().control_socket))
}

/// The `[agent]` path `key` of a config file, read leniently: from the parsed TOML,
/// or, in a file that does not parse, from its `key = "/…"` line.
fn agent_path(config: &Path, key: &str) -> anyhow::Result<Option<std::path::PathBuf>> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("{}: cannot read", config.display()))?;
    // The long lists blanked first: toml's document of a million-prefix file is
    // hundreds of megabytes, and only `[agent]` is wanted.
    let parsed = crate::config::lift::lift(&text)
        .take_text()
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| {
            t.get("agent")?
                .get(key)?
                .as_str()
                .map(std::path::PathBuf::from)
        });
    let scanned = || {
        text.lines().find_map(|l| {
            let (k, value) = l.split_once('=')?;
            let value = value
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            (k.trim() == key && value.starts_with('/')).then(|| std::path::PathBuf::from(value))
        })
    };
    Ok(parsed.or_else(scanned))
}

/// Whether a failed call means that no agent listens (no socket, or nobody on it),
/// rather than, say, a refused permission.
fn no_agent(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            )
        })
}

/// The pin path a config file names, read as leniently as its socket.
fn pin_path_of(config: &Path) -> anyhow::Result<std::path::PathBuf> {
    Ok(agent_path(config, "pin_path")?.unwrap_or_else(|| AgentConfig::default().pin_path))
}

/// Sends `request` to the running agent and prints its answer (JSON with `json`);
/// fails when the agent says the request failed.
pub fn ask(
    socket: Option<&Path>,
    config: Option<&Path>,
    request: Request,
    json: bool,
) -> anyhow::Result<()> {
    let socket = match socket {
        Some(s) => s.to_owned(),
        None => match config {
            Some(c) => socket_of(c)?,
            None => AgentConfig::default().control_socket,
        },
    };
    let response = match control::call(&socket, &request) {
        Ok(r) => r,
        // No agent runs: `status` says what the pins still enforce.
        Err(e) if matches!(request, Request::Status) && no_agent(&e) => {
            let pin_path = match config {
                Some(c) => pin_path_of(c)?,
                None => AgentConfig::default().pin_path,
            };
            return super::pinned::status(&pin_path, &socket, &e, json);
        }
        Err(e) => return Err(e),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&response.data)?);
    } else {
        print!("{}", response.text);
        if !response.text.ends_with('\n') {
            println!();
        }
    }
    if !response.ok {
        bail!("{}", response.text.lines().next().unwrap_or("failed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_found_in_a_broken_config() {
        let dir = std::env::temp_dir().join(format!("residency-ask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("broken.toml");
        std::fs::write(
            &f,
            "[agent]\npin_path = \"/tmp/x\"\ncontrol_socket = \"/tmp/zz/agent.sock\"\n[[policy]\n",
        )
        .unwrap();
        assert_eq!(
            socket_of(&f).unwrap(),
            std::path::PathBuf::from("/tmp/zz/agent.sock")
        );
        std::fs::write(&f, "[agent\n").unwrap();
        assert_eq!(
            socket_of(&f).unwrap(),
            AgentConfig::default().control_socket
        );
    }
}
