//! The packet socket guard (`residency_socket_create`, lsm_cgroup): what happens to
//! enforce policies when this kernel cannot deny AF_PACKET and AF_XDP sockets.

use super::{BpfError, Loaded};
use crate::config::{Config, Mode};

impl Loaded {
    /// Enforce policies that deny packet sockets while this kernel cannot deny them:
    /// with `[agent] require_packet_socket_guard` the config is refused; otherwise each
    /// exposed policy is reported as an error (never silently).
    pub fn check_socket_guard(&self, config: &Config) -> Result<(), BpfError> {
        let Some(reason) = &self.socket_guard_missing else {
            return Ok(());
        };
        for p in config
            .policies
            .iter()
            .filter(|p| p.mode == Mode::Enforce && !p.allow_packet_sockets)
        {
            if config.agent.require_packet_socket_guard {
                return Err(BpfError::PacketSocketGuard {
                    policy: p.name.clone(),
                    reason: reason.clone(),
                });
            }
            tracing::error!(
                policy = %p.name,
                "packet sockets (AF_PACKET, AF_XDP) are NOT denied for this policy's workloads: {reason}. \
                 Their egress bypasses every IP hook: drop CAP_NET_RAW from these workloads, or boot \
                 with the BPF LSM usable; set [agent] require_packet_socket_guard = true to refuse to run without it"
            );
        }
        Ok(())
    }
}
