//! One model replica: an HTTP server that runs predictions on a [`Backend`].
//!
//! The replica binds the address it is given (port 0 included), loads its
//! backend, and only then prints one ready line on stdout,
//! `{"event":"ready","addr":"127.0.0.1:PORT"}`, so a provisioner can start
//! it without picking ports. Routes: `POST /predict`, `GET /health/live`,
//! `GET /health/ready`, `GET /metrics` (Prometheus). At most `predict_concurrency` predictions run at
//! once and a bounded queue waits behind them; beyond it, busy (503 with
//! `Retry-After`), answered before the body is read.
//!
//! Backends: [`text::TextBackend`], a text-embedding model on ONNX Runtime
//! (CPU) or TensorRT (GPU, cargo feature `tensorrt`), and
//! [`backend::Synthetic`], a latency profile for load and autoscaling tests
//! (named synthetic everywhere; it is not a model).

pub mod backend;
pub mod batching;
pub mod fuzzing;
pub mod limiter;
pub mod server;
pub mod telemetry;
#[cfg(feature = "tensorrt")]
pub mod tensorrt;
pub mod text;
pub mod watch;

pub use backend::{Backend, BackendError, Output, Synthetic};
pub use batching::{BatchSettings, Batcher};
pub use config::{ReadyLine, ReadyLineError};
pub use server::{Loader, ServerSettings, serve};
