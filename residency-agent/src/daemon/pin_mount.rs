//! Keeping the pins when their bpffs goes away. The agent's instance disappearing
//! means one of two things: `detach` (or a newer agent) removed it on purpose — the
//! agent then exits, as its enforcement is gone — or the bpffs under the pin path
//! was unmounted (a lazy unmount, a container's mount namespace torn down) or
//! covered by another mount. Then the pins, and the enforcement, live on in the lost
//! mount only while this process holds it: the agent says so loudly, keeps running,
//! and pins everything again as soon as there is a bpffs at the pin path (mounting
//! one itself where `[agent] mount_bpffs` allows, never over a non-empty directory).

use std::sync::atomic::Ordering;

use tracing::{error, info, warn};

use super::Daemon;
use crate::kernel::pins::{self, PinState};

/// What the main loop does after a check of the pins.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PinCheck {
    /// Enforcing from pins at the pin path.
    Fine,
    /// The instance was removed on purpose: exit.
    Removed,
    /// Enforcing from the lost mount only.
    Lost,
}

impl Daemon {
    /// Checks the pins; while their mount is lost, tries to pin them again.
    pub(super) fn check_pins(&mut self) -> PinCheck {
        match self.owner.state(&self.pin_path, &self.instance) {
            PinState::Intact => PinCheck::Fine,
            PinState::Removed => PinCheck::Removed,
            PinState::MountLost => {
                if !self.telemetry.pin_mount_lost.swap(true, Ordering::Relaxed) {
                    error!(
                        pin_path = %self.pin_path.display(),
                        "the BPF filesystem holding the pins is gone (unmounted or covered): \
                         enforcement now lives only as long as this agent; it pins again as \
                         soon as {} is on a bpffs. Do not stop or restart the agent meanwhile",
                        self.pin_path.display()
                    );
                }
                self.try_repin()
            }
        }
    }

    fn try_repin(&mut self) -> PinCheck {
        // A bpffs at the pin path again: the host's (remounted), or one we may mount.
        if let Err(e) = pins::ensure_bpffs(&self.pin_path, self.mount_bpffs) {
            warn!("cannot pin again yet: {e}");
            return PinCheck::Lost;
        }
        let attached = self.attached.keys().copied().collect();
        match pins::repin(&self.owner, &self.pin_path, &self.instance, &attached) {
            Ok(owner) => {
                // Dropping the old lock lets the lost mount go; the new pins hold
                // every object it held.
                self.owner = owner;
                self.telemetry
                    .pin_mount_lost
                    .store(false, Ordering::Relaxed);
                info!(
                    pin_path = %self.pin_path.display(),
                    "pinned again: enforcement outlives the agent once more"
                );
                PinCheck::Fine
            }
            Err(e) => {
                warn!("pinning again failed, retrying: {e}");
                PinCheck::Lost
            }
        }
    }
}
