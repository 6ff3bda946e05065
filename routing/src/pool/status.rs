//! What the control plane reports about a pool: the scaling controller's
//! last published counts, and the replica counts status and metrics show.

use std::time::Duration;

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
    pub pending_reason: Option<PendingReason>,
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

/// Why the scaling controller cannot start a replica it wants now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PendingReason {
    /// A replica crashed; its replacement waits out the restart backoff.
    #[error("replacing a crashed replica in {:.1} s", .0.as_secs_f64())]
    RestartBackoff(Duration),
    /// The node has no room for one more.
    #[error(transparent)]
    NoRoom(#[from] Shortfall),
    /// The provisioner could not start it, in its words.
    #[error("{0}")]
    StartFailed(String),
}

/// What the node lacks for one more replica: what it needs, what is free,
/// and what the node has in all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Shortfall {
    /// CPU, in thousandths of a core.
    #[error("not enough CPU on the node: a replica needs {} cpu, {} of {} are free", cores(*.need), cores(*.free), cores(*.total))]
    Cpu {
        /// Needed.
        need: u64,
        /// Free.
        free: u64,
        /// The node's.
        total: u64,
    },
    /// Memory, in MiB.
    #[error(
        "not enough memory on the node: a replica needs {need} MiB, {free} of {total} MiB are free"
    )]
    Memory {
        /// Needed.
        need: u64,
        /// Free.
        free: u64,
        /// The node's.
        total: u64,
    },
    /// Accelerators of one kind.
    #[error(
        "not enough {kind} accelerators on the node: a replica needs {need}, {free} of {total} are free"
    )]
    Accelerators {
        /// The kind (e.g. `L4`).
        kind: String,
        /// Needed.
        need: u32,
        /// Free.
        free: u32,
        /// The node's.
        total: u32,
    },
}

/// Thousandths of a core as cores (`1500` -> `1.5`).
fn cores(millis: u64) -> f64 {
    millis as f64 / 1000.0
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
