//! Which config file a command reads: the one named on the command line, else the
//! default path, else (only where that cannot weaken enforcement) the embedded
//! audit-only default, saying which.

use std::path::Path;

use anyhow::bail;
use tracing::warn;

use super::{Config, DEFAULT_PATH};

/// Loads the config named on the command line, else the default path, else the
/// embedded default (audit only), saying which.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    load_config_for(path, Fallback::Allowed)
}

/// Whether a missing default config may fall back to the embedded audit-only one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Allowed,
    /// A reload, or a start over pinned enforcement: falling back would silently turn
    /// enforcement into audit (a config file moved aside while being edited must not
    /// open the host).
    Refused,
}

pub fn load_config_for(path: Option<&Path>, fallback: Fallback) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let default = Path::new(DEFAULT_PATH);
            if default.exists() {
                Ok(Config::load(default)?)
            } else if fallback == Fallback::Refused {
                bail!(
                    "{}: no such file; refusing to replace the policy in force with the embedded \
                     audit-only default",
                    DEFAULT_PATH
                )
            } else {
                warn!(
                    "no config at {}; using the embedded default config (audit only, never drops). \
                     Write {} to enforce a policy.",
                    DEFAULT_PATH, DEFAULT_PATH
                );
                Ok(Config::embedded_default())
            }
        }
    }
}
