//! The inference gateway: an application on pingora-core that routes
//! predict requests to model replicas.
//!
//! A request flows through the modules in this order:
//! [`predict`] reads it off the client connection ([`http1`], or Pingora's
//! HTTP/2 session) -> [`route`] (which model, which target, what call) ->
//! authentication and resolution against the current `routing::Snapshot`
//! -> replica pick -> [`predict`] again
//! (a pooled replica connection from [`connections`], one write of head
//! and body, the response streamed back) -> [`reject`] for every refusal.
//! [`server`] wires it into a Pingora server; `main.rs` is the CLI.
//! Every request is counted in its route's metrics ([`telemetry`] renders
//! them) and, when sampled, written to the [`access_log`].

pub mod access_log;
pub mod admin;
pub mod admin_client;
pub mod conn_limit;
pub mod connections;
pub mod fd_limit;
pub mod fleet_cli;
pub mod fuzzing;
pub mod http1;
mod listen;
pub mod overload;
pub mod predict;
pub mod proc_metrics;
pub mod reject;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod upgrade;

pub use predict::{DEPLOYMENT_HEADER, Gateway};
