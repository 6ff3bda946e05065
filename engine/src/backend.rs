//! What runs a prediction. One trait, several implementations.

use config::SyntheticSettings;
use serde_json::Value;
use serde_json::value::RawValue;

/// One input's output, already serialized (floats keep their f32 form).
pub type Output = Box<RawValue>;

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

    /// Refuses inputs this backend cannot run (e.g. too many tokens), per
    /// request and before batching, so one bad input never fails a batch.
    /// Takes the inputs and hands them back, so a backend can check them on
    /// another thread without copying them.
    async fn check(&self, inputs: Vec<String>) -> Result<Vec<String>, BackendError> {
        Ok(inputs)
    }

    /// Runs one batch: one output per input, in order.
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, BackendError>;
}

/// A backend that does no inference: it waits as its profile says (fixed
/// cost per batch plus a cost per item) and describes each input and the
/// batch it ran in. For load, routing, batching and autoscaling tests.
///
/// With `error_percent`, that share of predictions fails at random (HTTP
/// 500), for rollback tests. The failure is decided per request when its
/// inputs are checked, before batching: a failed request fails alone, and
/// the warm-up prediction (which is not checked) always passes, so such a
/// replica still becomes ready.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    profile: SyntheticSettings,
}

impl Synthetic {
    /// A synthetic backend with this latency profile.
    pub fn new(profile: SyntheticSettings) -> Self {
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

    async fn check(&self, inputs: Vec<String>) -> Result<Vec<String>, BackendError> {
        let percent = self.profile.error_percent;
        if percent > 0 && fastrand::u32(0..100) < percent {
            return Err(BackendError::Failed(format!(
                "synthetic failure (error_percent = {percent})"
            )));
        }
        Ok(inputs)
    }

    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, BackendError> {
        let p = &self.profile;
        let jitter = p.jitter.mul_f64(fastrand::f64());
        let delay = p.fixed + p.per_item * inputs.len() as u32 + jitter;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let batch = inputs.len();
        inputs
            .iter()
            .map(|t| {
                let output = format!(r#"{{"chars":{},"batch":{batch}}}"#, t.chars().count());
                RawValue::from_string(output).map_err(|e| BackendError::Failed(e.to_string()))
            })
            .collect()
    }
}
