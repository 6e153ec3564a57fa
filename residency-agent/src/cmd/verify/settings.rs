//! Program settings: the event rate limit and the verdict cache switch the programs
//! read are those the config gives. A rate limit lowered by hand would silence the
//! evidence of blocks while enforcement goes on; it is a difference like any other.

use aya::maps::{Array, MapData};
use residency_common::{SETTINGS_NO_VERDICT_CACHE, Settings};

use super::Report;
use crate::config::Config;

/// Compares the settings map's one entry with what `config` means.
pub fn compare(settings: &Array<MapData, Settings>, config: &Config, report: &mut Report) {
    let have = match settings.get(&0, 0) {
        Ok(s) => s,
        Err(e) => {
            report
                .mismatches
                .push(format!("settings: cannot be read: {e}"));
            return;
        }
    };
    let cache = |flags: u32| flags & SETTINGS_NO_VERDICT_CACHE == 0;
    let mut differ = |what: &str, kernel: String, config: String| {
        if kernel != config {
            report.mismatches.push(format!(
                "settings: {what} is {kernel} in the kernel, {config} in the config"
            ));
        }
    };
    differ(
        "[events] rate_limit_per_cpu",
        have.events_per_second.to_string(),
        config.events.rate_limit_per_cpu.to_string(),
    );
    differ(
        "[events] rate_limit_burst",
        have.events_burst.to_string(),
        config.events.rate_limit_burst.to_string(),
    );
    differ(
        "[agent] verdict_cache",
        cache(have.flags).to_string(),
        config.agent.verdict_cache.to_string(),
    );
    if have.flags & !SETTINGS_NO_VERDICT_CACHE != 0 {
        report.mismatches.push(format!(
            "settings: flags {:#x} in the kernel include bits no config sets",
            have.flags
        ));
    }
}
