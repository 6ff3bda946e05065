//! What the edits take. Each type mirrors its part of the TOML file, and the
//! HTTP layer deserializes JSON request bodies straight into them; unknown
//! fields are refused so that a typo is an error, not a silent no-op.
//! Values are only shaped here: ranges and cross-references are checked by
//! validating the edited document, so the rules live in one place.

use serde::{Deserialize, Deserializer, de::Error as _};
use toml_edit::{Array, InlineTable, Table, Value};

use crate::model::{CleanupStrategy, DeploymentKind};

/// A new deployment (`[[models.deployments]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDeployment {
    /// Default: 8 random lowercase letters and digits.
    pub id: Option<String>,
    /// Default: `deployment-N`, one past the highest such name in the model
    /// (a development deployment is named `development`).
    pub name: Option<String>,
    /// `"regular"` (default) or `"development"`.
    #[serde(default, deserialize_with = "deployment_kind")]
    pub kind: Option<DeploymentKind>,
    /// Default true.
    pub active: Option<bool>,
    /// `"CPUxMEM"`, `"ACC:CPUxMEM"` or `"ACC:N"`; or set `resources`.
    pub instance_type: Option<String>,
    /// What one replica needs, instead of `instance_type`.
    pub resources: Option<ResourcesSpec>,
    /// Requests one replica runs at once. Default 1.
    pub predict_concurrency: Option<i64>,
    /// Autoscaling settings; the rest keep their defaults.
    pub autoscaling: Option<AutoscalingPatch>,
    /// Where replicas come from.
    pub replicas: ReplicasSpec,
    /// How a replica runs (an `[engine]` table, checked by validation);
    /// required with local replicas. Its file paths (`model`, `tokenizer`,
    /// `onnxruntime`) only with `[admin] api_may_set_paths = true`.
    pub engine: Option<toml::Table>,
    /// Its activation queue (a `queue` table: `max_length`, `timeout_secs`,
    /// `backpressure`; checked by validation). Default: the defaults.
    pub queue: Option<toml::Table>,
}

/// Changes to a deployment; `None` leaves a setting as it is. Autoscaling
/// and `active` have their own edits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentPatch {
    /// Display name.
    pub name: Option<String>,
    /// Replaces `resources` too: the two are alternatives.
    pub instance_type: Option<String>,
    /// Replaces the whole `resources` table and removes `instance_type`.
    pub resources: Option<ResourcesSpec>,
    /// Requests one replica runs at once.
    pub predict_concurrency: Option<i64>,
    /// Replaces the replica source and addresses.
    pub replicas: Option<ReplicasSpec>,
    /// Replaces the whole engine table; its file paths must stay as they
    /// are unless `[admin] api_may_set_paths = true`.
    pub engine: Option<toml::Table>,
    /// Replaces the whole queue table.
    pub queue: Option<toml::Table>,
}

impl DeploymentPatch {
    pub(super) fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.instance_type.is_none()
            && self.resources.is_none()
            && self.predict_concurrency.is_none()
            && self.replicas.is_none()
            && self.engine.is_none()
            && self.queue.is_none()
    }
}

/// A deployment's `resources` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    /// Cores. Default 1.
    pub cpu: Option<f64>,
    /// `"512Mi"`, `"16Gi"`. Default `"2Gi"`.
    pub memory: Option<String>,
    /// `"L4"` or `"H100:2"`. Default none.
    pub accelerator: Option<String>,
}

impl ResourcesSpec {
    pub(super) fn values(&self) -> Vec<(String, Value)> {
        let mut values = Vec::new();
        push(&mut values, "cpu", self.cpu);
        push(&mut values, "memory", self.memory.clone());
        push(&mut values, "accelerator", self.accelerator.clone());
        values
    }
}

/// A deployment's `replicas` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicasSpec {
    /// `"local"`: engine processes the gateway starts on this machine (the
    /// deployment needs an `engine` table); `"static"`: fixed replicas run
    /// elsewhere.
    pub source: String,
    /// `ip:port` of each static replica; leave empty (or out) for local ones.
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl ReplicasSpec {
    pub(super) fn values(&self) -> Vec<(String, Value)> {
        let mut values = vec![("source".to_owned(), self.source.as_str().into())];
        // Written for static replicas even when empty (the file says so
        // explicitly); for any other source only when given, so that
        // validation can refuse them.
        if self.source == "static" || !self.addresses.is_empty() {
            let addresses: Array = self.addresses.iter().collect();
            values.push(("addresses".to_owned(), addresses.into()));
        }
        values
    }
}

/// Autoscaling settings to merge into a deployment's or an environment's
/// `autoscaling` table; `None` leaves a setting as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalingPatch {
    /// Lowest replica count.
    pub min_replica: Option<i64>,
    /// Highest replica count.
    pub max_replica: Option<i64>,
    /// Seconds over which in-flight requests are averaged.
    pub autoscaling_window: Option<i64>,
    /// Seconds load must stay low before each scale-down.
    pub scale_down_delay: Option<i64>,
    /// Most percent of replicas removed per scale-down step.
    pub max_scale_down_rate: Option<i64>,
    /// In-flight requests per replica to aim for.
    pub concurrency_target: Option<i64>,
    /// Share of `concurrency_target` used before scaling up.
    pub target_utilization_percentage: Option<i64>,
}

impl AutoscalingPatch {
    pub(super) fn values(&self) -> Vec<(String, Value)> {
        let mut values = Vec::new();
        for (key, value) in [
            ("min_replica", self.min_replica),
            ("max_replica", self.max_replica),
            ("autoscaling_window", self.autoscaling_window),
            ("scale_down_delay", self.scale_down_delay),
            ("max_scale_down_rate", self.max_scale_down_rate),
            ("concurrency_target", self.concurrency_target),
            (
                "target_utilization_percentage",
                self.target_utilization_percentage,
            ),
        ] {
            push(&mut values, key, value);
        }
        values
    }
}

/// Whose autoscaling settings an edit changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoscalingScope {
    /// A deployment: its id, `development` or `production`.
    Deployment(String),
    /// An environment's settings, applied to the deployment it serves.
    Environment(String),
}

/// Promotion settings to merge into an environment's `promotion` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionPatch {
    /// `"SCALE_TO_ZERO"`, `"KEEP"` or `"DEACTIVATE"`.
    #[serde(default, deserialize_with = "cleanup_strategy")]
    pub cleanup_strategy: Option<CleanupStrategy>,
    /// Move traffic gradually.
    pub ramp_up: Option<bool>,
    /// Seconds a ramp-up takes.
    pub ramp_up_duration: Option<i64>,
    /// Merged into its `rollback` inline table, which is created when
    /// missing (even from an empty patch: the guard, with its defaults).
    pub rollback: Option<RollbackPatch>,
}

impl PromotionPatch {
    /// The scalar settings; the rollback guard is [`Self::rollback`].
    pub(super) fn values(&self) -> Vec<(String, Value)> {
        let mut values = Vec::new();
        push(
            &mut values,
            "cleanup_strategy",
            self.cleanup_strategy.map(cleanup_strategy_name),
        );
        push(&mut values, "ramp_up", self.ramp_up);
        push(&mut values, "ramp_up_duration", self.ramp_up_duration);
        values
    }

    /// Nothing to write.
    pub(super) fn is_empty(&self) -> bool {
        self.values().is_empty() && self.rollback.is_none()
    }
}

/// Rollback guard settings to merge into a `promotion.rollback` table;
/// `None` leaves a setting as it is (or at its default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackPatch {
    /// Most the new deployment's error rate may exceed the old one's, in
    /// percentage points (0-100; default 5).
    pub max_error_rate_increase_pct: Option<f64>,
    /// Most its p99 latency may exceed the old one's, in ms (default 250).
    pub max_p99_increase_ms: Option<i64>,
    /// Requests per side in a stage before they are compared (default 50).
    pub min_requests: Option<i64>,
}

impl RollbackPatch {
    pub(super) fn values(&self) -> Vec<(String, Value)> {
        let mut values = Vec::new();
        push(
            &mut values,
            "max_error_rate_increase_pct",
            self.max_error_rate_increase_pct,
        );
        push(&mut values, "max_p99_increase_ms", self.max_p99_increase_ms);
        push(&mut values, "min_requests", self.min_requests);
        values
    }
}

/// A new environment (`[[models.environments]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    /// Lowercase letters, digits, `-`, `_`.
    pub name: String,
    /// The deployment it serves (id, `development` or `production`); none
    /// until one is promoted into it when absent.
    pub deployment: Option<String>,
    /// Settings for the deployment it serves.
    pub autoscaling: Option<AutoscalingPatch>,
    /// Promotion behaviour.
    pub promotion: Option<PromotionPatch>,
}

/// Changes to an environment; which deployment it serves changes with
/// `point_environment`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentPatch {
    /// Merged into its `autoscaling` table.
    pub autoscaling: Option<AutoscalingPatch>,
    /// Merged into its `promotion` table.
    pub promotion: Option<PromotionPatch>,
}

/// `values` as a fresh table, for new entries.
pub(super) fn table_of(values: Vec<(String, Value)>) -> Table {
    values.into_iter().collect()
}

/// A free-form table from the API as TOML key/values.
pub(super) fn toml_values(table: &toml::Table) -> Vec<(String, Value)> {
    table
        .iter()
        .map(|(k, v)| (k.clone(), from_toml(v)))
        .collect()
}

/// `toml::Value` (what the JSON API deserializes free-form tables into) to
/// a `toml_edit` value.
pub(super) fn from_toml(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => s.into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => (*d).into(),
        toml::Value::Array(items) => Value::Array(items.iter().map(from_toml).collect()),
        toml::Value::Table(table) => Value::InlineTable(
            table
                .iter()
                .map(|(k, v)| (k.as_str(), from_toml(v)))
                .collect(),
        ),
    }
}

/// `values` as an inline table, for new `key = { ... }` values.
pub(super) fn inline_of(values: Vec<(String, Value)>) -> InlineTable {
    values.into_iter().collect()
}

pub(super) fn deployment_kind_name(kind: DeploymentKind) -> &'static str {
    match kind {
        DeploymentKind::Regular => "regular",
        DeploymentKind::Development => "development",
    }
}

fn cleanup_strategy_name(strategy: CleanupStrategy) -> &'static str {
    match strategy {
        CleanupStrategy::ScaleToZero => "SCALE_TO_ZERO",
        CleanupStrategy::Keep => "KEEP",
        CleanupStrategy::Deactivate => "DEACTIVATE",
    }
}

fn push<T: Into<Value>>(values: &mut Vec<(String, Value)>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        values.push((key.to_owned(), value.into()));
    }
}

fn deployment_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DeploymentKind>, D::Error> {
    Ok(match Option::<String>::deserialize(d)?.as_deref() {
        None => None,
        Some("regular") => Some(DeploymentKind::Regular),
        Some("development") => Some(DeploymentKind::Development),
        Some(other) => {
            return Err(D::Error::custom(format!(
                "unknown deployment kind `{other}`: use \"regular\" or \"development\""
            )));
        }
    })
}

fn cleanup_strategy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CleanupStrategy>, D::Error> {
    Ok(match Option::<String>::deserialize(d)?.as_deref() {
        None => None,
        Some("SCALE_TO_ZERO") => Some(CleanupStrategy::ScaleToZero),
        Some("KEEP") => Some(CleanupStrategy::Keep),
        Some("DEACTIVATE") => Some(CleanupStrategy::Deactivate),
        Some(other) => {
            return Err(D::Error::custom(format!(
                "unknown cleanup strategy `{other}`: use SCALE_TO_ZERO, KEEP or DEACTIVATE"
            )));
        }
    })
}
