//! The self-verification's metrics: how many ran, how many found a difference, when
//! the last one completed and how many differences it found.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::DescriptorEncoder;

use super::{
    Telemetry,
    family::{counter, gauge},
};

pub fn encode(enc: &mut DescriptorEncoder, t: &Telemetry) -> std::fmt::Result {
    counter(
        enc,
        "residency_verifications",
        "Self-verifications run after a change of what the kernel enforces ([agent] self_verify): `verify` on a sample, in the background.",
        &[(vec![], t.verifications.load(Ordering::Relaxed))],
    )?;
    counter(
        enc,
        "residency_verification_failures",
        "Self-verifications that found the kernel state different from the config, or could not run; each is logged with MESSAGE_ID 3b8e1f6a9c2d4e7f8a1b5c9d2e6f0a43.",
        &[(vec![], t.verification_failures.load(Ordering::Relaxed))],
    )?;
    gauge(
        enc,
        "residency_last_verification_timestamp_seconds",
        "Unix time of the last self-verification that completed (0: none yet).",
        &[(vec![], t.last_verification.load(Ordering::Relaxed) as i64)],
    )?;
    gauge(
        enc,
        "residency_last_verification_mismatches",
        "Differences the last self-verification found between the kernel and the config.",
        &[(
            vec![],
            t.last_verification_mismatches.load(Ordering::Relaxed) as i64,
        )],
    )?;
    Ok(())
}
