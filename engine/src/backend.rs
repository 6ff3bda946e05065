//! What runs a prediction. One trait, several implementations.

use config::SyntheticSettings;

/// One input to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text, as the client sent it.
    Text(String),
    /// Token ids of the model's vocabulary, without the special tokens the
    /// model adds around a text (OpenAI's token-array input): the ids of
    /// `Text(t)` tokenized without special tokens give the same output as
    /// `t`.
    Tokens(Vec<u32>),
    /// Token ids ready for the model, special tokens included: what a text
    /// backend's [`Backend::check`] turns the other two into, so that an
    /// input is tokenized once, not again for the batch.
    Encoded(Vec<u32>),
}

impl Input {
    /// How big the input is, for the synthetic backend's output: characters
    /// of a text, ids of a token input.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.chars().count(),
            Self::Tokens(ids) | Self::Encoded(ids) => ids.len(),
        }
    }

    /// Whether the input is empty (no characters or no ids).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One input's output. `POST /predict` serializes it as it is; the other
/// APIs (OpenAI, KServe v2) reshape it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Output {
    /// A text embedding: `{"embedding": [...], "tokens": N}`.
    Embedding(Embedding),
    /// A classifier's verdict on a text:
    /// `{"labels": [{"label": "sports", "score": 0.93}, ...], "tokens": N}`.
    Classification(Classification),
    /// The synthetic backend's description of the input and its batch:
    /// `{"chars": N, "batch": B}`.
    Synthetic {
        /// Characters (or token ids) of the input.
        chars: usize,
        /// Inputs in the batch it ran in.
        batch: usize,
    },
}

/// One text's embedding and how many tokens it was.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Embedding {
    /// Unit-length vector.
    pub embedding: Vec<f32>,
    /// Tokens the text became, special tokens included.
    pub tokens: usize,
}

/// One text's class probabilities and how many tokens it was.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Classification {
    /// Every label of the model with its probability (the softmax of the
    /// model's logits), highest first.
    pub labels: Vec<LabelScore>,
    /// Tokens the text became, special tokens included.
    pub tokens: usize,
}

/// A label and its probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelScore {
    /// The label's name (`id2label` of the model's `config.json`).
    pub label: String,
    /// Its probability, in [0, 1]; a text's scores sum to 1.
    pub score: f32,
}

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
    /// A text backend also tokenizes them here ([`Input::Encoded`]).
    async fn check(&self, inputs: Vec<Input>) -> Result<Vec<Input>, BackendError> {
        Ok(inputs)
    }

    /// Runs one batch: one output per input, in order.
    async fn infer(&self, inputs: Vec<Input>) -> Result<Vec<Output>, BackendError>;

    /// What the model serving now produces. Asked per request: a reloaded
    /// model may differ.
    fn kind(&self) -> ModelKind {
        ModelKind::Other
    }
}

/// What a backend's model produces per input, for the APIs that describe
/// their outputs up front (OpenAI embeddings, KServe v2 metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// An [`Output::Embedding`] of `width` values.
    Embedding {
        /// Values per embedding.
        width: usize,
    },
    /// An [`Output::Classification`] over `labels` labels.
    Classifier {
        /// Labels the model scores.
        labels: usize,
    },
    /// Something else (the synthetic backend's descriptions).
    Other,
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

#[async_trait::async_trait]
impl Backend for Synthetic {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    async fn check(&self, inputs: Vec<Input>) -> Result<Vec<Input>, BackendError> {
        let percent = self.profile.error_percent;
        if percent > 0 && fastrand::u32(0..100) < percent {
            return Err(BackendError::Failed(format!(
                "synthetic failure (error_percent = {percent})"
            )));
        }
        Ok(inputs)
    }

    async fn infer(&self, inputs: Vec<Input>) -> Result<Vec<Output>, BackendError> {
        let p = &self.profile;
        let jitter = p.jitter.mul_f64(fastrand::f64());
        let delay = p.fixed + p.per_item * inputs.len() as u32 + jitter;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let batch = inputs.len();
        Ok(inputs
            .iter()
            .map(|input| Output::Synthetic {
                chars: input.len(),
                batch,
            })
            .collect())
    }
}
