//! The tensor half of a text model: token ids in, the model's output
//! (hidden states or logits) out. The ONNX Runtime and TensorRT backends
//! differ only here; tokenising, pooling and scoring are shared
//! ([`super::TextModel`]).

/// A padded batch of tokenised texts, row-major `[batch, seq_len]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Segment ids (all 0 for one-sentence inputs).
    pub token_type_ids: Vec<i64>,
    /// Rows.
    pub batch: usize,
    /// Columns (the longest text in the batch).
    pub seq_len: usize,
}

/// A model's output for a batch. Its rank tells the two kinds of model
/// apart, as in Hugging Face exports: a feature-extraction model gives a
/// vector per token, a sequence-classification model one row of logits
/// per text.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelOutput {
    /// `[batch, seq_len, dim]`: an embedding model, pooled per text.
    Hidden(Hidden),
    /// `[batch, labels]`: a classifier.
    Logits(Logits),
}

/// Hidden states, row-major `[batch, seq_len, dim]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hidden {
    /// The values.
    pub values: Vec<f32>,
    /// Width of one token's vector.
    pub dim: usize,
}

/// A classifier's logits, row-major `[batch, labels]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Logits {
    /// The values.
    pub values: Vec<f32>,
    /// Labels (logits per text).
    pub labels: usize,
}

impl From<Hidden> for ModelOutput {
    fn from(hidden: Hidden) -> Self {
        Self::Hidden(hidden)
    }
}

impl From<Logits> for ModelOutput {
    fn from(logits: Logits) -> Self {
        Self::Logits(logits)
    }
}

/// Why an encoder could not load or run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EncoderError(pub String);

/// Runs a transformer over token ids. Calls block the thread (they do the
/// arithmetic), so callers run them on a blocking thread.
pub trait Encoder: Send + Sync + 'static {
    /// The runtime's name for logs and `/info`, e.g. `onnxruntime`.
    fn runtime(&self) -> &'static str;

    /// Runs one batch and returns the model's (first) output.
    fn encode(&self, batch: &TokenBatch) -> Result<ModelOutput, EncoderError>;

    /// How many batches can usefully run at once. ONNX Runtime's session
    /// runs one at a time (and spreads it over its intra-op threads).
    fn parallel_runs(&self) -> usize {
        1
    }
}
