//! How one engine replica runs. The same settings come from a replica's own
//! file (`engine --config replica.toml`, an `[engine]` table) or from a
//! deployment's `engine` table in the gateway's config, so a provisioner can
//! start a replica from the deployment it belongs to.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a replica needs to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// What runs predictions.
    pub backend: EngineBackend,
    /// Predictions run at once. Default 1 (in a deployment: the deployment's).
    pub predict_concurrency: u32,
    /// Predictions that may wait for a running slot; beyond it, 429. Default 16.
    pub queue_size: u32,
    /// Most inputs run together; 1 (the default) turns batching off.
    pub max_batch_size: u32,
    /// How long the first input of a batch waits for company. Default 2 ms.
    pub max_queue_delay: Duration,
    /// Reload the model when its file changes (development). Default false.
    pub watch: bool,
}

/// The backend and its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineBackend {
    /// A text-embedding ONNX model on ONNX Runtime (CPU).
    Onnx(TextModelSettings),
    /// A text-embedding TensorRT engine (GPU; cargo feature `tensorrt`).
    TensorRt(TextModelSettings),
    /// No model: a latency profile, for load and autoscaling tests.
    Synthetic(SyntheticSettings),
}

impl EngineBackend {
    /// The name used in config files and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Onnx(_) => "onnx",
            Self::TensorRt(_) => "tensorrt",
            Self::Synthetic(_) => "synthetic",
        }
    }
}

/// A tokenizer plus a transformer whose pooled output is the embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct TextModelSettings {
    /// The model file (`.onnx`, or a TensorRT plan).
    pub model: PathBuf,
    /// Hugging Face `tokenizer.json`; default: beside the model.
    pub tokenizer: PathBuf,
    /// `libonnxruntime.so` to load; default `$ORT_DYLIB_PATH`, then the
    /// system's library search path.
    pub runtime_library: Option<PathBuf>,
    /// Longest input in tokens; longer texts are refused (400). Default 256.
    pub max_tokens: u32,
    /// Threads one inference may use; 0 (default) = one per core.
    pub threads: u32,
}

/// Latency profile of the synthetic backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyntheticSettings {
    /// Cost of every batch.
    pub fixed: Duration,
    /// Extra cost per input.
    pub per_item: Duration,
    /// Up to this much extra, uniformly random, per batch.
    pub jitter: Duration,
    /// Simulated model loading before the replica is ready.
    pub load_delay: Duration,
}

impl EngineSettings {
    /// Makes relative file paths relative to `base` (the config file's
    /// directory) instead of the process's working directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let EngineBackend::Onnx(m) | EngineBackend::TensorRt(m) = &mut self.backend {
            for path in [
                Some(&mut m.model),
                Some(&mut m.tokenizer),
                m.runtime_library.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
    }
}
