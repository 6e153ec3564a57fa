//! Reloads, the daemon's side — a new config read, validated whole, placed on the
//! host and swapped in by `generations` (SIGHUP, the control socket, or a watched
//! config file). A bad config is rejected and the policy in force stays.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use tracing::{debug, info, warn};

use super::{
    Daemon,
    prepare::prepare,
    seen::{self, Digest, FileStat, Seen, digest},
};
use crate::{
    cmd::check::validate_compiled,
    config::{
        Config, DEFAULT_PATH,
        file::{Fallback, load_config_for},
    },
    control::Response,
    policy::{self, Versioned},
    sys::notify,
};

/// What a look at the config file's content calls for.
#[derive(Debug, PartialEq, Eq)]
pub enum OnContent {
    /// The content last applied or rejected: nothing to do.
    Unchanged,
    /// The first look: remember it (the agent started from it).
    Record,
    /// New content: reload.
    Reload,
}

/// Decides what a watched config file's content calls for, given the digest of what
/// was seen last.
pub fn on_file_content(seen: Option<&Digest>, now: &[u8]) -> OnContent {
    match seen {
        Some(s) if *s == digest(now) => OnContent::Unchanged,
        None => OnContent::Record,
        Some(_) => OnContent::Reload,
    }
}

impl Daemon {
    /// The file the agent reads its config from, when there is one.
    pub(super) fn config_file(&self) -> Option<PathBuf> {
        match &self.config_path {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
        }
    }

    /// Reloads when the config file's content changed since it was last applied (or
    /// last rejected): an edit, or a ConfigMap update. A file caught mid-swap or
    /// missing is left for the next look. So is a file that some process still has
    /// open for writing: an edit in place that pauses half way must not have its first
    /// half applied (a deny carve-out not yet written would be missing); the writer's
    /// close wakes the watch again.
    ///
    /// The periodic look (`watched` false) reads the file only when its identity, size
    /// or times changed since it was read; a look the directory watch asked for reads
    /// it whatever they say, so an edit is never missed for a timestamp that did not
    /// move.
    pub(super) fn check_config_changed(&mut self, watched: bool) {
        let Some(path) = self.config_file() else {
            return;
        };
        let stat = seen::stat(&path);
        if !watched && self.config_seen.as_ref().is_some_and(|s| s.untouched(stat)) {
            return;
        }
        let now = match crate::sys::fs::read_when_complete(&path) {
            Ok(Some(now)) => now,
            Ok(None) => {
                debug!(config = %path.display(), "config file is being written; waiting for its writer to close it");
                return;
            }
            Err(_) => return,
        };
        match on_file_content(self.config_seen.as_ref().map(|s| &s.digest), &now) {
            OnContent::Unchanged => {
                if let Some(s) = &mut self.config_seen {
                    s.stat = stat;
                }
            }
            OnContent::Record => {
                self.config_seen = Some(Seen {
                    digest: digest(&now),
                    stat,
                })
            }
            OnContent::Reload => {
                info!(config = %path.display(), "config file changed: reloading");
                self.reload_from(false, Some((now, stat)), "config watch".to_owned());
            }
        }
    }

    /// Re-reads the config file and applies it, or only reports the change.
    pub(super) fn reload(&mut self, dry_run: bool, by: String) -> Response {
        self.reload_from(dry_run, None, by)
    }

    /// [`Daemon::reload`] of `text` when given (the content the file watch read
    /// whole, and the file as it was then, when it is the file's), else of the file as
    /// it is now.
    pub(super) fn reload_from(
        &mut self,
        dry_run: bool,
        text: Option<(Vec<u8>, Option<FileStat>)>,
        by: String,
    ) -> Response {
        let (text, stat) = text.map_or((None, None), |(t, s)| (Some(t), s));
        let seen = text.as_deref().map(|t| Seen {
            digest: digest(t),
            stat,
        });
        let result = self.try_reload(dry_run, text);
        if !dry_run {
            // What this reload read counts as seen: the file watch must not apply (or
            // reject) the same content a second time.
            self.config_seen = seen.or_else(|| {
                let path = self.config_file()?;
                let stat = seen::stat(&path);
                let content = std::fs::read(&path).ok()?;
                Some(Seen {
                    digest: digest(&content),
                    stat,
                })
            });
        }
        if !dry_run && result.ok {
            notify::status(result.text.lines().next().unwrap_or_default());
        }
        if !dry_run {
            let counter = if result.ok {
                &self.telemetry.reloads_ok
            } else {
                &self.telemetry.reloads_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let in_force = result.ok || result.data["applied"] == true;
            self.telemetry
                .last_reload_failed
                .store(!in_force, Ordering::Relaxed);
            if in_force {
                self.telemetry
                    .last_reload_success
                    .store(super::unix_now(), Ordering::Relaxed);
                self.telemetry.request_verification();
                // The sources of the new version: reported, and watched.
                let config = self.versioned.read().expect("lock").config.clone();
                let mut states = self.telemetry.sources.lock().expect("lock");
                *states = super::sources::publish(&config, &states);
                drop(states);
                if config.agent.watch_sources {
                    self.source_files.follow(&config, &self.config_watch);
                }
            }
            self.last_reload = result.text.lines().next().unwrap_or_default().to_owned();
            self.reload_history.push(ReloadRecord {
                time: super::unix_now(),
                generation: self.generations.generation,
                applied: in_force,
                summary: self.last_reload.clone(),
                by,
            });
            if self.reload_history.len() > RELOAD_HISTORY {
                self.reload_history.remove(0);
            }
            if result.ok {
                info!("{}", result.text.trim_end());
            } else {
                warn!(
                    "reload rejected; the policy in force is unchanged: {}",
                    result.text.trim_end()
                );
            }
        }
        result
    }

    fn try_reload(&mut self, dry_run: bool, text: Option<Vec<u8>>) -> Response {
        let started = std::time::Instant::now();
        let loaded = match (text, self.config_file()) {
            (Some(t), Some(path)) => match String::from_utf8(t) {
                Ok(text) => Config::parse_owned(text, &path.display().to_string())
                    .map_err(anyhow::Error::from),
                Err(e) => Err(anyhow::anyhow!("{}: not UTF-8: {e}", path.display())),
            },
            _ => load_config_for(self.config_path.as_deref(), Fallback::Refused),
        };
        let config = match loaded {
            Ok(c) => c,
            Err(e) => return Response::error(format!("rejected: {e:#}")),
        };
        if !dry_run {
            for w in config.warnings() {
                warn!("{w}");
            }
        }
        let cluster = self.cluster_state();
        let prepared = match prepare(config, &self.hierarchy, &cluster) {
            Ok(p) => p,
            Err(e) => return Response::error(format!("rejected: {e:#}")),
        };
        if let Err(e) = self.loaded.check_socket_guard(&prepared.config) {
            return Response::error(format!("rejected: {e}"));
        }
        if dry_run {
            let (diff, diff_json) = policy::diff(
                &self.versioned.read().expect("lock").config,
                &prepared.config,
            );
            if let Err(e) = validate_compiled(&prepared.config) {
                return Response::error(format!("rejected: {e:#}"));
            }
            return Response {
                ok: true,
                text: format!(
                    "dry run: {} is valid; a reload would change:\n{diff}",
                    prepared.config.source
                ),
                data: serde_json::json!({"dry_run": true, "changes": diff_json}),
            };
        }
        // Counters of ids new to this version start at zero, before any packet is
        // judged under them.
        let old_ids = self.versioned.read().expect("lock").ids.clone();
        let fresh: Vec<u32> = self
            .generations
            .preview_ids(&prepared.config)
            .into_iter()
            .filter(|id| !old_ids.contains(id))
            .collect();
        if let Err(e) = self.metrics.kernel.lock().expect("lock").reset(&fresh) {
            warn!("zeroing the counters of new policies failed: {e}");
        }
        let super::prepare::Prepared {
            config,
            bound,
            missing,
        } = prepared;
        // Shared by the version in force and what the kernel maps were written from.
        let config = std::sync::Arc::new(config);
        let applied = match self.generations.apply(&config, &bound) {
            Ok(a) => a,
            Err(e) => return Response::error(format!("rejected: {e}")),
        };
        // From the first read to the flip (the old version's retirement after it).
        let in_force = started.elapsed() - applied.retired;
        // The event rate limit and the verdict cache switch are read per packet, not
        // per version: written once the new version is in force.
        if let Err(e) = self.loaded.configure(&config) {
            warn!("writing the program settings (event rate limit, verdict cache) failed: {e}");
        }
        self.bound = bound;
        self.missing = missing;
        self.watch_cgroups();
        let old = std::mem::replace(
            &mut *self.versioned.write().expect("lock"),
            Versioned::applied(config, &applied),
        );
        // What changed, for the answer: worked out once the new version is in force.
        let (diff, diff_json) =
            policy::diff(&old.config, &self.versioned.read().expect("lock").config);
        drop(old);
        self.retry_pending = false;
        if let Err(e) = self.reconcile_links() {
            // The new policy is in force for every cgroup that was attached before;
            // say loudly which attachment is missing. The next tick tries again.
            self.retry_pending = true;
            let mut r = Response::error(format!(
                "generation {} applied, but attaching a new cgroup failed: {e:#}",
                applied.generation
            ));
            // The new config is in force (only an attachment is still missing, and
            // the next tick retries it).
            r.data = serde_json::json!({"applied": true, "generation": applied.generation});
            return r;
        }
        Response {
            ok: true,
            text: format!(
                "reloaded: generation {} in force ({} prefixes applied in {:.1} ms; {:.1} ms from reading the config and its sources to the swap)\n{diff}",
                applied.generation,
                applied.entries,
                applied.duration.as_secs_f64() * 1000.0,
                in_force.as_secs_f64() * 1000.0
            ),
            data: serde_json::json!({
                "generation": applied.generation,
                "prefixes": applied.entries,
                "duration_ms": applied.duration.as_secs_f64() * 1000.0,
                "in_force_ms": in_force.as_secs_f64() * 1000.0,
                "retired_ms": applied.retired.as_secs_f64() * 1000.0,
                "ipv4_tables": {
                    "policies": applied.tables.v4.policies.len(),
                    "chunks": applied.tables.v4.chunks,
                    "policies_without": applied.tables.v4.skipped.len(),
                },
                "ipv6_tables": {
                    "policies": applied.tables.v6.policies.len(),
                    "chunks": applied.tables.v6.chunks,
                    "policies_without": applied.tables.v6.skipped.len(),
                },
                "changes": diff_json,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_reloaded_only_when_its_content_changes() {
        let a = digest(b"a");
        assert_eq!(on_file_content(None, b"a"), OnContent::Record);
        assert_eq!(on_file_content(Some(&a), b"a"), OnContent::Unchanged);
        assert_eq!(on_file_content(Some(&a), b"b"), OnContent::Reload);
        assert_eq!(
            on_file_content(Some(&a), b""),
            OnContent::Reload,
            "an emptied file is new content: the reload rejects it, loudly"
        );
    }
}

/// Reloads kept in the history `status` and `report` show.
const RELOAD_HISTORY: usize = 100;

/// One reload, as `status` and `report` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadRecord {
    /// Unix time.
    pub time: u64,
    /// The generation in force after it.
    pub generation: u64,
    /// Whether the policy it read is in force.
    pub applied: bool,
    /// Its result, as the reload printed it first.
    pub summary: String,
    /// Who asked: `uid N (control socket)`, `SIGHUP`, `config watch`.
    pub by: String,
}
