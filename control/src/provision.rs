//! Where replicas come from. A [`Provisioner`] starts a replica of a
//! deployment, stops one, and reports each one's state through its
//! [`Instance`]; the scaling controller decides how many there should be.
//!
//! - [`LocalProvisioner`] runs `engine` processes on this machine (the
//!   embedded default).
//! - Fixed (`static`) replicas are endpoints someone else runs: the gateway
//!   neither starts nor stops them, so they need no provisioner; each
//!   snapshot applies the configured addresses and the health checker
//!   decides which ones are routable.

mod local;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use config::EngineSettings;
use tokio::sync::Notify;

pub use local::{LocalProvisioner, LocalSettings};

/// What a provisioner needs to start one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    /// `model/deployment`, for logs and the replica's `x-replica-id`.
    pub deployment: String,
    /// How the replica runs.
    pub engine: EngineSettings,
}

/// Why a replica could not be started at all.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The engine binary could not be run.
    #[error("cannot run the engine binary {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Starts and stops replicas. Implementations report progress through the
/// [`Instance`] they return and wake the controller on every change.
pub trait Provisioner: Send + Sync + 'static {
    /// Starts one replica of `spec` and returns at once; the instance is
    /// [`InstanceState::Starting`] until its readiness probe passes.
    fn start(&self, spec: &ReplicaSpec) -> Result<Arc<Instance>, ProvisionError>;

    /// Stops a replica gracefully (it finishes what it runs, within a
    /// grace period); the instance ends [`InstanceState::Stopped`].
    /// Take it out of routing and let its requests finish first.
    fn stop(&self, instance: &Instance);
}

/// Where a replica is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Started; not ready yet (loading its model, or not probed yet).
    Starting,
    /// Ready: its readiness probe passed at this address.
    Running(SocketAddr),
    /// Gone without being asked to (crash, failed start).
    Exited {
        /// What happened, for logs and status.
        reason: String,
    },
    /// Stopped on request.
    Stopped,
}

impl InstanceState {
    /// Whether it is over (exited or stopped).
    pub fn is_over(&self) -> bool {
        matches!(self, Self::Exited { .. } | Self::Stopped)
    }
}

/// One replica a provisioner started.
#[derive(Debug)]
pub struct Instance {
    name: String,
    state: ArcSwap<InstanceState>,
    stop: Notify,
    events: Arc<Notify>,
}

impl Instance {
    /// A starting instance named after its deployment and a sequence
    /// number; `events` is notified on every state change.
    pub fn new(deployment: &str, events: Arc<Notify>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            name: format!("{deployment}#{n}"),
            state: ArcSwap::from_pointee(InstanceState::Starting),
            stop: Notify::new(),
            events,
        }
    }

    /// `model/deployment#n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its state now.
    pub fn state(&self) -> InstanceState {
        InstanceState::clone(&self.state.load())
    }

    /// Records a new state and wakes the controller.
    pub fn set_state(&self, state: InstanceState) {
        self.state.store(Arc::new(state));
        self.events.notify_one();
    }

    /// Asks whoever supervises it to stop it (kept if asked before it waits).
    pub fn request_stop(&self) {
        self.stop.notify_one();
    }

    /// Resolves once a stop has been requested.
    pub async fn stop_requested(&self) {
        self.stop.notified().await;
    }
}
