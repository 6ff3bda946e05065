//! The replica's Prometheus metrics. Names share the `igw_` prefix with the
//! gateway's; every label value is bounded (status codes, fixed reasons).
//!
//! Recording goes through the `metrics` facade and costs nothing until a
//! recorder is installed ([`install`], done by the binary), so library
//! users and unit tests pay no global state.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, Input, Output};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by status code.
pub const REQUESTS: &str = "igw_engine_requests_total";
/// Requests refused because the wait queue was full.
pub const REJECTED: &str = "igw_engine_rejected_total";
/// Time a request waited for a running slot.
pub const QUEUE_WAIT: &str = "igw_engine_queue_wait_seconds";
/// Time one backend call (one batch) took.
pub const INFERENCE: &str = "igw_engine_inference_seconds";
/// Inputs per backend call.
pub const BATCH_SIZE: &str = "igw_engine_batch_size";
/// Predictions running now.
pub const RUNNING: &str = "igw_engine_running";
/// Predictions waiting for a slot now.
pub const WAITING: &str = "igw_engine_waiting";
/// 1 once the model is loaded and warmed up.
pub const READY: &str = "igw_engine_ready";
/// Live model reloads (`--watch`), by outcome.
pub const MODEL_RELOADS: &str = "igw_engine_model_reloads_total";

/// Installs the process-wide Prometheus recorder; `/metrics` renders it.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    const SECONDS: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), SIZES)?
        .install_recorder()?;
    metrics::describe_counter!(REQUESTS, "Predict requests answered, by status code.");
    metrics::describe_counter!(REJECTED, "Predict requests refused at once, by reason.");
    metrics::describe_histogram!(
        QUEUE_WAIT,
        metrics::Unit::Seconds,
        "Time waiting for a running slot."
    );
    metrics::describe_histogram!(
        INFERENCE,
        metrics::Unit::Seconds,
        "Time of one backend call (one batch)."
    );
    metrics::describe_histogram!(BATCH_SIZE, "Inputs per backend call.");
    metrics::describe_gauge!(RUNNING, "Predictions running now.");
    metrics::describe_gauge!(WAITING, "Predictions waiting for a running slot now.");
    metrics::describe_gauge!(READY, "1 once the model is loaded and a warm-up passed.");
    metrics::describe_counter!(
        MODEL_RELOADS,
        "Live model reloads, by outcome (applied, failed)."
    );
    Ok(handle)
}

pub(crate) fn request(status: u16) {
    counter!(REQUESTS, "status" => status_label(status)).increment(1);
}

pub(crate) fn rejected_queue_full() {
    counter!(REJECTED, "reason" => "queue_full").increment(1);
}

pub(crate) fn rejected_too_many_inputs() {
    counter!(REJECTED, "reason" => "too_many_inputs").increment(1);
}

pub(crate) fn queue_wait(waited: Duration) {
    histogram!(QUEUE_WAIT).record(waited.as_secs_f64());
}

/// Runs one backend call and records its time and batch size.
pub(crate) async fn infer(
    backend: &dyn Backend,
    inputs: Vec<Input>,
) -> Result<Vec<Output>, BackendError> {
    let size = inputs.len();
    let started = Instant::now();
    let result = backend.infer(inputs).await;
    histogram!(INFERENCE).record(started.elapsed().as_secs_f64());
    histogram!(BATCH_SIZE).record(size as f64);
    result
}

pub(crate) fn occupancy(running: usize, waiting: usize) {
    gauge!(RUNNING).set(running as f64);
    gauge!(WAITING).set(waiting as f64);
}

pub(crate) fn model_reload(applied: bool) {
    let outcome = if applied { "applied" } else { "failed" };
    counter!(MODEL_RELOADS, "outcome" => outcome).increment(1);
}

pub(crate) fn ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// Status codes as static strings: no allocation per request, and a
/// bounded label set whatever the clients send.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        404 => "404",
        405 => "405",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}
