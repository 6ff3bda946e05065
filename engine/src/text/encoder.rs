//! The tensor half of a text model: token ids in, hidden states out. The
//! ONNX Runtime and TensorRT backends differ only here; tokenising and
//! pooling are shared ([`super::TextModel`]).

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

/// Hidden states, row-major `[batch, seq_len, dim]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hidden {
    /// The values.
    pub values: Vec<f32>,
    /// Width of one token's vector.
    pub dim: usize,
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

    /// Runs one batch and returns its last hidden states.
    fn encode(&self, batch: &TokenBatch) -> Result<Hidden, EncoderError>;
}
