//! Raw serde sections, exactly as written in the file. Every field is
//! optional here so that missing fields become validation errors with a
//! location, and the defaults live in one place (`validate`).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawListeners {
    pub(crate) predict: Option<String>,
    pub(crate) admin: Option<String>,
    pub(crate) tls: Option<RawTlsListener>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawTlsListener {
    pub(crate) address: Option<String>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawServer {
    pub(crate) threads: Option<u32>,
    pub(crate) grace_period_secs: Option<u32>,
    pub(crate) upstream_keepalive_pool_size: Option<u32>,
    pub(crate) upstream_connect_timeout_ms: Option<u32>,
    pub(crate) upstream_read_timeout_secs: Option<u32>,
    pub(crate) upstream_idle_timeout_secs: Option<u32>,
    pub(crate) max_request_body_bytes: Option<u64>,
    pub(crate) keepalive_timeout_secs: Option<u32>,
    pub(crate) client_header_timeout_secs: Option<u32>,
    pub(crate) client_body_timeout_secs: Option<u32>,
    pub(crate) max_request_head_bytes: Option<u32>,
    pub(crate) max_uri_bytes: Option<u32>,
    pub(crate) client_send_timeout_secs: Option<u32>,
    pub(crate) response_buffer_bytes: Option<u64>,
    pub(crate) request_timeout_secs: Option<u32>,
    pub(crate) upstream_first_byte_timeout_secs: Option<u32>,
    pub(crate) max_connections: Option<u32>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) tcp_keepalive_secs: Option<u32>,
    pub(crate) forwarded_for: Option<String>,
    pub(crate) expose_replica_id: Option<bool>,
    pub(crate) max_failed_starts: Option<u32>,
    pub(crate) usage_interval_secs: Option<u32>,
    pub(crate) upgrade_socket: Option<String>,
    pub(crate) max_parked_bytes: Option<u64>,
    pub(crate) request_metrics: Option<bool>,
    pub(crate) access_log: Option<RawAccessLog>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAccessLog {
    pub(crate) mode: Option<String>,
    pub(crate) sample_rate: Option<f64>,
    pub(crate) path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAdmin {
    pub(crate) api_may_set_paths: Option<bool>,
    pub(crate) api_may_set_replica_addresses: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawNode {
    pub(crate) name: Option<String>,
    pub(crate) replica_host: Option<String>,
    pub(crate) cpus: Option<f64>,
    pub(crate) memory: Option<String>,
    pub(crate) accelerators: Option<BTreeMap<String, i64>>,
    pub(crate) engine: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFleet {
    pub(crate) endpoints: Option<Vec<String>>,
    pub(crate) prefix: Option<String>,
    pub(crate) lease_ttl_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawScope {
    Word(String),
    Models(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawApiKey {
    pub(crate) name: Option<String>,
    pub(crate) sha256: Option<String>,
    pub(crate) scope: Option<RawScope>,
}

/// The scalar fields of a `[[models]]` entry; its deployments and
/// environments are parsed one by one so each gets its own errors.
#[derive(Debug, Deserialize)]
pub(crate) struct RawModelHeader {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAutoscaling {
    pub(crate) min_replica: Option<i64>,
    pub(crate) max_replica: Option<i64>,
    pub(crate) autoscaling_window: Option<i64>,
    pub(crate) scale_down_delay: Option<i64>,
    pub(crate) max_scale_down_rate: Option<i64>,
    pub(crate) concurrency_target: Option<i64>,
    pub(crate) target_utilization_percentage: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawResources {
    pub(crate) cpu: Option<f64>,
    pub(crate) memory: Option<String>,
    pub(crate) accelerator: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawReplicas {
    pub(crate) source: Option<String>,
    pub(crate) addresses: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawQueue {
    pub(crate) max_length: Option<i64>,
    pub(crate) timeout_secs: Option<i64>,
    pub(crate) backpressure: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawDeployment {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) active: Option<bool>,
    pub(crate) instance_type: Option<String>,
    pub(crate) resources: Option<RawResources>,
    pub(crate) predict_concurrency: Option<i64>,
    pub(crate) autoscaling: Option<RawAutoscaling>,
    pub(crate) replicas: Option<RawReplicas>,
    pub(crate) engine: Option<RawEngine>,
    pub(crate) queue: Option<RawQueue>,
    pub(crate) max_request_body_bytes: Option<u64>,
    pub(crate) sync_routes: Option<Vec<String>>,
    pub(crate) outlier_detection: Option<RawOutlierDetection>,
    pub(crate) retry: Option<RawRetry>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRetry {
    pub(crate) attempts: Option<i64>,
    pub(crate) budget_percent: Option<i64>,
    pub(crate) min_retries_per_sec: Option<i64>,
    pub(crate) backoff_ms: Option<i64>,
    pub(crate) max_backoff_ms: Option<i64>,
    pub(crate) idempotent: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawOutlierDetection {
    pub(crate) consecutive_failures: Option<i64>,
    pub(crate) base_ejection_secs: Option<i64>,
    pub(crate) max_ejection_secs: Option<i64>,
    pub(crate) max_ejected_percent: Option<i64>,
    pub(crate) latency_factor: Option<i64>,
    pub(crate) restart_after_ejections: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawPromotion {
    pub(crate) cleanup_strategy: Option<String>,
    pub(crate) ramp_up: Option<bool>,
    pub(crate) ramp_up_duration: Option<i64>,
    pub(crate) rollback: Option<RawRollback>,
}

/// A float field takes integers too (`5` or `5.0`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRollback {
    pub(crate) max_error_rate_increase_pct: Option<f64>,
    pub(crate) max_p99_increase_ms: Option<i64>,
    pub(crate) min_requests: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawRollout {
    pub(crate) deployment: Option<String>,
    pub(crate) started_at_ms: Option<i64>,
    pub(crate) duration_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawEnvironment {
    pub(crate) name: Option<String>,
    pub(crate) deployment: Option<String>,
    pub(crate) autoscaling: Option<RawAutoscaling>,
    pub(crate) promotion: Option<RawPromotion>,
    pub(crate) rollout: Option<RawRollout>,
}

/// A model with its sections; `None` where a section failed to parse (its
/// errors are already recorded).
#[derive(Debug)]
pub(crate) struct RawModel {
    pub(crate) header: Option<RawModelHeader>,
    pub(crate) deployments: Vec<Option<RawDeployment>>,
    pub(crate) environments: Vec<Option<RawEnvironment>>,
}

/// The whole document, section by section.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub(crate) listeners: Option<RawListeners>,
    pub(crate) server: Option<RawServer>,
    pub(crate) api_keys: Vec<Option<RawApiKey>>,
    pub(crate) models: Vec<RawModel>,
    pub(crate) node: Option<RawNode>,
    pub(crate) admin: Option<RawAdmin>,
    pub(crate) fleet: Option<RawFleet>,
}

/// `[engine]` of a replica's own file, or a deployment's `engine` table:
/// flat, with backend-specific keys checked against `backend`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawEngine {
    pub(crate) backend: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) tokenizer: Option<String>,
    pub(crate) onnxruntime: Option<String>,
    pub(crate) max_tokens: Option<i64>,
    pub(crate) threads: Option<i64>,
    pub(crate) predict_concurrency: Option<i64>,
    pub(crate) queue_size: Option<i64>,
    pub(crate) max_batch_size: Option<i64>,
    pub(crate) max_queue_delay_ms: Option<i64>,
    pub(crate) max_inputs: Option<i64>,
    pub(crate) max_request_tokens: Option<i64>,
    pub(crate) watch: Option<bool>,
    pub(crate) fixed_ms: Option<i64>,
    pub(crate) per_item_ms: Option<i64>,
    pub(crate) jitter_ms: Option<i64>,
    pub(crate) load_delay_ms: Option<i64>,
    pub(crate) error_percent: Option<i64>,
}

/// A replica's own settings file: `[engine]` only.
#[derive(Debug, Default)]
pub(crate) struct RawEngineFile {
    pub(crate) engine: Option<RawEngine>,
}
