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

pub mod handover;
mod local;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use config::EngineSettings;
use tokio::sync::Notify;

pub use handover::Released;
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
    /// A replica handed over by the previous gateway cannot be taken over.
    #[error("cannot adopt replica {name} (pid {pid}): {why}")]
    Adopt {
        /// Its name.
        name: String,
        /// Its process id.
        pid: i32,
        /// Why not.
        why: String,
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

    /// For a binary upgrade: describes a running replica and copies what
    /// the next gateway process needs to keep it ([`handover`]). Changes
    /// nothing here: until [`Provisioner::detach`] this process still owns
    /// it. `None` when it is not running, or this provisioner's replicas
    /// cannot outlive their gateway.
    fn hand_over(&self, _instance: &Instance) -> Option<Released> {
        None
    }

    /// The next gateway holds the replica now: stop supervising it without
    /// stopping it.
    fn detach(&self, _instance: &Instance) {}

    /// Takes over a replica the previous gateway handed over; it is
    /// [`InstanceState::Starting`] until its readiness probe passes.
    fn adopt(&self, replica: Released) -> Result<Arc<Instance>, ProvisionError> {
        Err(ProvisionError::Adopt {
            name: replica.record.name,
            pid: replica.record.pid,
            why: "this provisioner does not adopt replicas".into(),
        })
    }
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

/// The sequence number of the next instance's name.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

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
        let n = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        Self::named(format!("{deployment}#{n}"), events)
    }

    /// A starting instance that keeps the name a previous gateway gave it
    /// (the replica's `--replica-id`); later names do not repeat it.
    pub fn adopted(name: String, events: Arc<Notify>) -> Self {
        if let Some(n) = name
            .rsplit_once('#')
            .and_then(|(_, n)| n.parse::<u64>().ok())
        {
            NEXT_INSTANCE.fetch_max(n + 1, Ordering::Relaxed);
        }
        Self::named(name, events)
    }

    fn named(name: String, events: Arc<Notify>) -> Self {
        Self {
            name,
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
