//! The gateway's metrics: names, what they mean, and the per-route handles
//! the hot path records into.
//!
//! Recording goes through the `metrics` facade; the binary installs the
//! Prometheus recorder. Every label value comes from the config (model,
//! environment and deployment ids) or from a fixed list (status codes,
//! reasons), never from what a client sends, so requests cannot grow the
//! label sets. Requests that resolve to no deployment are counted with
//! empty model, environment and deployment labels.
//!
//! The hot path touches only handles resolved once per route ([`RouteMetrics`]);
//! gauges that mirror control-plane state (queues, replicas, autoscaler,
//! canary) are set by the control plane when `/metrics` is scraped
//! (`control::status`).

mod recent;
mod route;

pub use recent::{RecentStats, RecentSummary, WINDOW};
pub use route::{Finished, RouteMetrics};

/// Requests answered, by status `code` and `class` (`2xx`...).
pub const REQUESTS: &str = "igw_requests_total";
/// Request body bytes received.
pub const REQUEST_BYTES: &str = "igw_request_bytes_total";
/// Response body bytes sent.
pub const RESPONSE_BYTES: &str = "igw_response_bytes_total";
/// Whole request, first byte in to last byte out.
pub const REQUEST_DURATION: &str = "igw_request_duration_seconds";
/// Time at the replica: from connecting to it to the end of its response.
pub const UPSTREAM_DURATION: &str = "igw_upstream_duration_seconds";
/// The gateway's own time: total minus upstream minus queue wait.
pub const OVERHEAD_DURATION: &str = "igw_gateway_overhead_seconds";
/// From the request's arrival to the replica's response head.
pub const TIME_TO_FIRST_BYTE: &str = "igw_time_to_first_byte_seconds";
/// Time parked in the activation queue (parked requests only).
pub const QUEUE_WAIT: &str = "igw_queue_wait_seconds";
/// Requests holding a replica slot now.
pub const IN_FLIGHT: &str = "igw_requests_in_flight";
/// Requests parked in the activation queue now.
pub const QUEUE_PARKED: &str = "igw_queue_parked";
/// Requests that had to park.
pub const QUEUE_PARKED_TOTAL: &str = "igw_queue_parked_total";
/// Parked requests that reached the queue timeout (503).
pub const QUEUE_TIMEOUTS: &str = "igw_queue_timeouts_total";
/// Requests refused instead of parked (429), by `reason`.
pub const QUEUE_REJECTIONS: &str = "igw_queue_rejections_total";
/// Parked requests whose client left (499).
pub const QUEUE_CLIENT_CLOSED: &str = "igw_queue_client_closed_total";
/// Replicas the autoscaler wants.
pub const REPLICAS_DESIRED: &str = "igw_replicas_desired";
/// Replicas in routing and passing probes.
pub const REPLICAS_READY: &str = "igw_replicas_ready";
/// Replicas started, not ready yet.
pub const REPLICAS_STARTING: &str = "igw_replicas_starting";
/// Replicas wanted that do not fit on the node (or wait for a restart backoff).
pub const REPLICAS_PENDING: &str = "igw_replicas_pending";
/// From the decision to start a replica to its first passed probe.
pub const REPLICA_COLD_START: &str = "igw_replica_cold_start_seconds";
/// Replicas that exited or hung and were replaced.
pub const REPLICA_RESTARTS: &str = "igw_replica_restarts_total";
/// Replicas out of routing now for what their traffic showed.
pub const REPLICAS_EJECTED: &str = "igw_replicas_ejected";
/// Ejections, by `reason` (`failures`, `latency`).
pub const REPLICA_EJECTIONS: &str = "igw_replica_ejections_total";
/// Requests tried again on another replica, by `reason`.
pub const RETRIES: &str = "igw_retries_total";
/// Retries refused because the deployment's retry budget was spent.
pub const RETRY_BUDGET_EXHAUSTED: &str = "igw_retry_budget_exhausted_total";
/// The autoscaler's stable-window signal (average concurrent requests).
pub const AUTOSCALER_STABLE: &str = "igw_autoscaler_stable_signal";
/// The autoscaler's burst-window signal.
pub const AUTOSCALER_BURST: &str = "igw_autoscaler_burst_signal";
/// 1 while the autoscaler is in burst mode.
pub const AUTOSCALER_BURST_MODE: &str = "igw_autoscaler_burst_mode";
/// The current stage of a canary rollout (0 when none).
pub const CANARY_STAGE: &str = "igw_canary_stage";
/// Percent of an environment's traffic going to the canary.
pub const CANARY_PERCENT: &str = "igw_canary_percent";
/// Rollouts the guard rolled back, by `reason`.
pub const CANARY_ROLLBACKS: &str = "igw_canary_rollbacks_total";
/// Config reloads, by `outcome` (`applied`, `rejected`).
pub const CONFIG_RELOADS: &str = "igw_config_reloads_total";
/// Applied config revision (1 = the startup file).
pub const CONFIG_REVISION: &str = "igw_config_revision";
/// Unix time of the last applied config.
pub const CONFIG_LAST_RELOAD: &str = "igw_config_last_reload_timestamp_seconds";
/// 1 while a fleet node cannot reach etcd (it serves its last config).
pub const CONFIG_STALE: &str = "igw_config_stale";
/// The etcd revision of the fleet's shared document serving now.
pub const CONFIG_FLEET_REVISION: &str = "igw_config_fleet_revision";
/// Access log lines written.
pub const ACCESS_LOG_LINES: &str = "igw_access_log_lines_total";
/// Access log lines dropped because the writer fell behind.
pub const ACCESS_LOG_DROPPED: &str = "igw_access_log_dropped_total";
/// Open TCP connections, by `side` (`downstream`, `upstream`).
pub const OPEN_CONNECTIONS: &str = "igw_open_connections";

/// Latency buckets (seconds) of the request histograms.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Buckets (seconds) of the cold-start histogram.
pub const COLD_START_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Registers the help text of every family (once, at startup).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "Requests answered, by status code and class; 499 when the client left while queued."
    );
    describe_counter!(REQUEST_BYTES, Unit::Bytes, "Request body bytes received.");
    describe_counter!(RESPONSE_BYTES, Unit::Bytes, "Response body bytes sent.");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Whole request: arrival to the last byte sent."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time at the replica: connect to the end of its response."
    );
    describe_histogram!(
        OVERHEAD_DURATION,
        Unit::Seconds,
        "The gateway's own time: total minus upstream minus queue wait."
    );
    describe_histogram!(
        TIME_TO_FIRST_BYTE,
        Unit::Seconds,
        "Arrival to the replica's response head."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time parked in the activation queue."
    );
    describe_gauge!(IN_FLIGHT, "Requests holding a replica slot now.");
    describe_gauge!(QUEUE_PARKED, "Requests parked in the activation queue now.");
    describe_counter!(QUEUE_PARKED_TOTAL, "Requests that had to park.");
    describe_counter!(
        QUEUE_TIMEOUTS,
        "Parked requests that reached the queue timeout (503)."
    );
    describe_counter!(
        QUEUE_REJECTIONS,
        "Requests refused instead of parked (429), by reason."
    );
    describe_counter!(
        QUEUE_CLIENT_CLOSED,
        "Parked requests whose client left (499)."
    );
    describe_gauge!(REPLICAS_DESIRED, "Replicas the autoscaler wants.");
    describe_gauge!(REPLICAS_READY, "Replicas in routing and passing probes.");
    describe_gauge!(REPLICAS_STARTING, "Replicas started and not ready yet.");
    describe_gauge!(
        REPLICAS_EJECTED,
        "Replicas out of routing for what their traffic showed (outlier detection)."
    );
    describe_counter!(
        REPLICA_EJECTIONS,
        "Replicas ejected by outlier detection, by reason."
    );
    describe_counter!(
        RETRIES,
        "Requests tried again on another replica, by reason."
    );
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        "Retries refused because the deployment's retry budget was spent."
    );
    describe_gauge!(
        REPLICAS_PENDING,
        "Replicas wanted that cannot start yet (node capacity, restart backoff)."
    );
    describe_histogram!(
        REPLICA_COLD_START,
        Unit::Seconds,
        "From the decision to start a replica to its first passed probe."
    );
    describe_counter!(
        REPLICA_RESTARTS,
        "Replicas that exited or hung and were replaced."
    );
    describe_gauge!(
        AUTOSCALER_STABLE,
        "Autoscaler stable-window signal: average concurrent requests."
    );
    describe_gauge!(
        AUTOSCALER_BURST,
        "Autoscaler burst-window signal: average concurrent requests."
    );
    describe_gauge!(
        AUTOSCALER_BURST_MODE,
        "1 while the autoscaler is in burst mode."
    );
    describe_gauge!(CANARY_STAGE, "Stage of the canary rollout, 0 when none.");
    describe_gauge!(
        CANARY_PERCENT,
        "Percent of the environment's traffic sent to the canary."
    );
    describe_counter!(
        CANARY_ROLLBACKS,
        "Rollouts rolled back by the guard, by reason."
    );
    describe_counter!(CONFIG_RELOADS, "Config reloads, by outcome.");
    describe_gauge!(CONFIG_REVISION, "Applied config revision (1 = startup).");
    describe_gauge!(
        CONFIG_LAST_RELOAD,
        Unit::Seconds,
        "Unix time the current config was applied."
    );
    describe_gauge!(
        CONFIG_STALE,
        "1 while this fleet node cannot reach etcd and serves its last config."
    );
    describe_gauge!(
        CONFIG_FLEET_REVISION,
        "etcd revision of the fleet's shared document applied last."
    );
    describe_counter!(ACCESS_LOG_LINES, "Access log lines written.");
    describe_counter!(
        ACCESS_LOG_DROPPED,
        "Access log lines dropped because the writer fell behind."
    );
    describe_gauge!(OPEN_CONNECTIONS, "Open TCP connections, by side.");
}
