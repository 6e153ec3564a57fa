//! `residency-agent detach`: remove every pinned link instance and the pinned maps —
//! the one way enforcement ends.

use std::path::Path;

use crate::{config::file::load_config, kernel::pins};

pub fn detach(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let pin_path = &config.agent.pin_path;
    if pins::instances(pin_path)?.is_empty() && !pins::maps_dir(pin_path).exists() {
        println!("nothing to detach under {}", pin_path.display());
        return Ok(());
    }
    let (links, instances) = pins::remove_all(pin_path)?;
    println!(
        "detached {links} cgroup link(s) and removed {instances} pinned instance(s) under {}",
        pin_path.display()
    );
    Ok(())
}
