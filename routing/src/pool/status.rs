//! What the control plane reports about a pool: the scaling controller's
//! last published counts, and the replica counts status and metrics show.

use config::{Deployment, ReplicaSource};

use super::Pool;

/// The replica counts the scaling controller last published, for status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleStatus {
    /// Replicas wanted.
    pub desired: u32,
    /// Replicas started but not yet ready.
    pub starting: u32,
    /// Replicas wanted that cannot start (see `pending_reason`).
    pub pending: u32,
    /// Why `pending` replicas cannot start (e.g. not enough CPU on the node).
    pub pending_reason: Option<String>,
    /// It gave up starting replicas (too many failed starts in a row) until
    /// its config changes.
    pub failed: bool,
    /// Why its last replica exited unexpectedly, in the replica's words
    /// (cleared once one is ready).
    pub last_error: Option<String>,
    /// Replicas that exited unexpectedly since the gateway started.
    pub crashes: u64,
    /// The autoscaler's stable-window signal at its last decision.
    pub stable_signal: f64,
    /// Its burst-window signal.
    pub burst_signal: f64,
    /// Whether it was in burst mode.
    pub burst_mode: bool,
}

/// A deployment's replicas as status and metrics report them: `ready` are
/// replicas whose readiness probe passed; for local replicas `desired`,
/// `starting` and `pending` are the scaling controller's, for fixed ones
/// `desired` is the configured count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaCounts {
    /// Replicas wanted.
    pub desired: usize,
    /// Probed ready.
    pub ready: usize,
    /// Probed at least once (fixed replicas), ready or not.
    pub probed: usize,
    /// What the controller last published (starting, pending and why,
    /// crashes, the autoscaler's signals); default for fixed replicas.
    pub scale: ScaleStatus,
}

impl ReplicaCounts {
    /// The counts of deployment `d` served by `pool`.
    pub fn of(d: &Deployment, pool: Option<&Pool>) -> Self {
        let (ready, probed) = pool.map_or((0, 0), |p| {
            let set = p.replicas();
            (set.ready_count(), set.probed_count())
        });
        let scale = pool.map(Pool::status).unwrap_or_default();
        let desired = match (&d.replicas, d.active) {
            (_, false) => 0,
            (ReplicaSource::Static { addresses }, true) => addresses.len(),
            (ReplicaSource::Local, true) => scale.desired as usize,
        };
        Self {
            desired,
            ready,
            probed,
            scale,
        }
    }
}
