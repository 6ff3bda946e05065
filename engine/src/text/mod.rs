//! Text-embedding models: tokenise, run the transformer ([`Encoder`]), mean
//! pool over real tokens, L2-normalise — the sentence-transformers pipeline
//! of models such as all-MiniLM-L6-v2.
//!
//! [`TextBackend`] serves one [`TextModel`] and can swap in a new one
//! between batches (`--watch`): a batch that started keeps the model it
//! started with.

pub mod encoder;
pub mod onnx;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use config::{EngineBackend, TextModelSettings};
use serde_json::value::RawValue;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

pub use encoder::{Encoder, EncoderError, Hidden, TokenBatch};

use crate::backend::{Backend, BackendError, Output};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The tokenizer file is missing or invalid.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The model file or its runtime failed to load.
    #[error("model {path}: {source}")]
    Model {
        /// The file.
        path: String,
        /// What went wrong.
        source: EncoderError,
    },
    /// The model loaded but the warm-up inference failed.
    #[error("warm-up inference failed: {0}")]
    WarmUp(BackendError),
    /// The backend is not compiled into this binary.
    #[error("{0}")]
    Unsupported(String),
}

/// A request whose inputs together have more tokens than the replica takes
/// in one request. Counting stops at the input that crosses the cap, so
/// `tokens` is a lower bound: a huge request is not tokenized to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many tokens: {tokens} > {max} in the first {counted} of {inputs} inputs; send fewer or shorter inputs"
)]
pub struct TooManyTokens {
    /// Tokens counted, special tokens included.
    pub tokens: usize,
    /// `max_request_tokens`.
    pub max: usize,
    /// Inputs counted.
    pub counted: usize,
    /// Inputs in the request.
    pub inputs: usize,
}

/// A tokenizer and an encoder that together turn texts into embeddings.
#[derive(Debug)]
pub struct TextModel {
    tokenizer: Tokenizer,
    encoder: Box<dyn Encoder>,
    max_tokens: usize,
    max_request_tokens: usize,
}

impl std::fmt::Debug for dyn Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoder({})", self.runtime())
    }
}

impl TextModel {
    /// Loads the tokenizer and the model of `backend`, and runs one warm-up
    /// inference. Blocks: call it from a blocking thread.
    pub fn load(backend: &EngineBackend) -> Result<Self, LoadError> {
        let (settings, encoder): (_, Box<dyn Encoder>) = match backend {
            EngineBackend::Onnx(s) => (s, Box::new(onnx::OnnxEncoder::load(s).map_err(model(s))?)),
            #[cfg(feature = "tensorrt")]
            EngineBackend::TensorRt(s) => (
                s,
                Box::new(crate::tensorrt::TensorRtEncoder::load(&s.model).map_err(model(s))?),
            ),
            #[cfg(not(feature = "tensorrt"))]
            EngineBackend::TensorRt(_) => {
                return Err(LoadError::Unsupported(
                    "this engine was built without TensorRT (cargo feature `tensorrt`)".into(),
                ));
            }
            EngineBackend::Synthetic(_) => {
                return Err(LoadError::Unsupported(
                    "the synthetic backend has no model".into(),
                ));
            }
        };
        let model = Self::with_encoder(&settings.tokenizer, settings.max_tokens, encoder)?
            .with_max_request_tokens(settings.max_request_tokens);
        model
            .embed(&["warm-up".to_owned()])
            .map_err(LoadError::WarmUp)?;
        Ok(model)
    }

    /// A model from a loaded encoder and the tokenizer file, taking up to
    /// the default `max_request_tokens` per request.
    pub fn with_encoder(
        tokenizer: &Path,
        max_tokens: u32,
        encoder: Box<dyn Encoder>,
    ) -> Result<Self, LoadError> {
        let tokenizer_error = |message: String| LoadError::Tokenizer {
            path: tokenizer.display().to_string(),
            message,
        };
        let mut tok =
            Tokenizer::from_file(tokenizer).map_err(|e| tokenizer_error(e.to_string()))?;
        let max_tokens = max_tokens as usize;
        tok.with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            ..TruncationParams::default()
        }))
        .map_err(|e| tokenizer_error(e.to_string()))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        Ok(Self {
            tokenizer: tok,
            encoder,
            max_tokens,
            max_request_tokens: TextModelSettings::DEFAULT_MAX_REQUEST_TOKENS as usize,
        })
    }

    /// The same model taking at most `max` tokens per request.
    pub fn with_max_request_tokens(mut self, max: u32) -> Self {
        self.max_request_tokens = max as usize;
        self
    }

    /// Refuses texts longer than the model takes, naming the first, and
    /// requests with more tokens in all than `max_request_tokens`. Each
    /// text is tokenized once, in order, and counting stops at the cap.
    pub fn check(&self, texts: &[String]) -> Result<(), BackendError> {
        let mut tokens = 0usize;
        for (index, text) in texts.iter().enumerate() {
            tokens += self.tokens(index, text)?;
            if tokens > self.max_request_tokens {
                let too_many = TooManyTokens {
                    tokens,
                    max: self.max_request_tokens,
                    counted: index + 1,
                    inputs: texts.len(),
                };
                return Err(BackendError::BadInput(too_many.to_string()));
            }
        }
        Ok(())
    }

    /// The tokens of input `index` (special ones included), or why it
    /// cannot run.
    fn tokens(&self, index: usize, text: &str) -> Result<usize, BackendError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| BackendError::BadInput(format!("input {index}: {e}")))?;
        if !encoding.get_overflowing().is_empty() {
            return Err(BackendError::BadInput(format!(
                "input {index} is longer than this model's {} tokens; send shorter text",
                self.max_tokens
            )));
        }
        Ok(encoding.len())
    }

    /// Embeds `texts` as one padded batch: one unit vector per text.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>, BackendError> {
        if texts.is_empty() {
            // No batch to run (and pooling a batch of width 0 would panic).
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.iter().map(String::as_str).collect(), true)
            .map_err(|e| BackendError::BadInput(e.to_string()))?;
        let seq_len = encodings.first().map_or(0, |e| e.len());
        let mut batch = TokenBatch {
            batch: encodings.len(),
            seq_len,
            ..TokenBatch::default()
        };
        for e in &encodings {
            batch
                .input_ids
                .extend(e.get_ids().iter().map(|&id| i64::from(id)));
            batch
                .attention_mask
                .extend(e.get_attention_mask().iter().map(|&m| i64::from(m)));
        }
        batch.token_type_ids = vec![0; batch.input_ids.len()];
        let hidden = self
            .encoder
            .encode(&batch)
            .map_err(|e| BackendError::Failed(e.to_string()))?;
        let expected = batch.batch * seq_len * hidden.dim;
        if hidden.values.len() != expected || hidden.dim == 0 {
            return Err(BackendError::Failed(format!(
                "the model returned {} values for a [{}, {seq_len}, {}] output",
                hidden.values.len(),
                batch.batch,
                hidden.dim
            )));
        }
        Ok(batch
            .attention_mask
            .chunks(seq_len.max(1))
            .zip(hidden.values.chunks(seq_len * hidden.dim))
            .map(|(mask, states)| mean_pool_normalized(mask, states, hidden.dim))
            .collect())
    }

    /// The runtime running the encoder.
    pub fn runtime(&self) -> &'static str {
        self.encoder.runtime()
    }
}

/// One text's embedding and how many tokens it was.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Embedding {
    /// Unit-length vector.
    pub embedding: Vec<f32>,
    /// Tokens the text became, special tokens included.
    pub tokens: usize,
}

/// Averages the vectors of the real (unmasked) tokens, then scales the
/// average to unit length.
fn mean_pool_normalized(mask: &[i64], states: &[f32], dim: usize) -> Embedding {
    let mut sum = vec![0f32; dim];
    let mut tokens = 0usize;
    for (&m, token) in mask.iter().zip(states.chunks(dim)) {
        if m != 0 {
            tokens += 1;
            for (s, v) in sum.iter_mut().zip(token) {
                *s += v;
            }
        }
    }
    let count = tokens.max(1) as f32;
    sum.iter_mut().for_each(|s| *s /= count);
    let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    sum.iter_mut().for_each(|s| *s /= norm);
    Embedding {
        embedding: sum,
        tokens,
    }
}

fn model(settings: &TextModelSettings) -> impl FnOnce(EncoderError) -> LoadError + '_ {
    move |source| LoadError::Model {
        path: settings.model.display().to_string(),
        source,
    }
}

/// Serves a [`TextModel`] as a [`Backend`]; [`TextBackend::swap`] replaces
/// the model between batches.
#[derive(Debug)]
pub struct TextBackend {
    name: &'static str,
    model: ArcSwap<TextModel>,
}

impl TextBackend {
    /// Serves `model` under the backend name `name` (`onnx`, `tensorrt`).
    pub fn new(name: &'static str, model: TextModel) -> Self {
        Self {
            name,
            model: ArcSwap::from_pointee(model),
        }
    }

    /// Makes `model` serve the next batches; running ones finish on the old.
    pub fn swap(&self, model: TextModel) {
        self.model.store(Arc::new(model));
    }
}

#[async_trait::async_trait]
impl Backend for TextBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn check(&self, inputs: Vec<String>) -> Result<Vec<String>, BackendError> {
        // Tokenising a large body takes milliseconds: not on the event loop.
        let model = self.model.load_full();
        tokio::task::spawn_blocking(move || model.check(&inputs).map(|()| inputs))
            .await
            .map_err(|e| BackendError::Failed(format!("tokenizer thread failed: {e}")))?
    }

    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, BackendError> {
        let model = self.model.load_full();
        let inputs = inputs.to_vec();
        let embeddings = tokio::task::spawn_blocking(move || model.embed(&inputs))
            .await
            .map_err(|e| BackendError::Failed(format!("inference thread failed: {e}")))??;
        embeddings
            .iter()
            .map(|e| {
                serde_json::value::to_raw_value(e).map_err(|e| BackendError::Failed(e.to_string()))
            })
            .collect::<Result<Vec<Box<RawValue>>, _>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_ignores_padding_and_normalises() {
        // Two real tokens and one padding token, dim 2.
        let e = mean_pool_normalized(&[1, 1, 0], &[3.0, 0.0, 1.0, 4.0, 100.0, 100.0], 2);
        assert_eq!(e.tokens, 2);
        // mean = (2, 2) -> unit = (0.7071, 0.7071)
        for v in &e.embedding {
            assert!((v - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{v}");
        }
    }

    #[test]
    fn an_all_zero_vector_stays_finite() {
        let e = mean_pool_normalized(&[1], &[0.0, 0.0], 2);
        assert_eq!(e.embedding, vec![0.0, 0.0]);
    }

    /// Hidden states of zeros: tokenizing is what these tests look at.
    struct Zeros;

    impl Encoder for Zeros {
        fn runtime(&self) -> &'static str {
            "zeros"
        }

        fn encode(&self, batch: &TokenBatch) -> Result<Hidden, EncoderError> {
            Ok(Hidden {
                values: vec![0.0; batch.batch * batch.seq_len * 2],
                dim: 2,
            })
        }
    }

    fn model(max_tokens: u32, max_request_tokens: u32) -> TextModel {
        let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer.json");
        TextModel::with_encoder(&tokenizer, max_tokens, Box::new(Zeros))
            .unwrap()
            .with_max_request_tokens(max_request_tokens)
    }

    #[test]
    fn the_request_token_cap_counts_special_tokens_and_stops_at_the_cap() {
        // "hello world" is [CLS] hello world [SEP]: 4 tokens.
        let texts = vec!["hello world".to_owned(); 5];
        assert!(model(16, 20).check(&texts).is_ok());
        let err = model(16, 10).check(&texts).unwrap_err();
        assert_eq!(
            err.to_string(),
            "too many tokens: 12 > 10 in the first 3 of 5 inputs; send fewer or shorter inputs"
        );
        // A too-long input is still named as such.
        let long = vec!["hello ".repeat(20)];
        let err = model(16, 1000).check(&long).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 0 is longer than this model's 16 tokens; send shorter text"
        );
    }
}
