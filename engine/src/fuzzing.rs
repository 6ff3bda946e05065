//! The entry point of the `engine_request` fuzz target in `fuzz/` and of
//! the corpus replay in `tests/fuzz_corpus.rs`: both call
//! [`engine_request`], so the fuzzer and the stable test suite run exactly
//! the same code. Not an API.

#![doc(hidden)]

use std::hint::black_box;
use std::sync::LazyLock;

use config::EngineSettings;

use crate::backend::{BackendError, Output};
use crate::server::request::PredictRequest;
use crate::text::{Encoder, EncoderError, Hidden, ModelOutput, TextModel, TokenBatch};

/// `engine_request`: a `POST /predict` body as the replica's server reads
/// it: `PredictRequest::parse` with the default `[engine] max_inputs`,
/// then what a text backend does with the texts before and during
/// inference: the token caps (`TextModel::check`, the tokenizer) and, in
/// batches of at most `MAX_BATCH` as the batcher cuts them, the
/// tokenisation, padding and pooling of `TextModel::infer`. Only the
/// transformer itself is left out: a stand-in encoder returns zeros of the
/// right shape, so no model or runtime library is needed.
pub fn engine_request(data: &[u8]) {
    let max_inputs = EngineSettings::DEFAULT_MAX_INPUTS as usize;
    let request = match PredictRequest::parse(data, max_inputs) {
        Ok(request) => request,
        Err(e) => return drop(black_box(e.to_string())),
    };
    assert!(request.inputs.len() <= max_inputs, "the input cap holds");
    let model = &*MODEL;
    let mut inputs = request.inputs;
    if let Err(e) = model.check(&mut inputs) {
        return drop(black_box(e.to_string()));
    }
    // No inputs: the server runs no batch, and `infer` answers an empty
    // one with nothing (it once panicked: fuzz/artifacts-found/).
    if inputs.is_empty() {
        assert!(matches!(model.infer(&[]), Ok(e) if e.is_empty()));
    }
    for batch in inputs.chunks(MAX_BATCH) {
        match model.infer(batch) {
            Ok(outputs) => {
                assert_eq!(outputs.len(), batch.len(), "one embedding per text");
                for output in &outputs {
                    let Output::Embedding(e) = output else {
                        panic!("the stand-in encoder gives hidden states: {output:?}");
                    };
                    assert!(e.embedding.iter().all(|v| v.is_finite()));
                    // The response serializes each one as `TextBackend` does.
                    serde_json::to_vec(output).expect("an embedding serializes");
                }
            }
            // The stand-in encoder never fails; a tokenizer may refuse a text.
            Err(BackendError::BadInput(message)) => drop(black_box(message)),
            Err(e @ BackendError::Failed(_)) => panic!("embedding failed: {e}"),
        }
    }
}

/// Most inputs in one model call: `max_batch_size` in examples/replica.toml.
const MAX_BATCH: usize = 8;

/// The tokenizer of the engine's test model (all-MiniLM-L6-v2's, in
/// `tests/fixtures`), behind the default 256-token limit of
/// `[engine] max_tokens` (and the default `max_request_tokens`).
static MODEL: LazyLock<TextModel> = LazyLock::new(|| {
    // One thread (batches are otherwise split over rayon's pool): the same
    // encodings, but coverage stays with the thread the fuzzer watches and
    // its leak check does not trip over the pool's threads.
    tokenizers::utils::parallelism::set_parallelism(false);
    let tokenizer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer.json");
    TextModel::with_encoder(tokenizer.as_ref(), 256, Box::new(Zeros))
        .expect("the fixture tokenizer loads")
});

/// An encoder that returns all-zero hidden states of width [`Zeros::DIM`]:
/// the shape a real one returns, without a model.
#[derive(Debug)]
struct Zeros;

impl Zeros {
    const DIM: usize = 4;
}

impl Encoder for Zeros {
    fn runtime(&self) -> &'static str {
        "zeros"
    }

    fn encode(&self, batch: &TokenBatch) -> Result<ModelOutput, EncoderError> {
        Ok(Hidden {
            values: vec![0.0; batch.batch * batch.seq_len * Self::DIM],
            dim: Self::DIM,
        }
        .into())
    }
}
