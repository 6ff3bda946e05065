//! The control plane: turns a validated [`config::Config`] into an immutable,
//! pre-resolved routing [`Snapshot`] and publishes it lock-free to the
//! gateway's hot path through [`Routing`].
//!
//! A request costs one atomic load ([`Routing::load`]), a hash lookup of the
//! model, one of the environment or deployment, and a replica pick: the same
//! for 10 models as for 10,000.

pub mod api;
mod auth;
mod autoscaler;
mod buckets;
pub mod capacity;
pub mod health;
pub mod outlier;
pub mod pool;
pub mod promotion;
pub mod provision;
mod reload;
mod replicas;
pub mod retry;
pub mod rollout;
mod routing;
pub mod scaling;
mod snapshot;
pub mod store;
pub mod telemetry;
pub mod usage;

pub use auth::{AuthError, KeyTable, Principal, header_digest};
pub use autoscaler::{Autoscaler, Decision};
pub use health::{HealthChecker, HealthSettings};
pub use pool::{Admission, Closed, Lease, Overload, Parked, Parking, Pool, ScaleStatus};
pub use reload::{Outcome, Reloader, WatchError};
pub use replicas::{Health, Replica, ReplicaSet};
pub use routing::Routing;
pub use snapshot::{
    DeploymentRoute, EnvironmentRoute, ModelRoutes, Resolved, RolloutRoute, RolloutRuntime,
    RouteError, SidePreference, Snapshot, Target,
};
