//! The data plane: everything a request touches between the gateway's
//! parse of its head and the replica's slot, in the order it meets them.
//!
//! 1. [`publish`]: one atomic load of the current [`Snapshot`] ([`Routing::load`]).
//! 2. [`auth`]: the key in `Authorization`, against the snapshot's [`KeyTable`].
//! 3. [`snapshot`]: the model, then its environment or deployment, resolved
//!    by hash lookups to a pre-built route (the same for 10 models as for
//!    10,000).
//! 4. [`rollout`]: during a canary, the side (stable or canary) by a smooth
//!    weighted split or a sticky session.
//! 5. [`pool`]: the deployment's admission: a slot now ([`Lease`]), a place
//!    in the activation queue ([`Parked`]), or a refusal.
//! 6. [`replicas`]: which replica's slot (power of two choices, with
//!    rendezvous affinity), and [`outlier`]: what its answers say of it.
//! 7. [`retry`]: whether a failed attempt may go elsewhere (a budget).
//! 8. [`telemetry`]: the per-route metric handles the request records into.
//!
//! The crate owns no runtime, no thread and no file: the gateway's workers
//! call into it, and the control plane (crate `control`) builds and
//! publishes what it reads. The workspace's hot-path bans (no std locks but
//! the activation queue's, no blocking sleeps, tokio's clock) hold here
//! without exception.

pub mod publish;

pub mod auth;
pub mod snapshot;

pub mod rollout;

pub mod pool;

pub mod outlier;
pub mod replicas;

pub mod retry;

pub mod shortage;
pub mod telemetry;

mod buckets;

pub use auth::{AuthError, KeyTable, Principal, header_digest};
pub use pool::{
    Admission, DeploymentWithdrawn, Lease, Overload, Parked, ParkedBytes, Pool, ReplicaCounts,
    ScaleSignal, ScaleStatus,
};
pub use publish::Routing;
pub use replicas::{Health, Replica, ReplicaSet};
pub use rollout::RolloutState;
pub use snapshot::{
    DeploymentRoute, EnvironmentRoute, ModelRoutes, Resolved, RolloutRoute, RouteError,
    SidePreference, Snapshot, Target, Update,
};
