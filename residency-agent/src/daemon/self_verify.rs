//! Self-verification: after every change of what the kernel enforces (the start, a
//! reload, a cgroup bound as it appears), the agent runs `residency-agent verify` on a
//! sample, in the background, once things have settled for a moment.
//!
//! A child process, not a task of the agent: `verify` moves itself into the policies'
//! cgroups to drive the live program from there, which the agent (whose own traffic
//! must never be judged by a workload's policy) must not do. The result goes to the
//! metrics (`residency_verifications_total`, `residency_verification_failures_total`,
//! `residency_last_verification_timestamp_seconds`) and, on a difference, to the
//! journal under its own MESSAGE_ID and to the agent's log.

use std::{path::PathBuf, sync::Arc, sync::atomic::Ordering, time::Duration};

use tracing::{error, info};

use crate::{cmd::verify::CHANGED, metrics::Telemetry};

/// MESSAGE_ID of the journal entry of a failed self-verification.
pub const MESSAGE_ID_VERIFY_FAILED: &str = "3b8e1f6a9c2d4e7f8a1b5c9d2e6f0a43";
/// Prefixes probed per policy by the self-verification.
const SAMPLE: &str = "1000";
/// Quiet time after a change before verifying: a burst of changes (pods starting)
/// is verified once.
const SETTLE: Duration = Duration::from_secs(2);
/// A verification that takes longer is stopped and counted as failed.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a verification of `config` after each request on `telemetry.verify_request`.
pub async fn run(config: PathBuf, telemetry: Arc<Telemetry>) {
    let Ok(exe) = std::env::current_exe() else {
        error!("self-verification disabled: the agent's own executable cannot be found");
        return;
    };
    loop {
        telemetry.verify_request.notified().await;
        // Wait for a quiet moment: a burst of changes (pods starting, reloads in a
        // row) is verified once, after its last change.
        loop {
            let seen = telemetry.verify_requests.load(Ordering::Relaxed);
            tokio::time::sleep(SETTLE).await;
            if telemetry.verify_requests.load(Ordering::Relaxed) == seen {
                break;
            }
        }
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(["verify", "--json", "--sample", SAMPLE, "--config"])
            .arg(&config)
            .kill_on_drop(true);
        let outcome = tokio::time::timeout(TIMEOUT, cmd.output()).await;
        telemetry.verifications.fetch_add(1, Ordering::Relaxed);
        let problems: Vec<String> = match outcome {
            Err(_) => vec![format!("did not finish within {} s", TIMEOUT.as_secs())],
            Ok(Err(e)) => vec![format!("could not run: {e}")],
            Ok(Ok(out)) => match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                Ok(v) => {
                    telemetry
                        .last_verification
                        .store(super::unix_now(), Ordering::Relaxed);
                    let list: Vec<String> = v["mismatches"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m.as_str().map(str::to_owned))
                        .collect();
                    telemetry
                        .last_verification_mismatches
                        .store(list.len() as u64, Ordering::Relaxed);
                    if list.is_empty() {
                        info!(
                            probes = v["probes"].as_u64().unwrap_or(0),
                            prefixes = v["prefixes"].as_u64().unwrap_or(0),
                            "self-verification: kernel state = config"
                        );
                    }
                    list
                }
                Err(_) if String::from_utf8_lossy(&out.stderr).contains(CHANGED) => {
                    // Overtaken by a change, which asks for its own verification.
                    telemetry.request_verification();
                    continue;
                }
                Err(_) => vec![format!(
                    "failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )],
            },
        };
        if problems.is_empty() {
            continue;
        }
        telemetry
            .verification_failures
            .fetch_add(1, Ordering::Relaxed);
        let text = format!(
            "self-verification: the kernel state differs from {} ({} problem(s)): {}",
            config.display(),
            problems.len(),
            problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
        error!("{text}");
        let count = problems.len();
        let _ = tokio::task::spawn_blocking(move || record(&text, count)).await;
    }
}

/// The journal entry of a failed self-verification (best effort).
fn record(text: &str, problems: usize) {
    use libsystemd::logging::{Priority, journal_send};
    let fields = vec![
        ("SYSLOG_IDENTIFIER", "residency-agent".to_owned()),
        ("MESSAGE_ID", MESSAGE_ID_VERIFY_FAILED.to_owned()),
        ("RESIDENCY_VERIFY_PROBLEMS", problems.to_string()),
    ];
    let _ = journal_send(Priority::Error, text, fields.into_iter());
}
