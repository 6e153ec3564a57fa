//! The benchmark's options (`cargo xtask bench [options]` passes them through), and
//! the command line that reproduces a run, for the report.

use std::path::PathBuf;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Datapath rounds (every case once per round; the median is reported).
    #[arg(long, default_value_t = 7)]
    pub rounds: u32,
    /// Seconds per datapath measurement and for the event flood.
    #[arg(long, default_value_t = 2)]
    pub secs: u32,
    /// BPF_PROG_TEST_RUN trials per case (median and p99 over these).
    #[arg(long, default_value_t = 100)]
    pub trials: u32,
    /// Program runs per trial (the kernel reports their mean).
    #[arg(long, default_value_t = 50_000)]
    pub repeat: u32,
    /// Run only these sections (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Section>,
    /// The real allowlist beside the synthetic sets (per-packet cost, lookup tables,
    /// datapath, section 6): countries of the installed GeoLite2 Country release, by
    /// ISO 3166-1 alpha-2 code or group (`EU`, `EEA`, `EFTA`), as a policy names them.
    #[arg(long, value_delimiter = ',', default_value = "EU")]
    pub countries: Vec<String>,
    /// The agent binary to benchmark (`cargo xtask bench` builds and passes the release
    /// build; default: the workspace's release build).
    #[arg(long)]
    pub agent: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Program,
    Lookup,
    Datapath,
    Hooks,
    Reload,
    Events,
    Pods,
    Geoip,
}

impl Options {
    /// The real allowlist of `--countries`.
    pub fn allowlist(&self) -> anyhow::Result<crate::allowlist::Allowlist> {
        crate::allowlist::Allowlist::new(&self.countries)
    }

    /// Whether section `s` runs.
    pub fn wanted(&self, s: Section) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }

    /// The `cargo xtask bench` command line of this run (options that differ from the
    /// defaults only).
    pub fn command_line(&self) -> String {
        let mut c = "cargo xtask bench".to_owned();
        let d = Options {
            rounds: 7,
            secs: 2,
            trials: 100,
            repeat: 50_000,
            only: Vec::new(),
            countries: vec!["EU".to_owned()],
            agent: None,
        };
        if self.rounds != d.rounds {
            c += &format!(" --rounds {}", self.rounds);
        }
        if self.secs != d.secs {
            c += &format!(" --secs {}", self.secs);
        }
        if self.trials != d.trials {
            c += &format!(" --trials {}", self.trials);
        }
        if self.repeat != d.repeat {
            c += &format!(" --repeat {}", self.repeat);
        }
        let countries: Vec<String> = self.countries.iter().map(|c| c.to_uppercase()).collect();
        if countries != d.countries {
            c += &format!(" --countries {}", self.countries.join(","));
        }
        if !self.only.is_empty() {
            let names: Vec<String> = self
                .only
                .iter()
                .map(|s| format!("{s:?}").to_lowercase())
                .collect();
            c += &format!(" --only {}", names.join(","));
        }
        c
    }
}
