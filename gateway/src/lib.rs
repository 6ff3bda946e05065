//! The inference gateway: a Pingora proxy that routes predict requests to
//! model replicas.
//!
//! A request flows through the modules in this order:
//! [`route`] (which model, which target, what call) -> authentication and
//! resolution against the current `control::Snapshot` -> replica pick ->
//! [`proxy`] (upstream peer, streaming) -> [`reject`] for every refusal.
//! [`server`] wires it into a Pingora server; `main.rs` is the CLI.
//! Every request is counted in its route's metrics ([`telemetry`] renders
//! them) and, when sampled, written to the [`access_log`].

pub mod access_log;
pub mod admin;
pub mod ops;
pub mod process;
pub mod proxy;
pub mod reject;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod telemetry;

pub use proxy::{DEPLOYMENT_HEADER, Gateway};
