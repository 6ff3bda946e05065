//! What runs a prediction. One trait, several implementations.

use std::time::Duration;

use serde_json::{Value, json};

/// Why a backend refused or failed an input.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The request does not fit the backend's input schema (400).
    #[error("{0}")]
    BadInput(String),
    /// The backend failed (500).
    #[error("inference failed: {0}")]
    Failed(String),
}

/// Runs predictions for one replica.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and responses, e.g. `synthetic`.
    fn name(&self) -> &'static str;

    /// Runs one batch: one output per input, in order.
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Value>, BackendError>;
}

/// Latency profile of the synthetic backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyntheticProfile {
    /// Cost of every request.
    pub fixed: Duration,
    /// Extra cost per input item.
    pub per_item: Duration,
}

/// A backend that does no inference: it waits as its profile says (fixed
/// cost per batch plus a cost per item) and describes each input and the
/// batch it ran in. For load, routing, batching and autoscaling tests.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    profile: SyntheticProfile,
}

impl Synthetic {
    /// A synthetic backend with this latency profile.
    pub fn new(profile: SyntheticProfile) -> Self {
        Self { profile }
    }
}

/// The input texts: `{"text": "..."}` or `{"inputs": ["...", ...]}`.
pub fn input_texts(input: &Value) -> Result<Vec<&str>, BackendError> {
    let bad = || {
        BackendError::BadInput(
            "expected {\"text\": \"...\"} or {\"inputs\": [\"...\", ...]}".into(),
        )
    };
    if let Some(text) = input.get("text") {
        return Ok(vec![text.as_str().ok_or_else(bad)?]);
    }
    let items = input
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(bad)?;
    items.iter().map(|v| v.as_str().ok_or_else(bad)).collect()
}

#[async_trait::async_trait]
impl Backend for Synthetic {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    async fn infer(&self, inputs: &[String]) -> Result<Vec<Value>, BackendError> {
        let delay = self.profile.fixed + self.profile.per_item * inputs.len() as u32;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let batch = inputs.len();
        Ok(inputs
            .iter()
            .map(|t| json!({ "chars": t.chars().count(), "batch": batch }))
            .collect())
    }
}
