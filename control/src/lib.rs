//! The control plane: the loops that decide what the data plane (crate
//! `routing`) serves. None of it runs per request.
//!
//! - [`Reloader`] and [`store`]: the config file, watched and edited; each
//!   valid version becomes a new [`routing::Snapshot`], published lock-free.
//! - [`fleet`]: the same, for a fleet of gateways sharing one document
//!   in etcd.
//! - [`api`]: the management REST API over the store.
//! - [`promotion`]: promotions and canary rollouts, stage by stage.
//! - [`scaling`]: the scaling controller, its [`Autoscaler`], the node's
//!   [`capacity`] and the [`provision`]er that starts replicas.
//! - [`health`]: readiness probes of every replica.
//! - [`usage`]: the usage ledger.
//! - [`status`]: control-plane gauges, set when `/metrics` is scraped.
//!
//! Each loop is a task on the one runtime of a [`plane::Plane`] and ends
//! when its shutdown signal comes.

// Off the request path, short std lock sections (never across an await:
// `await_holding_lock` is denied) are the simplest correct tool; the
// routing crate keeps the ban.
#![allow(clippy::disallowed_types)]

pub mod api;
mod autoscaler;
pub mod capacity;
pub mod fleet;
pub mod health;
pub mod plane;
pub mod promotion;
pub mod provision;
mod reload;
pub mod scaling;
pub mod status;
pub mod store;
pub mod usage;

pub use autoscaler::{Autoscaler, Decision};
pub use health::{HealthChecker, HealthSettings};
pub use reload::{FileWatch, ReloadOutcome, Reloader, WatchError};
