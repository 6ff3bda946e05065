//! How one engine replica runs. The same settings come from a replica's own
//! file (`engine --config replica.toml`, an `[engine]` table) or from a
//! deployment's `engine` table in the gateway's config, so a provisioner can
//! start a replica from the deployment it belongs to.

use std::ffi::OsString;
use std::ops::RangeInclusive;
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
    /// Most inputs one request may carry; more are refused (400) before
    /// the request waits for a slot. Default [`Self::DEFAULT_MAX_INPUTS`].
    pub max_inputs: u32,
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
    /// Most tokens of one request, all its inputs together; more are
    /// refused (400) before any model run. Default
    /// [`Self::DEFAULT_MAX_REQUEST_TOKENS`]; at least `max_tokens`.
    pub max_request_tokens: u32,
    /// Threads one inference may use; 0 (default) = one per core.
    pub threads: u32,
}

impl TextModelSettings {
    /// Default `max_request_tokens`: 256 inputs of 256 tokens, the default
    /// `max_inputs` at the default `max_tokens`.
    pub const DEFAULT_MAX_REQUEST_TOKENS: u32 = 65_536;

    /// The values `max_request_tokens` may take.
    pub const MAX_REQUEST_TOKENS_RANGE: RangeInclusive<u32> = 1..=100_000_000;

    /// Why `max_request_tokens` and `max_tokens` do not go together, if
    /// they do not: a cap below one input's length would refuse inputs
    /// that `max_tokens` allows.
    pub fn request_tokens_problem(&self) -> Option<String> {
        (self.max_request_tokens < self.max_tokens).then(|| {
            format!(
                "`max_request_tokens` ({}) is below `max_tokens` ({}): one input of the longest allowed length would be refused",
                self.max_request_tokens, self.max_tokens
            )
        })
    }
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
    /// Percent of predictions that fail (HTTP 500), at random, to test
    /// rollbacks. Default 0, 0-100.
    pub error_percent: u32,
}

impl EngineSettings {
    /// Default `max_inputs`: a bulk request the CPU model runs in about a
    /// second, far below what exhausts a replica's memory (one padded batch
    /// of 10,000 inputs would need tens of GB).
    pub const DEFAULT_MAX_INPUTS: u32 = 256;

    /// The values `max_inputs` may take.
    pub const MAX_INPUTS_RANGE: RangeInclusive<u32> = 1..=1_000_000;

    /// The `engine` binary's command-line flags that reproduce these
    /// settings exactly: every setting is given, so neither the binary's
    /// defaults nor a `--config` file change them. Durations are whole
    /// milliseconds. Process flags (`--listen`, `--replica-id`, ...) are the
    /// caller's.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Args::default();
        args.flag("backend", self.backend.name());
        match &self.backend {
            EngineBackend::Onnx(m) | EngineBackend::TensorRt(m) => {
                args.flag("model", &m.model);
                args.flag("tokenizer", &m.tokenizer);
                if let Some(library) = &m.runtime_library {
                    args.flag("onnxruntime", library);
                }
                args.number("max-tokens", m.max_tokens);
                args.number("max-request-tokens", m.max_request_tokens);
                args.number("threads", m.threads);
            }
            EngineBackend::Synthetic(profile) => {
                args.millis("fixed-ms", profile.fixed);
                args.millis("per-item-ms", profile.per_item);
                args.millis("jitter-ms", profile.jitter);
                args.millis("load-delay-ms", profile.load_delay);
                args.number("error-percent", profile.error_percent);
            }
        }
        args.number("predict-concurrency", self.predict_concurrency);
        args.number("queue-size", self.queue_size);
        args.number("max-batch-size", self.max_batch_size);
        args.millis("max-queue-delay-ms", self.max_queue_delay);
        args.number("max-inputs", self.max_inputs);
        if self.watch {
            args.0.push("--watch".into());
        }
        args.0
    }

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

/// Command-line flags under construction.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn flag(&mut self, name: &str, value: impl Into<OsString>) {
        self.0.push(format!("--{name}").into());
        self.0.push(value.into());
    }

    fn number(&mut self, name: &str, value: u32) {
        self.flag(name, value.to_string());
    }

    fn millis(&mut self, name: &str, value: Duration) {
        self.flag(name, value.as_millis().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.into_string().expect("UTF-8 argument"))
            .collect()
    }

    #[test]
    fn synthetic_settings_as_flags() {
        let settings = EngineSettings {
            backend: EngineBackend::Synthetic(SyntheticSettings {
                fixed: Duration::from_millis(5),
                per_item: Duration::from_millis(1),
                jitter: Duration::ZERO,
                load_delay: Duration::from_millis(200),
                error_percent: 10,
            }),
            predict_concurrency: 3,
            queue_size: 7,
            max_batch_size: 2,
            max_queue_delay: Duration::from_millis(4),
            max_inputs: 64,
            watch: false,
        };
        assert_eq!(
            strings(settings.to_args()),
            [
                "--backend",
                "synthetic",
                "--fixed-ms",
                "5",
                "--per-item-ms",
                "1",
                "--jitter-ms",
                "0",
                "--load-delay-ms",
                "200",
                "--error-percent",
                "10",
                "--predict-concurrency",
                "3",
                "--queue-size",
                "7",
                "--max-batch-size",
                "2",
                "--max-queue-delay-ms",
                "4",
                "--max-inputs",
                "64",
            ]
        );
    }

    #[test]
    fn model_settings_as_flags() {
        let model = TextModelSettings {
            model: PathBuf::from("/models/e5/model.onnx"),
            tokenizer: PathBuf::from("/models/e5/tokenizer.json"),
            runtime_library: Some(PathBuf::from("/opt/ort/libonnxruntime.so")),
            max_tokens: 512,
            max_request_tokens: 8192,
            threads: 2,
        };
        let mut settings = EngineSettings {
            backend: EngineBackend::Onnx(model.clone()),
            predict_concurrency: 1,
            queue_size: 16,
            max_batch_size: 1,
            max_queue_delay: Duration::from_millis(2),
            max_inputs: EngineSettings::DEFAULT_MAX_INPUTS,
            watch: true,
        };
        assert_eq!(
            strings(settings.to_args()),
            [
                "--backend",
                "onnx",
                "--model",
                "/models/e5/model.onnx",
                "--tokenizer",
                "/models/e5/tokenizer.json",
                "--onnxruntime",
                "/opt/ort/libonnxruntime.so",
                "--max-tokens",
                "512",
                "--max-request-tokens",
                "8192",
                "--threads",
                "2",
                "--predict-concurrency",
                "1",
                "--queue-size",
                "16",
                "--max-batch-size",
                "1",
                "--max-queue-delay-ms",
                "2",
                "--max-inputs",
                "256",
                "--watch",
            ]
        );
        settings.backend = EngineBackend::TensorRt(TextModelSettings {
            runtime_library: None,
            ..model
        });
        settings.watch = false;
        let args = strings(settings.to_args());
        assert_eq!(args[..2], ["--backend", "tensorrt"]);
        assert!(!args.iter().any(|a| a == "--onnxruntime" || a == "--watch"));
    }
}
