//! A fleet of gateways sharing one config through etcd.
//!
//! Each gateway's own file holds what belongs to its machine (`[listeners]`,
//! `[server]`, `[node]`, and `[fleet]` naming the etcd endpoints and a key
//! prefix); the shared document (keys, models, deployments, environments)
//! is TOML text under one etcd key ([`config::Fleet::config_key`]).
//!
//! - [`SharedDocument`]: reading and writing that key. Writes are
//!   compare-and-swap transactions on the key's revision, which the
//!   management API shows as its ETag.
//! - [`FleetConfig`]: every gateway watches the key and applies each
//!   revision, in order, through the same validate-then-swap path as a
//!   file reload; while etcd is out of reach it keeps serving the last one
//!   and reports itself stale.
//! - [`Registry`]: membership and the replica registry. Each node
//!   registers itself and its ready replicas under a lease; every node
//!   routes to every node's replicas; a dead node's leave with its lease.
//!   It also publishes the node's load per local deployment.
//! - [`Leader`]: one node, elected through etcd, sums the fleet's load,
//!   runs the autoscaler and writes each deployment's [`Placement`] on
//!   nodes; each node's scaling controller runs what is placed on it.

mod document;
mod leader;
mod load;
mod placement;
mod registry;
mod watch;

pub use document::{FleetError, SharedDocument, Versioned};
pub use leader::Leader;
pub use load::{Counts, DeploymentLoad, NodeLoad, RolloutCounts, fleet_rollout};
pub use placement::{DeploymentPlacement, Placed, Placement};
pub use registry::{NodeRecord, Registry};
pub use watch::FleetConfig;
