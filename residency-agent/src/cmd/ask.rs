//! `residency-agent reload` and `status`, the CLI side: ask the running agent over
//! its control socket and print the answer.

use std::path::Path;

use anyhow::bail;

use crate::{
    config::{AgentConfig, Config},
    control::{self, Request},
};

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
            Some(c) => Config::load(c)?.agent.control_socket,
            None => AgentConfig::default().control_socket,
        },
    };
    let response = control::call(&socket, &request)?;
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
