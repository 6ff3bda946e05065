//! The ONNX Runtime encoder (CPU). ONNX Runtime is loaded at run time from
//! a shared library (the PyPI `onnxruntime` wheel's `libonnxruntime.so`,
//! fetched by `scripts/fetch-models.sh`), so building needs nothing of it.
//!
//! Chosen over `tract` by measurement on all-MiniLM-L6-v2 int8 (README,
//! "Choosing the CPU runtime"): 6x faster at batch 1, 2.2x at batch 32.

use std::path::PathBuf;
use std::sync::OnceLock;

use config::TextModelSettings;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use super::encoder::{Encoder, EncoderError, Hidden, Logits, ModelOutput, TokenBatch};

/// The process's ONNX Runtime: the library can be loaded only once, so the
/// first model decides which file; later models must name the same one.
static RUNTIME: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

fn runtime(
    library: Option<&PathBuf>,
) -> Result<&'static ort::environment::Environment, EncoderError> {
    let wanted = library
        .cloned()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("libonnxruntime.so"));
    let loaded = RUNTIME.get_or_init(|| {
        let env = ort::init_from(&wanted)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", wanted.display()))?
            .with_name("engine")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
        Ok((wanted.clone(), env))
    });
    match loaded {
        Ok((path, env)) if *path == wanted => Ok(env),
        Ok((path, _)) => Err(EncoderError(format!(
            "ONNX Runtime is already loaded from {}; it cannot also be loaded from {}",
            path.display(),
            wanted.display()
        ))),
        Err(e) => Err(EncoderError(e.clone())),
    }
}

/// One ONNX Runtime session over a BERT-style model (inputs `input_ids`,
/// `attention_mask`, optionally `token_type_ids`; first output the last
/// hidden state `[batch, seq, dim]` of an embedding model or the logits
/// `[batch, labels]` of a classifier).
#[derive(Debug)]
pub struct OnnxEncoder {
    // `Session::run` takes `&mut self`. Runs are CPU-bound and each uses all
    // the threads it is given, so serialising them costs no throughput; the
    // lock is only ever taken on a blocking thread, never across an await.
    session: tokio::sync::Mutex<Session>,
    token_types: bool,
}

impl OnnxEncoder {
    /// Loads the model. Blocks.
    pub fn load(settings: &TextModelSettings) -> Result<Self, EncoderError> {
        let env = runtime(settings.runtime_library.as_ref())?;
        let fail = |e: ort::Error| EncoderError(e.to_string());
        let mut builder = Session::builder(env)
            .map_err(fail)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| EncoderError(e.to_string()))?;
        if settings.threads > 0 {
            builder = builder
                .with_intra_threads(settings.threads as usize)
                .map_err(|e| EncoderError(e.to_string()))?;
        }
        let session = builder.commit_from_file(&settings.model).map_err(fail)?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !names.contains(&required) {
                return Err(EncoderError(format!(
                    "the model has no `{required}` input (inputs: {names:?})"
                )));
            }
        }
        if session.outputs().is_empty() {
            return Err(EncoderError("the model has no output".into()));
        }
        Ok(Self {
            token_types: names.contains(&"token_type_ids"),
            session: tokio::sync::Mutex::new(session),
        })
    }
}

impl Encoder for OnnxEncoder {
    fn runtime(&self) -> &'static str {
        "onnxruntime"
    }

    fn encode(&self, batch: &TokenBatch) -> Result<ModelOutput, EncoderError> {
        let fail = |e: ort::Error| EncoderError(e.to_string());
        let shape = [batch.batch, batch.seq_len];
        let ids = TensorRef::from_array_view((shape, batch.input_ids.as_slice())).map_err(fail)?;
        let mask =
            TensorRef::from_array_view((shape, batch.attention_mask.as_slice())).map_err(fail)?;
        let types =
            TensorRef::from_array_view((shape, batch.token_type_ids.as_slice())).map_err(fail)?;
        let mut session = self.session.blocking_lock();
        let outputs = if self.token_types {
            session.run(ort::inputs![
                "input_ids" => ids,
                "attention_mask" => mask,
                "token_type_ids" => types,
            ])
        } else {
            session.run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
        }
        .map_err(fail)?;
        let (out_shape, values) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
        let values = values.to_vec();
        match **out_shape {
            [b, s, dim] if b as usize == batch.batch && s as usize == batch.seq_len => Ok(Hidden {
                values,
                dim: dim as usize,
            }
            .into()),
            [b, labels] if b as usize == batch.batch => Ok(Logits {
                values,
                labels: labels as usize,
            }
            .into()),
            ref other => Err(EncoderError(format!(
                "expected a [{b}, {s}, dim] (hidden states) or [{b}, labels] (logits) output, got {other:?}",
                b = batch.batch,
                s = batch.seq_len
            ))),
        }
    }
}
