//! Text models: tokenise, run the transformer ([`Encoder`]), then, by what
//! the model returns ([`ModelOutput`]):
//! - an embedding model (hidden states `[batch, seq, dim]`): mean pool over
//!   real tokens, L2-normalise — the sentence-transformers pipeline of
//!   models such as all-MiniLM-L6-v2;
//! - a classifier (logits `[batch, labels]`, as a Hugging Face
//!   sequence-classification export): softmax over the labels named in the
//!   `config.json` beside the model ([`labels`]).
//!
//! [`TextBackend`] serves one [`TextModel`] and can swap in a new one
//! between batches (`--watch`): a batch that started keeps the model it
//! started with.

mod backend;
pub mod encoder;
pub mod labels;
mod model_threads;
pub mod onnx;

use std::path::Path;

use config::{EngineBackend, TextModelSettings};
use tokenizers::{Encoding, PaddingParams, Tokenizer, TruncationParams};

pub use backend::TextBackend;
pub use encoder::{Encoder, EncoderError, Hidden, Logits, ModelOutput, TokenBatch};

use crate::backend::{BackendError, Classification, Embedding, Input, ModelKind, Output};

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
    /// The model is a classifier whose label names cannot be read.
    #[error("labels {path}: {source}")]
    Labels {
        /// The `config.json` beside the model.
        path: String,
        /// What went wrong.
        source: labels::LabelsError,
    },
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

/// A tokenizer and an encoder that together turn texts into embeddings or
/// classifications.
#[derive(Debug)]
pub struct TextModel {
    tokenizer: Tokenizer,
    encoder: Box<dyn Encoder>,
    max_tokens: usize,
    max_request_tokens: usize,
    /// The id batches are padded with.
    pad_id: u32,
    /// A classifier's label names, by index, read by [`Self::load`]. Empty
    /// for an embedding model, and for a classifier built otherwise (its
    /// labels are then named `LABEL_{i}`).
    labels: Vec<String>,
    /// What it produces, seen in [`Self::load`]'s warm-up; `Other` for a
    /// model built otherwise.
    kind: ModelKind,
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
        let mut model = Self::with_encoder(&settings.tokenizer, settings.max_tokens, encoder)?
            .with_max_request_tokens(settings.max_request_tokens);
        let warm_up = model
            .infer(&[Input::Text("warm-up".to_owned())])
            .map_err(LoadError::WarmUp)?;
        // Only a classifier's config is read (what its output is shows in
        // the warm-up): an embedding model works with whatever config.json
        // lies beside it, or none.
        match warm_up.first() {
            Some(Output::Classification(c)) => {
                let config = settings.model.with_file_name("config.json");
                model.labels =
                    labels::read(&config, c.labels.len()).map_err(|source| LoadError::Labels {
                        path: config.display().to_string(),
                        source,
                    })?;
                model.kind = ModelKind::Classifier {
                    labels: c.labels.len(),
                };
            }
            Some(Output::Embedding(e)) => {
                model.kind = ModelKind::Embedding {
                    width: e.embedding.len(),
                };
            }
            _ => {}
        }
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
        // Batches are padded by `pad`, with the tokenizer's own padding id
        // when it names one.
        let pad_id = tok
            .get_padding()
            .map_or(PaddingParams::default().pad_id, |p| p.pad_id);
        tok.with_padding(None);
        Ok(Self {
            pad_id,
            tokenizer: tok,
            encoder,
            max_tokens,
            max_request_tokens: TextModelSettings::DEFAULT_MAX_REQUEST_TOKENS as usize,
            labels: Vec::new(),
            kind: ModelKind::Other,
        })
    }

    /// The same model taking at most `max` tokens per request.
    pub fn with_max_request_tokens(mut self, max: u32) -> Self {
        self.max_request_tokens = max as usize;
        self
    }

    /// Tokenizes `inputs` in place ([`Input::Encoded`]), refusing inputs
    /// longer than the model takes, naming the first, and requests with
    /// more tokens in all than `max_request_tokens`. Each input is
    /// tokenized once, in order, and counting stops at the cap.
    pub fn check(&self, inputs: &mut [Input]) -> Result<(), BackendError> {
        let count = inputs.len();
        let mut tokens = 0usize;
        for (index, input) in inputs.iter_mut().enumerate() {
            let ids = self.encode(index, input)?;
            tokens += ids.len();
            if tokens > self.max_request_tokens {
                let too_many = TooManyTokens {
                    tokens,
                    max: self.max_request_tokens,
                    counted: index + 1,
                    inputs: count,
                };
                return Err(BackendError::BadInput(too_many.to_string()));
            }
            *input = Input::Encoded(ids);
        }
        Ok(())
    }

    /// The model's token ids for input `index`, special tokens included,
    /// or why it cannot run.
    fn encode(&self, index: usize, input: &Input) -> Result<Vec<u32>, BackendError> {
        let bad = |e: tokenizers::Error| BackendError::BadInput(format!("input {index}: {e}"));
        let encoding = match input {
            Input::Encoded(ids) => return Ok(ids.clone()),
            Input::Text(text) => self
                .tokenizer
                .encode_fast(text.as_str(), true)
                .map_err(bad)?,
            Input::Tokens(ids) => {
                let vocab = self.tokenizer.get_vocab_size(true);
                if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(BackendError::BadInput(format!(
                        "input {index}: token id {id} is not in this model's vocabulary of {vocab}"
                    )));
                }
                let tokens = ids
                    .iter()
                    .map(|&id| tokenizers::Token::new(id, String::new(), (0, 0)))
                    .collect();
                // Truncation, then the special tokens: as for a text.
                self.tokenizer
                    .post_process(Encoding::from_tokens(tokens, 0), None, true)
                    .map_err(bad)?
            }
        };
        if !encoding.get_overflowing().is_empty() {
            return Err(BackendError::BadInput(format!(
                "input {index} is longer than this model's {} tokens; send shorter text",
                self.max_tokens
            )));
        }
        Ok(encoding.get_ids().to_vec())
    }

    /// Runs `inputs` as one padded batch: one output per input, an
    /// [`Output::Embedding`] or an [`Output::Classification`] as the model
    /// is. Inputs [`Self::check`] has not tokenized yet are tokenized here.
    pub fn infer(&self, inputs: &[Input]) -> Result<Vec<Output>, BackendError> {
        if inputs.is_empty() {
            // No batch to run (and pooling a batch of width 0 would panic).
            return Ok(Vec::new());
        }
        let encoded: Vec<std::borrow::Cow<'_, [u32]>> = inputs
            .iter()
            .enumerate()
            .map(|(index, input)| match input {
                Input::Encoded(ids) => Ok(std::borrow::Cow::Borrowed(ids.as_slice())),
                other => self.encode(index, other).map(std::borrow::Cow::Owned),
            })
            .collect::<Result<_, _>>()?;
        let batch = self.pad(&encoded);
        let output = self
            .encoder
            .encode(&batch)
            .map_err(|e| BackendError::Failed(e.to_string()))?;
        match output {
            ModelOutput::Hidden(hidden) => Self::pool(&batch, &hidden),
            ModelOutput::Logits(logits) => self.classify(&encoded, &logits),
        }
    }

    /// One embedding per row of `batch` from its hidden states.
    fn pool(batch: &TokenBatch, hidden: &Hidden) -> Result<Vec<Output>, BackendError> {
        let seq_len = batch.seq_len;
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
            .map(|(mask, states)| Output::Embedding(mean_pool_normalized(mask, states, hidden.dim)))
            .collect())
    }

    /// One classification per row of `rows` (the batch's token ids) from
    /// the model's logits.
    fn classify(
        &self,
        rows: &[std::borrow::Cow<'_, [u32]>],
        logits: &Logits,
    ) -> Result<Vec<Output>, BackendError> {
        let width = logits.labels;
        if width == 0 || logits.values.len() != rows.len() * width {
            return Err(BackendError::Failed(format!(
                "the model returned {} values for a [{}, {width}] output",
                logits.values.len(),
                rows.len()
            )));
        }
        let names: std::borrow::Cow<'_, [String]> = match self.labels.len() {
            // Not loaded by `load` (the warm-up, tests): default names.
            0 => labels::default_names(width).into(),
            n if n == width => self.labels.as_slice().into(),
            // `load` read as many names as the warm-up gave logits: a model
            // whose width changes between runs is broken.
            n => {
                return Err(BackendError::Failed(format!(
                    "the model returned {width} logits per input for {n} labels"
                )));
            }
        };
        Ok(rows
            .iter()
            .zip(logits.values.chunks(width))
            .map(|(ids, row)| {
                Output::Classification(Classification {
                    labels: labels::scores(row, &names),
                    tokens: ids.len(),
                })
            })
            .collect())
    }

    /// One `[batch, longest]` batch of `rows`, padded on the right with the
    /// tokenizer's padding id (masked out).
    fn pad(&self, rows: &[std::borrow::Cow<'_, [u32]>]) -> TokenBatch {
        let seq_len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let cells = rows.len() * seq_len;
        let pad = i64::from(self.pad_id);
        let mut batch = TokenBatch {
            batch: rows.len(),
            seq_len,
            input_ids: Vec::with_capacity(cells),
            attention_mask: Vec::with_capacity(cells),
            token_type_ids: vec![0; cells],
        };
        for row in rows {
            batch.input_ids.extend(row.iter().map(|&id| i64::from(id)));
            batch.attention_mask.resize(batch.input_ids.len(), 1);
            batch
                .input_ids
                .resize(batch.input_ids.len() + seq_len - row.len(), pad);
            batch.attention_mask.resize(batch.input_ids.len(), 0);
        }
        batch
    }

    /// The runtime running the encoder.
    pub fn runtime(&self) -> &'static str {
        self.encoder.runtime()
    }

    /// What it produces, as [`Self::load`] saw it.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// How many batches can usefully run at once ([`Encoder::parallel_runs`]).
    pub fn parallel_runs(&self) -> usize {
        self.encoder.parallel_runs()
    }
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

        fn encode(&self, batch: &TokenBatch) -> Result<ModelOutput, EncoderError> {
            Ok(Hidden {
                values: vec![0.0; batch.batch * batch.seq_len * 2],
                dim: 2,
            }
            .into())
        }
    }

    /// A classifier of three labels whose logits favour label
    /// `tokens % 3` (and that returns `extra` values too many).
    struct Classifier {
        extra: usize,
    }

    impl Encoder for Classifier {
        fn runtime(&self) -> &'static str {
            "classifier"
        }

        fn encode(&self, batch: &TokenBatch) -> Result<ModelOutput, EncoderError> {
            let mut values: Vec<f32> = batch
                .attention_mask
                .chunks(batch.seq_len)
                .flat_map(|mask| {
                    let tokens = mask.iter().sum::<i64>() as usize;
                    (0..3).map(move |label| if label == tokens % 3 { 2.0 } else { 0.0 })
                })
                .collect();
            values.extend(std::iter::repeat_n(0.0, self.extra));
            Ok(Logits { values, labels: 3 }.into())
        }
    }

    fn classifier(extra: usize) -> TextModel {
        let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer.json");
        TextModel::with_encoder(&tokenizer, 16, Box::new(Classifier { extra })).unwrap()
    }

    #[test]
    fn a_classifier_scores_every_label_best_first() {
        let model = classifier(0);
        // [CLS] hello world [SEP] and [CLS] hello [SEP]: 4 and 3 tokens.
        let out = model
            .infer(&[
                Input::Text("hello world".into()),
                Input::Text("hello".into()),
            ])
            .unwrap();
        let json = serde_json::to_value(&out).unwrap();
        let e2 = 2f64.exp();
        for (output, best, tokens) in [(&json[0], "LABEL_1", 4), (&json[1], "LABEL_0", 3)] {
            assert_eq!(output["tokens"], tokens, "{output}");
            let labels = output["labels"].as_array().unwrap();
            let names: Vec<&str> = labels
                .iter()
                .map(|l| l["label"].as_str().unwrap())
                .collect();
            assert_eq!(names.len(), 3);
            assert_eq!(names[0], best, "{output}");
            let top = labels[0]["score"].as_f64().unwrap();
            assert!((top - e2 / (e2 + 2.0)).abs() < 1e-6, "{output}");
        }
        let err = classifier(1)
            .infer(&[Input::Text("hello".into())])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "inference failed: the model returned 4 values for a [1, 3] output"
        );
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
        let texts = vec![Input::Text("hello world".to_owned()); 5];
        assert!(model(16, 20).check(&mut texts.clone()).is_ok());
        let err = model(16, 10).check(&mut texts.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "too many tokens: 12 > 10 in the first 3 of 5 inputs; send fewer or shorter inputs"
        );
        // A too-long input is still named as such.
        let mut long = vec![Input::Text("hello ".repeat(20))];
        let err = model(16, 1000).check(&mut long).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 0 is longer than this model's 16 tokens; send shorter text"
        );
    }

    #[test]
    fn token_ids_get_the_special_tokens_a_text_gets_and_unknown_ids_are_refused() {
        let model = model(16, 1000);
        let hello = model
            .tokenizer
            .encode_fast("hello world", false)
            .unwrap()
            .get_ids()
            .to_vec();
        let mut inputs = vec![
            Input::Text("hello world".into()),
            Input::Tokens(hello.clone()),
        ];
        model.check(&mut inputs).unwrap();
        let Input::Encoded(ids) = &inputs[0] else {
            panic!("check encodes: {inputs:?}");
        };
        assert_eq!(
            ids.len(),
            hello.len() + 2,
            "[CLS] and [SEP] around the text"
        );
        assert_eq!(inputs[0], inputs[1]);
        // Too long as ids is too long as text.
        let err = model
            .check(&mut [Input::Tokens(vec![hello[0]; 40])])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("longer than this model's 16 tokens"),
            "{err}"
        );
        let vocab = model.tokenizer.get_vocab_size(true) as u32;
        let err = model
            .check(&mut [Input::Tokens(vec![1, vocab])])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("input 0: token id {vocab} is not in this model's vocabulary of {vocab}")
        );
    }

    #[test]
    fn a_batch_is_padded_on_the_right_and_masked() {
        let model = model(16, 1000);
        let rows = [
            std::borrow::Cow::Owned(vec![5, 6, 7]),
            std::borrow::Cow::Owned(vec![8]),
        ];
        let batch = model.pad(&rows);
        assert_eq!((batch.batch, batch.seq_len), (2, 3));
        let pad = i64::from(model.pad_id);
        assert_eq!(batch.input_ids, [5, 6, 7, 8, pad, pad]);
        assert_eq!(batch.attention_mask, [1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.token_type_ids, [0; 6]);
    }
}
